//! `enforce`: classify → extract → verify → decide for one request, synchronously and without I/O,
//! against one policy snapshot and the issuers' current key sets. It returns everything it learned,
//! so the edges (`proxy`) can forward or refuse and record. Tests and benches call it directly.

use http::request::Parts;
use http::{header, Version};

use crate::classify::{self, classify, lfs, Action, Classified, Family, Target, Unmatched};
use crate::config::{ApiRoute, NonJob};
use crate::policy::scope::Scope;
use crate::policy::{decide, Decision, Permit};
use crate::reason::Reason;
use crate::registry_auth::{self, Access};
use crate::reject::Rejection;
use crate::snapshot::Snapshot;
use crate::token::claims::Claims;
use crate::token::extract::{extract, Credential, ExtractError};
use crate::token::verify::{VerifiedClaims, Verifier, VerifyError};

/// What `enforce` concluded.
#[derive(Debug)]
pub enum Verdict {
    /// A verified job token and a policy permit.
    Allow(Permit),
    /// Not job traffic, on a route that passes it to the upstream untouched.
    Passthrough,
    /// The policy denies, but in `mode: audit`: forwarded, and recorded as a would-deny.
    WouldDeny(Rejection),
    Reject(Rejection),
}

/// Everything `enforce` learned, for forwarding and for the audit line.
#[derive(Debug)]
pub struct Enforced {
    pub classified: Result<Classified, Unmatched>,
    pub claims: Option<VerifiedClaims>,
    pub verdict: Verdict,
    /// The issuer whose key set lacked the token's `kid`: worth one refetch and a second try.
    pub unknown_kid: Option<usize>,
}

/// Classifies, extracts, verifies and decides one request at time `now` (seconds since the epoch).
pub fn enforce(snapshot: &Snapshot, verifier: &Verifier, non_job: impl Into<NonJobRules>, parts: &Parts, now: i64) -> Enforced {
    let non_job = non_job.into();
    let mut classified = classify(&parts.method, parts.uri.path(), parts.uri.query())
        .or_else(|unmatched| opened_api_route(&snapshot.api_routes, parts).ok_or(unmatched));
    // An LFS batch's action is in its body, which `handle` peeked (a batch not peeked stays a write).
    if let (Ok(request), Some(lfs::BatchOperation(action))) = (&mut classified, parts.extensions.get::<lfs::BatchOperation>()) {
        if request.family == Family::Lfs {
            *request = lfs::lfs(match &request.target {
                Target::Project(project) => project.clone(),
                _ => return Enforced { classified, claims: None, verdict: Verdict::Reject(Rejection::new(Reason::BadRequest, "LFS batch without a project")), unknown_kid: None },
            }, *action);
        }
    }
    let mut unknown_kid = None;
    let non_job = non_job.for_family(classified.as_ref().ok().map(|c| c.family));
    let (claims, verdict) = judge(snapshot, verifier, non_job, parts, &classified, now, &mut unknown_kid);
    Enforced { classified, claims, verdict, unknown_kid }
}

fn judge(
    snapshot: &Snapshot,
    verifier: &Verifier,
    non_job: NonJob,
    parts: &Parts,
    classified: &Result<Classified, Unmatched>,
    now: i64,
    unknown_kid: &mut Option<usize>,
) -> (Option<VerifiedClaims>, Verdict) {
    let reject = |reason, message: &'static str| Verdict::Reject(Rejection::new(reason, message));
    if let Err(message) = check_request_target(parts) {
        return (None, reject(Reason::BadRequest, message));
    }
    let (token, bearer) = match extract(&parts.headers, parts.uri.query()) {
        Ok(Credential::Job(token)) => (token, false),
        Ok(Credential::BearerJwt(token)) => (token, true),
        Ok(_) if non_job == NonJob::Passthrough => return (None, Verdict::Passthrough),
        Ok(Credential::None) => return (None, reject(Reason::MissingCredential, "a CI job token is required")),
        Ok(Credential::NonJob) => return (None, reject(Reason::NonJobRejected, "only CI job tokens are accepted here")),
        Err(e @ ExtractError::Conflicting) => return (None, Verdict::Reject(Rejection::new(Reason::ConflictingCredentials, e.to_string()))),
        Err(e @ ExtractError::Malformed(_)) => return (None, Verdict::Reject(Rejection::new(Reason::BadRequest, e.to_string()))),
    };
    let registry_token = if bearer { verifier.verify_registry_token(&token, now) } else { None };
    let (claims, access) = match registry_token {
        Some(Ok((claims, access))) => (claims, Some(access)),
        Some(Err(e)) => return (None, Verdict::Reject(Rejection::new(e.reason(), e.to_string()))),
        None => match verify_job_token(verifier, &token, bearer, non_job, now, unknown_kid) {
            Ok(claims) => (claims, None),
            Err(verdict) => return (None, verdict),
        },
    };
    let verdict = match classified {
        Err(unmatched) => reject(Reason::UnmatchedRequest, unmatched.why),
        Ok(request) => decide_all(snapshot, request, claims.claims(), access.as_deref(), parts),
    };
    (Some(claims), verdict)
}

/// Verifies a job token; a Bearer JWT from no configured issuer is non-job traffic.
fn verify_job_token(
    verifier: &Verifier,
    token: &str,
    bearer: bool,
    non_job: NonJob,
    now: i64,
    unknown_kid: &mut Option<usize>,
) -> Result<VerifiedClaims, Verdict> {
    match verifier.verify(token, now) {
        Ok(claims) => Ok(claims),
        // A Bearer JWT no configured issuer signed is some other service's credential: non-job traffic.
        Err(VerifyError::UnknownIssuer) if bearer && non_job == NonJob::Passthrough => Err(Verdict::Passthrough),
        Err(VerifyError::UnknownIssuer) if bearer => {
            Err(Verdict::Reject(Rejection::new(Reason::NonJobRejected, "only CI job tokens are accepted here")))
        }
        Err(e) => {
            if let VerifyError::UnknownKid { issuer } = e {
                *unknown_kid = Some(issuer);
            }
            Err(Verdict::Reject(Rejection::new(e.reason(), e.to_string())))
        }
    }
}

/// The policy decision, plus what registry requests add: a registry token must grant the action, and
/// a cross-repository mount must also be allowed to pull from its source.
fn decide_all(snapshot: &Snapshot, request: &Classified, claims: &Claims, access: Option<&[Access]>, parts: &Parts) -> Verdict {
    let verdict = decide_one(snapshot, request, claims, access);
    if request.family != Family::Registry || !matches!(verdict, Verdict::Allow(_)) {
        return verdict;
    }
    let rest = parts.uri.path().strip_prefix("/v2/").unwrap_or("");
    match classify::registry::classify(&parts.method, rest, parts.uri.query()).map(|r| r.mount_from) {
        Ok(Some(from)) => {
            let pull = Classified { target: Target::Image(from), action: Action::Read, scope: Scope::ReadRegistry, destructive: false, ..request.clone() };
            match decide_one(snapshot, &pull, claims, access) {
                Verdict::Allow(_) => verdict,
                refused => refused,
            }
        }
        _ => verdict,
    }
}

fn decide_one(snapshot: &Snapshot, request: &Classified, claims: &Claims, access: Option<&[Access]>) -> Verdict {
    if let (Some(access), Target::Image(name)) = (access, &request.target) {
        let action = match (request.action, request.destructive) {
            (Action::Read, _) => "pull",
            (Action::Write, false) => "push",
            (Action::Write, true) => "delete",
        };
        if !registry_auth::grants(access, name.as_str(), action) {
            return Verdict::Reject(Rejection::new(Reason::RegistryScopeMissing, format!("the registry token does not grant {action} on {name}")));
        }
    }
    match decide(&snapshot.policy, request, claims) {
            Decision::Allow(permit) => Verdict::Allow(permit),
            Decision::Deny(denial) => {
                let rejection = Rejection::new(
                    denial.reason,
                    format!(
                        "jobs of {} may not use {} on {}",
                        claims.project_path,
                        denial.needed,
                        request.target
                    ),
                );
                if denial.enforced {
                    Verdict::Reject(rejection)
                } else {
                    Verdict::WouldDeny(rejection)
                }
            }
    }
}

/// An API endpoint the config opens to job tokens: an exact path match, decided on the job's own
/// project (the target is the instance).
fn opened_api_route(routes: &[ApiRoute], parts: &Parts) -> Option<Classified> {
    let route = routes.iter().find(|r| r.method == parts.method.as_str() && r.path == parts.uri.path())?;
    Some(Classified { family: Family::Api, target: Target::Instance, action: Action::Read, scope: route.scope, destructive: false })
}

/// The `non_job` setting per family: the process-wide default, overridden by an upstream's own.
#[derive(Debug, Clone, Copy)]
pub struct NonJobRules {
    pub default: NonJob,
    /// Overrides for git, lfs, registry, packages, api.
    pub families: [Option<NonJob>; 5],
}

impl NonJobRules {
    fn for_family(self, family: Option<Family>) -> NonJob {
        let index = match family {
            Some(Family::Git) => 0,
            Some(Family::Lfs) => 1,
            Some(Family::Registry) => 2,
            Some(Family::Packages) => 3,
            Some(Family::Api) => 4,
            None => return self.default,
        };
        self.families[index].unwrap_or(self.default)
    }
}

impl From<NonJob> for NonJobRules {
    fn from(default: NonJob) -> Self {
        NonJobRules { default, families: [None; 5] }
    }
}

/// Request-target shapes that would let jobgate and the upstream disagree about the request.
fn check_request_target(parts: &Parts) -> Result<(), &'static str> {
    if parts.version < Version::HTTP_2 && parts.uri.authority().is_some() {
        return Err("absolute-form request targets are not accepted");
    }
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err("more than one Host header");
    }
    if let (Some(authority), Some(host)) = (parts.uri.authority(), parts.headers.get(header::HOST)) {
        if authority.as_str().as_bytes() != host.as_bytes() {
            return Err(":authority and Host disagree");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, version: Version, hosts: &[&str]) -> Parts {
        let mut builder = Request::builder().uri(uri).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap_or_default().into_parts().0
    }

    #[test]
    fn request_targets_that_could_be_read_two_ways_are_refused() {
        assert!(check_request_target(&parts("/a/b.git/info/refs", Version::HTTP_11, &["x"])).is_ok());
        assert!(check_request_target(&parts("https://x/a/b.git/info/refs", Version::HTTP_2, &[])).is_ok());
        assert!(check_request_target(&parts("https://x/a", Version::HTTP_2, &["x"])).is_ok());
        for (uri, version, hosts) in [
            ("https://evil/a/b.git/info/refs", Version::HTTP_11, &["x"][..]),
            ("/a", Version::HTTP_11, &["a", "b"][..]),
            ("https://x/a", Version::HTTP_2, &["y"][..]),
        ] {
            assert!(check_request_target(&parts(uri, version, hosts)).is_err(), "{uri} {hosts:?}");
        }
    }
}
