//! `jobgate demo` as a user runs it: start it, then run the commands it prints (real git).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Process;

#[test]
fn the_demo_walkthrough_behaves_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    // The demo runs git http-backend for each Git request: its process group goes with it.
    let mut process = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_jobgate"))
            .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--dir"])
            .arg(&demo_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let stdout = process.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Every command the demo prints after "in another shell:", as printed.
    let mut printed = Vec::new();
    let mut ready = String::new();
    let mut listing = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if line.contains("jobgate demo is serving") {
            ready = line.clone();
        }
        listing |= line.contains("in another shell:");
        let line = line.trim();
        if listing
            && !line.is_empty()
            && !line.starts_with('#')
            && !line.starts_with('(')
            && !line.contains("in another shell")
        {
            printed.push(line.to_owned());
        }
        if line.contains("/-/decisions?") {
            break;
        }
    }
    assert!(!ready.is_empty(), "the demo did not start");
    let (setup, commands) = (&printed[0], &printed[1..]);
    assert!(setup.starts_with("source ") && setup.ends_with("export GIT_SSL_CAINFO=$JOBGATE_CA"), "{printed:?}");

    // A newcomer's shell: the system PATH, nothing from cargo's target folder; git with a clean home.
    let path: Vec<String> =
        std::env::var("PATH").unwrap().split(':').filter(|p| !p.contains("target")).map(str::to_owned).collect();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let shell = |command: &str| {
        let script = format!("{setup}\n{command}");
        Command::new("bash")
            .args(["-c", &script])
            .env("PATH", path.join(":"))
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("CURL_CA_BUNDLE")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert!(commands[0].starts_with("rm -rf ") && shell(&commands[0]).status.success(), "{printed:?}");
    let commands = &commands[1..];

    // git: clone own ok, clone admitted ok, clone secret refused, commit ok, push refused, push ok,
    // clone with GitLab's opaque job token ok.
    let git: Vec<&String> = commands.iter().filter(|c| c.starts_with("git ")).collect();
    let expected = [true, true, false, true, false, true, true];
    assert_eq!(git.len(), expected.len(), "{git:?}");
    for (command, want) in git.iter().zip(expected) {
        let out = shell(command);
        assert_eq!(out.status.success(), want, "{command}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The package, API, LFS and registry examples answer as their comments say.
    let curls: Vec<&String> = commands.iter().filter(|c| c.starts_with("curl -s --cacert")).collect();
    assert_eq!(curls.len(), 8, "{curls:?}");
    for line in &curls {
        let (command, comment) = line.split_once('#').unwrap();
        let want = if comment.contains("denied") { "403" } else { "200" };
        let out = shell(&format!("{command} -o /dev/null -w '%{{http_code}}'"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{line}");
    }
    // explain, metrics, reload, the audit tail, the decision view: each works as printed.
    let rest: Vec<&String> =
        commands.iter().filter(|c| !c.starts_with("git ") && !c.starts_with("curl -s --cacert")).collect();
    assert_eq!(rest.len(), 5, "{rest:?}");
    let outputs: Vec<(bool, String)> = rest
        .iter()
        .map(|command| {
            let out = shell(command);
            (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        })
        .collect();
    assert!(
        !outputs[0].0 && outputs[0].1.contains("decision: deny (ref_not_protected)"),
        "{}: {}",
        rest[0],
        outputs[0].1
    );
    assert!(outputs[1].0 && outputs[1].1.contains("jobgate_requests_total{"), "{}: {}", rest[1], outputs[1].1);
    assert!(outputs[2].0 && outputs[2].1.contains("\"reloaded\": true"), "{}: {}", rest[2], outputs[2].1);
    assert!(outputs[3].0 && outputs[3].1.lines().count() == 5, "{}: {}", rest[3], outputs[3].1);
    assert!(outputs[4].0 && outputs[4].1.trim() == "demo/lib → demo/secret", "{}: {}", rest[4], outputs[4].1);
    let audit = std::fs::read_to_string(demo_dir.join("audit.log")).unwrap();
    assert!(audit.contains("\"not_in_allowlist\"") && audit.contains("\"ref_not_protected\""), "{audit}");
}
