//! Three jobgate replicas sharing revocations through a real `redis-server` (AOF, fsync always),
//! their admin listeners behind one address (a round-robin TCP balancer, as a Kubernetes Service
//! is): a revocation that reaches one replica is enforced by all three within a second; none is lost
//! when a replica is killed mid-burst or Redis restarts; a replica cut off from Redis keeps enforcing
//! what it has, queues what it revokes, and reports not ready after the bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_types)] // std Mutex between the harness's own threads, no request path here

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{admin_get, admin_status, curl, echo_upstream, Gateway, Process};

const POLICY: &str = "projects:\n  acme/app: { id: 42 }\n";
const ADMIN_TOKEN: &str = "admin-s3cret";
const HOOK_SECRET: &str = "hook-s3cret";

/// redis-server with an append-only file fsynced on every write, restartable on its port.
struct Redis {
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let (port, process) = common::serve_on_free_port(|port| Redis::command(dir, port));
        Redis { port, dir: dir.to_owned(), process: Some(process) }
    }

    fn command(dir: &Path, port: u16) -> Command {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null());
        command
    }

    /// Kills it (no shutdown, no final save) and starts it again on the same port and files.
    fn restart(&mut self, down_for: Duration) {
        drop(self.process.take());
        std::thread::sleep(down_for);
        self.process = Some(Process::spawn(&mut Redis::command(&self.dir, self.port)));
        wait_until("redis listens again", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn members(&self) -> usize {
        let out = common::run(Command::new("redis-cli").args(["-p", &self.port.to_string(), "ZCARD", "t:revocations"]));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }
}

/// A TCP balancer: each accepted connection goes to the next backend in turn. `cut` closes every
/// open connection and refuses new ones until `restore`.
struct Balancer {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Balancer {
    fn start(backends: Vec<u16>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, open) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (cut_flag, open_list, next) = (cut.clone(), open.clone(), AtomicUsize::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if cut_flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let backend = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()];
                let Ok(server) = TcpStream::connect(("127.0.0.1", backend)) else { continue };
                let mut list = open_list.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Balancer { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

/// One HTTP/1.1 POST with a JSON body to a loopback port; the status, or 0 when the connection failed.
fn post(port: u16, path: &str, headers: &[String], body: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn revoke(port: u16, job: u64) -> u16 {
    post(port, "/-/revocations", &[format!("Authorization: Bearer {ADMIN_TOKEN}")], &format!("{{\"job_id\": {job}}}"))
}

fn job_hook(port: u16, job: u64) -> u16 {
    let body = format!(r#"{{"object_kind":"build","build_id":{job},"build_status":"success","project_id":42}}"#);
    post(port, "/-/hooks/gitlab", &["X-Gitlab-Event: Job Hook".into(), format!("X-Gitlab-Token: {HOOK_SECRET}")], &body)
}

/// The job ids a replica holds as revoked.
fn revoked_jobs(gw: &Gateway) -> HashSet<u64> {
    let listed: serde_json::Value = serde_json::from_str(&admin_get_body(gw, "/-/revocations")).unwrap();
    listed["revocations"].as_array().unwrap().iter().filter_map(|r| r["job_id"].as_u64()).collect()
}

fn admin_get_body(gw: &Gateway, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", gw.admin_port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// A replica in `dir` (sharing `keys` with the others) following Redis at `redis_port`.
fn replica(dir: &Path, keys: &Path, redis_port: u16, upstream: u16) -> Gateway {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for file in ["signing-key.pem", "jwks.json"] {
        std::fs::copy(keys.join(file), dir.join("keys").join(file)).unwrap();
    }
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
    std::fs::write(dir.join("webhook-secret"), HOOK_SECRET).unwrap();
    let extra = format!(
        "admin: {{ token_file: admin-token, webhook_secret_file: webhook-secret }}\nrevocations: {{ redis: {{ url: 'redis://127.0.0.1:{redis_port}', key_prefix: t, unready_after_secs: 2 }} }}"
    );
    Gateway::start_with(dir, &format!("url: 'http://127.0.0.1:{upstream}'"), POLICY, &extra)
}

/// Fields drop in order: the replicas stop before Redis does.
struct Cluster {
    replicas: Vec<Gateway>,
    redis: Redis,
    upstream: u16,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(redis_ports: impl Fn(u16) -> [u16; 3]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let redis = Redis::start(&root.join("redis"));
        let upstream = echo_upstream();
        Gateway::issuer_key(&root.join("issuer"));
        let ports = redis_ports(redis.port);
        let replicas = ["a", "b", "c"]
            .iter()
            .zip(ports)
            .map(|(name, port)| replica(&root.join(name), &root.join("issuer/keys"), port, upstream))
            .collect();
        Cluster { replicas, redis, upstream, root, _dir: dir }
    }

    fn admin_balancer(&self) -> Balancer {
        Balancer::start(self.replicas.iter().map(|r| r.admin_port).collect())
    }

    fn status(&self, replica: usize, token: &str) -> u16 {
        let gw = &self.replicas[replica];
        curl(gw, &["-H", &format!("JOB-TOKEN: {token}"), &gw.url("/acme/app.git/info/refs?service=git-upload-pack")]).0
    }
}

#[test]
fn a_webhook_to_one_replica_revokes_on_all_three_within_a_second() {
    let cluster = Cluster::start(|port| [port; 3]);
    let balancer = cluster.admin_balancer();
    let token = cluster.replicas[0].token("acme/app", 42, false); // job 1042
    for replica in 0..3 {
        assert_eq!(cluster.status(replica, &token), 200, "replica {replica} accepts (and caches) the token");
        assert_eq!(
            admin_status(&cluster.replicas[replica], "/-/ready"),
            200,
            "{}",
            admin_get(&cluster.replicas[replica], "/-/ready")
        );
    }
    assert_eq!(job_hook(balancer.port, 1042), 200);
    for replica in 0..3 {
        let took = wait_until("every replica refuses the finished job's token", Duration::from_secs(1), || {
            cluster.status(replica, &token) == 401
        });
        eprintln!("replica {replica} refused within {took:?}");
    }
    assert_eq!(cluster.redis.members(), 1);

    // A replica that starts later replays the set from Redis.
    let late =
        replica(&cluster.root.join("d"), &cluster.root.join("issuer/keys"), cluster.redis.port, cluster.upstream);
    assert!(revoked_jobs(&late).contains(&1042), "{}", admin_get(&late, "/-/ready"));
    let (status, _) = curl(
        &late,
        &["-H", &format!("JOB-TOKEN: {token}"), &late.url("/acme/app.git/info/refs?service=git-upload-pack")],
    );
    assert_eq!(status, 401);

    // Propagation over 1,000 revocations, one after the other: acknowledged by replica a, applied
    // by replica c (its received counter passes the revocation's place; the channel keeps order).
    let (a, c) = (&cluster.replicas[0], &cluster.replicas[2]);
    let received = |gw: &Gateway| -> usize {
        let metrics = admin_get(gw, "/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("jobgate_revocations_received_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let base = received(c);
    let applied: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (applied, done, c_admin) = (applied.clone(), done.clone(), c.admin_port);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let mut stream = TcpStream::connect(("127.0.0.1", c_admin)).unwrap();
                write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                let mut text = String::new();
                stream.read_to_string(&mut text).unwrap();
                let now = Instant::now();
                let count: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("jobgate_revocations_received_total "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut applied = applied.lock().unwrap();
                while applied.len() < count.saturating_sub(base).min(1000) {
                    applied.push(now);
                }
            }
        })
    };
    let mut acked = Vec::with_capacity(1000);
    for i in 0..1000u64 {
        assert_eq!(revoke(a.admin_port, 100_000 + i), 200);
        acked.push(Instant::now());
    }
    wait_until("replica c applied all 1,000", Duration::from_secs(5), || applied.lock().unwrap().len() == 1000);
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let mut latencies: Vec<Duration> = applied
        .lock()
        .unwrap()
        .iter()
        .zip(&acked)
        .map(|(applied, acked)| applied.saturating_duration_since(*acked))
        .collect();
    latencies.sort();
    let (p50, p99) = (latencies[500], latencies[990]);
    eprintln!("propagation a → c over 1,000 revocations: p50 {p50:?}, p99 {p99:?}, max {:?} (upper bounds: one /metrics poll of c is added)", latencies[999]);
    assert!(revoked_jobs(c).contains(&100_999));
    // Seconds passed and pings went by: no replica ever lost its link.
    for gw in &cluster.replicas {
        let ready: serde_json::Value = serde_json::from_str(&admin_get_body(gw, "/-/ready")).unwrap();
        let shared = &ready["sources"]["revocations"]["shared"];
        assert_eq!((shared["connected"].as_bool(), shared["last_error"].as_str()), (Some(true), None), "{ready:#}");
    }
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

#[test]
fn kill_9_during_a_burst_and_a_redis_restart_lose_no_acknowledged_revocation() {
    let mut cluster = Cluster::start(|port| [port; 3]);
    let balancer = cluster.admin_balancer();
    let acknowledged: Arc<Mutex<Vec<u64>>> = Arc::default();
    let burst = |from: u64, count: u64, acknowledged: Arc<Mutex<Vec<u64>>>, port: u16| {
        std::thread::spawn(move || {
            for job in from..from + count {
                if revoke(port, job) == 200 {
                    acknowledged.lock().unwrap().push(job);
                }
            }
        })
    };
    // A burst through the balancer; replica b is killed (SIGKILL) in the middle of it.
    let sender = burst(1, 300, acknowledged.clone(), balancer.port);
    wait_until("the burst is under way", Duration::from_secs(10), || acknowledged.lock().unwrap().len() >= 50);
    let killed = cluster.replicas.remove(1);
    killed.kill();
    sender.join().unwrap();
    let acked: HashSet<u64> = acknowledged.lock().unwrap().iter().copied().collect();
    assert!(acked.len() >= 150 && acked.len() < 300, "some went to the killed replica: {} acknowledged", acked.len());
    for gw in &cluster.replicas {
        wait_until("the survivors hold every acknowledged revocation", Duration::from_secs(2), || {
            acked.is_subset(&revoked_jobs(gw))
        });
    }

    // Redis is killed and restarted from its append-only file; revocations made meanwhile are queued.
    cluster.redis.restart(Duration::from_millis(500));
    let during: Vec<u64> = (1000..1020).filter(|job| revoke(cluster.replicas[0].admin_port, *job) == 200).collect();
    assert_eq!(during.len(), 20);
    let all: HashSet<u64> = acked.iter().copied().chain(during.iter().copied()).collect();
    for gw in &cluster.replicas {
        wait_until("every revocation reaches every replica after the restart", Duration::from_secs(5), || {
            all.is_subset(&revoked_jobs(gw))
        });
    }
    wait_until("Redis holds them all", Duration::from_secs(5), || cluster.redis.members() >= all.len());
    // A replica started now replays them from Redis alone.
    let late =
        replica(&cluster.root.join("e"), &cluster.root.join("issuer/keys"), cluster.redis.port, cluster.upstream);
    let replayed = revoked_jobs(&late);
    assert!(all.is_subset(&replayed), "{} of {} replayed", all.intersection(&replayed).count(), all.len());
}

#[test]
fn a_replica_cut_off_from_redis_keeps_enforcing_queues_and_goes_not_ready() {
    // Replica c reaches Redis through a link the test can cut.
    let link: Mutex<Option<Balancer>> = Mutex::new(None);
    let cluster = Cluster::start(|port| {
        let cuttable = Balancer::start(vec![port]);
        let through = cuttable.port;
        *link.lock().unwrap() = Some(cuttable);
        [port, port, through]
    });
    let link = link.into_inner().unwrap().unwrap();
    let c = &cluster.replicas[2];
    let token = c.token("acme/app", 42, false);
    assert_eq!(revoke(cluster.replicas[0].admin_port, 1042), 200);
    wait_until("c holds the revocation", Duration::from_secs(1), || cluster.status(2, &token) == 401);

    link.cut();
    wait_until("c reports not ready after unready_after_secs (2 s)", Duration::from_secs(8), || {
        admin_status(c, "/-/ready") == 503
    });
    assert_eq!(cluster.status(2, &token), 401, "c keeps enforcing what it holds");
    assert!(admin_get(c, "/-/ready").contains("\"connected\": false"), "{}", admin_get(c, "/-/ready"));
    assert_eq!(revoke(c.admin_port, 7777), 200, "c revokes locally while cut off");
    assert!(revoked_jobs(c).contains(&7777));
    assert!(admin_get(c, "/metrics").contains("jobgate_revocations_queued 1"), "{}", admin_get(c, "/metrics"));
    assert!(!revoked_jobs(&cluster.replicas[0]).contains(&7777), "a cannot know yet");

    link.restore();
    wait_until("c's queued revocation reaches a", Duration::from_secs(8), || {
        revoked_jobs(&cluster.replicas[0]).contains(&7777)
    });
    wait_until("c is ready again", Duration::from_secs(5), || admin_status(c, "/-/ready") == 200);
}

#[test]
fn a_second_process_on_one_revocations_file_refuses_to_start_and_the_file_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let extra = "admin: { token_file: admin-token }\nrevocations: { file: revocations.log }";
    let first = Gateway::start_with(dir.path(), &format!("url: 'http://127.0.0.1:{}'", echo_upstream()), POLICY, extra);
    assert_eq!(revoke(first.admin_port, 1042), 200);
    let file = dir.path().join("revocations.log");
    let before = std::fs::read(&file).unwrap();
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_jobgate")).args(["serve", "--config"]).arg(dir.path().join("jobgate.yaml")),
    );
    let text = common::output_text(&out);
    assert!(!out.status.success() && text.contains("in use by another jobgate process"), "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "the second process left the file alone");
    assert_eq!(revoke(first.admin_port, 1043), 200);
    assert!(std::fs::read_to_string(&file).unwrap().contains("1043"), "the first keeps appending to the same file");
}

/// GitLab's own job tokens: the first replica that sees a token asks GitLab, the others take its
/// answer from Redis; the answer's deadline does not move, and a finished job's webhook reaches all.
#[test]
fn replicas_ask_gitlab_once_per_token_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let redis = Redis::start(&root.join("redis"));
    let gitlab = common::gitlab::GitLab::start();
    let token = "glcbt-64_SharedJobToken_z7z7z7z7z7";
    gitlab.add(
        token,
        common::gitlab::Job {
            id: 4242,
            project_path: "acme/app",
            project_id: 42,
            git_ref: "main",
            tag: false,
            user: (5, "ann"),
        },
    );
    let upstream = echo_upstream();
    let replicas: Vec<Gateway> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let d = root.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("admin-token"), ADMIN_TOKEN).unwrap();
            std::fs::write(d.join("webhook-secret"), HOOK_SECRET).unwrap();
            std::fs::write(d.join("answers-key"), "the replicas' shared answers secret, 32+ bytes").unwrap();
            let extra = format!(
                "admin: {{ token_file: admin-token, webhook_secret_file: webhook-secret }}\nrevocations: {{ redis: {{ url: 'redis://127.0.0.1:{}', key_prefix: t, answers_key_file: answers-key }} }}",
                redis.port
            );
            Gateway::start_with_gitlab(&d, &format!("git: {{ url: 'http://127.0.0.1:{upstream}' }}"), POLICY, &format!("url: '{}'", gitlab.url()), 60, 50, &extra)
        })
        .collect();
    let status = |gw: &Gateway| {
        curl(gw, &["-H", &format!("JOB-TOKEN: {token}"), &gw.url("/acme/app.git/info/refs?service=git-upload-pack")]).0
    };
    let before = gitlab.calls();
    for gw in &replicas {
        assert_eq!(status(gw), 200);
    }
    assert_eq!(gitlab.calls() - before, 1, "one lookup at GitLab for three replicas");
    for gw in &replicas[1..] {
        assert!(
            admin_get(gw, "/metrics").contains("jobgate_gitlab_lookups_total{outcome=\"shared\"} 1"),
            "{}",
            admin_get(gw, "/metrics")
        );
    }
    // An answer written into Redis by anyone but a replica is not believed: GitLab is asked (and
    // refuses the made-up token).
    let forged = "glcbt-64_ForgedJobToken_f0f0f0f0f0";
    let digest: String = jobgate::token::cache::sha256(forged.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let body = format!("{}{} 200\n{}", "x".repeat(32), jobgate::clock::unix_now() + 600, gitlab.job_body(token));
    let out = common::run(Command::new("redis-cli").args([
        "-p",
        &redis.port.to_string(),
        "SET",
        &format!("t:gitlab-job:{digest}"),
        &body,
    ]));
    assert!(out.status.success(), "{}", common::output_text(&out));
    let forged_status = curl(
        &replicas[2],
        &["-H", &format!("JOB-TOKEN: {forged}"), &replicas[2].url("/acme/app.git/info/refs?service=git-upload-pack")],
    )
    .0;
    assert_eq!(forged_status, 401);
    assert!(admin_get(&replicas[2], "/metrics").contains("jobgate_gitlab_lookups_total{outcome=\"shared_unsealed\"} 1"));

    gitlab.finish(token);
    assert_eq!(job_hook(replicas[1].admin_port, 4242), 200);
    for gw in &replicas {
        wait_until("the finished job's token is refused everywhere", Duration::from_secs(1), || status(gw) == 401);
    }
}
