//! Key sets that rotate without an outage, against a real HTTPS JWKS server started by the test and a
//! real jobgate process: a new key works on its first request, a removed key stops at once (cached
//! tokens included), random `kid`s cannot make jobgate hammer the issuer, a dead issuer keeps working
//! until the staleness limit and then fails closed, one unusable key poisons nothing, discovery finds
//! `jwks_uri`, and rotating under load fails no request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::{Client, JwksServer};
use common::{echo_upstream, Gateway, AUDIENCE, ISSUER};
use jobgate::token::mint::Signer;
use jobgate::token::Alg;
use serde_json::{json, Value};

const POLICY: &str = "projects:\n  acme/app: { id: 42 }\n";

/// A JWKS document with these keys (kid, signer) plus keys jobgate must skip.
fn jwks(keys: &[(&str, &Signer)]) -> String {
    let mut list: Vec<Value> = keys
        .iter()
        .map(|(kid, signer)| {
            let mut jwk = signer.public_jwk();
            jwk["kid"] = json!(kid);
            jwk
        })
        .collect();
    list.push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
    list.push(json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}));
    json!({ "keys": list }).to_string()
}

struct Env {
    _dir: tempfile::TempDir,
    server: JwksServer,
    gateway: Gateway,
    client: Client,
    main: Signer,
    main_kid: String,
}

async fn env(max_age: u64, issuer_extra: &str) -> Env {
    env_with_dir(tempfile::tempdir().unwrap(), max_age, issuer_extra, "").await
}

async fn env_with_dir(dir: tempfile::TempDir, max_age: u64, issuer_extra: &str, extra_config: &str) -> Env {
    let (main, main_kid) = Gateway::issuer_key(dir.path());
    let server = JwksServer::start(dir.path(), jwks(&[(&main_kid, &main)]), max_age).await;
    let issuer = format!(
        "name: ci, iss: '{ISSUER}', audiences: [{AUDIENCE}], jwks_url: '{}', ca_file: '{}', {issuer_extra}",
        server.url(),
        server.ca.display()
    );
    let upstream = format!("git: {{ url: 'http://127.0.0.1:{}' }}", echo_upstream());
    let gateway =
        tokio::task::block_in_place(|| Gateway::start_full(dir.path(), &upstream, &issuer, POLICY, extra_config));
    let client = Client::new(&gateway.ca);
    Env { _dir: dir, server, gateway, client, main, main_kid }
}

impl Env {
    fn token(&self, signer: &Signer, kid: &str) -> String {
        let payload = jobgate::token::mint::JobClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            project_path: "acme/app".into(),
            project_id: 42,
            user_id: 5,
            job_id: 77,
            pipeline_id: 7,
            git_ref: "main".into(),
            ref_protected: true,
            ttl_secs: 600,
            scopes: None,
            extra: vec![],
        }
        .payload(jobgate::clock::unix_now());
        signer.sign(kid, &payload).unwrap()
    }

    async fn get(&self, token: &str) -> (u16, String) {
        self.client.get_bearer(&self.gateway.url("/acme/app.git/info/refs?service=git-upload-pack"), token).await
    }
}

fn es256() -> Signer {
    Signer::generate(Alg::ES256).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_key_works_at_once_and_a_removed_key_stops_at_once() {
    let env = env(300, "unknown_kid_cooldown_secs: 1").await;
    let main_token = env.token(&env.main, &env.main_kid);
    assert_eq!(env.get(&main_token).await.0, 200, "the unusable keys in the set poison nothing");
    assert_eq!(env.get(&main_token).await.0, 200, "cached");

    let fresh = es256();
    let fresh_token = env.token(&fresh, "fresh");
    let before = env.server.fetches();
    env.server.publish(jwks(&[(&env.main_kid, &env.main), ("fresh", &fresh)]));
    let (status, body) = env.get(&fresh_token).await;
    assert_eq!(status, 200, "a freshly added key passes without restart: {body}");
    assert_eq!(env.server.fetches(), before + 1, "exactly one refetch");

    // Garbage and an empty set are refused; the last good set stays.
    for broken in ["<html>502</html>", "{\"keys\": []}"] {
        env.server.publish(broken.to_owned());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let fetches = env.server.fetches();
        assert_eq!(env.get(&env.token(&es256(), "random")).await.0, 401);
        assert_eq!(env.server.fetches(), fetches + 1, "the unknown kid fetched the broken set");
        assert_eq!(env.get(&main_token).await.0, 200, "{broken}: the last good set stays");
        assert_eq!(env.get(&fresh_token).await.0, 200);
    }

    // Remove the main key; the next unknown kid (after the cooldown) brings the new set.
    env.server.publish(jwks(&[("fresh", &fresh)]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = env.get(&env.token(&es256(), "random")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = env.get(&main_token).await;
    assert_eq!(status, 401, "a removed key's cached token fails at once: {body}");
    assert!(body.contains("unknown_kid"), "{body}");
    assert_eq!(env.get(&fresh_token).await.0, 200);
}

/// The token realm meets the core's needs through the same driver as the proxy path: a key published
/// since the last poll works at `/jwt/auth` on its first request too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_key_works_at_once_at_the_token_realm_too() {
    let dir = tempfile::tempdir().unwrap();
    jobgate::tools::generate::registry_key(&dir.path().join("keys")).unwrap();
    let realm = "registry_auth: { signing_key: keys/registry-key.pem, issuer: jobgate, service: container_registry }";
    let env = env_with_dir(dir, 300, "unknown_kid_cooldown_secs: 1", realm).await;
    let url = env.gateway.url("/jwt/auth?service=container_registry&scope=repository:acme/app:pull");
    let (status, body) = env.client.get_bearer(&url, &env.token(&env.main, &env.main_kid)).await;
    assert_eq!(status, 200, "the realm answers a known key: {body}");

    let fresh = es256();
    env.server.publish(jwks(&[(&env.main_kid, &env.main), ("fresh", &fresh)]));
    let before = env.server.fetches();
    let (status, body) = env.client.get_bearer(&url, &env.token(&fresh, "fresh")).await;
    assert_eq!(status, 200, "a freshly published key passes at the realm without restart: {body}");
    assert!(body.contains("\"token\""), "{body}");
    assert_eq!(env.server.fetches(), before + 1, "exactly one refetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_kids_cause_at_most_one_fetch_per_cooldown() {
    let env = Arc::new(env(300, "unknown_kid_cooldown_secs: 30").await);
    let attacker = es256();
    let tokens: Vec<String> = (0..2000).map(|i| env.token(&attacker, &format!("kid-{i}-{}", i * 7919))).collect();
    let before = env.server.fetches();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(125) {
        let (env, chunk) = (env.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for token in chunk {
                let (status, body) = env.get(&token).await;
                assert!(body.contains("unknown_kid"), "{body}");
                refused += usize::from(status == 401);
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    assert_eq!(refused, 2000);
    let windows = 1 + started.elapsed().as_secs() / 30;
    let fetched = env.server.fetches() - before;
    assert!(fetched as u64 <= windows, "{fetched} fetches in {windows} cooldown window(s)");
    let metrics = common::admin_get(&env.gateway, "/metrics");
    assert!(metrics.contains("jobgate_issuer_unknown_kid_suppressed_total{issuer=\"ci\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_issuer_is_trusted_until_the_staleness_limit_then_fails_closed() {
    let env = env(1, "max_staleness_secs: 3").await;
    let token = env.token(&env.main, &env.main_kid);
    assert_eq!(env.get(&token).await.0, 200);
    env.server.stop();
    let stopped = Instant::now();
    let mut last_ok = stopped;
    let closed = loop {
        let (status, body) = env.get(&token).await;
        match status {
            200 => last_ok = Instant::now(),
            503 => break body,
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "never failed closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(closed.contains("key_set_stale"), "{closed}");
    assert!(last_ok.duration_since(stopped) >= Duration::from_millis(1500), "known keys kept working for a while");
    assert_eq!(env.get(&token).await.0, 503, "and it stays closed");
    let ready = common::admin_status(&env.gateway, "/-/ready");
    assert_eq!(ready, 503, "not ready with a stale key set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_under_load_fails_no_request() {
    let env = Arc::new(env(1, "unknown_kid_cooldown_secs: 1").await);
    let stays = es256();
    env.server.publish(jwks(&[(&env.main_kid, &env.main), ("stays", &stays)]));
    let tokens = [env.token(&env.main, &env.main_kid), env.token(&stays, "stays")];
    let rotation = {
        let env = env.clone();
        let stays_jwk = jwks(&[("stays", &stays)]);
        tokio::spawn(async move {
            for round in 0..30 {
                let extra = es256();
                let mut doc: Value =
                    serde_json::from_str(&jwks(&[(&env.main_kid, &env.main), (&format!("r{round}"), &extra)])).unwrap();
                let stays: Value = serde_json::from_str(&stays_jwk).unwrap();
                doc["keys"].as_array_mut().unwrap().push(stays["keys"][0].clone());
                env.server.publish(doc.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (env, token) = (env.clone(), tokens[t % 2].clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..125 {
                let (status, body) = env.get(&token).await;
                if status != 200 {
                    failures.push(body);
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    rotation.await.unwrap();
    assert!(failures.is_empty(), "{} of 2000 requests failed: {:?}", failures.len(), failures.first());
    assert!(env.server.fetches() > 2, "the set was refetched during the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_finds_the_jwks_uri() {
    let dir = tempfile::tempdir().unwrap();
    let (main, kid) = Gateway::issuer_key(dir.path());
    let server = JwksServer::start(dir.path(), jwks(&[(&kid, &main)]), 300).await;
    let iss = server.issuer_url();
    let issuer =
        format!("name: ci, iss: '{iss}', audiences: [{AUDIENCE}], discovery: true, ca_file: '{}'", server.ca.display());
    let upstream = format!("git: {{ url: 'http://127.0.0.1:{}' }}", echo_upstream());
    let gateway = tokio::task::block_in_place(|| Gateway::start_full(dir.path(), &upstream, &issuer, POLICY, ""));
    let token = gateway.token_with("acme/app", 42, false, vec![("iss".into(), json!(iss))]);
    let (status, body) =
        Client::new(&gateway.ca).get_bearer(&gateway.url("/acme/app/info/refs?service=git-upload-pack"), &token).await;
    assert_eq!(status, 200, "{body}");
    assert!(server.fetches() >= 1);
}

#[test]
fn a_watched_jwks_file_rotates_without_restart_and_a_broken_edit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("http://127.0.0.1:{}", echo_upstream());
    let gw = Gateway::start(dir.path(), &upstream, POLICY);
    let url = "/acme/app.git/info/refs?service=git-upload-pack";
    let status = |token: &str| common::curl(&gw, &["-H", &format!("JOB-TOKEN: {token}"), &gw.url(url)]).0;
    let main_token = gw.token("acme/app", 42, false);
    assert_eq!(status(&main_token), 200);

    let added = es256();
    let added_token = {
        let payload: Value = serde_json::from_slice(&base64_payload(&main_token)).unwrap();
        added.sign("added", &payload).unwrap()
    };
    assert_eq!(status(&added_token), 401);
    let jwks_path = dir.path().join("keys/jwks.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&jwks_path).unwrap()).unwrap();
    let mut jwk = added.public_jwk();
    jwk["kid"] = json!("added");
    doc["keys"].as_array_mut().unwrap().push(jwk);
    jobgate::tools::generate::write(&jwks_path, &doc.to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&added_token) != 200 {
        assert!(Instant::now() < deadline, "the added key never became usable");
        std::thread::sleep(Duration::from_millis(50));
    }

    jobgate::tools::generate::write(&jwks_path, "{\"keys\": [").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = common::admin_get(&gw, "/-/ready");
        if ready.contains("jwks.json") && ready.contains("not a JWKS document") {
            break;
        }
        assert!(Instant::now() < deadline, "the broken edit was not reported: {ready}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(&main_token), 200, "the last good key set stays");
    assert_eq!(status(&added_token), 200);
}

fn base64_payload(token: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()
}
