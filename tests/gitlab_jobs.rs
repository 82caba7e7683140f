//! GitLab's own job tokens (`$CI_JOB_TOKEN` of an unmodified pipeline) through a real `jobgate serve`,
//! with the GitLab API stand-in (`common/gitlab.rs`) answering `GET /api/v4/job`: the real git client
//! with the opaque token in the clone URL exactly as the runner writes it, and the lookup's caching,
//! single flight, budget and failure semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::gitlab::{GitLab, Job};
use common::net::Client;
use common::{git_command, Gateway, GitServer};

use common::POLICY;

fn job(id: u64, project_path: &'static str, project_id: u64) -> Job {
    Job { id, project_path, project_id, git_ref: "main", tag: false, user: (5, "ann") }
}

/// `https://gitlab-ci-token:TOKEN@host/project.git`, as the runner writes `CI_REPOSITORY_URL`.
fn runner_url(gw: &Gateway, token: &str, project: &str) -> String {
    format!("https://gitlab-ci-token:{token}@127.0.0.1:{}/{project}.git", gw.port)
}

#[test]
fn an_unmodified_pipelines_git_traffic_passes_with_its_ci_job_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = GitServer::start(d);
    for project in ["acme/app", "acme/lib", "acme/secret"] {
        git.create_repo(project);
    }
    let gitlab = GitLab::start();
    let (app, lib) = ("glcbt-64_AppJobToken_x9x9x9x9x9x9", "glcbt-64_LibJobToken_y8y8y8y8y8y8");
    gitlab.add(app, job(4200, "acme/app", 42));
    gitlab.add(lib, job(4300, "acme/lib", 43));
    let gw = Gateway::start_with_gitlab(
        d,
        &format!("git: {{ url: 'http://127.0.0.1:{}' }}", git.port),
        POLICY,
        &format!("url: '{}'", gitlab.url()),
        60,
        50,
        "",
    );
    let clone = |token: &str, project: &str, into: &str| {
        git_command(d, Some(&gw.ca))
            .args(["clone", "--quiet", &runner_url(&gw, token, project), into])
            .output()
            .unwrap()
    };

    let out = clone(app, "acme/app", "own");
    assert!(out.status.success(), "own project: {}", String::from_utf8_lossy(&out.stderr));
    let out = clone(lib, "acme/app", "admitted");
    assert!(out.status.success(), "admitted cross-project read: {}", String::from_utf8_lossy(&out.stderr));
    let out = clone(lib, "acme/secret", "refused");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not_in_allowlist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // GitLab's answer says nothing about protection: without a protected-ref lookup a job counts as
    // on an unprotected ref, so a grant that needs one does not apply.
    let work = d.join("admitted");
    std::fs::write(work.join("change.txt"), "from lib").unwrap();
    assert!(git_command(&work, None).args(["add", "change.txt"]).status().unwrap().success());
    assert!(git_command(&work, None).args(["commit", "--quiet", "-m", "lib change"]).status().unwrap().success());
    let push = git_command(&work, Some(&gw.ca))
        .args(["push", "--quiet", &runner_url(&gw, lib, "acme/app"), "HEAD:main"])
        .output()
        .unwrap();
    assert!(
        !push.status.success() && String::from_utf8_lossy(&push.stderr).contains("ref_not_protected"),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    assert!(gitlab.calls() <= 2, "one lookup per token, then the cache: {}", gitlab.calls());

    // A token GitLab does not know is refused, never passed on.
    let out = clone("glcbt-64_NoSuchJob_zzzzzzzzzzzz", "acme/app", "unknown");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("job_token_invalid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_push_passes_from_a_ref_gitlab_says_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = GitServer::start(d);
    git.create_repo("acme/app");
    std::fs::write(d.join("gitlab-token"), format!("{}\n", common::gitlab::API_TOKEN)).unwrap();
    let gitlab = GitLab::start();
    let (main, feature) = ("glcbt-64_LibMainPush_jjjjjjjjjjjj", "glcbt-64_LibFeaturePush_kkkkkkkkkk");
    gitlab.add(main, job(4310, "acme/lib", 43));
    gitlab.add(feature, Job { git_ref: "feature", ..job(4311, "acme/lib", 43) });
    gitlab.protect_branches(43, vec!["main"]);
    let fields = format!("url: '{}', api_token_file: gitlab-token", gitlab.url());
    let gw = Gateway::start_with_gitlab(
        d,
        &format!("git: {{ url: 'http://127.0.0.1:{}' }}", git.port),
        POLICY,
        &fields,
        60,
        50,
        "",
    );
    let out = git_command(d, Some(&gw.ca))
        .args(["clone", "--quiet", &runner_url(&gw, main, "acme/app"), "work"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let work = d.join("work");
    std::fs::write(work.join("change.txt"), "from lib").unwrap();
    assert!(git_command(&work, None).args(["add", "change.txt"]).status().unwrap().success());
    assert!(git_command(&work, None).args(["commit", "--quiet", "-m", "lib change"]).status().unwrap().success());
    let push = |token: &str| {
        git_command(&work, Some(&gw.ca))
            .args(["push", "--quiet", &runner_url(&gw, token, "acme/app"), "HEAD:main"])
            .output()
            .unwrap()
    };
    let out = push(feature);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("ref_not_protected"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = push(main);
    assert!(out.status.success(), "a job on a protected ref pushes: {}", String::from_utf8_lossy(&out.stderr));
    let bare = git.root.join("acme/app.git");
    let head = String::from_utf8_lossy(
        &git_command(&bare, None).args(["log", "-1", "--format=%s", "main"]).output().unwrap().stdout,
    )
    .trim()
    .to_owned();
    assert_eq!(head, "lib change", "the push arrived");
}

async fn gateway_with(cache_secs: u64, dir: &std::path::Path, gitlab: &GitLab) -> Arc<Gateway> {
    let upstream = format!("git: {{ url: 'http://127.0.0.1:{}' }}", common::echo_upstream());
    Arc::new(tokio::task::block_in_place(|| {
        Gateway::start_with_gitlab(dir, &upstream, POLICY, &format!("url: '{}'", gitlab.url()), cache_secs, 20, "")
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_are_cached_shared_budgeted_and_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = GitLab::start();
    let token = "glcbt-64_CachedJobToken_aaaaaaaa";
    gitlab.add(token, job(4201, "acme/app", 42));
    let gw = gateway_with(60, dir.path(), &gitlab).await;
    let client = Client::new(&gw.ca);
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");

    // 50 concurrent first requests with one token: one lookup.
    let first: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get_with(&url, "JOB-TOKEN", token).await.0 })
        })
        .collect();
    for request in first {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(gitlab.calls(), 1, "single flight");
    // 1,000 more: still one.
    for _ in 0..1000 {
        assert_eq!(client.get_with(&url, "JOB-TOKEN", token).await.0, 200);
    }
    assert_eq!(gitlab.calls(), 1, "cached");

    // GitLab down: the cached identity keeps working, a new token gets 503 with its reason.
    gitlab.set_down(true);
    assert_eq!(client.get_with(&url, "JOB-TOKEN", token).await.0, 200, "cached identity");
    let (status, body) = client.get_with(&url, "JOB-TOKEN", "glcbt-64_NewWhileDown_cccccccc").await;
    assert!(status == 503 && body.contains("gitlab_unavailable"), "{status}: {body}");
    let ready = common::admin_get(&gw, "/-/ready");
    assert!(ready.contains("\"gitlab\"") && ready.contains("GitLab answered 502"), "/-/ready shows it: {ready}");
    let metrics = common::admin_get(&gw, "/metrics");
    assert!(metrics.contains("jobgate_gitlab_lookups_total{outcome=\"unavailable\"} 1"), "{metrics}");
    gitlab.set_down(false);

    // 2,000 random tokens in a burst: at most the budget (20 a second) reaches GitLab; the rest get 503
    // with their own reason, and the known token keeps working throughout.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = gitlab.calls();
    let started = std::time::Instant::now();
    let mut over_budget = 0;
    for i in 0..2000 {
        let (status, body) = client.get_with(&url, "JOB-TOKEN", &format!("glcbt-64_random{i:06}_bbbbbbbb")).await;
        assert!(status == 401 || status == 503, "{status}: {body}");
        over_budget += usize::from(status == 503 && body.contains("gitlab_lookup_budget"));
        if i % 200 == 0 {
            assert_eq!(client.get_with(&url, "JOB-TOKEN", token).await.0, 200);
        }
    }
    // The budget's windows are wall-clock seconds: a burst of d seconds touches at most ceil(d) + 1.
    let (asked, elapsed) = (gitlab.calls() - before, started.elapsed().as_secs_f64());
    let windows = elapsed.ceil() as usize + 1;
    assert!(
        over_budget > 0 && asked <= 20 * windows,
        "{asked} lookups in {elapsed:.1} s ({windows} windows), {over_budget} over budget"
    );
}

/// One client flooding never-seen tokens spends at most half of the lookup budget a second, so
/// another client's new jobs are still looked up and admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_clients_random_tokens_do_not_starve_anothers_new_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = GitLab::start();
    let gw = gateway_with(60, dir.path(), &gitlab).await;
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    let flooder = Client::from_address(&gw.ca, Some("127.0.0.2".parse().unwrap()));
    let runner = Client::from_address(&gw.ca, Some("127.0.0.3".parse().unwrap()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let floods: Vec<_> = (0..4)
        .map(|t| {
            let (flooder, url, stop) = (flooder.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut refused = 0;
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let token = format!("glcbt-64_flood{t}x{i:06}_zzzzzzzz");
                    let (status, body) = flooder.get_with(&url, "JOB-TOKEN", &token).await;
                    refused += usize::from(status == 503 && body.contains("gitlab_lookup_budget"));
                }
                refused
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New jobs while the flood goes on, a few each second: every one is looked up and admitted.
    for j in 0..12 {
        let token = format!("glcbt-64_runnerjob{j:04}_yyyyyyyy");
        gitlab.add(&token, job(5000 + j, "acme/app", 42));
        let (status, body) = runner.get_with(&url, "JOB-TOKEN", &token).await;
        assert_eq!(status, 200, "new job {j} during the flood: {body}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for flood in floods {
        refused += flood.await.unwrap();
    }
    assert!(refused > 0, "the flood went over its share");
    let metrics = common::admin_get(&gw, "/metrics");
    assert!(metrics.contains("jobgate_gitlab_lookups_total{outcome=\"client_over_budget\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_token_dies_within_cache_secs() {
    let dir = tempfile::tempdir().unwrap();
    let gitlab = GitLab::start();
    let token = "glcbt-64_EndingJobToken_dddddddd";
    gitlab.add(token, job(4202, "acme/app", 42));
    let gw = gateway_with(1, dir.path(), &gitlab).await;
    let client = Client::new(&gw.ca);
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    assert_eq!(client.get_with(&url, "JOB-TOKEN", token).await.0, 200);
    gitlab.finish(token);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = client.get_with(&url, "JOB-TOKEN", token).await;
        if status == 401 {
            assert!(body.contains("job_token_invalid"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a finished job's token still works: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_token_protection_and_roles_come_from_gitlab() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gitlab-token"), format!("{}\n", common::gitlab::API_TOKEN)).unwrap();
    let gitlab = GitLab::start();
    let (on_main, on_feature, guest) =
        ("glcbt-64_LibOnMain_eeeeeeeeeeee", "glcbt-64_LibOnFeature_ffffffffff", "glcbt-64_GuestJob_gggggggggggg");
    gitlab.add(on_main, job(4301, "acme/lib", 43));
    gitlab.add(on_feature, Job { git_ref: "feature", ..job(4302, "acme/lib", 43) });
    gitlab.add(guest, Job { user: (6, "gus"), ..job(4401, "acme/secret", 44) });
    let reporter = "glcbt-64_ReporterOnMain_iiiiiiiiii";
    gitlab.add(reporter, Job { user: (8, "rita"), ..job(4303, "acme/lib", 43) });
    gitlab.member(42, 8, 20);
    gitlab.protect_branches(43, vec!["main", "release/*"]);
    gitlab.member(43, 5, 30);
    gitlab.member(44, 6, 10);
    let upstream = format!("git: {{ url: 'http://127.0.0.1:{}' }}", common::echo_upstream());
    let fields = format!("url: '{}', api_token_file: gitlab-token", gitlab.url());
    let gw =
        tokio::task::block_in_place(|| Gateway::start_with_gitlab(dir.path(), &upstream, POLICY, &fields, 60, 50, ""));
    let client = Client::new(&gw.ca);
    // acme/app grants acme/lib write_repository on protected refs only.
    let push = gw.url("/acme/app.git/info/refs?service=git-receive-pack");
    assert_eq!(client.get_with(&push, "JOB-TOKEN", on_main).await.0, 200, "main is protected in acme/lib");
    let (status, body) = client.get_with(&push, "JOB-TOKEN", on_feature).await;
    assert!(status == 403 && body.contains("ref_not_protected"), "{status}: {body}");
    // The user's role in the target is GitLab's too: a reporter in acme/app may not push there, whatever
    // acme/app grants acme/lib's jobs (user 5 is no member of acme/app: GitLab gives no role, the
    // policy's members none, so the grant alone decides above).
    let (status, body) = client.get_with(&push, "JOB-TOKEN", reporter).await;
    assert!(status == 403 && body.contains("user_ceiling"), "{status}: {body}");
    // The user's role in the job's own project is GitLab's: a guest may not even read the repository.
    let (status, body) =
        client.get_with(&gw.url("/acme/secret.git/info/refs?service=git-upload-pack"), "JOB-TOKEN", guest).await;
    assert!(status == 403 && body.contains("user_ceiling"), "{status}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_events_webhook_kills_a_gitlab_job_token_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhook-secret"), "hook-s3cret\n").unwrap();
    let gitlab = GitLab::start();
    let token = "glcbt-64_WebhookJobToken_hhhhhhhh";
    gitlab.add(token, job(4203, "acme/app", 42));
    let upstream = format!("git: {{ url: 'http://127.0.0.1:{}' }}", common::echo_upstream());
    let fields = format!("url: '{}'", gitlab.url());
    let extra = "admin: { webhook_secret_file: webhook-secret }";
    let gw = tokio::task::block_in_place(|| {
        Gateway::start_with_gitlab(dir.path(), &upstream, POLICY, &fields, 600, 50, extra)
    });
    let client = Client::new(&gw.ca);
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    assert_eq!(client.get_with(&url, "JOB-TOKEN", token).await.0, 200);
    // GitLab still answers for the job (its answer is cached for 10 minutes), but the job has ended.
    let hook = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "X-Gitlab-Event: Job Hook",
            "-H",
            "X-Gitlab-Token: hook-s3cret",
        ])
        .args(["--data-binary", r#"{"object_kind":"build","build_id":4203,"build_status":"success","project_id":42}"#])
        .arg(format!("http://127.0.0.1:{}/-/hooks/gitlab", gw.admin_port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hook.stdout), "200");
    let (status, body) = client.get_with(&url, "JOB-TOKEN", token).await;
    assert!(status == 401 && body.contains("token_revoked"), "{status}: {body}");
    assert_eq!(gitlab.calls(), 1, "no second lookup was needed");
}
