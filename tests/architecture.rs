//! The architecture, checked on the source. The decision core — classification, the policy, the
//! token checks, the revocation set and `enforce` — imports no async runtime, no HTTP server or
//! client, no metrics, audit, response or forwarding code, and reads no clock. The tree is the
//! layering `lib.rs` draws: a room (a top-level module; `infra`'s and `revoke`'s children are rooms
//! of their own) imports only rooms of its own layer or below, never in a cycle; the edge imports
//! neither the process (`app`) nor the operator tools; `src/` keeps at most 12 top-level files and
//! no source file over 450 lines.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files of the core (folders: every `.rs` below them).
const CORE: &[&str] = &[
    "src/classify",
    "src/policy",
    "src/token",
    "src/enforce",
    "src/scope.rs",
    "src/refusal.rs",
    "src/reason.rs",
    "src/path.rs",
    "src/query.rs",
    "src/glob.rs",
    "src/revoke/mod.rs",
    "src/snapshot.rs",
];

/// What the core may name with `crate::` (its own modules and the static config types).
const ALLOWED: &[&str] = &[
    "classify", "policy", "token", "enforce", "scope", "refusal", "reason", "path", "query", "glob", "revoke",
    "snapshot", "config", "clock", "yaml", "kit",
];

/// Paths that must never appear in the core, even inside an allowed module: I/O, and the clock (the
/// core is told the time).
const BANNED: &[&str] = &[
    "tokio::",
    "hyper::",
    "hyper_util",
    "hyper_rustls",
    "prometheus",
    "revoke::store",
    "kit::flight",
    "Revocations",
    "Instant::now",
    "SystemTime::now",
    "unix_now",
];

/// Each room's layer, bottom up (as `lib.rs`'s table).
const LAYERS: &[&[&str]] = &[
    &["clock", "error", "glob", "kit", "path", "query", "reason", "scope", "yaml"],
    &["config"],
    &["classify", "token", "policy", "revoke", "snapshot", "refusal"],
    &["enforce"],
    &["infra", "infra/audit", "infra/metrics", "infra/redis_link", "infra/tls"],
    &["keys", "gitlab", "revoke/store", "revoke/shared"],
    &["edge"],
    &["app"],
    &["tools"],
];

/// The arrows allowed to point up a layer: the config file names a family and a JWS algorithm.
const UP: &[(&str, &str)] = &[("config", "classify"), ("config", "token")];

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

/// A file's non-test code without comments (everything before its first `#[cfg(test)]`).
fn code(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines().map(|line| line.split("//").next().unwrap_or("").to_owned()).collect()
}

/// The `crate::a::b` paths a file names, as their first two segments.
fn named(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (n, line) in code(text).iter().enumerate() {
        for (i, _) in line.match_indices("crate::") {
            let mut segments = line[i + 7..]
                .split("::")
                .map(|s| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>());
            let first = segments.next().unwrap_or_default();
            out.push((n + 1, first, segments.next().unwrap_or_default()));
        }
    }
    out
}

/// The offending uses in one core file.
fn violations(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in code(text).iter().enumerate() {
        for banned in BANNED {
            if line.contains(banned) {
                found.push(format!("line {}: {banned}", n + 1));
            }
        }
    }
    for (n, module, _) in named(text) {
        if !ALLOWED.contains(&module.as_str()) {
            found.push(format!("line {n}: crate::{module}"));
        }
    }
    found
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The room a `src/` file belongs to, and the room a `crate::a::b` path names.
fn room_of_file(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    room(&parts[0], parts.get(1).map(String::as_str).filter(|p| *p != "mod"), src)
}

fn room(first: &str, second: Option<&str>, src: &Path) -> String {
    match second {
        Some(child) if matches!(first, "infra" | "revoke") => {
            let path = src.join(first).join(child);
            if path.with_extension("rs").exists() || path.is_dir() {
                return format!("{first}/{child}");
            }
            first.to_owned()
        }
        _ => first.to_owned(),
    }
}

/// Every arrow between rooms (non-test code; `main.rs`, `lib.rs` and `*_tests.rs` files aside).
fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files(&src) {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        if file.parent() == Some(src.as_path()) && matches!(name.as_str(), "main" | "lib") || name.ends_with("_tests") {
            continue;
        }
        let from = room_of_file(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        for (_, first, second) in named(&text) {
            let to = room(&first, Some(second.as_str()).filter(|s| !s.is_empty()), &src);
            if to != from {
                arrows.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    arrows
}

fn layer(room: &str) -> Option<usize> {
    LAYERS.iter().position(|rooms| rooms.contains(&room))
}

/// A cycle among the rooms, if there is one (depth-first search).
fn cycle(arrows: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        room: &str,
        arrows: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|r| r == room) {
            return Some(path[i..].to_vec());
        }
        if !done.insert(room.to_owned()) {
            return None;
        }
        path.push(room.to_owned());
        for next in arrows.get(room).into_iter().flatten() {
            if let Some(found) = visit(next, arrows, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    arrows.keys().find_map(|room| visit(room, arrows, &mut Vec::new(), &mut done))
}

#[test]
fn the_decision_core_imports_no_edge_and_reads_no_clock() {
    let root = root();
    let mut checked = 0;
    let mut bad = Vec::new();
    for core in CORE {
        for file in files(&root.join(core)) {
            checked += 1;
            for v in violations(&std::fs::read_to_string(&file).unwrap()) {
                bad.push(format!("{}: {v}", file.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(checked >= 30, "only {checked} core files found: the list is stale");
    assert!(bad.is_empty(), "the core imports edges or reads a clock:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must_refuse() {
    assert_eq!(violations("use crate::infra::metrics::Metrics;\nfn f() { tokio::spawn(x); }\n").len(), 2);
    assert_eq!(violations("use crate::edge::upstream::Upstream; // crate::ok\n"), vec!["line 1: crate::edge"]);
    assert_eq!(violations("let now = std::time::Instant::now();\n"), vec!["line 1: Instant::now"]);
    assert!(violations("use crate::classify::Family;\n#[cfg(test)]\nmod t { use tokio::x; }\n").is_empty());
    let looped = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(cycle(&looped), Some(vec!["a".to_owned(), "b".to_owned()]));
}

#[test]
fn rooms_point_down_their_layers_without_a_cycle() {
    let arrows = arrows();
    assert!(arrows.len() >= 15, "only {} rooms with arrows: the room rule is stale", arrows.len());
    let mut unlayered = Vec::new();
    let mut up = Vec::new();
    for (from, tos) in &arrows {
        for to in tos {
            match (layer(from), layer(to)) {
                (Some(a), Some(b)) if b > a && !UP.contains(&(from.as_str(), to.as_str())) => {
                    up.push(format!("{from} → {to}"))
                }
                (None, _) => unlayered.push(from.clone()),
                (_, None) => unlayered.push(to.clone()),
                _ => {}
            }
        }
    }
    assert!(unlayered.is_empty(), "rooms missing from LAYERS: {unlayered:?}");
    assert!(up.is_empty(), "arrows pointing up a layer: {up:?}");
    assert_eq!(cycle(&arrows), None, "rooms importing each other");
}

#[test]
fn the_edge_imports_neither_the_process_nor_the_tools() {
    let mut bad = Vec::new();
    for file in files(&root().join("src/edge")) {
        if file.file_stem().is_some_and(|s| s.to_string_lossy().ends_with("_tests")) {
            continue;
        }
        for (n, first, _) in named(&std::fs::read_to_string(&file).unwrap()) {
            if first == "app" || first == "tools" {
                bad.push(format!("{}:{n}: crate::{first}", file.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn files_stay_readable_and_the_top_level_small() {
    let src = root().join("src");
    let top = std::fs::read_dir(&src).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count();
    assert!(top <= 12, "{top} files at the top of src/: give them a layer's folder");
    let long: Vec<String> = files(&src)
        .into_iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            (lines > 450).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over 450 lines: {long:?}");
}
