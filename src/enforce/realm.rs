//! The registry token realm: `GET /jwt/auth?service=S&scope=repository:NAME:ACTIONS`. The scopes are
//! read as GitLab's `JwtController#scopes_param` reads them (every `scope` parameter, each split on
//! whitespace), the job's credential is authenticated and every requested action decided by
//! `enforce`'s own functions; what the policy does not allow is dropped. Then either jobgate signs
//! the token itself ([`realm`]: the `access` it grants is exactly the allowed subset) or GitLab's own
//! realm signs it for the narrowed scopes ([`gitlab_realm`]: the registry keeps trusting GitLab).
//! Pure: the edge turns the result into a response, or asks GitLab.

use std::fmt::Write as _;

use http::request::Parts;
use serde_json::{json, Value};

use crate::classify::registry::for_action;
use crate::classify::Family;
use crate::config::NonJob;
use crate::enforce::{
    authenticate, authorize, check_target, decided, Authenticated, Core, Job, JobCredential, Known, NoTrace, Routed,
    Ruling, Step, VerifyStats,
};
use crate::path::ProjectPath;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::scope::GitLabScope;
use crate::token::extract::{extract, Credential};
use crate::token::registry::Access;
use crate::token::verify::VerifiedClaims;

/// GitLab's service name for its dependency proxy's tokens (`Auth::DependencyProxyAuthenticationService::AUDIENCE`).
pub const DEPENDENCY_PROXY: &str = "dependency_proxy";

/// An issued registry token: the JSON body registry clients read, and the job it was issued to.
pub struct Grant {
    pub body: Value,
    pub claims: VerifiedClaims,
}

/// Serves one realm request at `now` with jobgate's own registry tokens: decided, or what the core
/// needs first.
///
/// # Errors
/// A refusal for a bad request target, a missing or invalid job token, or a wrong service.
pub fn realm(
    core: &Core<'_>,
    parts: &Parts,
    known: &Known,
    now: i64,
    stats: &mut Option<VerifyStats>,
) -> Step<Result<Grant, Refusal>> {
    let Some(registry) = core.registry else {
        return Step::Decided(Err(Refusal::new(Reason::UnmatchedRequest, "no registry token realm is configured")));
    };
    // Job tokens only: a registry token cannot buy another registry token.
    let job = match decided!(job(core, parts, NonJob::Reject, known, now, stats)) {
        Ok(Some(job)) => job,
        Ok(None) => {
            return Step::Decided(Err(Refusal::new(Reason::NonJobRejected, "the token realm needs a CI job token")))
        }
        Err(refusal) => return Step::Decided(Err(refusal)),
    };
    if service(parts).is_some_and(|service| service != registry.service) {
        return Step::Decided(Err(Refusal::new(Reason::BadRequest, "unknown registry service")));
    }
    let access = narrowed(core, parts, &job.claims, now);
    let claims = job.claims.claims();
    let Ok(token) = registry.issue(claims, &access, now) else {
        return Step::Decided(Err(Refusal::new(Reason::InternalError, "cannot sign the registry token")));
    };
    let issued_at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0));
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": registry.ttl().min(claims.exp - now).max(0),
        "issued_at": crate::clock::rfc3339(issued_at),
    });
    Step::Decided(Ok(Grant { body, claims: job.claims }))
}

/// What GitLab's realm is to be asked, for one realm request.
pub enum AskGitLab {
    /// Not a job credential, on a registry that passes such traffic: GitLab's realm answers it
    /// untouched (people's `docker login`, deploy tokens).
    NonJob,
    /// The query with only the scopes the policy allows, and the credential to ask with.
    Job { query: String, login: RealmLogin, claims: VerifiedClaims },
}

/// Who jobgate logs in to GitLab's realm as, for a job.
pub enum RealmLogin {
    /// `gitlab-ci-token` with the job's own token: the scopes stay within GitLab's job-token rules.
    JobToken(String),
    /// The job's user, with an impersonation token of this GitLab scope (`read_registry` or
    /// `write_registry`): a push the policy grants beyond the job's own project, or a job that
    /// proved itself with an ID token.
    Impersonated(GitLabScope),
}

/// Serves one realm request at `now` for GitLab's realm (`registry_auth.tokens: gitlab`): the query
/// GitLab is asked with keeps `service`, `account` and `client_id` (the parameters GitLab permits)
/// and only the allowed scopes; `service=dependency_proxy` is GitLab's to decide (jobgate's policy
/// has no scope for it) and goes with no scope at all. `impersonates`: jobgate may act as the job's
/// user (`gitlab.admin_token_file`), for pushes beyond the job's own project and for ID tokens.
///
/// # Errors
/// As [`realm`]; and a job whose credential is not GitLab's own job token, which GitLab's realm
/// would not accept.
pub fn gitlab_realm(
    core: &Core<'_>,
    parts: &Parts,
    service_name: &str,
    impersonates: bool,
    known: &Known,
    now: i64,
    stats: &mut Option<VerifyStats>,
) -> Step<Result<AskGitLab, Refusal>> {
    let non_job = core.non_job.for_family(Some(Family::Registry));
    Step::Decided(match decided!(job(core, parts, non_job, known, now, stats)) {
        Ok(Some(job)) => ask_gitlab(core, parts, service_name, impersonates, job, now),
        Ok(None) => Ok(AskGitLab::NonJob),
        Err(refusal) => Err(refusal),
    })
}

/// The question for GitLab's realm, for a verified job.
fn ask_gitlab(
    core: &Core<'_>,
    parts: &Parts,
    service_name: &str,
    impersonates: bool,
    job: Job,
    now: i64,
) -> Result<AskGitLab, Refusal> {
    let own_token = match extract(&parts.headers, parts.uri.query()) {
        Ok(Credential::Job(token)) if job.credential == JobCredential::GitLabJobToken => Some(token.into_owned()),
        _ => None,
    };
    if own_token.is_none() && !impersonates {
        let why = "GitLab's registry realm accepts only GitLab's own job token: log in with CI_JOB_TOKEN (an ID token is no GitLab credential; gitlab.admin_token_file would let jobgate act as the job's user)";
        return Err(Refusal::new(Reason::NoGitlabCredential, why));
    }
    let service = service(parts);
    let mut query = String::new();
    for (name, value) in crate::query::pairs(parts.uri.query())
        .filter(|(name, _)| matches!(name.as_ref(), "service" | "account" | "client_id"))
    {
        let _ =
            write!(query, "{}{name}={}", if query.is_empty() { "" } else { "&" }, crate::query::form_encode(&value));
    }
    // Whether the allowed scopes push at all, and whether beyond the job's own project.
    let (mut pushes, mut pushes_elsewhere) = (false, false);
    match service.as_deref() {
        Some(DEPENDENCY_PROXY) => {}
        Some(name) if name == service_name => {
            let own = job.claims.claims().project_path.to_string();
            for access in narrowed(core, parts, &job.claims, now).iter().filter(|a| !a.actions.is_empty()) {
                let scope = format!("{}:{}:{}", access.kind, access.name, access.actions.join(","));
                let _ = write!(query, "&scope={}", crate::query::form_encode(&scope));
                let push = access.actions.iter().any(|a| a != "pull");
                let in_own = access.name == own || access.name.starts_with(&format!("{own}/"));
                pushes |= push;
                pushes_elsewhere |= push && !in_own;
            }
        }
        _ => return Err(Refusal::new(Reason::BadRequest, "unknown registry service")),
    }
    // GitLab's job token pushes only to the job's own project: beyond it, the user's token.
    let login = match own_token {
        Some(token) if !(pushes_elsewhere && impersonates) => RealmLogin::JobToken(token),
        _ => RealmLogin::Impersonated(if pushes { GitLabScope::WriteRegistry } else { GitLabScope::ReadRegistry }),
    };
    Ok(AskGitLab::Job { query, login, claims: job.claims })
}

/// The request's job, or `None` for non-job traffic `non_job` passes.
fn job(
    core: &Core<'_>,
    parts: &Parts,
    non_job: NonJob,
    known: &Known,
    now: i64,
    stats: &mut Option<VerifyStats>,
) -> Step<Result<Option<Job>, Refusal>> {
    if let Err(refusal) = check_target(parts) {
        return Step::Decided(Err(refusal));
    }
    authenticate(core, parts, non_job, None, known, now, stats).map(|authenticated| match authenticated? {
        Authenticated::Job(job) => Ok(Some(job)),
        Authenticated::NonJob => Ok(None),
    })
}

fn service(parts: &Parts) -> Option<String> {
    crate::query::pairs(parts.uri.query()).find(|(name, _)| name == "service").map(|(_, value)| value.into_owned())
}

/// The requested scopes as GitLab reads them: every `scope` parameter, each value split on
/// whitespace (RFC 6749 §3.3 lists, as some clients send them).
pub fn requested_scopes(query: Option<&str>) -> Vec<String> {
    crate::query::pairs(query)
        .filter(|(name, _)| name == "scope")
        .flat_map(|(_, value)| value.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Each `repository:NAME:ACTIONS` scope with only the actions the policy allows the job (an entry
/// with none when it allows none). Other types (`registry:catalog:*`) and names that are no project
/// path grant jobs nothing and are left out.
fn narrowed(core: &Core<'_>, parts: &Parts, claims: &VerifiedClaims, now: i64) -> Vec<Access> {
    let claims = claims.claims();
    let roles = core.gitlab.map(|g| (g, now));
    let mut access = Vec::new();
    for scope in requested_scopes(parts.uri.query()) {
        let mut fields = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(image) = ProjectPath::parse(name) else { continue };
        let granted: Vec<String> = actions
            .split(',')
            .filter(|action| {
                let Some(request) = for_action(&image, action) else { return false };
                let routed = Routed { request, mount_from: None };
                matches!(authorize(core.snapshot, &routed, claims, None, roles, &mut NoTrace), Ruling::Allow(_))
            })
            .map(str::to_owned)
            .collect();
        access.push(Access { kind: "repository".into(), name: name.to_owned(), actions: granted });
    }
    access
}

#[cfg(test)]
mod tests {
    use super::requested_scopes;

    #[test]
    fn scopes_are_read_as_gitlab_reads_them() {
        let query = "service=container_registry&scope=repository:a/b:pull&scope=repository%3Ac%2Fd%3Apush%2Cpull+registry:catalog:*";
        assert_eq!(
            requested_scopes(Some(query)),
            ["repository:a/b:pull", "repository:c/d:push,pull", "registry:catalog:*"]
        );
        assert!(requested_scopes(Some("service=container_registry")).is_empty());
    }
}
