//! Revocations — the token dies when its job ends. [`RevocationSet`] is the set of revoked `jti`s
//! and job ids, each with an expiry (when every token it could match has expired anyway), checked by
//! `enforce` on every request for every kind of token, cached ones included. It is pure; `store`
//! persists it.

pub mod shared;
pub mod store;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::token::claims::Claims;

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Revoked {
    Jti { jti: String },
    Job { job_id: u64 },
}

/// One revocation as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(flatten)]
    pub what: Revoked,
    /// Seconds since the epoch after which the entry can be forgotten.
    pub expires_at: i64,
}

/// The live revocations, in memory.
#[derive(Default)]
pub struct RevocationSet {
    jtis: DashMap<String, i64>,
    jobs: DashMap<u64, i64>,
}

impl RevocationSet {
    /// Whether the token behind `claims` is revoked (by `jti` or by job id) at `now`.
    pub fn is_revoked(&self, claims: &Claims, now: i64) -> bool {
        let live = |expires_at: i64| expires_at >= now;
        self.jobs.get(&claims.job_id).is_some_and(|e| live(*e))
            || claims.jti.as_deref().is_some_and(|jti| self.jtis.get(jti).is_some_and(|e| live(*e)))
    }

    /// Whether the job has ended (its revocation is live at `now`).
    pub fn job_revoked(&self, job_id: u64, now: i64) -> bool {
        self.jobs.get(&job_id).is_some_and(|e| *e >= now)
    }

    /// Whether the token with this `jti` is revoked at `now` (registry tokens have their own).
    pub fn jti_revoked(&self, jti: &str, now: i64) -> bool {
        self.jtis.get(jti).is_some_and(|e| *e >= now)
    }

    /// The live revocations.
    pub fn list(&self, now: i64) -> Vec<Revocation> {
        let jobs =
            self.jobs.iter().map(|e| Revocation { what: Revoked::Job { job_id: *e.key() }, expires_at: *e.value() });
        let jtis = self
            .jtis
            .iter()
            .map(|e| Revocation { what: Revoked::Jti { jti: e.key().clone() }, expires_at: *e.value() });
        jobs.chain(jtis).filter(|r| r.expires_at >= now).collect()
    }

    pub fn len(&self) -> usize {
        self.jobs.len() + self.jtis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `r`; the same thing revoked twice keeps the later expiry.
    pub fn insert(&self, r: &Revocation) {
        match &r.what {
            Revoked::Job { job_id } => {
                self.jobs.entry(*job_id).and_modify(|e| *e = (*e).max(r.expires_at)).or_insert(r.expires_at);
            }
            Revoked::Jti { jti } => {
                self.jtis.entry(jti.clone()).and_modify(|e| *e = (*e).max(r.expires_at)).or_insert(r.expires_at);
            }
        }
    }

    pub fn forget_expired(&self, now: i64) {
        self.jobs.retain(|_, e| *e >= now);
        self.jtis.retain(|_, e| *e >= now);
    }
}

/// GitLab job statuses after which the job's tokens must die.
pub fn is_finished(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}
