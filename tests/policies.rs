//! Every policy shipped in `policies/` loads and passes its own tests (`tests/*.yaml` beside it).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use jobgate::enforce::expect;
use jobgate::policy::Policy;
use jobgate::snapshot::Snapshot;

#[test]
fn shipped_policies_load_and_pass_their_tests() {
    for dir in ["policies", "policies/examples/compliance", "policies/examples/monorepo"] {
        let policy = Policy::load_dir(Path::new(dir)).unwrap_or_else(|e| panic!("{e}"));
        let report =
            expect::run(&Snapshot::new(policy, Vec::new(), 1), Path::new(dir)).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.failures.is_empty(), "{dir}: {:#?}", report.failures);
        assert!(report.passed >= 3, "{dir}: only {} cases ran", report.passed);
    }
}

#[test]
fn a_wrong_expectation_fails_with_file_case_and_both_answers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/t.yaml"),
        "- name: wrong\n  token: { project: a/b }\n  request: { method: GET, url: '/c/d/info/refs?service=git-upload-pack' }\n  expect: allow\n",
    )
    .unwrap();
    let report = expect::run(&Snapshot::new(Policy::default(), Vec::new(), 1), dir.path()).unwrap();
    assert_eq!(report.passed, 0);
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0].contains("t.yaml: wrong: expected Allow, got Deny (not_in_allowlist)"),
        "{:?}",
        report.failures
    );
    std::fs::write(dir.path().join("tests/t.yaml"), "- name: x\n  tokn: {}\n").unwrap();
    let err = expect::run(&Snapshot::new(Policy::default(), Vec::new(), 1), dir.path()).unwrap_err().to_string();
    assert!(err.contains("t.yaml:2:") && err.contains("tokn"), "{err}");
}
