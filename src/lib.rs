//! jobgate: a TLS-terminating reverse proxy that enforces scoped, short-lived CI job JWTs in front of
//! GitLab's HTTP endpoints.
//!
//! One request takes one way through the pipeline, each stage returning the next stage's type:
//!
//! ```text
//! accept ─► TLS ─► classify ─► extract ─► verify ─► decide ─► forward | reject ─► record
//!  serve    tls    classify/   token::    token::   policy::  forward   reject     audit,
//!                  → Classified extract   verify    decide    (stream)             metrics
//!                               → token  → Claims  → Permit
//! ```
//!
//! `enforce::enforce` runs classify → extract → verify → decide synchronously against one
//! [`snapshot::Snapshot`] (the policy, swapped whole by `reload`) and the issuers' key sets (each
//! behind its own `ArcSwap` in `token::source`); `proxy::Gateway::handle` adds the edges: the LFS
//! batch peek, the unknown-kid refetch, the registry token realm (`registry_auth`), forwarding,
//! refusing and recording. `admin` serves health, readiness, metrics, reload, revocations (`revoke`)
//! and the GitLab job webhook.

pub mod admin;
pub mod audit;
pub mod body;
pub mod classify;
pub mod clock;
pub mod config;
pub mod demo;
pub mod enforce;
pub mod expect;
pub mod explain;
pub mod forward;
pub mod generate;
pub mod keys;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod query;
pub mod reason;
pub mod record;
pub mod refusal;
pub mod reject;
pub mod reload;
pub mod registry;
pub mod revoke;
pub mod scope;
pub mod serve;
pub mod snapshot;
pub mod tls;
pub mod token;
pub mod watch;
