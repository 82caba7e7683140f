//! The credential stage of the decision path: extract the request's credential, tell its kind by its
//! shape and place ([`Presented`]), and verify it by that kind — a JWT of a configured issuer, one of
//! jobgate's registry tokens (a Bearer on registry routes only), or one of GitLab's own job tokens
//! from GitLab's cached answers — revocations included. Pure, like the rest of `enforce`: what only
//! GitLab or a fresh key set can answer comes back as a [`Need`].

use http::request::Parts;

use super::need::{decided, Known, Need, Step};
use super::VerifyStats;
use crate::classify::Family;
use crate::config::NonJob;
use crate::enforce::Core;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::token::extract::{extract, Credential};
use crate::token::gitlab::Identity;
use crate::token::registry::Access;
use crate::token::strip_prefix;
use crate::token::verify::{VerifiedClaims, VerifyError};
use crate::token::wrapped::ConanWrapped;

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

/// A job credential's kind, by its shape and where it was sent; dispatched once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// A JWS (after GitLab's `glcbt-` prefix): an ID token, a seed-style job token, or GitLab's own
    /// JWT job token (whose issuer is not configured: GitLab answers for it).
    Jwt,
    /// A Bearer JWS whose `typ` is jobgate's registry token's, on a registry route.
    RegistryBearer,
    /// Anything else: GitLab's opaque job token (`glcbt-…`, or older ones without the prefix).
    Opaque,
}

impl Presented {
    /// The kind of `token`: a JOSE header (`eyJ`, base64url of `{"`) or three dot-separated parts
    /// make a JWS (`verify` checks the rest); only a Bearer on a registry route has its header read.
    /// This runs on every request, cached tokens included: the common case costs three bytes.
    pub fn of(token: &str, bearer: bool, family: Option<Family>) -> Presented {
        let jwt = strip_prefix(token);
        let jws = jwt.starts_with("eyJ")
            || match (jwt.find('.'), jwt.rfind('.')) {
                (Some(first), Some(last)) => first < last && !jwt[first + 1..last].contains('.'),
                _ => false,
            };
        if !jws {
            return Presented::Opaque;
        }
        let registry = || crate::token::jws::kind_of(jwt) == Some(crate::token::jws::Kind::Registry);
        if bearer && family == Some(Family::Registry) && registry() {
            Presented::RegistryBearer
        } else {
            Presented::Jwt
        }
    }
}

/// Extracts and verifies the request's credential, revocations included: a job token is verified as
/// one anywhere; jobgate's registry tokens only as a Bearer on registry routes (`family`: the route's
/// family; `None` for the token realm, which takes job tokens only), where every action is then
/// checked against their `access`. `stats` learns whether a verification was answered from a cache.
///
/// A token GitLab must be asked about, or a `kid` not in its issuer's key set (once per request),
/// is a [`Need`].
pub fn authenticate(
    core: &Core<'_>,
    parts: &Parts,
    non_job: NonJob,
    family: Option<Family>,
    known: &Known,
    now: i64,
    stats: &mut Option<VerifyStats>,
) -> Step<Result<Authenticated, Refusal>> {
    let extracted = match extract(&parts.headers, parts.uri.query()) {
        Ok(extracted) => extracted,
        Err(e) => return Step::Decided(Err(e.into())),
    };
    let (token, bearer) = match extracted {
        Credential::Job(token) => (token, false),
        Credential::BearerJwt(token) => (token, true),
        _ if non_job == NonJob::Passthrough => return Step::Decided(Ok(Authenticated::NonJob)),
        Credential::None => {
            return Step::Decided(Err(Refusal::new(Reason::MissingCredential, "a CI job token is required")))
        }
        Credential::NonJob => return Step::Decided(Err(non_job_rejected())),
    };
    let (verified, other_service) = match decided!(job(core, &token, bearer, family, known, now, stats)) {
        // A Bearer JWT no configured issuer signed: Conan's wrapper (GitLab's own JWT) is decided as
        // the job token inside; anything else is some other service's credential, non-job traffic.
        Err(VerifyError::UnknownIssuer) if bearer => match crate::token::wrapped::conan(&token) {
            Some(ConanWrapped::Job(inner)) => (decided!(job(core, &inner, false, family, known, now, stats)), false),
            Some(ConanWrapped::Other) | None => (Err(VerifyError::UnknownIssuer), true),
        },
        verified => (verified, false),
    };
    let job = match verified {
        Ok(job) => job,
        Err(_) if other_service && non_job == NonJob::Passthrough => return Step::Decided(Ok(Authenticated::NonJob)),
        Err(_) if other_service => return Step::Decided(Err(non_job_rejected())),
        Err(e) => return Step::Decided(Err(e.into())),
    };
    // Revocations apply to every kind of token, cached ones included: the check is never skipped.
    if core.revocations.is_revoked(job.claims.claims(), now) {
        return Step::Decided(Err(VerifyError::Revoked.into()));
    }
    Step::Decided(Ok(Authenticated::Job(job)))
}

/// The job behind one token, by its kind: verified offline, by GitLab's cached answers, or a need.
fn job(
    core: &Core<'_>,
    token: &str,
    bearer: bool,
    family: Option<Family>,
    known: &Known,
    now: i64,
    stats: &mut Option<VerifyStats>,
) -> Step<Result<Job, VerifyError>> {
    if strip_prefix(token).len() > core.verifier.max_token_bytes {
        return Step::Decided(Err(VerifyError::TooLarge(core.verifier.max_token_bytes)));
    }
    Step::Decided(match Presented::of(token, bearer, family) {
        Presented::RegistryBearer => registry_token(core, token, now, stats),
        Presented::Jwt => match core.verifier.verify(strip_prefix(token), now) {
            Ok(verified) => {
                *stats = Some(VerifyStats { cached: Some(verified.cached) });
                Ok(Job { claims: verified.claims, access: None, credential: JobCredential::Jwt })
            }
            // No configured issuer signed it: GitLab's own JWT job token, when GitLab may be asked.
            Err(VerifyError::Malformed(_) | VerifyError::UnknownIssuer | VerifyError::NotAJobToken)
                if !bearer && core.gitlab.is_some() =>
            {
                return gitlab_job_token(core, token, now, stats);
            }
            Err(VerifyError::UnknownKid { issuer: Some(issuer) }) if !known.refetched.contains(&issuer) => {
                return Step::Need(Need::Keys { issuer });
            }
            Err(e) => {
                *stats = Some(VerifyStats { cached: Some(false) });
                Err(e)
            }
        },
        Presented::Opaque if bearer || core.gitlab.is_none() => {
            Err(VerifyError::Malformed("not three dot-separated parts: no JWT, and no gitlab_job_tokens issuer to ask GitLab about an opaque job token"))
        }
        Presented::Opaque => return gitlab_job_token(core, token, now, stats),
    })
}

/// One of jobgate's registry tokens: its signature, and its `jti` against the revocations.
fn registry_token(core: &Core<'_>, token: &str, now: i64, stats: &mut Option<VerifyStats>) -> Result<Job, VerifyError> {
    let registry = core.registry.ok_or(VerifyError::RegistryToken)?;
    *stats = Some(VerifyStats { cached: None });
    let grant = registry.verify(token, now)?;
    if core.revocations.jti_revoked(&grant.jti, now) {
        return Err(VerifyError::Revoked);
    }
    Ok(Job { claims: grant.claims, access: Some(grant.access), credential: JobCredential::RegistryToken })
}

/// One of GitLab's own job tokens, from GitLab's cached answers; a token not asked about yet is a need.
fn gitlab_job_token(
    core: &Core<'_>,
    token: &str,
    now: i64,
    stats: &mut Option<VerifyStats>,
) -> Step<Result<Job, VerifyError>> {
    if !gitlab_shaped(token, core.verifier.max_token_bytes) {
        return Step::Decided(Err(VerifyError::Malformed("neither a JWT nor the shape of a GitLab job token")));
    }
    // Answered from GitLab's cached answers: a token-cache hit (misses are needs).
    let identity = match core.gitlab.and_then(|g| g.get(token, now)) {
        Some(identity) => identity,
        None => return Step::Need(Need::JobToken(token.to_owned())),
    };
    *stats = Some(VerifyStats { cached: Some(true) });
    Step::Decided(match identity {
        Identity::Job(claims) => Ok(Job {
            claims: VerifiedClaims::from_arc(claims),
            access: None,
            credential: JobCredential::GitLabJobToken,
        }),
        Identity::Refused => Err(VerifyError::NotARunningJob),
    })
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
