//! Impersonation tokens of jobs' users, for `credentials: impersonate`: minted with the administrator
//! token jobgate keeps (`gitlab.admin_token_file`) through `POST /users/:user_id/impersonation_tokens`
//! (docs: api/user_tokens.md; `lib/api/users.rb`), one per (job, GitLab scope), named
//! `jobgate-job-<job id>` and expiring as early as GitLab allows (`expires_at` is a date after
//! today). They live in jobgate's memory only, are revoked (`DELETE
//! /users/:user_id/impersonation_tokens/:id`) when the job ends, and a revoke that fails is retried
//! and shown on `/-/ready`. A token is sent only to GitLab and never logged; its id is what the audit
//! line names.

use std::sync::atomic::{AtomicI64, AtomicU32};
use std::sync::Arc;

use dashmap::DashMap;
use http::{HeaderValue, Method, StatusCode};
use prometheus::IntCounterVec;
use serde::Deserialize;

use crate::gitlab::{Budget, GitLab};
use crate::kit::flight::SingleFlight;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::scope::GitLabScope;
use crate::token::claims::Claims;

/// A minted token: its id (for the audit line and the revoke), whose it is, and until when it is used.
#[derive(Clone)]
pub struct Held {
    pub id: u64,
    pub user_id: u64,
    pub token: Arc<str>,
    until: i64,
}

/// One token of GitLab's list (`Entities::PersonalAccessToken`): the fields jobgate reads.
#[derive(Deserialize)]
struct Listed {
    id: u64,
    name: String,
    user_id: u64,
    #[serde(default)]
    active: bool,
}

/// GitLab's answer to a mint (`Entities::ImpersonationTokenWithToken`): the fields jobgate reads.
#[derive(Deserialize)]
struct Minted {
    id: u64,
    token: String,
}

pub struct Impersonation {
    admin: HeaderValue,
    /// Minted tokens by (job, scope). Not a cache that forgets: an entry past its use is revoked
    /// when replaced or when its job ends.
    held: DashMap<(u64, GitLabScope), Held>,
    /// One mint per (job, scope) at a time.
    flights: SingleFlight<(u64, GitLabScope)>,
    /// Revokes GitLab did not confirm: token id → user id, retried.
    pending: DashMap<u64, u64>,
    budget: Budget,
    events: IntCounterVec,
}

impl Impersonation {
    /// `admin`: the administrator token (sensitive); `per_second`: mints of new tokens at most.
    pub fn new(admin: HeaderValue, per_second: u32, events: IntCounterVec) -> Impersonation {
        let budget = Budget { per_second, second: AtomicI64::new(0), used: AtomicU32::new(0) };
        Impersonation {
            admin,
            held: DashMap::new(),
            flights: SingleFlight::default(),
            pending: DashMap::new(),
            budget,
            events,
        }
    }

    /// The job's user's token with `scope`: the one already minted for this job, or a new one.
    ///
    /// # Errors
    /// The job has no user, the mint budget is spent, or GitLab refused or could not be asked.
    pub async fn token(&self, gitlab: &GitLab, claims: &Claims, scope: GitLabScope, now: i64) -> Result<Held, Refusal> {
        let Some(user_id) = claims.user_id else {
            return Err(Refusal::new(Reason::ImpersonationRefused, "the job has no user to act as"));
        };
        let key = (claims.job_id, scope);
        let landed = || self.held.get(&key).filter(|h| h.until > now && h.user_id == user_id).map(|h| Ok(h.clone()));
        self.flights.run(key, landed, || self.mint(gitlab, key, user_id, now)).await
    }

    /// A new token for the job's user, replacing (and revoking) one past its use.
    async fn mint(&self, gitlab: &GitLab, key: (u64, GitLabScope), user_id: u64, now: i64) -> Result<Held, Refusal> {
        let (job_id, scope) = key;
        if !self.budget.take(now) {
            self.events.with_label_values(&["mint_over_budget"]).inc();
            return Err(Refusal::new(
                Reason::GitlabLookupBudget,
                "too many impersonation tokens to mint this second; retry",
            ));
        }
        let (expires_on, until) = expiry(now);
        let body = serde_json::json!({"name": format!("jobgate-job-{job_id}"), "scopes": [scope.name()], "expires_at": expires_on});
        let path = format!("/api/v4/users/{user_id}/impersonation_tokens");
        let answer = gitlab.send(Method::POST, &path, "private-token", self.admin.clone(), Some(&body)).await;
        let held = match answer {
            Ok((StatusCode::CREATED | StatusCode::OK, _, body)) => match serde_json::from_slice::<Minted>(&body) {
                Ok(minted) => Held { id: minted.id, user_id, token: minted.token.into(), until },
                Err(_) => return Err(self.failed("GitLab's answer to the mint is not an impersonation token")),
            },
            Ok((status, _, _)) if status.is_client_error() => {
                self.events.with_label_values(&["mint_refused"]).inc();
                let why = format!("GitLab refused to mint the user's impersonation token ({status}): the user may be blocked, or gitlab.admin_token_file is no administrator's api token");
                return Err(Refusal::new(Reason::ImpersonationRefused, why));
            }
            Ok((status, _, _)) => return Err(self.failed(&format!("GitLab answered {status} to the mint"))),
            Err(e) => return Err(self.failed(&e.to_string())),
        };
        self.events.with_label_values(&["minted"]).inc();
        // Jobs whose end never reached jobgate leave entries behind: past their use, they go.
        if self.held.len() >= 10_000 {
            self.held.retain(|_, held| held.until > now);
        }
        // A replaced token (expired for our use) is revoked rather than left to its date.
        if let Some(old) = self.held.insert(key, held.clone()) {
            self.revoke(gitlab, old.id, old.user_id).await;
        }
        Ok(held)
    }

    /// The background half, for as long as the process runs: at start, the tokens of jobs that have
    /// ended (`ended`) are swept; then revokes GitLab did not confirm are retried every 10 seconds.
    pub async fn housekeeping(&self, gitlab: &GitLab, ended: impl Fn(u64) -> bool) {
        match self.sweep(gitlab, ended).await {
            Ok(swept) => tracing::info!(swept, "impersonation tokens of ended jobs swept"),
            Err(e) => tracing::warn!(error = %e, "impersonation tokens of ended jobs could not be swept"),
        }
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            every.tick().await;
            self.retry(gitlab).await;
        }
    }

    fn failed(&self, why: &str) -> Refusal {
        self.events.with_label_values(&["mint_failed"]).inc();
        Refusal::new(Reason::GitlabUnavailable, format!("no impersonation token could be minted: {why}"))
    }

    /// The job ended: every token minted for it is revoked — those this process holds, and those
    /// GitLab lists under the job's name (minted by another replica, or before a restart); a failed
    /// revoke is retried later.
    pub async fn end_job(&self, gitlab: &GitLab, job_id: u64) {
        let mut ended: Vec<(u64, u64)> =
            self.held.iter().filter(|e| e.key().0 == job_id).map(|e| (e.id, e.user_id)).collect();
        self.held.retain(|key, _| key.0 != job_id);
        let name = format!("jobgate-job-{job_id}");
        match self.listed(gitlab, &name).await {
            Ok(listed) => {
                let others: Vec<(u64, u64)> = listed
                    .into_iter()
                    .filter(|t| t.name == name && !ended.iter().any(|(id, _)| *id == t.id))
                    .map(|t| (t.id, t.user_id))
                    .collect();
                ended.extend(others);
            }
            Err(e) => {
                tracing::warn!(job_id, error = %e, "GitLab's tokens of an ended job could not be listed; only those held here are revoked")
            }
        }
        for (id, user_id) in ended {
            self.revoke(gitlab, id, user_id).await;
        }
    }

    /// At start: revokes the tokens of earlier processes or other replicas whose job has ended
    /// (`ended`: the revocation set says so). A token of a job still running is left to its owner.
    ///
    /// # Errors
    /// GitLab's list could not be read.
    pub async fn sweep(&self, gitlab: &GitLab, ended: impl Fn(u64) -> bool) -> Result<usize, String> {
        let leftovers: Vec<Listed> = self
            .listed(gitlab, "jobgate-job-")
            .await?
            .into_iter()
            .filter(|t| t.name.strip_prefix("jobgate-job-").and_then(|id| id.parse().ok()).is_some_and(&ended))
            .collect();
        for token in &leftovers {
            self.revoke(gitlab, token.id, token.user_id).await;
        }
        Ok(leftovers.len())
    }

    /// GitLab's active tokens whose name contains `search` (`GET /personal_access_tokens`, every
    /// page; administrators see every user's, impersonation tokens included).
    async fn listed(&self, gitlab: &GitLab, search: &str) -> Result<Vec<Listed>, String> {
        let path = format!("/api/v4/personal_access_tokens?search={}&state=active&", crate::query::form_encode(search));
        let mut all = Vec::new();
        for body in gitlab.pages(&path, &self.admin, 100).await.map_err(|e| e.to_string())? {
            let listed: Vec<Listed> = serde_json::from_slice(&body).map_err(|e| format!("GitLab's token list: {e}"))?;
            all.extend(listed.into_iter().filter(|t| t.active));
        }
        Ok(all)
    }

    /// Retries the revokes GitLab did not confirm.
    pub async fn retry(&self, gitlab: &GitLab) {
        let pending: Vec<(u64, u64)> = self.pending.iter().map(|e| (*e.key(), *e.value())).collect();
        for (id, user_id) in pending {
            self.pending.remove(&id);
            self.revoke(gitlab, id, user_id).await;
        }
    }

    async fn revoke(&self, gitlab: &GitLab, id: u64, user_id: u64) {
        let path = format!("/api/v4/users/{user_id}/impersonation_tokens/{id}");
        match gitlab.send(Method::DELETE, &path, "private-token", self.admin.clone(), None).await {
            // 404: already gone (revoked by hand, or the user deleted).
            Ok((StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND, _, _)) => {
                self.events.with_label_values(&["revoked"]).inc()
            }
            answer => {
                let why = answer.map_or_else(|e| e.to_string(), |(status, _, _)| format!("GitLab answered {status}"));
                tracing::warn!(token_id = id, user_id, error = %why, "an impersonation token could not be revoked; retrying");
                self.events.with_label_values(&["revoke_failed"]).inc();
                self.pending.insert(id, user_id);
            }
        }
    }

    /// What `/-/ready` shows: tokens held, and revokes still to be confirmed (their ids).
    pub fn status(&self) -> serde_json::Value {
        let pending: Vec<u64> = self.pending.iter().map(|e| *e.key()).collect();
        serde_json::json!({"tokens_held": self.held.len(), "revokes_pending": pending})
    }
}

/// The earliest `expires_at` GitLab takes (the next day, UTC; the day after when less than an hour
/// of today is left, so a token is not minted to die at once), and until when it is used (a minute
/// before it expires).
fn expiry(now: i64) -> (String, i64) {
    let days = if now.rem_euclid(86_400) > 86_400 - 3_600 { 2 } else { 1 };
    let midnight = (now.div_euclid(86_400) + days) * 86_400;
    let date = crate::clock::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(midnight).unwrap_or(0)),
    );
    (date.chars().take(10).collect(), midnight - 60)
}

#[cfg(test)]
mod tests {
    use super::expiry;

    #[test]
    fn tokens_expire_the_next_day_or_the_one_after_near_midnight() {
        // 2026-12-01T10:00:00Z and 2026-12-01T23:30:00Z.
        assert_eq!(expiry(1_796_119_200), ("2026-12-02".to_owned(), 1_796_169_540));
        assert_eq!(expiry(1_796_167_800).0, "2026-12-03");
    }
}
