//! Reload: build a new snapshot (policy + key sets) and certificate off the request path, validate,
//! swap. A failure keeps the last good state, is logged with file and line, and shows on `/-/ready`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::clock::rfc3339;
use crate::config::Config;
use crate::edge::gateway::Gateway;
use crate::infra::tls::CertResolver;
use crate::snapshot::Snapshot;

/// When a source last loaded, and its last error (cleared by the next success).
struct SourceStatus {
    loaded_at: SystemTime,
    error: Option<(SystemTime, String)>,
}

impl SourceStatus {
    fn fresh() -> ArcSwap<SourceStatus> {
        ArcSwap::from_pointee(SourceStatus { loaded_at: SystemTime::now(), error: None })
    }

    fn record(status: &ArcSwap<SourceStatus>, result: Result<(), String>) -> Option<String> {
        let now = SystemTime::now();
        match result {
            Ok(()) => {
                status.store(Arc::new(SourceStatus { loaded_at: now, error: None }));
                None
            }
            Err(e) => {
                let loaded_at = status.load().loaded_at;
                status.store(Arc::new(SourceStatus { loaded_at, error: Some((now, e.clone())) }));
                Some(e)
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "loaded_at": rfc3339(self.loaded_at),
            "last_error": self.error.as_ref().map(|(at, e)| serde_json::json!({"at": rfc3339(*at), "error": e})),
        })
    }
}

/// Reads the policy folder and runs the policy's own tests (`policies/tests/*.yaml`, as `jobgate
/// check` does) against it: a policy whose tests fail never goes live, at start or on reload.
/// Returns the snapshot and how many tests passed.
///
/// # Errors
/// A file that does not load (file and line), or the failing tests, each named.
pub fn tested_snapshot(config: &Config, generation: u64) -> Result<(Snapshot, usize), String> {
    let snapshot = Snapshot::build(config, generation).map_err(|e| e.to_string())?;
    let report = crate::enforce::expect::run(&snapshot, &config.policy_dir).map_err(|e| e.to_string())?;
    if !report.failures.is_empty() {
        return Err(format!("{} policy test(s) failed: {}", report.failures.len(), report.failures.join("; ")));
    }
    Ok((snapshot, report.passed))
}

/// Owns the reload sources and remembers how the last attempt of each went.
pub struct Reloader {
    config: Config,
    gateway: Arc<Gateway>,
    certs: Arc<CertResolver>,
    generation: AtomicU64,
    failures: AtomicU64,
    last_error: ArcSwapOption<(SystemTime, String)>,
    policy: ArcSwap<SourceStatus>,
    certificate: ArcSwap<SourceStatus>,
}

impl Reloader {
    pub fn new(config: Config, gateway: Arc<Gateway>, certs: Arc<CertResolver>, generation: u64) -> Self {
        gateway.metrics().config_last_reload_successful.set(1);
        gateway.metrics().config_last_reload_success.set(crate::clock::unix_now() as f64);
        Reloader {
            config,
            gateway,
            certs,
            generation: AtomicU64::new(generation),
            failures: AtomicU64::new(0),
            last_error: ArcSwapOption::empty(),
            policy: SourceStatus::fresh(),
            certificate: SourceStatus::fresh(),
        }
    }

    /// Reloads certificates, policy and key sets. Each source that fails keeps its last good state.
    ///
    /// # Errors
    /// The error messages of the sources that failed, joined.
    /// `source` says what asked (`watch`, `sighup`, `admin`), for the metric.
    pub fn reload(&self, source: &'static str) -> Result<u64, String> {
        let mut errors = Vec::new();
        let certs = self.certs.reload(&self.config.tls).map_err(|e| e.to_string());
        errors.extend(SourceStatus::record(&self.certificate, certs));
        self.record_certificate_expiry();
        for source in self.gateway.key_sources() {
            if let Err(e) = source.reload_file() {
                errors.push(format!("issuer {}: {e}", source.name()));
            }
        }
        // Generations are never reused, even by concurrent reloads (watch, SIGHUP, admin).
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let policy = tested_snapshot(&self.config, generation).map(|(snapshot, _)| self.gateway.swap_policy(snapshot));
        errors.extend(SourceStatus::record(&self.policy, policy));
        let result = if errors.is_empty() { "ok" } else { "failed" };
        let metrics = self.gateway.metrics();
        metrics.reloads.with_label_values(&[source, result]).inc();
        metrics.config_last_reload_successful.set(i64::from(errors.is_empty()));
        if errors.is_empty() {
            metrics.config_last_reload_success.set(crate::clock::unix_now() as f64);
        }
        if errors.is_empty() {
            tracing::info!(generation, source, "reloaded");
            self.last_error.store(None);
            Ok(generation)
        } else {
            let message = errors.join("; ");
            tracing::error!("reload failed, keeping the last good configuration: {message}");
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.last_error.store(Some(Arc::new((SystemTime::now(), message.clone()))));
            Err(message)
        }
    }

    pub fn record_certificate_expiry(&self) {
        if let Some(not_after) = self.certs.not_after() {
            self.gateway.metrics().certificate_expiry.with_label_values(&["public"]).set(not_after as f64);
        }
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Ready once every issuer has a usable, fresh key set (the policy loaded before we started), and,
    /// when revocations are shared, they were replayed and Redis was not lost for too long.
    pub fn ready(&self) -> bool {
        let now = crate::clock::unix_now();
        let keys =
            self.gateway.key_sources().iter().all(|s| !s.state().is_stale(now) && !s.state().current().set.is_empty());
        keys && self.gateway.revocations().shared().is_none_or(|shared| shared.ready())
    }

    /// The state `/-/ready` shows.
    pub fn status(&self) -> serde_json::Value {
        let snapshot = self.gateway.snapshot();
        let now = crate::clock::unix_now();
        let issuers: Vec<serde_json::Value> = self
            .gateway
            .key_sources()
            .iter()
            .map(|source| {
                let keys = source.state().current();
                serde_json::json!({
                    "name": source.name(),
                    "keys": keys.set.len(),
                    "key_set_generation": keys.generation,
                    "skipped_keys": keys.set.skipped,
                    "stale": source.state().is_stale(now),
                    "last_error": source.last_error(),
                })
            })
            .collect();
        let last_error = self.last_error.load();
        let mut policy = self.policy.load().json();
        policy["generation"] = snapshot.generation.into();
        policy["files"] = serde_json::json!(snapshot.policy.files);
        let mut certificate = self.certificate.load().json();
        certificate["not_after"] = self.certs.not_after().into();
        serde_json::json!({
            "sources": {
                "policy": policy,
                "certificate": certificate,
                "issuers": issuers,
                "revocations": {
                    "held": self.gateway.revocations().set().len(),
                    "shared": self.gateway.revocations().shared().map(|shared| shared.status()),
                },
                "gitlab": self.gateway.gitlab().map(crate::gitlab::GitLab::status),
            },
            "ready": self.ready(),
            "generation": snapshot.generation,
            "loaded_at": rfc3339(self.policy.load().loaded_at),
            "policy_files": snapshot.policy.files,
            "issuers": issuers,
            "reload_failures": self.failures.load(Ordering::Relaxed),
            "last_reload_error": last_error.as_ref().map(|e| serde_json::json!({
                "at": rfc3339(e.0),
                "error": e.1,
            })),
            "audit_lines_dropped": self.gateway.audit().dropped(),
        })
    }
}
