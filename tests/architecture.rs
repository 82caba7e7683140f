//! The decision core's boundary, checked on the source: classification, the policy, the token checks,
//! the revocation set, the registry tokens and `enforce` import no async runtime, no HTTP server or
//! client, no metrics, audit, response or forwarding code — only each other and the static config.
//! The I/O lives at the edges (`proxy`, `forward`, `keys`, `record`, `serve`, `admin`, `reload`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Files of the core (folders: every `.rs` below them).
const CORE: &[&str] = &[
    "src/classify",
    "src/policy",
    "src/token/mod.rs",
    "src/token/extract.rs",
    "src/token/jws.rs",
    "src/token/verify.rs",
    "src/token/claims.rs",
    "src/token/cache.rs",
    "src/token/keys.rs",
    "src/token/gitlab.rs",
    "src/enforce",
    "src/explain.rs",
    "src/scope.rs",
    "src/refusal.rs",
    "src/reason.rs",
    "src/path.rs",
    "src/query.rs",
    "src/revoke/mod.rs",
    "src/registry/token.rs",
    "src/registry/realm.rs",
    "src/snapshot.rs",
];

/// What the core may name with `crate::` (its own modules and the static config types).
const ALLOWED: &[&str] = &[
    "classify", "policy", "token", "enforce", "scope", "refusal", "reason", "path", "query", "revoke", "registry",
    "snapshot", "config", "clock", "yaml",
];

/// Paths that must never appear in the core, even inside an allowed module.
const BANNED: &[&str] =
    &["tokio::", "hyper::", "hyper_util", "hyper_rustls", "prometheus", "revoke::store", "Revocations"];

fn files(root: &Path) -> Vec<PathBuf> {
    if root.is_file() {
        return vec![root.to_owned()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        out.extend(files(&entry.unwrap().path()));
    }
    out.retain(|p| p.extension().is_some_and(|x| x == "rs"));
    out
}

/// The offending uses in one file's non-test code (everything before its first `#[cfg(test)]`).
fn violations(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        for banned in BANNED {
            if line.contains(banned) {
                found.push(format!("line {}: {banned}", n + 1));
            }
        }
        for (i, _) in line.match_indices("crate::") {
            let module: String = line[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !ALLOWED.contains(&module.as_str()) {
                found.push(format!("line {}: crate::{module}", n + 1));
            }
        }
    }
    found
}

#[test]
fn the_decision_core_imports_no_edge() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut bad = Vec::new();
    for core in CORE {
        for file in files(&root.join(core)) {
            checked += 1;
            for v in violations(&std::fs::read_to_string(&file).unwrap()) {
                bad.push(format!("{}: {v}", file.strip_prefix(root).unwrap().display()));
            }
        }
    }
    assert!(checked >= 25, "only {checked} core files found: the list is stale");
    assert!(bad.is_empty(), "the core imports edges:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must_refuse() {
    assert_eq!(violations("use crate::infra::metrics::Metrics;\nfn f() { tokio::spawn(x); }\n").len(), 2);
    assert_eq!(
        violations("use crate::edge::upstream::Upstream; // crate::ok\n"),
        vec!["line 1: crate::edge::upstream"]
    );
    assert!(violations("use crate::classify::Family;\n#[cfg(test)]\nmod t { use tokio::x; }\n").is_empty());
}
