//! The security regression suite, by class of bypass (issue 11): token kind × family, credential
//! locations × credential modes × `non_job`, LFS batch routes, bodies before authentication, HEAD
//! refusals, mounts, id/path mismatches, jobgate's own credential on undecided targets. Every case
//! runs the real pipeline in-process (`Gateway::handle`) against an upstream that records exactly
//! what it received, and asserts both the answer and what reached the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use jobgate::clock::unix_now;
use jobgate::config::{AuditSink, Limits, NonJob, Timeouts, Upstreams};
use jobgate::edge::body::Body;
use jobgate::edge::gateway::{BodyPeek, Gateway, GatewayParts};
use jobgate::edge::upstream::Upstream;
use jobgate::enforce::NonJobRules;
use jobgate::infra::audit::Audit;
use jobgate::infra::metrics::Metrics;
use jobgate::policy::Policy;
use jobgate::snapshot::Snapshot;
use jobgate::token::keys::{KeySet, KeyState};
use jobgate::token::mint::{JobClaims, Signer};
use jobgate::token::registry::Access;
use jobgate::token::registry::RegistryTokens;
use jobgate::token::verify::{Issuer, Verifier};
use jobgate::token::Alg;
use tokio::sync::Mutex;

const ISSUER: &str = "https://gitlab.example.com";
use common::POLICY;

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Fixture {
    gateway: Gateway,
    seen: Arc<Mutex<Vec<Seen>>>,
    signer: Signer,
    _dir: tempfile::TempDir,
}

async fn recording_upstream(seen: Arc<Mutex<Vec<Seen>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let headers = parts
                            .headers
                            .iter()
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        seen.lock().await.push(Seen { target: parts.uri.to_string(), headers, body });
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"upstream"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A gateway whose every family goes to one recording upstream in `mode`, with `non_job` everywhere.
async fn fixture(mode: &str, non_job: NonJob, limits: Limits, timeouts: Timeouts) -> Fixture {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = recording_upstream(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("service-token"), "jobgate-service-secret").unwrap();
    let replace =
        format!(", replace: {{ header: PRIVATE-TOKEN, value_file: '{}' }}", dir.path().join("service-token").display());
    let upstream = format!(
        "{{ url: 'http://{upstream}', credentials: {mode}{} }}",
        if mode == "replace" { replace.as_str() } else { "" }
    );
    let upstreams: Upstreams = serde_yaml::from_str(&format!(
        "{{ git: {upstream}, lfs: {upstream}, registry: {upstream}, packages: {upstream}, api: {upstream} }}"
    ))
    .unwrap();
    let (signer, _) = Signer::generate(Alg::ES256).unwrap();
    let keys = KeySet::from_jwks("test", signer.jwks("k").to_string().as_bytes()).unwrap();
    let issuer = Issuer {
        name: "ci".into(),
        iss: ISSUER.into(),
        audiences: vec!["jobgate".into()],
        algorithms: vec![Alg::ES256],
        leeway: 30,
        max_lifetime: 7200,
        keys: KeyState::fixed(keys),
    };
    let (_, pem) = Signer::generate(Alg::RS256).unwrap();
    std::fs::write(dir.path().join("registry.pem"), pem).unwrap();
    let registry =
        RegistryTokens::load(&dir.path().join("registry.pem"), "jobgate", "container_registry", 300).unwrap();
    let metrics = Arc::new(Metrics::new());
    let snapshot = Snapshot::new(Policy::from_yaml(std::path::Path::new("p.yaml"), POLICY).unwrap(), Vec::new(), 1);
    let audit_sink = AuditSink { file: Some(dir.path().join("audit.log")) };
    let audit = Audit::start(&audit_sink, metrics.audit_dropped.clone()).await.unwrap();
    let upstreams = Upstream::for_families(&upstreams, &metrics).unwrap();
    let verifier = Verifier::new(vec![issuer], 8192, 1000);
    let gateway = Gateway::new(GatewayParts {
        registry: Some(registry),
        non_job: NonJobRules::uniform(non_job),
        peek: BodyPeek::new(&limits, &timeouts),
        ..GatewayParts::new(snapshot, verifier, upstreams, audit, metrics)
    });
    Fixture { gateway, seen, signer, _dir: dir }
}

async fn default_fixture(mode: &str, non_job: NonJob) -> Fixture {
    fixture(mode, non_job, Limits::default(), Timeouts::default()).await
}

impl Fixture {
    fn token(&self, project: &str, id: u64, protected: bool, extra: Vec<(String, serde_json::Value)>) -> String {
        let claims = JobClaims {
            iss: ISSUER.into(),
            aud: "jobgate".into(),
            project_path: project.into(),
            project_id: id,
            user_id: 5,
            job_id: 900 + id,
            pipeline_id: 7,
            git_ref: "main".into(),
            ref_protected: protected,
            ttl_secs: 3600,
            scopes: None,
            extra,
        };
        self.signer.sign("k", &claims.payload(unix_now())).unwrap()
    }

    fn registry_token(&self, job_token: &str, image: &str, actions: &[&str]) -> String {
        let claims = self.gateway.verifier().verify(job_token, unix_now()).unwrap().claims.claims().clone();
        let access = if actions.is_empty() {
            vec![]
        } else {
            vec![Access {
                kind: "repository".into(),
                name: image.into(),
                actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            }]
        };
        let snapshot = self.gateway.snapshot();
        let core = self.gateway.core(&snapshot);
        core.registry.unwrap().issue(&claims, &access, unix_now()).unwrap()
    }

    async fn send(&self, request: Request<Body>) -> (u16, String, Vec<Seen>) {
        self.seen.lock().await.clear();
        let response = self.gateway.handle(request, "127.0.0.1:9".parse().unwrap()).await;
        let status = response.status().as_u16();
        let body =
            String::from_utf8_lossy(&response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
                .into_owned();
        let seen = self.seen.lock().await.clone();
        (status, body, seen)
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<Seen>) {
        self.send(request("GET", target, headers, Bytes::new())).await
    }
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: Bytes) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(target).header("host", "gitlab.example.com");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(jobgate::edge::body::full(body)).unwrap()
}

fn basic(token: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("gitlab-ci-token:{token}")))
}

fn reason(body: &str) -> &str {
    body.split("reason\":\"")
        .nth(1)
        .or_else(|| body.split("reason: ").nth(1))
        .and_then(|r| r.split(['"', ',']).next())
        .unwrap_or("")
}

// ---- token kind × family -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn registry_tokens_are_valid_on_registry_routes_only() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let job = f.token("acme/lib", 43, true, vec![]);
    for access in [&[][..], &["pull", "push"][..]] {
        let registry = format!("Bearer {}", f.registry_token(&job, "acme/lib", access));
        for target in [
            "/acme/lib.git/info/refs?service=git-upload-pack",
            "/acme/app.git/info/refs?service=git-receive-pack",
            "/acme/lib.git/info/lfs/locks",
            "/api/v4/projects/43/packages/npm/foo",
            "/api/v4/projects/43/jobs",
        ] {
            let (status, body, seen) = f.get(target, &[("authorization", &registry)]).await;
            assert_eq!(
                (status, reason(&body)),
                (401, "token_kind_not_allowed"),
                "{target} with access {access:?}: {body}"
            );
            assert!(seen.is_empty(), "{target}: nothing reaches the upstream");
        }
    }
    // On registry routes, every action is checked against the token's access.
    let pull_only = format!("Bearer {}", f.registry_token(&job, "acme/lib", &["pull"]));
    let (status, _, seen) = f.get("/v2/acme/lib/manifests/latest", &[("authorization", &pull_only)]).await;
    assert_eq!((status, seen.len()), (200, 1));
    let push = request("PUT", "/v2/acme/lib/manifests/latest", &[("authorization", &pull_only)], Bytes::new());
    let (status, body, seen) = f.send(push).await;
    assert_eq!((status, reason(&body), seen.len()), (401, "registry_scope_missing", 0), "{body}");
    let empty = format!("Bearer {}", f.registry_token(&job, "acme/lib", &[]));
    let (status, body, seen) = f.get("/v2/acme/lib/manifests/latest", &[("authorization", &empty)]).await;
    assert_eq!((status, reason(&body), seen.len()), (401, "registry_scope_missing", 0), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_token_carries_every_ceiling_of_its_job_token() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let guest = f.token("acme/lib", 43, true, vec![("user_access_level".into(), "guest".into())]);
    let (status, body, _) =
        f.get("/acme/lib.git/info/refs?service=git-upload-pack", &[("authorization", &basic(&guest))]).await;
    assert_eq!((status, reason(&body)), (403, "user_ceiling"), "{body}");
    let registry = format!("Bearer {}", f.registry_token(&guest, "acme/lib", &["pull"]));
    let (status, body, seen) = f.get("/v2/acme/lib/manifests/latest", &[("authorization", &registry)]).await;
    assert_eq!((status, reason(&body), seen.len()), (403, "user_ceiling", 0), "a guest may not pull: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_typed_as_something_else_is_no_job_token() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let payload = serde_json::json!({"iss": ISSUER, "aud": "jobgate", "exp": unix_now() + 600, "iat": unix_now(), "project_id": "43", "project_path": "acme/lib", "job_id": "1"});
    let typed = f.signer.sign_raw(&serde_json::json!({"alg": "ES256", "kid": "k", "typ": "at+jwt"}), &payload).unwrap();
    let (status, body, seen) =
        f.get("/acme/lib.git/info/refs?service=git-upload-pack", &[("authorization", &basic(&typed))]).await;
    assert_eq!((status, reason(&body), seen.len()), (401, "token_kind_not_allowed", 0), "{body}");
}

// ---- credential locations × credential modes × non_job --------------------------------------------

const OTHER_PLACES: [&str; 6] = ["private_token", "access_token", "bearer_token", "feed_token", "rss_token", "token"];

#[tokio::test(flavor = "multi_thread")]
async fn a_second_credential_anywhere_gitlab_reads_one_is_smuggling() {
    for non_job in [NonJob::Reject, NonJob::Passthrough] {
        let f = default_fixture("passthrough", non_job).await;
        let job = basic(&f.token("acme/lib", 43, false, vec![]));
        for param in OTHER_PLACES {
            let target = format!("/acme/lib.git/info/refs?service=git-upload-pack&{param}=glpat-someone-else");
            let (status, body, seen) = f.get(&target, &[("authorization", &job)]).await;
            assert_eq!((status, reason(&body), seen.len()), (400, "conflicting_credentials", 0), "{param}: {body}");
        }
        for header in ["private-token", "Deploy-Token", "X-Gitlab-Static-Object-Token", "gitlab-agent-api-request"] {
            let (status, body, seen) = f
                .get(
                    "/acme/lib.git/info/refs?service=git-upload-pack",
                    &[("authorization", &job), (header, "someone-else")],
                )
                .await;
            assert_eq!((status, reason(&body), seen.len()), (400, "conflicting_credentials", 0), "{header}: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_token_in_any_place_is_decided_even_under_passthrough() {
    let f = default_fixture("passthrough", NonJob::Passthrough).await;
    let job = f.token("acme/lib", 43, false, vec![]);
    // acme/secret admits nobody: each of these must be refused, not passed through as non-job traffic.
    for target in [
        format!("/acme/secret.git/info/refs?service=git-upload-pack&token={job}"),
        format!("/acme/secret.git/info/refs?service=git-upload-pack&job_token={job}"),
        format!("/acme/secret.git/info/refs?service=git-upload-pack&x=1;job_token={job}"),
        format!("/acme/secret.git/info/refs?token=glcbt-{job}&service=git-upload-pack"),
        // Doorkeeper's places, which GitLab's job-bearer finder reads job tokens from.
        format!("/acme/secret.git/info/refs?service=git-upload-pack&access_token={job}"),
        format!("/acme/secret.git/info/refs?service=git-upload-pack&bearer_token=glcbt-{job}"),
    ] {
        let (status, body, seen) = f.get(&target, &[]).await;
        assert_eq!(
            (status, reason(&body), seen.len()),
            (403, "not_in_allowlist", 0),
            "{}: {body}",
            target.split('?').nth(1).unwrap_or("").split('=').next().unwrap_or("")
        );
    }
    // The package clients' own places: NuGet's API key, RubyGems' bare `Authorization` value, Conan's
    // login (any user) and Conan's token (GitLab's HS256 JWT whose `access_token` is the job token).
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let conan = format!(
        "Bearer {}.{}.c2ln",
        part(serde_json::json!({"typ": "JWT", "alg": "HS256"})),
        part(serde_json::json!({"access_token": job, "user_id": 5, "exp": 4_000_000_000_u64}))
    );
    for (header, value) in [
        ("x-nuget-apikey", job.clone()),
        ("authorization", format!("glcbt-{job}")),
        ("authorization", format!("Basic {}", STANDARD.encode(format!("ci_user:{job}")))),
        ("authorization", conan),
    ] {
        let (status, body, seen) =
            f.get("/acme/secret.git/info/refs?service=git-upload-pack", &[(header, value.as_str())]).await;
        assert_eq!((status, reason(&body), seen.len()), (403, "not_in_allowlist", 0), "{header}: {body}");
    }
    // Spellings that Rack folds onto a credential name are refused, never ignored.
    for spelling in ["job_token]", "[job_token]", "job_token[]", "token[x]", "private_token]"] {
        let (status, body, seen) =
            f.get(&format!("/acme/secret.git/info/refs?service=git-upload-pack&{spelling}={job}"), &[]).await;
        assert_eq!((status, reason(&body), seen.len()), (400, "bad_request", 0), "{spelling}: {body}");
    }
    // A runner-style token in `token`, an OAuth token in `access_token`: other credentials, non-job
    // traffic, passed through.
    for target in ["/api/v4/jobs/request?token=glrt-runner", "/api/v4/version?access_token=gloas-oauth"] {
        let (status, _, seen) = f.get(target, &[]).await;
        assert_eq!((status, seen.len()), (200, 1), "{target}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_and_replace_remove_every_credential_gitlab_reads() {
    for mode in ["strip", "replace"] {
        let f = default_fixture(mode, NonJob::Passthrough).await;
        // Non-job traffic with every other credential: none reaches the upstream, and in replace mode
        // jobgate's own credential is not added either (nothing was decided).
        let query = OTHER_PLACES.iter().map(|p| format!("{p}=glpat-x")).collect::<Vec<_>>().join("&");
        let headers = [
            ("private-token", "glpat-x"),
            ("deploy-token", "gldt-x"),
            ("x-gitlab-static-object-token", "x"),
            ("authorization", "Bearer glpat-x"),
        ];
        let (status, _, seen) = f.get(&format!("/api/v4/version?keep=1&{query};rss_token=y"), &headers).await;
        assert_eq!((status, seen.len()), (200, 1), "{mode}");
        let seen = &seen[0];
        assert_eq!(seen.target, "/api/v4/version?keep=1", "{mode}: every credential parameter goes");
        for (name, _) in headers {
            assert!(seen.header(name).is_none(), "{mode}: {name} reached the upstream: {:?}", seen.headers);
        }
        // A decided job request: the job token goes wherever it was sent; in replace mode jobgate's
        // credential comes instead.
        let job = f.token("acme/lib", 43, false, vec![]);
        let (status, _, seen) =
            f.get(&format!("/acme/lib.git/info/refs?service=git-upload-pack&token={job}"), &[]).await;
        assert_eq!((status, seen.len()), (200, 1), "{mode}");
        assert_eq!(seen[0].target, "/acme/lib.git/info/refs?service=git-upload-pack", "{mode}");
        let presented = seen[0].header("private-token");
        assert_eq!(presented, (mode == "replace").then_some("jobgate-service-secret"), "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jobgate_presents_its_own_credential_only_on_decided_targets() {
    let f = default_fixture("replace", NonJob::Reject).await;
    let job = basic(&f.token("acme/lib", 43, false, vec![]));
    for target in
        ["/api/v4/groups/acme/variables", "/api/v4/groups/acme/-/packages/npm/foo", "/api/v4/packages/npm/@acme/foo"]
    {
        let (status, body, seen) = f.get(target, &[("authorization", &job)]).await;
        assert_eq!((status, reason(&body), seen.len()), (403, "unresolved_target", 0), "{target}: {body}");
    }
    let (status, _, seen) = f.get("/api/v4/projects/43/jobs", &[("authorization", &job)]).await;
    assert_eq!((status, seen[0].header("private-token")), (200, Some("jobgate-service-secret")));
}

#[tokio::test(flavor = "multi_thread")]
async fn method_and_url_overrides_never_reach_the_upstream_and_cookie_crumbs_are_joined() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let job = basic(&f.token("acme/lib", 43, false, vec![]));
    let headers = [
        ("authorization", job.as_str()),
        ("x-http-method-override", "DELETE"),
        ("X-Original-URL", "/acme/app.git"),
        ("x_rewrite_url", "/x"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
    ];
    let (status, _, seen) = f.get("/acme/lib.git/info/refs?service=git-upload-pack", &headers).await;
    assert_eq!(status, 200);
    for name in ["x-http-method-override", "x-original-url", "x-rewrite-url", "x_rewrite_url"] {
        assert!(seen[0].header(name).is_none(), "{name}: {:?}", seen[0].headers);
    }
    assert_eq!(
        seen[0].headers.iter().filter(|(n, _)| n == "cookie").map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        vec!["a=1; b=2"]
    );
}

// ---- LFS batch routes and bodies ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn only_the_exact_batch_route_reads_its_operation_from_the_body() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    // acme/lib may read acme/app (cross-project baseline) but not write it from an unprotected ref.
    let job = basic(&f.token("acme/lib", 43, false, vec![]));
    let download = Bytes::from_static(br#"{"operation":"download","objects":[]}"#);
    let upload = request(
        "POST",
        "/acme/app.git/info/lfs/objects/0a1b/info/lfs/objects/batch",
        &[("authorization", &job)],
        download.clone(),
    );
    let (status, body, seen) = f.send(upload).await;
    assert_eq!((status, seen.len()), (403, 0), "an object upload stays a write whatever its body says: {body}");
    let batch = request("POST", "/acme/app.git/info/lfs/objects/batch", &[("authorization", &job)], download.clone());
    let (status, _, seen) = f.send(batch).await;
    assert_eq!((status, seen.len()), (200, 1));
    assert_eq!(seen[0].body, download, "the peeked body is replayed unchanged");
    let batch = request(
        "POST",
        "/acme/app.git/info/lfs/objects/batch",
        &[("authorization", &job)],
        Bytes::from_static(br#"{"operation":"upload"}"#),
    );
    assert_eq!(f.send(batch).await.0, 403, "an upload batch needs write_repository");
}

/// A request body that sends nothing, ever.
struct Stalled;

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

fn stalled() -> Body {
    jobgate::edge::body::stream(Stalled)
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_bodies_are_read_only_after_authentication_within_a_deadline_and_a_budget() {
    let timeouts = Timeouts { body_peek_secs: 1, ..Timeouts::default() };
    let limits = Limits { lfs_batch_bytes: 64 * 1024, peek_budget_bytes: 64 * 1024, ..Limits::default() };
    let f = Arc::new(fixture("passthrough", NonJob::Reject, limits, timeouts).await);
    // No credential: refused without waiting for the body (the bounded drain gives up after 2 s).
    let started = Instant::now();
    let anonymous = Request::post("/acme/app.git/info/lfs/objects/batch")
        .header("host", "gitlab.example.com")
        .body(stalled())
        .unwrap();
    let (status, body, seen) = f.send(anonymous).await;
    assert_eq!((status, reason(&body), seen.len()), (401, "missing_credential", 0));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // A verified job's stalled body: refused at the deadline.
    let job = basic(&f.token("acme/app", 42, false, vec![]));
    let stalled_batch = || {
        Request::post("/acme/app.git/info/lfs/objects/batch")
            .header("host", "gitlab.example.com")
            .header("authorization", &job)
            .body(stalled())
            .unwrap()
    };
    let started = Instant::now();
    let (status, body, _) = f.send(stalled_batch()).await;
    assert_eq!((status, reason(&body)), (400, "bad_request"), "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(1) && started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The budget holds one 64 KiB body: a second one at the same time is refused at once.
    let holder = tokio::spawn({
        let f = f.clone();
        let request = stalled_batch();
        async move { f.gateway.handle(request, "127.0.0.1:9".parse().unwrap()).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = f.gateway.handle(stalled_batch(), "127.0.0.1:9".parse().unwrap()).await;
    assert_eq!(response.status(), 503, "over the peek budget");
    assert_eq!(holder.await.unwrap(), 400);
}

// ---- mounts, ids, HEAD ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_written_with_semicolons_is_refused() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let job = basic(&f.token("acme/lib", 43, true, vec![]));
    let mount = request(
        "POST",
        "/v2/acme/lib/blobs/uploads/?mount=sha256:abc;from=acme/secret&from=acme/lib",
        &[("authorization", &job)],
        Bytes::new(),
    );
    let (status, body, seen) = f.send(mount).await;
    assert_eq!((status, reason(&body), seen.len()), (403, "unmatched_request", 0), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_project_id_contradicts_the_policy_is_refused() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    // acme/app is id 42 in the policy; this token says its acme/app is 44 (acme/secret's id).
    let job = basic(&f.token("acme/app", 44, true, vec![]));
    let (status, body, seen) = f.get("/api/v4/projects/44/jobs", &[("authorization", &job)]).await;
    assert_eq!((status, reason(&body), seen.len()), (401, "project_id_mismatch", 0), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn head_refusals_carry_no_body() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let response = f
        .gateway
        .handle(request("HEAD", "/v2/acme/lib/manifests/latest", &[], Bytes::new()), "127.0.0.1:9".parse().unwrap())
        .await;
    assert_eq!(response.status(), 401);
    assert!(response.headers()[http::header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer realm="));
    assert!(response.into_body().collect().await.unwrap().to_bytes().is_empty());
}

#[test]
fn head_refusals_over_h1_and_h2_reach_the_client_with_their_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let gw = common::Gateway::start(
        dir.path(),
        &format!("http://127.0.0.1:{}", common::echo_upstream()),
        "projects:\n  acme/app: { id: 42 }\n",
    );
    for protocol in ["--http1.1", "--http2"] {
        let (status, text) =
            common::curl(&gw, &[protocol, "-I", &gw.url("/acme/app.git/info/refs?service=git-upload-pack")]);
        assert_eq!(status, 401, "{protocol}: {text}");
        assert!(text.to_ascii_lowercase().contains("www-authenticate: basic realm=\"gitlab\""), "{protocol}: {text}");
    }
}

// ---- smaller holes ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn encoded_slashes_are_no_path_segments_in_lfs_and_registry_names() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let job = basic(&f.token("acme/app", 42, true, vec![]));
    for target in [
        "/acme/app.git/info/lfs/objects/..%2f..%2fsecret",
        "/acme/app.git/gitlab-lfs/objects/a%2Fb",
        "/v2/acme/app/manifests/..%2flatest",
        "/v2/acme%2fsecret/tags/list",
    ] {
        let (status, body, seen) = f.get(target, &[("authorization", &job)]).await;
        assert_eq!((status, reason(&body), seen.len()), (403, "unmatched_request", 0), "{target}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_token_dies_with_its_own_jti_and_with_its_job() {
    use jobgate::revoke::{Revocation, Revoked};
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let job = f.token("acme/lib", 43, true, vec![]);
    let registry = f.registry_token(&job, "acme/lib", &["pull"]);
    let bearer = format!("Bearer {registry}");
    assert_eq!(f.get("/v2/acme/lib/manifests/latest", &[("authorization", &bearer)]).await.0, 200);
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(registry.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    let jti = payload["jti"].as_str().unwrap().to_owned();
    f.gateway
        .revocations()
        .revoke(Revocation { what: Revoked::Jti { jti }, expires_at: unix_now() + 600 }, unix_now())
        .await
        .unwrap();
    let (status, body, seen) = f.get("/v2/acme/lib/manifests/latest", &[("authorization", &bearer)]).await;
    assert_eq!((status, reason(&body), seen.len()), (401, "token_revoked", 0), "{body}");
    // Revoking the job kills every registry token issued to it.
    let other = format!("Bearer {}", f.registry_token(&job, "acme/lib", &["pull"]));
    f.gateway
        .revocations()
        .revoke(Revocation { what: Revoked::Job { job_id: 943 }, expires_at: unix_now() + 600 }, unix_now())
        .await
        .unwrap();
    assert_eq!(f.get("/v2/acme/lib/manifests/latest", &[("authorization", &other)]).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_challenge_never_carries_what_the_client_wrote_in_host() {
    let f = default_fixture("passthrough", NonJob::Reject).await;
    let evil = Request::get("/v2/acme/lib/manifests/latest")
        .header("host", "evil\",error=\"x")
        .body(jobgate::edge::body::full(Bytes::new()))
        .unwrap();
    let response = f.gateway.handle(evil, "127.0.0.1:9".parse().unwrap()).await;
    let challenge = response.headers()[http::header::WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"https://localhost/jwt/auth\",service=\"container_registry\""),
        "{challenge}"
    );
}

// ---- credentials in API bodies -------------------------------------------------------------------

fn multipart(parts: &[(&str, &str)]) -> String {
    let mut body: String = parts
        .iter()
        .map(|(name, value)| format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"))
        .collect();
    body.push_str("--XyZ--\r\n");
    body
}

/// `bytes` as a streamed body of `size`-byte frames, as a client sends a large upload.
fn in_chunks(bytes: Vec<u8>, size: usize) -> Body {
    let frames: Vec<Result<hyper::body::Frame<Bytes>, jobgate::edge::body::BoxError>> =
        bytes.chunks(size).map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c)))).collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

const MULTIPART: (&str, &str) = ("content-type", "multipart/form-data; boundary=XyZ");

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_in_an_api_body_is_decided_like_one_in_the_query() {
    let f = default_fixture("passthrough", NonJob::Passthrough).await;
    let lib = f.token("acme/lib", 43, false, vec![]);
    let trigger = "/api/v4/projects/acme%2Fsecret/trigger/pipeline";
    // Every body GitLab's `params` are read from: multipart (`curl --form token=…`), a form, a POST
    // without Content-Type (a form to Rack), JSON. acme/secret admits nobody: refused, not passed
    // through as non-job traffic.
    for (headers, body) in [
        (&[MULTIPART][..], multipart(&[("ref", "main"), ("token", &lib)])),
        (&[("content-type", "application/x-www-form-urlencoded")][..], format!("ref=main&job_token={lib}")),
        (&[][..], format!("ref=main&token={lib}")),
        (
            &[("content-type", "application/json; charset=utf-8")][..],
            format!("{{\"ref\":\"main\",\"token\":\"{lib}\"}}"),
        ),
    ] {
        let (status, text, seen) = f.send(request("POST", trigger, headers, Bytes::from(body))).await;
        assert_eq!((status, reason(&text), seen.len()), (403, "not_in_allowlist", 0), "{headers:?}: {text}");
    }
    // A body credential next to a different header credential is smuggling; an odd spelling is refused.
    let app = f.token("acme/app", 42, false, vec![]);
    let (status, text, seen) = f
        .send(request(
            "POST",
            trigger,
            &[MULTIPART, ("job-token", &app)],
            Bytes::from(multipart(&[("job_token", &lib)])),
        ))
        .await;
    assert_eq!((status, reason(&text), seen.len()), (400, "conflicting_credentials", 0), "{text}");
    let (status, text, seen) = f
        .send(request(
            "POST",
            trigger,
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(format!("job_token[]={lib}")),
        ))
        .await;
    assert_eq!((status, reason(&text), seen.len()), (400, "bad_request", 0), "{text}");
    // Allowed: forwarded with its body unchanged.
    let body = format!("job_token={lib}&x=1");
    let (status, text, seen) = f
        .send(request(
            "GET",
            "/api/v4/projects/acme%2Flib",
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(body.clone()),
        ))
        .await;
    assert_eq!((status, seen.len()), (200, 1), "{text}");
    assert_eq!(seen[0].body, body.as_bytes());
    // A body without a credential under a person's token: non-job traffic as before.
    let (status, _, seen) = f
        .send(request(
            "POST",
            trigger,
            &[MULTIPART, ("private-token", "glpat-x")],
            Bytes::from(multipart(&[("ref", "main")])),
        ))
        .await;
    assert_eq!((status, seen.len()), (200, 1));
}

/// GitLab reads a body where and as Rack and Workhorse do, not as the request looks: a path Workhorse
/// cleans into the API (`//api/…`, `/./api/…`), Rack's boundary (the last one named), and Rack's
/// method override. Each of these passed a job token to GitLab undecided under `non_job: passthrough`.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_is_read_where_and_as_gitlab_reads_it() {
    let f = default_fixture("passthrough", NonJob::Passthrough).await;
    let lib = f.token("acme/lib", 43, false, vec![]);
    let form = ("content-type", "application/x-www-form-urlencoded");
    for path in
        ["//api/v4/projects/acme%2Fsecret/trigger/pipeline", "/./api/v4/projects/acme%2Fsecret/trigger/pipeline"]
    {
        let (status, text, seen) =
            f.send(request("POST", path, &[form], Bytes::from(format!("ref=main&token={lib}")))).await;
        assert!(status >= 400 && seen.is_empty(), "{path}: {status} {text}");
    }
    // Rack takes the last `boundary=`: two are refused, whichever delimits the body.
    let trigger = "/api/v4/projects/acme%2Fsecret/trigger/pipeline";
    let twice = ("content-type", "multipart/form-data; boundary=Decoy; boundary=XyZ");
    let (status, text, seen) =
        f.send(request("POST", trigger, &[twice], Bytes::from(multipart(&[("ref", "main"), ("token", &lib)])))).await;
    assert_eq!((status, reason(&text), seen.len()), (400, "bad_request", 0), "{text}");
    // `_method` in a POST's form body (urlencoded or multipart) makes GitLab serve another method.
    for (headers, body) in [
        (&[form, ("private-token", "glpat-x")][..], "_method=DELETE&ref=main".to_owned()),
        (&[MULTIPART, ("job-token", &lib)][..], multipart(&[("_method", "DELETE")])),
    ] {
        let (status, text, seen) = f.send(request("POST", trigger, headers, Bytes::from(body))).await;
        assert_eq!((status, reason(&text), seen.len()), (400, "bad_request", 0), "{headers:?}: {text}");
        assert!(text.contains("_method"), "{text}");
    }
    // No Content-Type: Grape reads a JSON body (its default format) for every method with a body.
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let body = format!(" {{\"ref\":\"main\",\"job_token\":\"{lib}\"}}");
        let (status, text, seen) = f.send(request(method, trigger, &[], Bytes::from(body))).await;
        assert_eq!((status, reason(&text), seen.len()), (403, "not_in_allowlist", 0), "{method}: {text}");
    }
    // However the client cuts it: white space first, the object in later frames.
    let spaced = format!("{}{{\"job_token\":\"{lib}\"}}", " ".repeat(64));
    let mut chunked = request("PUT", trigger, &[], Bytes::new());
    *chunked.body_mut() = in_chunks(spaced.into_bytes(), 16);
    let (status, text, seen) = f.send(chunked).await;
    assert_eq!((status, reason(&text), seen.len()), (403, "not_in_allowlist", 0), "{text}");
    // An untyped body that is no JSON object: a PUT's (a generic package upload) passes as it came,
    // small or larger than the bound; a POST's is still a form.
    let upload = "/api/v4/projects/acme%2Fsecret/packages/generic/pkg/1.0/file.bin";
    for size in [10, 3 << 20] {
        let binary = Bytes::from(vec![7u8; size]);
        let (status, text, seen) =
            f.send(request("PUT", upload, &[("private-token", "glpat-x")], binary.clone())).await;
        assert_eq!((status, seen.len()), (200, 1), "{size}: {text}");
        assert_eq!(seen[0].body, binary, "{size} bytes forwarded unchanged");
    }
    let (status, text, seen) = f.send(request("POST", trigger, &[], Bytes::from(format!("token={lib}")))).await;
    assert_eq!((status, reason(&text), seen.len()), (403, "not_in_allowlist", 0), "{text}");
    // Rack overrides POSTs only: a PUT keeps its method, and `_method` is no credential.
    let (status, text, seen) =
        f.send(request("PUT", trigger, &[form, ("private-token", "glpat-x")], Bytes::from("_method=DELETE"))).await;
    assert_eq!((status, seen.len()), (200, 1), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_api_body_is_refused_or_cut_off_before_a_credential_past_the_bound_leaves() {
    let limits = Limits { body_credential_bytes: 1024, ..Limits::default() };
    let f = fixture("passthrough", NonJob::Passthrough, limits, Timeouts::default()).await;
    let lib = f.token("acme/lib", 43, false, vec![]);
    let trigger = "/api/v4/projects/acme%2Fsecret/trigger/pipeline";
    let big = "x".repeat(4000);
    // A form body larger than the bound: its credential is unknown, so it is refused.
    let (status, text, seen) = f
        .send(request(
            "POST",
            trigger,
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(format!("a={big}&token={lib}")),
        ))
        .await;
    assert_eq!((status, reason(&text), seen.len()), (413, "body_not_inspected", 0), "{text}");
    let json = ("content-type", "application/json");
    for (headers, upload, credential_first, credential_after) in [
        (
            MULTIPART,
            multipart(&[("file", &big)]),
            multipart(&[("token", &lib), ("file", &big)]),
            multipart(&[("file", &big), ("token", &lib)]),
        ),
        (
            json,
            format!("{{\"a\":\"{big}\"}}"),
            format!("{{\"token\":\"{lib}\",\"a\":\"{big}\"}}"),
            format!("{{\"a\":\"{big}\",\"token\":\"{lib}\"}}"),
        ),
    ] {
        // A large upload without a credential streams through whole.
        let (status, _, seen) = f
            .send(request("POST", trigger, &[headers, ("private-token", "glpat-x")], Bytes::from(upload.clone())))
            .await;
        assert_eq!((status, seen.len()), (200, 1), "{headers:?}");
        assert_eq!(seen[0].body, upload.as_bytes());
        // A credential in its first bytes decides; one after them cuts the body off: the upstream
        // never gets the token, the client a refusal.
        let (status, text, _) = f.send(request("POST", trigger, &[headers], Bytes::from(credential_first))).await;
        assert_eq!((status, reason(&text)), (403, "not_in_allowlist"), "{headers:?}: {text}");
        let mut cut = request("POST", trigger, &[headers, ("private-token", "glpat-x")], Bytes::new());
        *cut.body_mut() = in_chunks(credential_after.into_bytes(), 512);
        let (status, text, seen) = f.send(cut).await;
        assert_eq!((status, reason(&text)), (403, "credential_in_body"), "{headers:?}: {text}");
        assert!(
            seen.iter().all(|s| !String::from_utf8_lossy(&s.body).contains(&lib)),
            "{headers:?}: the token reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_credential_is_refused_where_the_upstream_must_not_see_the_job_token() {
    for mode in ["strip", "replace"] {
        let f = default_fixture(mode, NonJob::Passthrough).await;
        let lib = f.token("acme/lib", 43, false, vec![]);
        let (status, text, seen) = f
            .send(request(
                "GET",
                "/api/v4/projects/acme%2Flib",
                &[("content-type", "application/x-www-form-urlencoded")],
                Bytes::from(format!("job_token={lib}")),
            ))
            .await;
        assert_eq!((status, reason(&text), seen.len()), (403, "credential_in_body", 0), "{mode}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runners_job_api_passes_with_the_jobs_own_token_wherever_the_runner_puts_it() {
    let f = default_fixture("passthrough", NonJob::Passthrough).await;
    let job = f.token("acme/lib", 43, false, vec![]);
    let json = ("content-type", "application/json");
    // The runner's job update carries the job token in its JSON body; its trace and artifacts in JOB-TOKEN.
    let update = format!("{{\"token\":\"{job}\",\"state\":\"success\",\"checksum\":\"crc32:0\"}}");
    let (status, text, seen) = f.send(request("PUT", "/api/v4/jobs/943", &[json], Bytes::from(update.clone()))).await;
    assert_eq!((status, seen.len()), (200, 1), "{text}");
    assert_eq!(seen[0].body, update.as_bytes(), "passed untouched");
    for (method, path) in [
        ("PATCH", "/api/v4/jobs/943/trace"),
        ("POST", "/api/v4/jobs/943/artifacts/authorize"),
        ("GET", "/api/v4/jobs/940/artifacts"),
    ] {
        let (status, text, seen) = f.send(request(method, path, &[("job-token", &job)], Bytes::new())).await;
        assert_eq!((status, seen.len()), (200, 1), "{method} {path}: {text}");
    }
    // Asking for a job with the runner's token (in the body): non-job traffic.
    let (status, _, seen) = f
        .send(request(
            "POST",
            "/api/v4/jobs/request",
            &[json],
            Bytes::from_static(br#"{"token":"glrt-runner","info":{}}"#),
        ))
        .await;
    assert_eq!((status, seen.len()), (200, 1));
    // A job token that does not verify is refused there too.
    let (status, text, seen) = f
        .send(request(
            "PUT",
            "/api/v4/jobs/943",
            &[json],
            Bytes::from_static(br#"{"token":"glcbt-forged","state":"success"}"#),
        ))
        .await;
    assert_eq!((status, seen.len()), (401, 0), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_upload_with_the_job_token_in_its_multipart_body_is_decided_in_every_mode() {
    for mode in ["passthrough", "strip", "replace"] {
        let f = default_fixture(mode, NonJob::Passthrough).await;
        let lib = f.token("acme/lib", 43, true, vec![]);
        // twine-style: a PyPI upload to a project that does not admit acme/lib, the token in a part.
        let body =
            multipart(&[(":action", "file_upload"), ("name", "pkg"), ("token", &lib), ("content", "wheel bytes")]);
        let (status, text, seen) = f
            .send(request("POST", "/api/v4/projects/acme%2Fsecret/packages/pypi", &[MULTIPART], Bytes::from(body)))
            .await;
        assert_eq!((status, reason(&text), seen.len()), (403, "not_in_allowlist", 0), "{mode}: {text}");
    }
}

/// `Gitlab::TerraformRegistryToken` as GitLab builds it for `X-Terraform-Get` (HS256 under GitLab's
/// secret, which jobgate does not hold; the signature here is any bytes).
fn terraform_wrapper(token: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let now = unix_now();
    format!(
        "{}.{}.c2ln",
        part(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        part(serde_json::json!({"token": token, "jti": "x", "iat": now, "nbf": now, "exp": now + 300}))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_token_wrapped_in_gitlabs_terraform_download_token_is_decided_as_the_job() {
    let f = default_fixture("passthrough", NonJob::Passthrough).await;
    let file = "/api/v4/packages/terraform/modules/v1/acme/vpc/aws/1.0.0/file";
    let job = f.token("acme/lib", 43, false, vec![]);
    let wrapped = terraform_wrapper(job.clone().into());
    let (status, body, seen) =
        f.get(&format!("{file}?token={wrapped}&archive=tgz"), &[("authorization", &format!("Bearer {job}"))]).await;
    assert_eq!((status, seen.len()), (200, 1), "the job reads its group's module: {body}");
    assert!(
        seen[0].target.ends_with(&format!("?token={wrapped}&archive=tgz")),
        "GitLab gets its own wrapper unchanged: {}",
        seen[0].target
    );
    // A wrapper around a token no issuer signed is refused as that token, never passed as non-job traffic.
    let (forged, _) = Signer::generate(Alg::ES256).unwrap();
    let claims = JobClaims {
        iss: ISSUER.into(),
        aud: "jobgate".into(),
        project_path: "acme/lib".into(),
        project_id: 43,
        user_id: 5,
        job_id: 1,
        pipeline_id: 7,
        git_ref: "main".into(),
        ref_protected: false,
        ttl_secs: 600,
        scopes: None,
        extra: vec![],
    };
    let forged = forged.sign("k", &claims.payload(unix_now())).unwrap();
    let (status, body, seen) = f.get(&format!("{file}?token={}", terraform_wrapper(forged.into())), &[]).await;
    assert_eq!((status, seen.len()), (401, 0), "{body}");
    assert!(reason(&body) == "bad_signature" || reason(&body) == "unknown_kid", "{body}");
    // A personal access token's id inside is a person's download: non-job traffic.
    let (status, _, seen) = f.get(&format!("{file}?token={}", terraform_wrapper(17.into())), &[]).await;
    assert_eq!((status, seen.len()), (200, 1));
    // A `token` that is no wrapper on this route is refused, not guessed.
    let (status, body, seen) = f.get(&format!("{file}?token=eyJhbGciOiJIUzI1NiJ9.e30.c2ln"), &[]).await;
    assert_eq!((status, reason(&body), seen.len()), (401, "malformed_token", 0), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_ci_tunnels_job_token_is_a_job_credential_not_non_job_traffic() {
    let f = default_fixture("passthrough", NonJob::Passthrough).await;
    let job = f.token("acme/lib", 43, false, vec![]);
    let (status, body, seen) =
        f.get("/-/kubernetes-agent/k8s-proxy/api/v1/pods", &[("authorization", &format!("Bearer ci:7:{job}"))]).await;
    assert_eq!((status, reason(&body), seen.len()), (403, "unmatched_request", 0), "{body}");
    // An agent's own token (agentk) is not a job's: it passes.
    let (status, _, seen) = f.get("/-/kubernetes-agent/", &[("authorization", "Bearer glagent-abcdef")]).await;
    assert_eq!((status, seen.len()), (200, 1));
}
