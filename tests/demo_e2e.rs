//! `jobgate demo` as a user runs it: start it, then run the commands it prints (real git).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{git_command, run, Process};

#[test]
fn the_demo_walkthrough_behaves_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobgate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--dir"])
        .arg(&demo_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _process = Process { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut commands = Vec::new();
    let mut curls = Vec::new();
    let mut ready = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if line.contains("jobgate demo is serving") {
            ready = line.clone();
        }
        let line = line.trim();
        if line.starts_with("git ") {
            commands.push(line.to_owned());
        }
        if line.starts_with("curl -s --cacert") && (line.contains("JOB-TOKEN") || line.contains("gitlab-ci-token")) {
            curls.push(line.to_owned());
        }
        if line.starts_with("tail ") {
            break;
        }
    }
    assert!(!ready.is_empty(), "the demo did not start");
    assert_eq!(commands.len(), 7, "{commands:?}");

    let env: Vec<(String, String)> = std::fs::read_to_string(demo_dir.join("tokens.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let ca = env.iter().find(|(k, _)| k == "JOBGATE_CA").map(|(_, v)| v.clone()).unwrap();
    let expand = |s: &str| env.iter().fold(s.to_owned(), |acc, (k, v)| acc.replace(&format!("${k}"), v));
    let work = std::env::temp_dir().join("jobgate-demo-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    // Expected: clone own ok, clone admitted ok, clone secret refused, commit ok, push refused, push ok,
    // clone with GitLab's opaque job token ok.
    let expected = [true, true, false, true, false, true, true];
    for (command, want) in commands.iter().zip(expected) {
        let words: Vec<String> = command.split(' ').map(expand).collect();
        let out = run(git_command(dir.path(), Some(ca.as_ref())).args(&words[1..]));
        assert_eq!(out.status.success(), want, "{command}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The package and API examples answer as their comments say.
    assert_eq!(curls.len(), 8, "{curls:?}");
    for line in &curls {
        let (command, comment) = line.split_once('#').unwrap();
        let want = if comment.contains("denied") { "403" } else { "200" };
        let out = Command::new("sh")
            .args(["-c", &format!("{command} -o /dev/null -w '%{{http_code}}'")])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{line}");
    }
    let audit = std::fs::read_to_string(demo_dir.join("audit.log")).unwrap();
    assert!(audit.contains("\"not_in_allowlist\"") && audit.contains("\"ref_not_protected\""), "{audit}");
}
