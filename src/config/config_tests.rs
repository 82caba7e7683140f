use super::*;

const MINIMAL: &str = "\
listen: { public: 127.0.0.1:0, admin: 127.0.0.1:0 }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers:
  - name: ci
    iss: https://gitlab.example.com
    audiences: [jobgate]
    jwks_file: keys/jwks.json
policy_dir: policies
upstreams:
  git: { url: 'http://127.0.0.1:8080' }
";

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobgate.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn minimal_config_loads_with_defaults_and_resolved_paths() {
    let (dir, path) = write(MINIMAL);
    let c = Config::load(&path).unwrap();
    assert_eq!(c.policy_dir, dir.path().join("policies"));
    assert_eq!(c.issuers[0].algorithms, vec![Alg::RS256, Alg::ES256]);
    assert_eq!(c.non_job, NonJob::Reject);
    assert_eq!(c.upstreams.git.credentials, CredentialMode::Passthrough);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let (_dir, path) = write(&MINIMAL.replace("policy_dir:", "polcy_dir: x\npolicy_dir:"));
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("jobgate.yaml:8:"), "{err}");
    assert!(err.contains("unknown field `polcy_dir`"), "{err}");
}

#[test]
fn unsupported_algorithm_is_refused() {
    let (_dir, path) = write(&MINIMAL.replace("jwks_file:", "algorithms: [EdDSA]\n    jwks_file:"));
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("EdDSA"), "{err}");
}

#[test]
fn exactly_one_key_source() {
    let two = MINIMAL.replace("jwks_file: keys/jwks.json", "jwks_file: k.json\n    jwks_url: https://x/keys");
    let none = MINIMAL.replace("    jwks_file: keys/jwks.json\n", "");
    let http = MINIMAL.replace("jwks_file: keys/jwks.json", "jwks_url: http://x/keys");
    for text in [two, none, http] {
        let (_dir, path) = write(&text);
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("issuers[0] (ci)"), "{err}");
    }
    let (_dir, path) = write(&MINIMAL.replace("jwks_file: keys/jwks.json", "discovery: true"));
    assert!(Config::load(&path).is_ok());
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let text = MINIMAL.replace("audiences: [jobgate]", "audiences: []").replace("http://127.0.0.1:8080", "ftp://x")
        + "limits: { max_header_bytes: 10 }\n";
    let (_dir, path) = write(&text);
    let err = Config::load(&path).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines.iter().all(|l| l.contains("jobgate.yaml: ")), "{err}");
    assert!(
        err.contains("issuers[0] (ci): audiences")
            && err.contains("upstreams.git.url")
            && err.contains("limits.max_header_bytes"),
        "{err}"
    );
}

#[test]
fn a_key_written_twice_is_an_error_naming_both_lines() {
    for (text, line, first) in [
        (MINIMAL.replace("policy_dir: policies", "policy_dir: policies\npolicy_dir: other"), 9, 8),
        (MINIMAL.replace("    audiences: [jobgate]", "    audiences: [jobgate]\n    audiences: [other]"), 7, 6),
    ] {
        let (_dir, path) = write(&text);
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("jobgate.yaml:{line}: "))
                && err.contains("duplicate field")
                && err.contains(&format!("(first at line {first})")),
            "{err}"
        );
    }
}

#[test]
fn bad_upstream_url_is_refused() {
    let (_dir, path) = write(&MINIMAL.replace("http://127.0.0.1:8080", "ftp://x"));
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("upstreams.git.url"), "{err}");
}

#[test]
fn each_registry_token_source_needs_what_it_signs_with() {
    let gitlab = "gitlab: { url: 'http://127.0.0.1:8081' }\n";
    let job_tokens = MINIMAL.replace("policy_dir:", "  - { name: jobs, gitlab_job_tokens: {} }\npolicy_dir:");
    for (text, problem) in [
        (format!("{MINIMAL}registry_auth: {{}}\n"), Some("`signing_key` is needed")),
        (
            format!("{MINIMAL}registry_auth: {{ tokens: gitlab, signing_key: k.pem }}\n"),
            Some("`signing_key` is not used"),
        ),
        (format!("{MINIMAL}registry_auth: {{ tokens: gitlab }}\n"), Some("needs the `gitlab:` block")),
        (
            format!("{job_tokens}{gitlab}registry_auth: {{ tokens: gitlab }}\n"),
            Some("set `non_job: passthrough` for the registry"),
        ),
        (format!("{job_tokens}{gitlab}non_job: passthrough\nregistry_auth: {{ tokens: gitlab }}\n"), None),
    ] {
        let (_dir, path) = write(&text);
        match (Config::load(&path), problem) {
            (Ok(_), None) => {}
            (Err(e), Some(problem)) => assert!(e.to_string().contains(problem), "{e}"),
            (got, want) => panic!("{text}: {:?} instead of {want:?}", got.map(|_| ()).map_err(|e| e.to_string())),
        }
    }
}
