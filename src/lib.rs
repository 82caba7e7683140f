//! jobgate: a TLS-terminating reverse proxy that enforces scoped, short-lived CI job credentials in
//! front of GitLab's HTTP endpoints.
//!
//! One request takes one way through the pipeline, each stage returning the next stage's type:
//!
//! ```text
//! accept ─► TLS ─► classify ─► extract ─► verify ─► decide ─► forward | reject ─► record
//!  app::    infra  classify/   token::    token::   policy::  edge::     edge::exit  edge::record
//!  serve    ::tls  → Routed    extract    verify    decide    upstream   edge::reject
//!                              → token    → Claims  → Permit
//!                         ╰──────── enforce: Step::Decided | Step::Need ────────╯
//!                                   ▲                    │
//!                                   ╰── edge::drive ◄────╯  (key refetch, GitLab's answers, LFS body)
//! ```
//!
//! The layers, bottom up; a layer imports only those below it (`tests/architecture.rs` checks the
//! core's boundary, that the edge imports neither the process nor the tools, and that the core
//! reads no clock):
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | vocabulary | `scope`, `path`, `reason`, `query`, `glob`, `clock`, `yaml`, `error`, `kit` | words and building blocks every layer uses (`kit`: an expiring bounded map, single flight) |
//! | config | `config` | the file, validated once into typed values |
//! | the core's stages | `classify`, `token`, `policy`, `revoke` (the set), `snapshot`, `refusal` | pure, synchronous, no I/O; a `refusal` is a reason and a line |
//! | the decision | `enforce` | THE composition: classify → extract → verify → decide, saying what it needs; the realms' decisions |
//! | services the edge asks | `keys` (key sets kept fresh), `gitlab` (job tokens, roles, impersonation), `revoke::{store, shared}` | I/O, each behind its own API |
//! | infrastructure | `infra` | metrics, audit, TLS, Redis, the decision log |
//! | the request edge | `edge` | route, drive the core's needs, the proxy path's phases, forward, answer, record |
//! | the process | `app` | preflight, serve, reload, watch, admin |
//! | operator tools | `tools` | explain, expect, suggest, import, view, generate, mint, demo |
//!
//! Policy and API routes live in one [`snapshot::Snapshot`] swapped whole; each issuer's key set in
//! its own [`token::keys::KeyState`], loaded once per verification.

pub mod clock;
pub mod error;
pub mod glob;
pub mod kit;
pub mod path;
pub mod query;
pub mod reason;
pub mod refusal;
pub mod scope;
pub mod yaml;

pub mod config;

pub mod classify;
pub mod policy;
pub mod revoke;
pub mod snapshot;
pub mod token;

pub mod enforce;

pub mod gitlab;
pub mod keys;

pub mod infra;

pub mod edge;

pub mod app;

pub mod tools;
