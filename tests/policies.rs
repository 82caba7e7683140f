//! Every policy file shipped in `policies/` loads (the examples one by one, since they are meant to be
//! copied, not merged).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use jobgate::policy::Policy;

#[test]
fn shipped_policies_load() {
    let default = Policy::load_dir(Path::new("policies")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(default.files.len(), 1);
    let mut examples = 0;
    for entry in std::fs::read_dir("policies/examples").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        Policy::from_yaml(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        examples += 1;
    }
    assert!(examples > 0);
}
