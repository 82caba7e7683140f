//! The GitLab instance jobgate fronts, asked who a job token belongs to: `GET {url}/api/v4/job` with
//! the token in `JOB-TOKEN` answers the running job (`lib/api/ci/jobs.rb`), or 401. The edge half of
//! GitLab job tokens: one lookup per token at a time (single flight), answers kept for `cache_secs`
//! (refusals briefly), and a process-wide budget of lookups per second for tokens not yet known, so
//! random tokens cannot turn jobgate into a load amplifier against GitLab — of which each client
//! address may spend half a second, so one client's random tokens cannot starve another's new jobs
//! (`jobgate_gitlab_lookups_total{outcome="client_over_budget"}`). GitLab unreachable or
//! answering 5xx fails closed. The token and GitLab's answer are never logged.

mod client;
pub mod impersonate;

use client::secret_header;
pub(crate) use client::{Budget, ClientShares};
pub use client::{GitLabError, LookupError};

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU32};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus::{Histogram, IntCounterVec};

use crate::config::{GitLabConfig, GitLabJobTokens};
use crate::infra::redis_link::{RedisLink, Seal};
use crate::kit::flight::SingleFlight;
use crate::kit::Expiring;
use crate::token::cache::{digest, TokenDigest};
use crate::token::claims::Claims;
use crate::token::gitlab::{
    is_protected, job_claims, member_role, protected_names, ApiProject, Identity, JobDocError, JobIdentities, RoleKey,
};

/// The largest answer read from GitLab (an `Entities::Ci::Job` is a few KiB).
pub(super) const MAX_ANSWER: usize = 256 * 1024;
/// How long GitLab's "no such running job" is believed.
const REFUSED_SECS: i64 = 10;
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);

/// What one flight asks GitLab: whose token this is, or a user's role.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Flight {
    Token(TokenDigest),
    Role(RoleKey),
}

/// Lookups at one GitLab instance, and the answers they brought.
pub struct GitLab {
    base: String,
    /// jobgate's own read-only API token, for protected refs and roles.
    api_token: Option<HeaderValue>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    identities: JobIdentities,
    cache_secs: i64,
    budget: Budget,
    /// Each client's share of `budget`.
    clients: ClientShares,
    /// One question per token or role key at a time.
    flights: SingleFlight<Flight>,
    lookups: IntCounterVec,
    seconds: Histogram,
    /// Each project's protected branch or tag names (`protected_branches`/`protected_tags`), until.
    protected: Expiring<(u64, &'static str), Arc<Vec<String>>>,
    /// When GitLab last failed to answer and why (cleared by the next answer), for `/-/ready`.
    last_error: arc_swap::ArcSwapOption<(std::time::SystemTime, String)>,
    /// Redis and the replicas' seal, when they share GitLab's answers: a token is looked up once for
    /// all of them.
    shared: Option<(RedisLink, Seal)>,
    /// With `gitlab.admin_token_file`: the jobs' users' impersonation tokens.
    impersonation: Option<crate::gitlab::impersonate::Impersonation>,
}

/// GitLab's answer to a job-token lookup, as kept in Redis for the other replicas: its status, its
/// body (`Entities::Ci::Job`, never the token) and until when it may be believed. Each replica reads
/// the body with the same [`job_claims`] as a fresh answer; the deadline never moves.
struct Answer {
    status: StatusCode,
    body: Bytes,
    until: i64,
}

impl Answer {
    fn encode(&self) -> Vec<u8> {
        let mut value = format!("{} {}\n", self.until, self.status.as_u16()).into_bytes();
        value.extend_from_slice(&self.body);
        value
    }

    fn decode(value: &[u8]) -> Option<Answer> {
        let split = value.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(&value[..split]).ok()?;
        let (until, status) = head.split_once(' ')?;
        let status = StatusCode::from_u16(status.parse().ok()?).ok()?;
        Some(Answer { status, body: Bytes::copy_from_slice(&value[split + 1..]), until: until.parse().ok()? })
    }
}

impl GitLab {
    /// # Errors
    /// An unusable URL or CA file.
    pub fn new(
        config: &GitLabConfig,
        jobs: &GitLabJobTokens,
        metrics: &crate::infra::metrics::Metrics,
    ) -> Result<GitLab, String> {
        let base = config.url.trim_end_matches('/').to_owned();
        let _: Uri = format!("{base}/api/v4/job").parse().map_err(|e| format!("gitlab.url {:?}: {e}", config.url))?;
        let tls = crate::infra::tls::client_config(config.ca_file.as_deref())?;
        let api_token =
            config.api_token_file.as_deref().map(|file| secret_header(file, "gitlab.api_token_file")).transpose()?;
        let admin_token = config
            .admin_token_file
            .as_deref()
            .map(|file| secret_header(file, "gitlab.admin_token_file"))
            .transpose()?;
        let impersonation = admin_token.map(|token| {
            crate::gitlab::impersonate::Impersonation::new(
                token,
                jobs.lookups_per_sec,
                metrics.impersonation_tokens.clone(),
            )
        });
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let identities = JobIdentities::new(100_000, &base, api_token.is_some());
        let budget = Budget { per_second: jobs.lookups_per_sec, second: AtomicI64::new(0), used: AtomicU32::new(0) };
        Ok(GitLab {
            base,
            api_token,
            client: Client::builder(TokioExecutor::new()).build(connector),
            identities,
            cache_secs: i64::try_from(jobs.cache_secs.max(1)).unwrap_or(60),
            clients: ClientShares::of(&budget),
            budget,
            flights: SingleFlight::default(),
            lookups: metrics.gitlab_lookups.clone(),
            seconds: metrics.gitlab_lookup_seconds.clone(),
            last_error: arc_swap::ArcSwapOption::empty(),
            protected: Expiring::new(10_000),
            shared: None,
            impersonation,
        })
    }

    /// Shares GitLab's answers with every replica on the same Redis (`<prefix>:gitlab-job:<SHA-256
    /// of the token>`, expiring when the answer does), sealed so that only a replica's answer is
    /// believed.
    #[must_use]
    pub fn share_answers(mut self, redis: RedisLink, seal: Seal) -> GitLab {
        self.shared = Some((redis, seal));
        self
    }

    /// What `/-/ready` shows: the instance, its last failure to answer (if the last lookup failed)
    /// and the impersonation tokens' state.
    pub fn status(&self) -> serde_json::Value {
        let error =
            self.last_error.load_full().map(|e| serde_json::json!({"at": crate::clock::rfc3339(e.0), "error": e.1}));
        let impersonation = self.impersonation.as_ref().map(crate::gitlab::impersonate::Impersonation::status);
        serde_json::json!({"url": self.base, "asks_roles": self.api_token.is_some(), "last_error": error, "impersonation": impersonation})
    }

    /// The jobs' users' impersonation tokens, with `gitlab.admin_token_file`.
    /// A job ended: its users' impersonation tokens are revoked (with `gitlab.admin_token_file`).
    pub async fn end_job(&self, job_id: u64) {
        if let Some(impersonation) = &self.impersonation {
            impersonation.end_job(self, job_id).await;
        }
    }

    /// Impersonation's background work, for as long as the process runs (nothing without it).
    pub async fn impersonation_housekeeping(&self, ended: impl Fn(u64) -> bool) {
        if let Some(impersonation) = &self.impersonation {
            impersonation.housekeeping(self, ended).await;
        }
    }

    pub fn impersonation(&self) -> Option<&crate::gitlab::impersonate::Impersonation> {
        self.impersonation.as_ref()
    }

    fn record(&self, result: &Result<(), LookupError>) {
        match result {
            Ok(()) => self.last_error.store(None),
            Err(LookupError::Unavailable(e)) => {
                self.last_error.store(Some(Arc::new((std::time::SystemTime::now(), e.clone()))))
            }
            Err(LookupError::OverBudget) => {}
        }
    }

    /// GitLab's answers, as the decision core reads them.
    pub fn identities(&self) -> &JobIdentities {
        &self.identities
    }

    /// Makes sure GitLab's answer for `token` is in [`GitLab::identities`]: asks GitLab unless it is
    /// there, once per token however many requests wait for it.
    ///
    /// # Errors
    /// GitLab unreachable, slow or answering neither a job nor 401; or over the lookup budget.
    pub async fn resolve(&self, token: &str, now: i64, client: IpAddr) -> Result<(), LookupError> {
        let landed = || self.identities.get(token, now).map(|_| Ok(()));
        let fly = || async {
            if !self.clients.take(client, now) {
                self.lookups.with_label_values(&["client_over_budget"]).inc();
                return Err(LookupError::OverBudget);
            }
            if !self.budget.take(now) {
                self.lookups.with_label_values(&["over_budget"]).inc();
                return Err(LookupError::OverBudget);
            }
            let asked = self.ask(token, now).await;
            self.record(&asked);
            asked
        };
        self.flights.run(Flight::Token(digest(token)), landed, fly).await
    }

    /// Makes sure the user's role in another project is in [`GitLab::identities`]
    /// (`GET /projects/:id/members/all/:user_id`, with jobgate's API token), once per key at a time.
    ///
    /// # Errors
    /// GitLab unreachable or answering neither the member nor 404.
    pub async fn resolve_role(&self, key: &RoleKey, now: i64) -> Result<(), LookupError> {
        let Some(api_token) = &self.api_token else {
            return Err(LookupError::Unavailable("no gitlab.api_token_file to ask roles with".into()));
        };
        let landed = || self.identities.role(key, now).map(|_| Ok(()));
        let fly = || async {
            let path = format!("/api/v4/projects/{}/members/all/{}", key.project, key.user);
            let role = match self.get(&path, "private-token", api_token.clone()).await {
                Ok((StatusCode::OK, _, body)) => {
                    member_role(&body).map_err(|e| LookupError::Unavailable(e.to_string()))
                }
                Ok((StatusCode::NOT_FOUND, _, _)) => Ok(None),
                Ok((status, _, _)) => {
                    Err(LookupError::Unavailable(format!("GitLab answered {status} for the user's membership")))
                }
                Err(e) => Err(e.into()),
            };
            let result = role.map(|role| self.identities.insert_role(key.clone(), role, now + self.cache_secs, now));
            self.record(&result);
            result
        };
        self.flights.run(Flight::Role(key.clone()), landed, fly).await
    }

    async fn ask(&self, token: &str, now: i64) -> Result<(), LookupError> {
        if let Some(answer) = self.shared_answer(token, now).await {
            return self.believe(token, answer, now, true).await;
        }
        let started = std::time::Instant::now();
        let answer = self.get_job(token).await;
        self.seconds.observe(started.elapsed().as_secs_f64());
        let (status, body) = answer.map(|(status, _, body)| (status, body)).map_err(|e| {
            self.lookups.with_label_values(&["unavailable"]).inc();
            LookupError::from(e)
        })?;
        let until = now + if status == StatusCode::OK { self.cache_secs } else { REFUSED_SECS };
        self.believe(token, Answer { status, body, until }, now, false).await
    }

    /// The answer another replica got for `token`, if Redis has one (any Redis failure: none).
    async fn shared_answer(&self, token: &str, now: i64) -> Option<Answer> {
        let (redis, seal) = self.shared.as_ref()?;
        let key = answer_key(redis, token);
        let sealed: Vec<u8> = redis.query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&key)).await.ok()??;
        let Some(value) = seal.open(&key, &sealed) else {
            self.lookups.with_label_values(&["shared_unsealed"]).inc();
            tracing::warn!("a shared GitLab answer in Redis is not sealed by a replica: ignored, GitLab is asked");
            return None;
        };
        Answer::decode(value).filter(|answer| answer.until >= now)
    }

    /// Turns GitLab's answer (its own, or one shared through Redis) into the identity requests read,
    /// and shares a fresh one.
    async fn believe(&self, token: &str, answer: Answer, now: i64, shared: bool) -> Result<(), LookupError> {
        let Answer { status, ref body, until } = answer;
        let (identity, until, outcome) = match status {
            StatusCode::OK => match job_claims(body, &self.base, until) {
                Ok(claims) => (Identity::Job(Arc::new(self.completed(claims, now).await?)), until, "job"),
                Err(JobDocError::NotRunning) => (Identity::Refused, until.min(now + REFUSED_SECS), "not_running"),
                Err(e) => {
                    self.lookups.with_label_values(&["invalid"]).inc();
                    return Err(LookupError::Unavailable(e.to_string()));
                }
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                (Identity::Refused, until.min(now + REFUSED_SECS), "refused")
            }
            other => {
                self.lookups.with_label_values(&["unavailable"]).inc();
                return Err(LookupError::Unavailable(format!("GitLab answered {other}")));
            }
        };
        self.lookups.with_label_values(&[if shared { "shared" } else { outcome }]).inc();
        self.identities.insert(token, identity, until, now);
        if let (Some((redis, seal)), false) = (&self.shared, shared) {
            let key = answer_key(redis, token);
            let value = seal.seal(&key, &Answer { status, body: answer.body, until }.encode());
            // Best effort: without Redis every replica asks GitLab itself.
            let _ = redis.query::<()>(redis::cmd("SET").arg(&key).arg(value).arg("EXAT").arg(until.max(now + 1))).await;
        }
        Ok(())
    }

    /// With jobgate's API token: the job's `ref_protected` from the project's protected branches or
    /// tags, and the user's role in the project from its members (`user_access_level`).
    async fn completed(&self, mut claims: Claims, now: i64) -> Result<Claims, LookupError> {
        let Some(api_token) = &self.api_token else { return Ok(claims) };
        let unavailable = |what: &str| {
            self.lookups.with_label_values(&["unavailable"]).inc();
            LookupError::Unavailable(what.to_owned())
        };
        let kind = if claims.ref_type.as_deref() == Some("tag") { "protected_tags" } else { "protected_branches" };
        let names = self.protected_names(claims.project_id, kind, api_token, now).await.map_err(|e| unavailable(&e))?;
        let protected = is_protected(&names, claims.git_ref.as_deref().unwrap_or(""));
        claims.ref_protected = protected;
        if let Some(user) = claims.user_id {
            let key = RoleKey { project: ApiProject::Id(claims.project_id), user };
            self.resolve_role(&key, now).await?;
            claims.user_access_level = self.identities.role(&key, now).flatten();
        }
        Ok(claims)
    }

    /// A project's protected branch or tag names, from the cache or every page of GitLab's answer
    /// (at most 20 pages of 100).
    async fn protected_names(
        &self,
        project: u64,
        kind: &'static str,
        api_token: &HeaderValue,
        now: i64,
    ) -> Result<Arc<Vec<String>>, String> {
        if let Some(names) = self.protected.get(&(project, kind), now) {
            return Ok(names);
        }
        let mut names = Vec::new();
        let path = format!("/api/v4/projects/{project}/{kind}?");
        for body in self.pages(&path, api_token, 20).await.map_err(|e| e.to_string())? {
            names.extend(protected_names(&body).map_err(|e| e.to_string())?);
        }
        let names = Arc::new(names);
        self.protected.insert((project, kind), names.clone(), now + self.cache_secs, now);
        Ok(names)
    }
}

/// Where a token's shared answer is kept: named by the token's SHA-256, never the token.
fn answer_key(redis: &RedisLink, token: &str) -> String {
    format!("{}:gitlab-job:{}", redis.prefix, data_encoding::HEXLOWER.encode(&digest(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_answer_round_trips_and_garbage_is_none() {
        let answer =
            Answer { status: StatusCode::OK, body: Bytes::from_static(b"{\"id\": 1}\n{}"), until: 1_800_000_000 };
        let decoded = Answer::decode(&answer.encode()).unwrap_or_else(|| unreachable!());
        assert_eq!((decoded.status, decoded.body, decoded.until), (answer.status, answer.body, answer.until));
        for garbage in [&b""[..], b"x", b"12 999999\n", b"12\n{}", b"a 200\n{}"] {
            assert!(Answer::decode(garbage).is_none(), "{garbage:?}");
        }
    }
}
