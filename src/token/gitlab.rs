//! GitLab's own job tokens (`$CI_JOB_TOKEN`: opaque `glcbt-…` or GitLab's unpublished-key JWT), which
//! only GitLab can verify: `GET /api/v4/job` with the token answers the running job it belongs to.
//! This file is the pure half — turning that answer into the same [`Claims`] the JWT path builds, and
//! the cache of answers `enforce` reads (hits, and recent refusals). The lookup itself (HTTP, single
//! flight, budget) is `crate::gitlab`'s.

use std::sync::Arc;

use serde::Deserialize;

use super::cache::{digest, TokenDigest};
use super::claims::Claims;
use crate::kit::Expiring;
use crate::path::ProjectPath;

/// The fields of GitLab's `Entities::Ci::Job` jobgate reads (`lib/api/entities/ci/job_basic.rb`,
/// `job.rb`; `pipeline` is `Entities::Ci::PipelineBasic`, `user` `Entities::User`). Unknown fields are
/// ignored: GitLab adds them over time.
#[derive(Debug, Deserialize)]
struct JobDoc {
    id: u64,
    status: String,
    #[serde(rename = "ref")]
    git_ref: String,
    tag: bool,
    pipeline: PipelineDoc,
    user: Option<UserDoc>,
    /// `…/<full project path>/-/jobs/<id>`: the only place the answer names the project's path.
    web_url: String,
}

#[derive(Debug, Deserialize)]
struct PipelineDoc {
    id: u64,
    project_id: u64,
}

#[derive(Debug, Deserialize)]
struct UserDoc {
    id: u64,
    username: String,
}

/// Why GitLab's answer cannot be used (never carries the token or the answer itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JobDocError {
    #[error("GitLab's job answer is not the documented Entities::Ci::Job shape")]
    Shape,
    #[error("the job is not running (only a running job's token is valid)")]
    NotRunning,
    #[error("GitLab's job answer names a web_url outside {0}")]
    WebUrl(&'static str),
}

/// The claims of the job GitLab answered for, valid until `exp`. `base_url` is the GitLab instance's
/// URL (`https://gitlab.example.com`), which `web_url` must lie under.
///
/// # Errors
/// An answer of another shape, a job that is not running, or a `web_url` that names no project of
/// this instance.
pub fn job_claims(body: &[u8], base_url: &str, exp: i64) -> Result<Claims, JobDocError> {
    let job: JobDoc = serde_json::from_slice(body).map_err(|_| JobDocError::Shape)?;
    if job.status != "running" {
        return Err(JobDocError::NotRunning);
    }
    let project = job
        .web_url
        .strip_prefix(base_url.trim_end_matches('/'))
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_suffix(&format!("/-/jobs/{}", job.id)))
        .and_then(ProjectPath::parse)
        .ok_or(JobDocError::WebUrl("the configured GitLab"))?;
    Ok(Claims {
        iss: base_url.into(),
        jti: None,
        exp,
        iat: None,
        project_id: job.pipeline.project_id,
        project_path: project,
        user_id: job.user.as_ref().map(|u| u.id),
        user_login: job.user.map(|u| u.username).map(Into::into),
        user_access_level: None,
        pipeline_id: Some(job.pipeline.id),
        job_id: job.id,
        git_ref: Some(job.git_ref.into()),
        ref_type: Some(std::borrow::Cow::Borrowed(if job.tag { "tag" } else { "branch" })),
        // GitLab's answer does not say; without a protected-ref lookup, destructive actions are denied.
        ref_protected: false,
        environment: None,
        environment_protected: false,
        scopes: None,
    })
}

/// One entry of GitLab's `GET /projects/:id/protected_branches` or `/protected_tags` answer (docs:
/// api/protected_branches.md, api/protected_tags.md): a name or a wildcard (`*` any run of characters).
#[derive(Debug, Deserialize)]
struct ProtectedRefDoc {
    name: String,
}

/// The protected names (or wildcards) of one page of a `protected_branches`/`protected_tags` answer.
///
/// # Errors
/// An answer that is not a list of `{name}` objects.
pub fn protected_names(answer: &[u8]) -> Result<Vec<String>, JobDocError> {
    let refs: Vec<ProtectedRefDoc> = serde_json::from_slice(answer).map_err(|_| JobDocError::Shape)?;
    Ok(refs.into_iter().map(|r| r.name).collect())
}

/// Whether `git_ref` is one of the protected `names` (`*` matches any run of characters).
pub fn is_protected(names: &[String], git_ref: &str) -> bool {
    names.iter().any(|name| crate::glob::Glob::new(name).matches(git_ref))
}

/// The role of GitLab's `GET /projects/:id/members/all/:user_id` answer (`access_level`: 10 guest,
/// 20 reporter, 30 developer, 40 maintainer, 50 owner; `Gitlab::Access`). Minimal access (5) and
/// anything unknown give no role.
///
/// # Errors
/// An answer without a numeric `access_level`.
pub fn member_role(answer: &[u8]) -> Result<Option<crate::scope::Role>, JobDocError> {
    #[derive(Deserialize)]
    struct MemberDoc {
        access_level: u64,
    }
    use crate::scope::Role;
    let member: MemberDoc = serde_json::from_slice(answer).map_err(|_| JobDocError::Shape)?;
    Ok(match member.access_level {
        10 => Some(Role::Guest),
        20 => Some(Role::Reporter),
        30 => Some(Role::Developer),
        40 => Some(Role::Maintainer),
        50 => Some(Role::Owner),
        _ => None,
    })
}

/// What GitLab said about a token, until `until` (seconds since the epoch).
#[derive(Debug, Clone)]
pub enum Identity {
    Job(Arc<Claims>),
    /// GitLab refused the token (401): no running job has it.
    Refused,
}

/// GitLab's recent answers: identities by SHA-256 of the token, and (with jobgate's API token) users'
/// roles in projects other than their job's; both bounded.
pub struct JobIdentities {
    entries: Expiring<TokenDigest, Identity>,
    /// (project id or path, user id) → the user's role there (`None`: no membership).
    roles: Expiring<RoleKey, Option<crate::scope::Role>>,
    /// The GitLab URL, which is the `iss` of every identity from here.
    issuer: String,
    /// Whether roles in other projects can be asked (jobgate holds an API token).
    asks_roles: bool,
}

/// A project as GitLab's API takes it in a path: its id, or its full path (URL-encoded when sent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApiProject {
    Id(u64),
    Path(ProjectPath),
}

impl std::fmt::Display for ApiProject {
    /// `42`, or `acme%2Fapp`: the `:id` of `/projects/:id/…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiProject::Id(id) => write!(f, "{id}"),
            ApiProject::Path(path) => {
                write!(
                    f,
                    "{}",
                    percent_encoding::utf8_percent_encode(path.as_str(), percent_encoding::NON_ALPHANUMERIC)
                )
            }
        }
    }
}

/// Whose role in which project GitLab is asked about: a project other than the job's own, and a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleKey {
    pub project: ApiProject,
    pub user: u64,
}

impl JobIdentities {
    pub fn new(capacity: usize, issuer: &str, asks_roles: bool) -> JobIdentities {
        JobIdentities {
            entries: Expiring::new(capacity),
            roles: Expiring::new(capacity),
            issuer: issuer.to_owned(),
            asks_roles,
        }
    }

    /// Whether `claims` came from GitLab's answer and their user's roles elsewhere can be asked.
    pub fn asks_roles_for(&self, claims: &Claims) -> bool {
        self.asks_roles && *claims.iss == *self.issuer && claims.user_id.is_some()
    }

    /// The user's role in a project, if GitLab was asked recently (`Some(None)`: not a member).
    pub fn role(&self, key: &RoleKey, now: i64) -> Option<Option<crate::scope::Role>> {
        self.roles.get(key, now)
    }

    /// Remembers GitLab's answer about a role until `until` (bounded: when full and nothing has
    /// expired, it is not kept and the next request asks again).
    pub fn insert_role(&self, key: RoleKey, role: Option<crate::scope::Role>, until: i64, now: i64) {
        self.roles.insert(key, role, until, now);
    }

    /// The live answer for `token`, if any.
    pub fn get(&self, token: &str, now: i64) -> Option<Identity> {
        self.entries.get(&digest(token), now)
    }

    /// Remembers GitLab's answer for `token` until `until` (bounded as roles are).
    pub fn insert(&self, token: &str, identity: Identity, until: i64, now: i64) {
        self.entries.insert(digest(token), identity, until, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example answer of gitlab-org/gitlab#508619, trimmed to what matters, with a user.
    fn answer(status: &str, web_url: &str) -> Vec<u8> {
        serde_json::json!({
            "id": 8, "status": status, "stage": "test", "name": "rspec", "ref": "main", "tag": false,
            "coverage": null, "allow_failure": false, "created_at": "2024-12-10T10:00:00.000Z",
            "user": {"id": 5, "username": "ann", "name": "Ann", "state": "active"},
            "pipeline": {"id": 3, "iid": 1, "project_id": 42, "sha": "abc", "ref": "main", "status": "running", "source": "push"},
            "web_url": web_url, "project": {"ci_job_token_scope_enabled": false}, "artifacts": [], "tag_list": []
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_running_job_becomes_claims() {
        let claims = job_claims(
            &answer("running", "https://gitlab.example.com/acme/sub/app/-/jobs/8"),
            "https://gitlab.example.com",
            99,
        )
        .unwrap();
        assert_eq!((claims.job_id, claims.project_id, claims.project_path.as_str()), (8, 42, "acme/sub/app"));
        assert_eq!((claims.user_id, claims.user_login.as_deref(), claims.pipeline_id), (Some(5), Some("ann"), Some(3)));
        assert_eq!(
            (claims.git_ref.as_deref(), claims.ref_type.as_deref(), claims.ref_protected, claims.exp),
            (Some("main"), Some("branch"), false, 99)
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let base = "https://gitlab.example.com";
        assert_eq!(
            job_claims(&answer("success", "https://gitlab.example.com/acme/app/-/jobs/8"), base, 1).err(),
            Some(JobDocError::NotRunning)
        );
        for url in [
            "https://evil.example.com/acme/app/-/jobs/8",
            "https://gitlab.example.com/acme/app/-/jobs/9",
            "https://gitlab.example.com/acme/../app/-/jobs/8",
            "https://gitlab.example.com//-/jobs/8",
        ] {
            assert!(matches!(job_claims(&answer("running", url), base, 1), Err(JobDocError::WebUrl(_))), "{url}");
        }
        for body in [&b"{}"[..], b"not json", br#"{"id": "8"}"#] {
            assert_eq!(job_claims(body, base, 1).err(), Some(JobDocError::Shape));
        }
    }

    #[test]
    fn protected_names_and_member_roles() {
        let names = protected_names(br#"[{"id":1,"name":"main","push_access_levels":[]},{"id":2,"name":"release/*"}]"#)
            .unwrap();
        assert_eq!(
            (is_protected(&names, "main"), is_protected(&names, "release/1.2"), is_protected(&names, "feature")),
            (true, true, false)
        );
        assert_eq!(protected_names(b"{}"), Err(JobDocError::Shape));
        use crate::scope::Role;
        assert_eq!(member_role(br#"{"id":5,"access_level":30}"#), Ok(Some(Role::Developer)));
        assert_eq!(member_role(br#"{"id":5,"access_level":5}"#), Ok(None), "minimal access is no role");
        assert_eq!(member_role(br#"{"id":5}"#), Err(JobDocError::Shape));
    }

    #[test]
    fn answers_die_at_their_time_and_the_cache_stays_bounded() {
        let cache = JobIdentities::new(2, "https://gitlab.example.com", false);
        cache.insert("a", Identity::Refused, 10, 0);
        assert!(matches!(cache.get("a", 10), Some(Identity::Refused)));
        assert!(cache.get("a", 11).is_none());
        cache.insert("b", Identity::Refused, 10, 0);
        cache.insert("c", Identity::Refused, 10, 0);
        cache.insert("d", Identity::Refused, 10, 0);
        assert!(cache.get("d", 0).is_none(), "full of live answers: not kept");
        cache.insert("e", Identity::Refused, 30, 20);
        assert!(cache.get("e", 20).is_some(), "expired ones made room");
    }
}
