//! The process config's bounds: sizes and counts (`limits`), timeouts (`timeouts`), and where audit
//! lines go (`audit`). Defaults for every field; unknown keys are errors.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers), HTTP/1 and HTTP/2 alike.
    pub max_header_bytes: usize,
    /// Largest accepted token; larger ones are rejected before any parsing.
    pub max_token_bytes: usize,
    /// Verified tokens kept in the cache (each entry dies at its token's `exp`).
    pub token_cache_entries: usize,
    /// Client connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest LFS batch body jobgate reads to find its `operation` (it is then replayed upstream).
    pub lfs_batch_bytes: usize,
    /// Largest API request body jobgate reads for credentials when GitLab would read them there
    /// (form, multipart and JSON bodies; see README *Security*). A larger form body is refused (413
    /// `body_not_inspected`); a larger multipart or JSON body is decided on its first bytes and the
    /// rest is scanned as it streams (cut off at a further credential).
    pub body_credential_bytes: usize,
    /// All bodies being read at once (LFS batches and API bodies), process-wide; beyond it, 503.
    pub peek_budget_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_token_bytes: 8 * 1024,
            token_cache_entries: 100_000,
            max_connections: 10_000,
            lfs_batch_bytes: 1024 * 1024,
            body_credential_bytes: 1024 * 1024,
            peek_budget_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub tls_handshake_secs: u64,
    /// Time to receive a request head; on HTTP/1 keep-alive connections this is also the idle timeout.
    pub request_header_secs: u64,
    /// HTTP/2 connections are pinged at this interval and closed when a ping goes unanswered.
    pub keepalive_secs: u64,
    /// How long shutdown waits for in-flight requests.
    pub drain_secs: u64,
    /// How long an LFS batch body may take to arrive (it is read before forwarding).
    pub body_peek_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tls_handshake_secs: 10,
            request_header_secs: 30,
            keepalive_secs: 60,
            drain_secs: 30,
            body_peek_secs: 10,
        }
    }
}

impl Timeouts {
    pub fn tls_handshake(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_secs)
    }
    pub fn request_header(&self) -> Duration {
        Duration::from_secs(self.request_header_secs)
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
    pub fn body_peek(&self) -> Duration {
        Duration::from_secs(self.body_peek_secs)
    }
}

/// Where audit lines go: appended to `file`, or standard output when no file is named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSink {
    pub file: Option<PathBuf>,
}
