//! Everything `serve` loads before it binds, and all that `check` validates: one function for both,
//! so `check` passes exactly when `serve` would start. Every problem is collected, not only the
//! first, each naming its file or setting.

use std::path::Path;
use std::sync::Arc;

use crate::app::admin::Secret;
use crate::classify::FamilyMap;
use crate::config::Config;
use crate::edge::upstream::Upstream;
use crate::gitlab::GitLab;
use crate::infra::metrics::Metrics;
use crate::infra::redis_link::{RedisLink, Seal};
use crate::keys::KeySource;
use crate::snapshot::Snapshot;
use crate::token::registry::RegistryTokens;
use crate::token::verify::Issuer;

/// What a gateway is built from, every part loaded and checked.
pub struct Loaded {
    pub snapshot: Snapshot,
    /// How many policy tests passed (all did, or loading failed).
    pub tests_passed: usize,
    pub certificates: crate::infra::tls::Certificates,
    pub registry: Option<RegistryTokens>,
    pub upstreams: FamilyMap<Arc<Upstream>>,
    /// `hosts.passthrough`'s upstreams, in its order.
    pub passthrough: Vec<Arc<Upstream>>,
    pub gitlab: Option<GitLab>,
    pub admin_token: Secret,
    pub webhook_secret: Secret,
    pub issuers: Vec<Issuer>,
    pub key_sources: Vec<Arc<KeySource>>,
    /// Not errors, but worth saying: an issuer whose key set is not loaded yet starts refusing its
    /// tokens and keeps fetching.
    pub warnings: Vec<String>,
}

/// Loads every file the config names and checks what a loaded file cannot say by itself (a key set
/// with no key for the issuer's algorithms, a folder that does not exist for a file jobgate writes).
/// With `fetch`, URL key sources are fetched once; without, they start empty (`check --offline`).
///
/// # Errors
/// Every problem found, one line each.
pub async fn load(config: &Config, metrics: &Metrics, fetch: bool) -> Result<Loaded, Vec<String>> {
    let mut errors = Vec::new();
    let tested = keep(&mut errors, crate::app::reload::tested_snapshot(config, 1));
    let certificates = keep(&mut errors, crate::infra::tls::Certificates::load(&config.tls).map_err(|e| e.to_string()));
    let registry = keep(
        &mut errors,
        crate::config::RegistryAuthConfig::tokens(config.registry_auth.as_ref()).map_err(|e| e.to_string()),
    );
    let upstreams = keep(
        &mut errors,
        Upstream::for_families(&config.upstreams, metrics)
            .and_then(|families| Ok((families, Upstream::for_passthrough_hosts(config.hosts.as_ref(), metrics)?))),
    );
    let job_tokens = config.issuers.iter().find_map(|i| i.gitlab_job_tokens.as_ref());
    // With a shared Redis and the replicas' answers key, replicas share GitLab's answers too.
    let redis = config.revocations.redis.as_ref();
    let seal =
        keep(&mut errors, redis.and_then(|r| r.answers_key_file.as_deref()).map(Seal::load).transpose()).flatten();
    let gitlab = keep(
        &mut errors,
        match (&config.gitlab, job_tokens) {
            (Some(gitlab), Some(jobs)) => GitLab::new(gitlab, jobs, metrics).and_then(|gitlab| match (redis, seal) {
                (Some(redis), Some(seal)) => Ok(Some(gitlab.share_answers(RedisLink::open(redis)?, seal))),
                _ => Ok(Some(gitlab)),
            }),
            _ => Ok(None),
        },
    );
    let admin_token = keep(
        &mut errors,
        Secret::load(config.admin.token_file.as_deref()).map_err(|e| format!("admin.token_file {e}")),
    );
    let webhook_secret = keep(
        &mut errors,
        Secret::load(config.admin.webhook_secret_file.as_deref()).map_err(|e| format!("admin.webhook_secret_file {e}")),
    );
    if let Some(file) = &config.revocations.file {
        keep(&mut errors, writable_folder("revocations.file", file));
        keep(
            &mut errors,
            crate::revoke::store::replay(file, crate::clock::unix_now())
                .await
                .map(drop)
                .map_err(|e| format!("revocations.file {}: {e}", file.display())),
        );
    }
    if let Some(redis) = &config.revocations.redis {
        keep(&mut errors, crate::revoke::shared::Shared::new(redis, Arc::default()).map(drop));
    }
    if let Some(file) = &config.audit.file {
        keep(&mut errors, writable_folder("audit.file", file));
    }
    let (keys, warnings) = match crate::keys::start(config, metrics, fetch).await {
        Ok((issuers, sources)) => {
            let (problems, warnings) = key_set_problems(config, &sources, fetch);
            errors.extend(problems);
            (Some((issuers, sources)), warnings)
        }
        Err(problems) => {
            errors.extend(problems);
            (None, Vec::new())
        }
    };
    match (tested, certificates, registry, upstreams, gitlab, admin_token, webhook_secret, keys) {
        (
            Some((snapshot, tests_passed)),
            Some(certificates),
            Some(registry),
            Some((upstreams, passthrough)),
            Some(gitlab),
            Some(admin_token),
            Some(webhook_secret),
            Some((issuers, key_sources)),
        ) if errors.is_empty() => Ok(Loaded {
            snapshot,
            tests_passed,
            certificates,
            registry,
            upstreams,
            passthrough,
            gitlab,
            admin_token,
            webhook_secret,
            issuers,
            key_sources,
            warnings,
        }),
        _ => Err(errors),
    }
}

/// A key set none of whose keys fits the issuer's algorithms refuses every token: an error. A URL
/// source with no set yet is a warning (serve starts, fails closed for it, and retries).
fn key_set_problems(config: &Config, sources: &[Arc<KeySource>], fetched: bool) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let jwt_issuers = config.issuers.iter().filter(|i| i.gitlab_job_tokens.is_none());
    for (issuer, source) in jwt_issuers.zip(sources) {
        let keys = source.state().current();
        if keys.set.is_empty() {
            let why = match source.last_error() {
                Some(e) if fetched => format!("not fetched: {e}"),
                _ => "not fetched (offline)".to_owned(),
            };
            warnings.push(format!(
                "issuer {}: key set {why}; until it loads, this issuer's tokens are refused",
                issuer.name
            ));
        } else if !keys.set.fits_any(&issuer.algorithms) {
            let algorithms: Vec<&str> = issuer.algorithms.iter().map(|a| a.name()).collect();
            errors.push(format!(
                "issuer {}: none of its {} key(s) can verify algorithms [{}]: every token would be refused (key types and `algorithms` disagree)",
                issuer.name,
                keys.set.len(),
                algorithms.join(", ")
            ));
        }
    }
    (errors, warnings)
}

/// The folder a file jobgate writes goes in must exist (jobgate creates the file, not its folder).
fn writable_folder(setting: &str, file: &Path) -> Result<(), String> {
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() && !meta.permissions().readonly() => Ok(()),
        Ok(meta) if meta.is_dir() => {
            Err(format!("{setting} {}: the folder {} is read-only", file.display(), folder.display()))
        }
        Ok(_) => Err(format!("{setting} {}: {} is not a folder", file.display(), folder.display())),
        Err(e) => Err(format!("{setting} {}: the folder {}: {e}", file.display(), folder.display())),
    }
}

/// The value, or `None` with its error noted.
fn keep<T>(errors: &mut Vec<String>, result: Result<T, String>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}
