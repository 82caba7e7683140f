//! The registry token realm: `GET /jwt/auth?service=S&scope=repository:NAME:ACTIONS` (scope may
//! repeat). The job token is authenticated and every requested action decided by `enforce`'s own
//! functions; the issued token grants exactly the allowed subset (an empty `access` when nothing is
//! granted, as registries expect). Pure: the edge turns the result into a response.

use http::request::Parts;
use serde_json::{json, Value};

use super::token::Access;
use crate::classify::registry::for_action;
use crate::config::NonJob;
use crate::enforce::{authenticate, authorize, check_target, Authenticated, Core, NoTrace, Refused, Routed, Ruling, VerifyStats};
use crate::path::ProjectPath;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::token::verify::VerifiedClaims;

/// An issued registry token: the JSON body registry clients read, and the job it was issued to.
pub struct Grant {
    pub body: Value,
    pub claims: VerifiedClaims,
}

/// Serves one realm request at `now`.
///
/// # Errors
/// A refusal for a bad request target, a missing or invalid job token, or a wrong service (or a GitLab
/// job token the edge must look up first).
pub fn realm(core: &Core<'_>, parts: &Parts, now: i64, stats: &mut Option<VerifyStats>) -> Result<Grant, Refused> {
    let Some(registry) = core.registry else { return Err(Refusal::new(Reason::UnmatchedRequest, "no registry token realm is configured").into()) };
    check_target(parts).map_err(Refused::from)?;
    // Job tokens only: a registry token cannot buy another registry token.
    let job = match authenticate(core, parts, NonJob::Reject, None, now, stats)? {
        Authenticated::Job(job) => job,
        Authenticated::NonJob => return Err(Refusal::new(Reason::NonJobRejected, "the token realm needs a CI job token").into()),
    };
    let claims = job.claims.claims();
    let pairs: Vec<(String, String)> = crate::query::pairs(parts.uri.query()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if pairs.iter().any(|(k, service)| k == "service" && *service != registry.service) {
        return Err(Refusal::new(Reason::BadRequest, "unknown registry service").into());
    }
    let mut access = Vec::new();
    for (_, scope) in pairs.iter().filter(|(k, _)| k == "scope") {
        let mut fields = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let Some(image) = ProjectPath::parse(name) else { continue };
        let granted: Vec<String> = actions
            .split(',')
            .filter(|action| {
                let Some(request) = for_action(&image, action) else { return false };
                let routed = Routed { request, mount_from: None };
                matches!(authorize(core.snapshot, &routed, claims, None, None, &mut NoTrace), Ruling::Allow(_))
            })
            .map(str::to_owned)
            .collect();
        access.push(Access { kind: "repository".into(), name: name.to_owned(), actions: granted });
    }
    let token = registry.issue(claims, &access, now).map_err(|_| Refused::from(Refusal::new(Reason::InternalError, "cannot sign the registry token")))?;
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": registry.ttl().min(claims.exp - now).max(0),
        "issued_at": crate::clock::rfc3339(std::time::SystemTime::now()),
    });
    Ok(Grant { body, claims: job.claims })
}
