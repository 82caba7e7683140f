//! Prometheus metrics on a registry of our own. Handles are created once at start; label values come
//! from closed enums (reason ids, families, outcomes) or from the operator's config (issuer names) —
//! never a project, user, job id or path.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// What can ask for a reload: the file watcher, SIGHUP, `POST /-/reload`.
pub const RELOAD_SOURCES: [&str; 3] = ["watch", "sighup", "admin"];

/// Every metric jobgate exports.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub token_cache: IntCounterVec,
    pub reloads: IntCounterVec,
    /// 1 when the last reload of any source went live, 0 while the last one failed.
    pub config_last_reload_successful: IntGauge,
    pub config_last_reload_success: Gauge,
    pub revocations: IntGauge,
    pub revocations_shared_connected: IntGauge,
    pub revocations_queued: IntGauge,
    pub revocations_received: IntCounter,
    pub verify_seconds: Histogram,
    pub upstream_seconds: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub active_connections: IntGauge,
    pub tls_handshake_failures: IntCounterVec,
    pub connections_refused: IntCounter,
    pub audit_dropped: IntCounter,
    pub certificate_expiry: GaugeVec,
    pub gitlab_lookups: IntCounterVec,
    pub gitlab_lookup_seconds: Histogram,
    pub impersonation_tokens: IntCounterVec,
    keys_loaded: IntGaugeVec,
    key_set_fetched: GaugeVec,
    key_fetches: IntCounterVec,
    unknown_kid_refetches: IntCounterVec,
    unknown_kid_suppressed: IntCounterVec,
}

/// One issuer's handles, label already resolved.
#[derive(Clone)]
pub struct IssuerStats {
    pub keys_loaded: IntGauge,
    /// Seconds since the epoch of the last successful load or fetch (also "not modified").
    pub key_set_fetched: Gauge,
    key_fetches: IntCounterVec,
    issuer: String,
    pub unknown_kid_refetches: IntCounter,
    pub unknown_kid_suppressed: IntCounter,
}

/// How a key-set fetch or load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    Updated,
    Unchanged,
    NotModified,
    Failed,
    Invalid,
}

impl FetchOutcome {
    fn id(self) -> &'static str {
        match self {
            FetchOutcome::Updated => "updated",
            FetchOutcome::Unchanged => "unchanged",
            FetchOutcome::NotModified => "not_modified",
            FetchOutcome::Failed => "failed",
            FetchOutcome::Invalid => "invalid",
        }
    }
}

impl IssuerStats {
    pub fn fetched(&self, outcome: FetchOutcome) {
        self.key_fetches.with_label_values(&[self.issuer.as_str(), outcome.id()]).inc();
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are static and unique, so registration cannot fail; a failure would only lose a metric.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric(name)))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name)))
}

/// Buckets for in-process work (verify): 10 µs to 50 ms.
const FAST_BUCKETS: [f64; 10] = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.05];
/// Buckets for network round trips: 1 ms to 30 s.
const SLOW_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[cold]
fn unreachable_metric(name: &str) -> ! {
    // Only reachable through a programming error in the static definitions below (tests cover them).
    panic!("invalid metric definition {name}")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let gauge_vec = |name: &str, help: &str| {
            register(
                r,
                IntGaugeVec::new(Opts::new(name, help), &["issuer"]).unwrap_or_else(|_| unreachable_metric(name)),
            )
        };
        let metrics = Metrics {
            requests: counter(
                r,
                "jobgate_requests_total",
                "Requests by family, action, decision (allow, deny, passthrough, or challenge: the 401 that asks a client for its credential), reason id and status class.",
                &["family", "action", "decision", "reason", "status"],
            ),
            request_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("jobgate_request_duration_seconds", "Time from request head to response head.")
                        .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                    &["family"],
                )
                .unwrap_or_else(|_| unreachable_metric("jobgate_request_duration_seconds")),
            ),
            token_cache: counter(r, "jobgate_token_cache_total", "Verified-token cache lookups by result.", &["result"]),
            reloads: counter(r, "jobgate_reloads_total", "Reloads by source and result.", &["source", "result"]),
            config_last_reload_successful: gauge(r, "jobgate_config_last_reload_successful", "Whether the last reload went live (1) or failed and the last good configuration serves (0)."),
            config_last_reload_success: register(
                r,
                Gauge::new("jobgate_config_last_reload_success_timestamp_seconds", "When the configuration last went live (start or reload).")
                    .unwrap_or_else(|_| unreachable_metric("jobgate_config_last_reload_success_timestamp_seconds")),
            ),
            revocations: gauge(r, "jobgate_revocations", "Revocations held (jti and job ids)."),
            revocations_shared_connected: gauge(r, "jobgate_revocations_shared_connected", "Whether this replica follows the shared revocation store (Redis) now."),
            revocations_queued: gauge(r, "jobgate_revocations_queued", "Revocations made while Redis was unreachable, not yet written to it."),
            revocations_received: register(
                r,
                IntCounter::new("jobgate_revocations_received_total", "Revocations applied from the shared channel (every replica's, this one's included).")
                    .unwrap_or_else(|_| unreachable_metric("jobgate_revocations_received_total")),
            ),
            verify_seconds: register(
                r,
                Histogram::with_opts(HistogramOpts::new("jobgate_verify_duration_seconds", "The decision round that verified the token: classification, verification (cache included) and the policy; the edge times it, the core reads no clock.").buckets(FAST_BUCKETS.to_vec()))
                    .unwrap_or_else(|_| unreachable_metric("jobgate_verify_duration_seconds")),
            ),
            upstream_seconds: register(
                r,
                HistogramVec::new(HistogramOpts::new("jobgate_upstream_duration_seconds", "Time to the upstream's response head.").buckets(SLOW_BUCKETS.to_vec()), &["family"])
                    .unwrap_or_else(|_| unreachable_metric("jobgate_upstream_duration_seconds")),
            ),
            upstream_errors: counter(r, "jobgate_upstream_errors_total", "Upstream failures by kind.", &["family", "kind"]),
            active_connections: gauge(r, "jobgate_active_connections", "Open client connections on the public listener."),
            tls_handshake_failures: counter(r, "jobgate_tls_handshake_failures_total", "Failed or timed-out TLS handshakes.", &["kind"]),
            connections_refused: register(
                r,
                IntCounter::new("jobgate_connections_over_limit_total", "Connections answered 503 over the connection limit.")
                    .unwrap_or_else(|_| unreachable_metric("jobgate_connections_over_limit_total")),
            ),
            audit_dropped: register(
                r,
                IntCounter::new("jobgate_audit_lines_dropped_total", "Audit lines dropped because the writer fell behind.")
                    .unwrap_or_else(|_| unreachable_metric("jobgate_audit_lines_dropped_total")),
            ),
            certificate_expiry: register(
                r,
                GaugeVec::new(Opts::new("jobgate_certificate_expiry_timestamp_seconds", "notAfter of each served certificate."), &["listener"])
                    .unwrap_or_else(|_| unreachable_metric("jobgate_certificate_expiry_timestamp_seconds")),
            ),
            gitlab_lookups: counter(r, "jobgate_gitlab_lookups_total", "GitLab job-token lookups (GET /api/v4/job) by outcome.", &["outcome"]),
            impersonation_tokens: counter(
                r,
                "jobgate_impersonation_tokens_total",
                "Impersonation tokens of jobs' users: minted, mint_refused, mint_failed, revoked, revoke_failed (retried).",
                &["event"],
            ),
            gitlab_lookup_seconds: register(
                r,
                Histogram::with_opts(HistogramOpts::new("jobgate_gitlab_lookup_duration_seconds", "Time GitLab took to answer a job-token lookup.").buckets(SLOW_BUCKETS.to_vec()))
                    .unwrap_or_else(|_| unreachable_metric("jobgate_gitlab_lookup_duration_seconds")),
            ),
            keys_loaded: gauge_vec("jobgate_issuer_keys", "Usable keys in the issuer's current key set."),
            key_set_fetched: register(
                r,
                GaugeVec::new(Opts::new("jobgate_issuer_key_set_loaded_timestamp_seconds", "When the key set was last loaded or confirmed."), &["issuer"])
                    .unwrap_or_else(|_| unreachable_metric("jobgate_issuer_key_set_loaded_timestamp_seconds")),
            ),
            key_fetches: counter(r, "jobgate_issuer_key_fetches_total", "Key-set loads and fetches by outcome.", &["issuer", "outcome"]),
            unknown_kid_refetches: counter(r, "jobgate_issuer_unknown_kid_refetches_total", "Fetches caused by an unknown kid.", &["issuer"]),
            unknown_kid_suppressed: counter(r, "jobgate_issuer_unknown_kid_suppressed_total", "Unknown kids refused without fetching (cooldown).", &["issuer"]),
            registry,
        };
        // Series an alert watches exist from the start, so the first failure is an increase.
        for (source, result) in RELOAD_SOURCES.iter().flat_map(|s| [(s, "ok"), (s, "failed")]) {
            metrics.reloads.with_label_values(&[source, result]);
        }
        for kind in ["error", "timeout"] {
            metrics.tls_handshake_failures.with_label_values(&[kind]);
        }
        let build = IntGaugeVec::new(Opts::new("jobgate_build_info", "Build information."), &["version"])
            .unwrap_or_else(|_| unreachable_metric("jobgate_build_info"));
        register(&metrics.registry, build).with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics
    }

    /// Handles for one issuer.
    pub fn issuer(&self, name: &str) -> IssuerStats {
        IssuerStats {
            keys_loaded: self.keys_loaded.with_label_values(&[name]),
            key_set_fetched: self.key_set_fetched.with_label_values(&[name]),
            key_fetches: self.key_fetches.clone(),
            issuer: name.to_owned(),
            unknown_kid_refetches: self.unknown_kid_refetches.with_label_values(&[name]),
            unknown_kid_suppressed: self.unknown_kid_suppressed.with_label_values(&[name]),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_valid_and_render() {
        let m = Metrics::new();
        m.issuer("gitlab").fetched(FetchOutcome::Updated);
        m.token_cache.with_label_values(&["hit"]).inc();
        let text = m.render();
        assert!(text.contains("jobgate_issuer_key_fetches_total{issuer=\"gitlab\",outcome=\"updated\"} 1"), "{text}");
        assert!(text.contains("jobgate_token_cache_total{result=\"hit\"} 1"), "{text}");
        assert!(text.contains("jobgate_build_info{version="), "{text}");
        assert!(
            text.contains("jobgate_reloads_total{result=\"failed\",source=\"watch\"} 0"),
            "pre-initialised: {text}"
        );
        assert!(text.contains("jobgate_tls_handshake_failures_total{kind=\"timeout\"} 0"), "pre-initialised: {text}");
    }
}
