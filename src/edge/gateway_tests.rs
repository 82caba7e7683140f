//! The whole pipeline in-process: `Gateway::handle` on in-memory bodies against a tiny loopback
//! upstream. The property at the heart of it: for random requests (every family, the config's API
//! routes, mounts, odd targets) and random credentials, the decision `serve` records, the one
//! `jobgate explain` reports and the one a policy test reports are identical.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test fixtures may fail loudly

use std::net::SocketAddr;
use std::sync::OnceLock;

use http_body_util::Full;
use proptest::prelude::*;
use tokio::sync::mpsc::Receiver;

use super::*;
use crate::classify::lfs::BatchOperation;
use crate::classify::Action;
use crate::clock::unix_now;
use crate::config::{ApiRoute, Upstreams};
use crate::enforce::expect::decide_case;
use crate::enforce::explain::{explain, request};
use crate::enforce::Summary;
use crate::infra::audit::AuditRecord;
use crate::policy::Policy;
use crate::token::claims::Claims;
use crate::token::keys::{KeySet, KeyState};
use crate::token::mint::{JobClaims, Signer};
use crate::token::registry::Access;
use crate::token::Alg;

const ISSUER: &str = "https://gitlab.example.com";
const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/lib, scopes: [write_repository, write_registry], refs: protected }
  acme/lib: { id: 43 }
  acme/secret: { id: 44 }
  rollout/app:
    id: 45
    mode: audit
";

struct Fixture {
    gateway: Gateway,
    audit: tokio::sync::Mutex<Receiver<AuditRecord>>,
    signer: Signer,
    runtime: tokio::runtime::Runtime,
}

/// One gateway for every test in this file: keys, policy, registry tokens and an upstream that
/// answers 200 to everything.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let upstream = runtime.block_on(ok_upstream());
        let (signer, _) = Signer::generate(Alg::ES256).unwrap();
        let keys = KeySet::from_jwks("test", signer.jwks("k").to_string().as_bytes()).unwrap();
        let issuer = crate::token::verify::Issuer {
            name: "ci".into(),
            iss: ISSUER.into(),
            audiences: vec!["jobgate".into()],
            algorithms: vec![Alg::ES256],
            leeway: 30,
            max_lifetime: 7200,
            keys: KeyState::fixed(keys),
        };
        let dir = tempfile::tempdir().unwrap();
        let (_, pem) = Signer::generate(Alg::RS256).unwrap();
        std::fs::write(dir.path().join("registry.pem"), pem).unwrap();
        let registry =
            RegistryTokens::load(&dir.path().join("registry.pem"), "jobgate", "container_registry", 300).unwrap();
        let metrics = Arc::new(Metrics::new());
        let upstreams: Upstreams = serde_yaml::from_str(&format!("{{ git: {{ url: 'http://{upstream}' }} }}")).unwrap();
        let api_routes = vec![ApiRoute {
            method: "GET".into(),
            path: "/api/v4/version".into(),
            scope: crate::scope::Scope::ReadApi,
        }];
        let policy = Policy::from_yaml(std::path::Path::new("test.yaml"), POLICY).unwrap();
        let (audit, receiver) = Audit::channel();
        let upstreams = Upstream::for_families(&upstreams, &metrics).unwrap();
        let verifier = Verifier::new(vec![issuer], 8192, 1000);
        let gateway = Gateway::new(GatewayParts {
            registry: Some(registry),
            ..GatewayParts::new(Snapshot::new(policy, api_routes, 1), verifier, upstreams, audit, metrics)
        });
        Fixture { gateway, audit: tokio::sync::Mutex::new(receiver), signer, runtime }
    })
}

async fn ok_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(Response::new(body::full("ok")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn job_token(project: &str, id: u64, ref_protected: bool, ttl: i64) -> String {
    let claims = JobClaims {
        iss: ISSUER.into(),
        aud: "jobgate".into(),
        project_path: project.into(),
        project_id: id,
        user_id: 5,
        job_id: 1000 + id,
        pipeline_id: 7,
        git_ref: "main".into(),
        ref_protected,
        ttl_secs: ttl,
        scopes: None,
        extra: vec![],
    };
    fixture().signer.sign("k", &claims.payload(unix_now())).unwrap()
}

/// What `serve` did with one request: the response and its audit line.
fn serve(token: &str, method: &str, url: &str, body: &'static [u8]) -> (Response<Body>, AuditRecord) {
    let f = fixture();
    let parts = request(token, method, url).unwrap();
    let request = Request::from_parts(parts, Full::new(bytes::Bytes::from_static(body)));
    f.runtime.block_on(async {
        // One request at a time, so the line read is this request's.
        let mut audit = f.audit.lock().await;
        let response = f.gateway.handle(request, "127.0.0.1:1".parse().unwrap()).await;
        let record = audit.try_recv().expect("every request leaves one audit line");
        assert!(audit.try_recv().is_err(), "exactly one audit line per request");
        (response, record)
    })
}

fn summary_of(record: &AuditRecord) -> (&'static str, bool, &'static str) {
    (record.decision, record.enforced, record.reason)
}

fn ids(summary: Summary) -> (&'static str, bool, &'static str) {
    (summary.decision(), summary.enforced, summary.reason.id())
}

fn paths() -> impl Strategy<Value = String> {
    let project =
        prop::sample::select(vec!["acme/app", "acme/lib", "acme/secret", "rollout/app", "other/x", "acme/app/sub"]);
    let id = prop::sample::select(vec!["42", "43", "45", "999", "acme%2Fapp", "acme%2Fsecret"]);
    let shape = prop::sample::select(vec![
        "/{p}.git/info/refs?service=git-upload-pack",
        "/{p}.git/info/refs?service=git-receive-pack",
        "/{p}.git/git-upload-pack",
        "/{p}/git-receive-pack",
        "/{p}.git/info/lfs/objects/batch",
        "/{p}.git/info/lfs/locks",
        "/{p}/gitlab-lfs/objects/0123abcd",
        "/v2/",
        "/v2/_catalog",
        "/v2/{p}/manifests/latest",
        "/v2/{p}/blobs/sha256:abc",
        "/v2/{p}/blobs/uploads/",
        "/v2/{p}/blobs/uploads/?mount=sha256:abc&from={q}",
        "/api/v4/projects/{i}/packages/npm/foo",
        "/api/v4/projects/{i}/packages/generic/x/1/f.bin",
        "/api/v4/groups/acme/-/packages/npm/x",
        "/api/v4/projects/{i}/jobs",
        "/api/v4/job",
        "/api/v4/version",
        "/api/v4/users",
        "/{p}.git/info/refs",
        "/acme/../secret.git/info/refs?service=git-upload-pack",
        "/acme%2Fapp.git/info/refs?service=git-upload-pack",
        "/{p}.git/info/refs?service=git-upload-pack&job_token=x",
    ]);
    (shape, project.clone(), project, id)
        .prop_map(|(s, p, q, i)| s.replace("{p}", p).replace("{q}", q).replace("{i}", i))
}

#[derive(Debug, Clone)]
enum Cred {
    None,
    Job { project: &'static str, id: u64, protected: bool },
    Expired,
    Garbage,
    Registry { project: &'static str, image: &'static str, push: bool },
}

fn creds() -> impl Strategy<Value = Cred> {
    let project = prop::sample::select(vec![("acme/app", 42u64), ("acme/lib", 43), ("rollout/app", 45)]);
    prop_oneof![
        1 => Just(Cred::None),
        6 => (project.clone(), any::<bool>()).prop_map(|((project, id), protected)| Cred::Job { project, id, protected }),
        1 => Just(Cred::Expired),
        1 => Just(Cred::Garbage),
        2 => (project, prop::sample::select(vec!["acme/app", "acme/lib", "acme/secret"]), any::<bool>())
            .prop_map(|((project, _), image, push)| Cred::Registry { project, image, push }),
    ]
}

/// The token text for `cred`, and the claims a policy test would carry for it (job tokens only).
fn token(cred: &Cred) -> (String, Option<Claims>) {
    let f = fixture();
    let now = unix_now();
    match cred {
        Cred::None => (String::new(), None),
        Cred::Garbage => ("abc.def.ghi".into(), None),
        Cred::Expired => (job_token("acme/app", 42, true, -3600), None),
        Cred::Job { project, id, protected } => {
            let token = job_token(project, *id, *protected, 3600);
            let claims = f.gateway.verifier().verify(&token, now).unwrap().claims.claims().clone();
            (token, Some(claims))
        }
        Cred::Registry { project, image, push } => {
            let claims =
                f.gateway.verifier().verify(&job_token(project, 1, true, 3600), now).unwrap().claims.claims().clone();
            let actions = if *push { vec!["pull".into(), "push".into()] } else { vec!["pull".into()] };
            let access = vec![Access { kind: "repository".into(), name: (*image).into(), actions }];
            (f.gateway.registry.as_ref().unwrap().issue(&claims, &access, now).unwrap(), None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn serve_explain_and_policy_tests_decide_alike(
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        url in paths(),
        cred in creds(),
        download in any::<bool>(),
    ) {
        let f = fixture();
        let (token, claims) = token(&cred);
        let lfs_batch = method == "POST" && url.ends_with("/info/lfs/objects/batch");
        let (body, batch): (&'static [u8], _) = match (lfs_batch, download) {
            (true, true) => (br#"{"operation":"download","objects":[]}"#, Some(BatchOperation(Action::Read))),
            (true, false) => (br#"{"operation":"upload","objects":[]}"#, Some(BatchOperation(Action::Write))),
            _ => (b"", None),
        };
        let (_, record) = serve(&token, method, &url, body);
        let served = summary_of(&record);
        let snapshot = f.gateway.snapshot();
        let explained = explain(&f.gateway.core(&snapshot), &token, method, &url, batch, unix_now());
        prop_assert_eq!(explained.summary.map(ids), Some(served), "explain disagrees with serve:\n{}", explained.lines.join("\n"));
        // A policy test starts from verified claims: it is comparable once serve got past the
        // credential stage (its audit line names the job).
        if let (Some(claims), Some(_)) = (claims, record.job_id) {
            let tested = decide_case(&snapshot, &claims, method, &url, batch).unwrap();
            prop_assert_eq!(ids(tested), served, "a policy test disagrees with serve");
        }
    }
}

#[test]
fn an_api_route_the_config_opens_is_decided_alike_everywhere() {
    let f = fixture();
    let token = job_token("acme/lib", 43, false, 3600);
    let (response, record) = serve(&token, "GET", "/api/v4/version", b"");
    assert_eq!(response.status(), 200);
    assert_eq!(summary_of(&record), ("allow", true, "granted_via_own_project"));
    let snapshot = f.gateway.snapshot();
    let explained = explain(&f.gateway.core(&snapshot), &token, "GET", "/api/v4/version", None, unix_now());
    assert_eq!(explained.summary.map(ids), Some(summary_of(&record)), "{:?}", explained.lines);
    let claims = f.gateway.verifier().verify(&token, unix_now()).unwrap().claims.claims().clone();
    assert_eq!(ids(decide_case(&snapshot, &claims, "GET", "/api/v4/version", None).unwrap()), summary_of(&record));
    // Without the route, all three agree it is unmatched.
    let bare = Snapshot::new(Policy::from_yaml(std::path::Path::new("t.yaml"), POLICY).unwrap(), Vec::new(), 2);
    assert_eq!(
        ids(decide_case(&bare, &claims, "GET", "/api/v4/version", None).unwrap()),
        ("deny", true, "unmatched_request")
    );
}

#[test]
fn a_refused_lfs_batch_has_a_request_id_and_is_counted() {
    let token = job_token("acme/app", 42, true, 3600);
    let (response, record) = serve(&token, "POST", "/acme/app.git/info/lfs/objects/batch", b"not json");
    assert_eq!(response.status(), 400);
    let id = response.headers().get("x-request-id").expect("X-Request-Id on the refusal").to_str().unwrap();
    assert_eq!(id, record.request_id);
    assert_eq!((record.family, record.reason), (Some("lfs"), "bad_request"));
    let metrics = fixture().gateway.metrics().render();
    assert!(
        metrics.contains(
            r#"jobgate_requests_total{action="write",decision="deny",family="lfs",reason="bad_request",status="4xx"}"#
        ),
        "{metrics}"
    );
}

#[test]
fn token_realm_requests_are_recorded_and_counted() {
    let token = job_token("acme/app", 42, true, 3600);
    let (response, record) =
        serve(&token, "GET", "/jwt/auth?service=container_registry&scope=repository:acme/app:pull,push", b"");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"].to_str().unwrap(), record.request_id);
    assert_eq!((record.decision, record.reason, record.job_id), ("allow", "granted", Some(1042)));
    let (response, record) = serve("", "GET", "/jwt/auth?service=container_registry", b"");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()[http::header::WWW_AUTHENTICATE], "Basic realm=\"jobgate registry\"");
    // The usual first round trip of a client that sends its credential only when asked.
    assert_eq!((record.decision, record.reason), ("challenge", "missing_credential"));
    let metrics = fixture().gateway.metrics().render();
    for (decision, reason, class) in [("allow", "granted", "2xx"), ("challenge", "missing_credential", "4xx")] {
        let line = format!(
            r#"jobgate_requests_total{{action="none",decision="{decision}",family="none",reason="{reason}",status="{class}"}}"#
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[test]
fn a_registry_refusal_challenges_with_the_realm() {
    let (response, record) = serve("", "GET", "/v2/acme/app/manifests/latest", b"");
    assert_eq!(response.status(), 401);
    assert_eq!(record.reason, "missing_credential");
    let challenge = response.headers()[http::header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Bearer realm=\"https://"), "{challenge}");
    assert!(
        challenge.ends_with("service=\"container_registry\",scope=\"repository:acme/app:pull,push\""),
        "{challenge}"
    );
}
