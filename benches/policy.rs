//! The policy engine at scale: a generated policy of 100,000 projects under 10,000 groups (nesting
//! down to depth 6, some with elevation off or members) with 200 allowlist entries on each of the 100
//! busiest projects, split over 10 files. Measures loading the folder and swapping the snapshot in, and
//! `decide` on the busiest project for a job matched through a deep group. Prints the resident memory
//! the loaded policy adds.
//!
//! Run: `cargo bench --bench policy`.
//!
//! Results, 2026-11-22, 2-core shared x86_64 VM (rust 1.95, release), criterion medians:
//!   load 10 files (100k projects, 10k groups, ~40k entries) + swap     1.06 s   (target < 2 s)
//!   decide, busiest project (200 entries), source in a deep group      686 ns   (target < 1 µs)
//!   decide, source not admitted                                        362 ns
//!   resident memory of the loaded policy                               +80 MiB (~0.8 KiB per project)
//!
//! 2026-12-01, two runs alternating with 584b9b8 in one session (after issue 10's restructuring):
//!   load + swap 634 / 701 ms → 741 / 638 ms (1.03, noise); decide busiest 327 / 351 ns → 305 / 322 ns;
//!   not admitted 240 / 253 ns → 221 / 211 ns.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a bench fixture may fail loudly

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jobgate::classify::{Action, Classified, Family, ProjectRef, Target};
use jobgate::path::ProjectPath;
use jobgate::policy::{decide, Decision, Policy};
use jobgate::scope::Scope;
use jobgate::snapshot::Snapshot;
use jobgate::token::claims::Claims;

const GROUPS_PER_LEVEL: [usize; 6] = [10, 100, 1000, 8000, 800, 90];
const PROJECTS: usize = 100_000;
const BUSY: usize = 100;
const BUSY_ENTRIES: usize = 200;
const FILES: usize = 10;

/// Group paths, level by level; each group's parent is in the level above.
fn groups() -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let mut above: Vec<String> = Vec::new();
    for (level, count) in GROUPS_PER_LEVEL.iter().enumerate() {
        let this: Vec<String> = (0..*count)
            .map(
                |i| if above.is_empty() { format!("g{i}") } else { format!("{}/l{level}n{i}", above[i % above.len()]) },
            )
            .collect();
        all.extend(this.iter().cloned());
        above = this;
    }
    all
}

fn project(groups: &[String], i: usize) -> String {
    format!("{}/p{i}", groups[(i * 7919) % groups.len()])
}

fn write_policy(dir: &Path) -> (String, String) {
    let groups = groups();
    let mut files = vec![String::new(); FILES];
    files[0].push_str("groups:\n");
    for (i, g) in groups.iter().enumerate() {
        let extra = match i % 50 {
            7 => " elevation: false ",
            1 => " members: [{ user: ann, role: developer }] ",
            _ => "",
        };
        writeln!(files[0], "  {g}: {{{extra}}}").unwrap();
    }
    for (f, text) in files.iter_mut().enumerate() {
        text.push_str("projects:\n");
        for i in (f..PROJECTS).step_by(FILES) {
            let _ = writeln!(text, "  {}:\n    id: {}", project(&groups, i), i + 1);
            let entries = if i < BUSY {
                BUSY_ENTRIES
            } else if i % 10 == 0 {
                2
            } else {
                0
            };
            if entries > 0 {
                text.push_str("    allow:\n");
                for e in 0..entries {
                    let from = if e % 2 == 0 {
                        project(&groups, (i + e * 31) % PROJECTS)
                    } else {
                        groups[(i + e * 17) % groups.len()].clone()
                    };
                    let _ = writeln!(text, "      - {{ from: {from}, scopes: [write_repository], refs: protected }}");
                }
            }
        }
    }
    for (f, text) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("policy-{f:02}.yaml")), text).unwrap();
    }
    // The busiest project, and a job source below a deep group that one of its entries names.
    let target = project(&groups, 0);
    let deep_group = groups[(17) % groups.len()].clone();
    (target, format!("{deep_group}/sub/job-project"))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn claims(source: &str) -> Claims {
    Claims {
        user_id: Some(5),
        user_login: Some("ann".into()),
        ref_type: Some("branch".into()),
        ref_protected: true,
        ..Claims::job("i", ProjectPath::parse(source).unwrap(), 1_000_000, 1, i64::MAX / 4)
    }
}

fn policy_at_scale(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (target, source) = write_policy(dir.path());
    let before = rss_kib();
    let policy = Policy::load_dir(dir.path()).unwrap();
    let after = rss_kib();
    eprintln!(
        "policy: {} projects, {} groups, {} files; resident memory +{} MiB",
        policy.projects.len(),
        policy.groups.len(),
        policy.files.len(),
        (after.saturating_sub(before)) / 1024
    );
    let request = Classified {
        family: Family::Git,
        target: Target::Project(ProjectRef::Path(ProjectPath::parse(&target).unwrap())),
        action: Action::Write,
        scope: Scope::WriteRepository,
        destructive: false,
    };
    let job = claims(&source);
    let decision = decide(&policy, &request, &job);
    assert!(matches!(decision, Decision::Allow(_)), "{decision:?}");
    let stranger = claims("nowhere/else");
    assert!(matches!(decide(&policy, &request, &stranger), Decision::Deny(_)));

    let live = ArcSwap::from_pointee(Snapshot::new(policy, Vec::new(), 1));
    let mut group = c.benchmark_group("policy_100k");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function("load_and_swap", |b| {
        b.iter(|| {
            let policy = Policy::load_dir(dir.path()).unwrap();
            live.store(Arc::new(Snapshot::new(policy, Vec::new(), 2)));
        })
    });
    group.finish();
    let snapshot = live.load_full();
    c.bench_function("decide_busiest_project", |b| {
        b.iter(|| decide(&snapshot.policy, black_box(&request), black_box(&job)))
    });
    c.bench_function("decide_not_admitted", |b| {
        b.iter(|| decide(&snapshot.policy, black_box(&request), black_box(&stranger)))
    });
}

criterion_group!(benches, policy_at_scale);
criterion_main!(benches);
