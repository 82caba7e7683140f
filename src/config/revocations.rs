//! Where revocations live: a file of this process's, and Redis shared by every replica.

use std::path::PathBuf;

use serde::Deserialize;

/// Where revocations are persisted; without a file they live in memory only (lost on restart). With
/// `redis`, they are shared by every replica pointed at the same Redis and prefix.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationsConfig {
    pub file: Option<PathBuf>,
    pub redis: Option<RedisConfig>,
}

/// The Redis every replica shares revocations through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB` or `redis+unix:///PATH`; no password in it (see `password_file`).
    pub url: String,
    /// A file holding the Redis password (`AUTH`), when the server wants one.
    pub password_file: Option<PathBuf>,
    /// Keys and the channel are named `<key_prefix>:revocations`.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// A replica that cannot reach Redis for longer than this reports not ready (it keeps enforcing
    /// what it has, and queues what it revokes meanwhile).
    #[serde(default = "default_redis_unready")]
    pub unready_after_secs: u64,
    /// A secret every replica holds (at least 32 bytes): with it, replicas also share GitLab's
    /// job-token answers, each one sealed with HMAC-SHA-256 under it, so whoever can write to Redis
    /// still cannot make a replica believe an identity. Without it, answers are not shared.
    pub answers_key_file: Option<PathBuf>,
}

fn default_redis_prefix() -> String {
    "jobgate".into()
}
fn default_redis_unready() -> u64 {
    30
}
