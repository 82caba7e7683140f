//! Which credential an allowed request needs upstream (`credentials: impersonate`). GitLab accepts a
//! job only through its own job token, within GitLab's hard-coded job-token rules
//! (`doc/ci/jobs/ci_job_token.md`): reads of its own project and of projects whose allowlist admits
//! it, its own project's container registry and package publishing. Within those rules the job's
//! own token goes upstream unchanged, so GitLab applies its rules too; beyond them (a push, a
//! package publish to another project, the REST API) — or for an ID token, which GitLab accepts
//! nowhere — the request needs an impersonation token of the job's user holding the one GitLab
//! scope that covers the permit. Pure.

use base64::Engine as _;
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue};

use crate::classify::{Action, Classified, Family, ProjectRef, Target};
use crate::enforce::JobCredential;
use crate::scope::GitLabScope;
use crate::token::claims::Claims;

/// `None` when the job's own credential covers `request` upstream; else the GitLab scope of the
/// impersonation token it needs.
pub fn elevation(request: &Classified, claims: &Claims, credential: JobCredential) -> Option<GitLabScope> {
    // GitLab ties these to the job itself (its own record, the runner's job API), and the registry
    // takes the tokens of its realm: never anyone else's credential.
    if request.target == Target::OwnJob || request.family == Family::Registry {
        return None;
    }
    if credential != JobCredential::GitLabJobToken {
        return Some(GitLabScope::covering(request.scope));
    }
    let own = match &request.target {
        Target::Project(ProjectRef::Id(id)) => *id == claims.project_id,
        Target::Project(ProjectRef::Path(path)) => *path == claims.project_path,
        _ => false,
    };
    let within = match (request.family, request.action) {
        (Family::Git | Family::Lfs | Family::Packages, Action::Read) => true,
        (Family::Packages, Action::Write) => own && !request.destructive,
        _ => false,
    };
    (!within).then(|| GitLabScope::covering(request.scope))
}

/// The impersonation token in the form the client sent its own credential: git's Basic (as
/// `<username>:<token>`), a Bearer (npm), else GitLab's `PRIVATE-TOKEN` header (API, Maven's
/// `Job-Token`, a `job_token` parameter). `None` only if the token is no header value.
pub fn presented(headers: &HeaderMap, username: Option<&str>, token: &str) -> Option<(HeaderName, HeaderValue)> {
    let scheme = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(s, _)| s.to_ascii_lowercase());
    let (name, value) = match scheme.as_deref() {
        Some("basic") => {
            let pair = format!("{}:{token}", username.unwrap_or("jobgate"));
            (AUTHORIZATION, format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
        }
        Some("bearer") => (AUTHORIZATION, format!("Bearer {token}")),
        _ => (HeaderName::from_static("private-token"), token.to_owned()),
    };
    let mut value = HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ProjectPath;
    use crate::scope::Scope;

    fn claims() -> Claims {
        Claims {
            user_id: Some(5),
            user_login: Some("ann".into()),
            ref_protected: true,
            ..Claims::job("i", ProjectPath::parse("acme/app").unwrap_or_else(|| unreachable!()), 42, 1, 2_000_000_000)
        }
    }

    fn request(family: Family, target: Target, action: Action, scope: Scope) -> Classified {
        Classified { family, target, action, scope, destructive: false }
    }

    #[test]
    fn the_job_token_goes_within_its_rights_an_impersonation_token_beyond() {
        let own = Target::Project(ProjectRef::Id(42));
        let other = Target::Project(ProjectRef::Path(ProjectPath::parse("acme/lib").unwrap_or_else(|| unreachable!())));
        let token = JobCredential::GitLabJobToken;
        for (request, want) in [
            (request(Family::Git, other.clone(), Action::Read, Scope::ReadRepository), None),
            (request(Family::Git, own.clone(), Action::Write, Scope::WriteRepository), Some("write_repository")),
            (request(Family::Git, other.clone(), Action::Write, Scope::WriteRepository), Some("write_repository")),
            (request(Family::Packages, own.clone(), Action::Write, Scope::WritePackageRegistry), None),
            (request(Family::Packages, other.clone(), Action::Write, Scope::WritePackageRegistry), Some("api")),
            (request(Family::Api, own.clone(), Action::Read, Scope::ReadApi), Some("read_api")),
            (request(Family::Api, other.clone(), Action::Write, Scope::Api), Some("api")),
            (request(Family::Api, Target::OwnJob, Action::Read, Scope::ReadApi), None),
            (request(Family::Registry, own.clone(), Action::Write, Scope::WriteRegistry), None),
        ] {
            assert_eq!(elevation(&request, &claims(), token).map(GitLabScope::name), want, "{request:?}");
        }
        // An ID token is no GitLab credential: every allowed request needs the user's token.
        assert_eq!(
            elevation(&request(Family::Git, other, Action::Read, Scope::ReadRepository), &claims(), JobCredential::Jwt)
                .map(GitLabScope::name),
            Some("read_repository")
        );
    }

    #[test]
    fn each_client_keeps_its_own_form() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic Z2l0bGFiLWNpLXRva2VuOng="));
        let (name, value) = presented(&headers, Some("ann"), "glpat-x").unwrap_or_else(|| unreachable!());
        assert_eq!((name.as_str(), value.to_str().unwrap_or_default()), ("authorization", "Basic YW5uOmdscGF0LXg="));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer glcbt-1"));
        assert_eq!(
            presented(&headers, None, "glpat-x").map(|(_, v)| v),
            Some(HeaderValue::from_static("Bearer glpat-x"))
        );
        let mut maven = HeaderMap::new();
        maven.insert("job-token", HeaderValue::from_static("glcbt-1"));
        assert_eq!(
            presented(&maven, None, "glpat-x").map(|(n, _)| n.as_str().to_owned()).as_deref(),
            Some("private-token")
        );
    }
}
