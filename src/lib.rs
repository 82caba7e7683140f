//! jobgate: a TLS-terminating reverse proxy that enforces scoped, short-lived CI job JWTs in front of
//! GitLab's HTTP endpoints.
//!
//! One request takes one way through the pipeline, each stage returning the next stage's type:
//!
//! ```text
//! accept ─► TLS ─► classify ─► extract ─► verify ─► decide ─► forward | reject ─► record
//!  serve    tls    classify/   token::    token::   policy::  forward   reject     record
//!                  → Routed     extract   verify    decide    (stream)  (status,   (audit line,
//!                               → token  → Claims  → Permit              challenge, metrics,
//!                                                                        body)      X-Request-Id)
//! ```
//!
//! The decision core — `classify`, `token` (extract, jws, verify, claims, cache, keys), `policy`,
//! `revoke` (the set), `registry` (tokens, realm), `token::gitlab` (GitLab's job answers) and
//! `enforce` — is synchronous and does no I/O;
//! `tests/architecture.rs` keeps it that way. `enforce` is the ONE composition of the stages:
//! `proxy::Gateway::handle` (serve), `explain` (narrating the same call through a trace), `expect`
//! (the policy tests of `jobgate check`) and `registry::realm` all call it. The edges around it:
//! `proxy` (route, LFS batch peek, unknown-kid refetch, forward | refuse), `forward`, `reject` (the
//! only place that picks status, challenge and body), `record` (every exit ends there), `keys` (key
//! sets kept fresh: polling, refetch, staleness), `gitlab` (asking GitLab about its own job tokens and
//! users' roles), `revoke::store` and `revoke::shared` (a file; Redis between replicas, through
//! `redis_link`), `preflight` (what `serve` loads and `check` validates), `reload`, `watch`, `admin`
//! (with the decision page: `decisions`, fed by `audit`'s writer, and `view`), `serve`. Rolling out:
//! `suggest` (audit lines → allowlist entries) and `import` (GitLab's allowlists → policy).
//! Policy and API routes live in one [`snapshot::Snapshot`] swapped whole; each issuer's key set in
//! its own [`token::keys::KeyState`], loaded once per verification.

pub mod admin;
pub mod audit;
pub mod body;
pub mod body_credentials;
pub mod classify;
pub mod clock;
pub mod config;
mod connect;
pub mod decisions;
pub mod demo;
pub mod enforce;
pub mod error;
pub mod expect;
pub mod explain;
pub mod forward;
pub mod generate;
pub mod gitlab;
pub mod impersonate;
pub mod import;
pub mod keys;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod preflight;
pub mod proxy;
pub mod query;
pub mod reason;
pub mod record;
pub mod redis_link;
pub mod refusal;
pub mod registry;
pub mod reject;
pub mod reload;
pub mod revoke;
pub mod scope;
pub mod serve;
pub mod snapshot;
pub mod suggest;
pub mod tls;
pub mod token;
pub mod view;
pub mod watch;
pub mod yaml;
