//! The credential stage of the decision path: extract the request's credential and verify it by its
//! kind — a JWT of a configured issuer, one of jobgate's registry tokens (registry routes only), or one
//! of GitLab's own job tokens from GitLab's cached answers — revocations included. Pure, like the rest
//! of `enforce`: what only GitLab can answer comes back as a [`Lookup`] for the edge.

use std::time::Instant;

use http::request::Parts;

use super::VerifyStats;
use crate::classify::Family;
use crate::config::NonJob;
use crate::enforce::Core;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::registry::token::Access;
use crate::token::extract::{extract, Credential};
use crate::token::gitlab::{Identity, RoleKey};
use crate::token::verify::{VerifiedClaims, VerifyError};

/// A question only GitLab can answer, which `enforce` has no answer for yet: the edge asks GitLab and
/// decides again. A token is never printed.
pub enum Lookup {
    /// Whose job token is this?
    Token(String),
    /// The user's role in another project than their job's.
    Role(RoleKey),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Token(_) => f.write_str("Lookup::Token(…)"),
            Lookup::Role(key) => write!(f, "Lookup::Role({key:?})"),
        }
    }
}

/// The verified job behind a request's credential.
#[derive(Debug)]
pub struct Job {
    pub claims: VerifiedClaims,
    /// What a registry token grants (`None` for job tokens).
    pub access: Option<Vec<Access>>,
    pub credential: JobCredential,
}

/// The kind of credential that proved the job: what GitLab itself would accept differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCredential {
    /// A JWT of a configured issuer (an ID token): no GitLab credential.
    Jwt,
    /// GitLab's own job token (`CI_JOB_TOKEN`), as GitLab answered for it.
    GitLabJobToken,
    /// One of jobgate's registry tokens.
    RegistryToken,
}

/// What the credential turned out to be.
#[derive(Debug)]
pub enum Authenticated {
    Job(Job),
    /// Not job traffic, on a route that passes it through.
    NonJob,
}

/// A credential refused, and what could change that: the issuer worth a refetch when its key set
/// lacked the token's `kid`, or a GitLab job token to look up first.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub unknown_kid: Option<usize>,
    pub lookup: Option<Lookup>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused { refusal, unknown_kid: None, lookup: None }
    }
}

/// Extracts and verifies the request's credential, revocations included. The token's `typ` says its
/// kind: a job token is verified as one anywhere; jobgate's registry tokens only as a Bearer on
/// registry routes (`family`: the route's family; `None` for the token realm, which takes job tokens
/// only), where every action is then checked against their `access`.
///
/// # Errors
/// A missing, malformed, conflicting, invalid, misplaced or revoked credential.
pub fn authenticate(
    core: &Core<'_>,
    parts: &Parts,
    non_job: NonJob,
    family: Option<Family>,
    now: i64,
    stats: &mut Option<VerifyStats>,
) -> Result<Authenticated, Refused> {
    let (token, bearer) = match extract(&parts.headers, parts.uri.query()).map_err(Refusal::from)? {
        Credential::Job(token) => (token, false),
        Credential::BearerJwt(token) => (token, true),
        _ if non_job == NonJob::Passthrough => return Ok(Authenticated::NonJob),
        Credential::None => return Err(Refusal::new(Reason::MissingCredential, "a CI job token is required").into()),
        Credential::NonJob => return Err(non_job_rejected().into()),
    };
    let started = Instant::now();
    let (verified, cached) = match core.verifier.verify(crate::token::strip_prefix(&token), now) {
        Ok(verified) => {
            (Ok(Job { claims: verified.claims, access: None, credential: JobCredential::Jwt }), Some(verified.cached))
        }
        Err(VerifyError::RegistryToken) => match core.registry {
            Some(registry) if bearer && family == Some(Family::Registry) => {
                let grant = registry.verify(&token, now).and_then(|grant| {
                    match core.revocations.jti_revoked(&grant.jti, now) {
                        true => Err(VerifyError::Revoked),
                        false => Ok(Job {
                            claims: grant.claims,
                            access: Some(grant.access),
                            credential: JobCredential::RegistryToken,
                        }),
                    }
                });
                (grant, None)
            }
            _ => (Err(VerifyError::RegistryToken), None),
        },
        // Not a JWT any configured issuer signed: perhaps one of GitLab's own job tokens.
        Err(VerifyError::Malformed(_) | VerifyError::UnknownIssuer | VerifyError::NotAJobToken)
            if !bearer && core.gitlab.is_some() && gitlab_shaped(&token, core.verifier.max_token_bytes) =>
        {
            match core.gitlab.and_then(|g| g.get(&token, now)) {
                // Answered from GitLab's cached answers: a token-cache hit (misses are lookups).
                Some(Identity::Job(claims)) => (
                    Ok(Job {
                        claims: VerifiedClaims::from_arc(claims),
                        access: None,
                        credential: JobCredential::GitLabJobToken,
                    }),
                    Some(true),
                ),
                Some(Identity::Refused) => (Err(VerifyError::NotARunningJob), Some(true)),
                None => {
                    let refusal = Refusal::new(Reason::GitlabUnavailable, "this job token must be looked up at GitLab");
                    return Err(Refused {
                        refusal,
                        unknown_kid: None,
                        lookup: Some(Lookup::Token(token.into_owned())),
                    });
                }
            }
        }
        Err(e) => (Err(e), Some(false)),
    };
    *stats = Some(VerifyStats { cached, seconds: started.elapsed().as_secs_f64() });
    let job = match verified {
        Ok(job) => job,
        // A Bearer JWT no configured issuer signed is some other service's credential: non-job traffic.
        Err(VerifyError::UnknownIssuer) if bearer && non_job == NonJob::Passthrough => {
            return Ok(Authenticated::NonJob)
        }
        Err(VerifyError::UnknownIssuer) if bearer => return Err(non_job_rejected().into()),
        Err(e) => {
            let unknown_kid = match e {
                VerifyError::UnknownKid { issuer } => issuer,
                _ => None,
            };
            return Err(Refused { refusal: e.into(), unknown_kid, lookup: None });
        }
    };
    // Revocations apply to every kind of token, cached ones included: the check is never skipped.
    if core.revocations.is_revoked(job.claims.claims(), now) {
        return Err(Refusal::from(VerifyError::Revoked).into());
    }
    Ok(Authenticated::Job(job))
}

/// Whether a token could be one of GitLab's own job tokens (opaque `glcbt-…` or older, or GitLab's
/// JWT): within the size limit and made of token characters only, so nothing else reaches GitLab.
fn gitlab_shaped(token: &str, max: usize) -> bool {
    (8..=max).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn non_job_rejected() -> Refusal {
    Refusal::new(Reason::NonJobRejected, "only CI job tokens are accepted here")
}
