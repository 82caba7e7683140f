//! Policy tests that users write: `tests/*.yaml` next to their policy files, each a list of cases
//! (token claims + request → `allow` / `deny` / `would_deny`, optionally with the reason id).
//! `jobgate check` runs them and fails on any mismatch, like unit tests for policy.

use std::path::{Path, PathBuf};

use http::Method;
use serde::Deserialize;

use super::decide::{decide, Decision};
use super::load::{Policy, PolicyError};
use super::scope::{Role, Scope};
use crate::classify::classify;
use crate::config::{parse_yaml, ConfigError};
use crate::path::ProjectPath;
use crate::token::claims::Claims;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    token: TokenDoc,
    request: RequestDoc,
    expect: Expect,
    reason: Option<String>,
}

/// The claims a case's job token carries (already verified: only the policy is under test).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenDoc {
    project: String,
    #[serde(default)]
    project_id: u64,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    ref_type: Option<String>,
    #[serde(default)]
    ref_protected: bool,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    environment_protected: bool,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    user_access_level: Option<Role>,
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestDoc {
    method: String,
    url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Allow,
    Deny,
    /// Denied by a policy in `mode: audit`: recorded, not enforced.
    WouldDeny,
}

/// The outcome of running a folder's cases.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    /// One line per failed case: file, case name, expected and actual.
    pub failures: Vec<String>,
}

/// Runs every case in `dir/tests/*.yaml` against `policy`. A missing `tests` folder is an empty report.
///
/// # Errors
/// A test file that does not parse (file and line).
pub fn run(policy: &Policy, dir: &Path) -> Result<Report, PolicyError> {
    let mut report = Report::default();
    let Ok(entries) = std::fs::read_dir(dir.join("tests")) else { return Ok(report) };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| PolicyError { path: file.clone(), line: 0, message: format!("cannot read: {e}") })?;
        let cases: Vec<Case> = parse_yaml(&file, &text).map_err(|e| match e {
            ConfigError::Parse { path, line, message } => PolicyError { path, line, message },
            other => PolicyError { path: file.clone(), line: 0, message: other.to_string() },
        })?;
        for case in cases {
            match check(policy, &case) {
                Ok(()) => report.passed += 1,
                Err(why) => report.failures.push(format!("{}: {}: {why}", file.display(), case.name)),
            }
        }
    }
    Ok(report)
}

fn check(policy: &Policy, case: &Case) -> Result<(), String> {
    let method = Method::from_bytes(case.request.method.as_bytes()).map_err(|_| "bad request method".to_owned())?;
    let (path, query) = case.request.url.split_once('?').map_or((case.request.url.as_str(), None), |(p, q)| (p, Some(q)));
    let request = classify(&method, path, query).map_err(|u| format!("request is not classified: {}", u.why))?;
    let claims = claims(&case.token)?;
    let decision = decide(policy, &request, &claims);
    let (got, reason) = match decision {
        Decision::Allow(_) => (Expect::Allow, decision.reason()),
        Decision::Deny(d) if d.enforced => (Expect::Deny, d.reason),
        Decision::Deny(d) => (Expect::WouldDeny, d.reason),
    };
    let reason_ok = case.reason.as_deref().is_none_or(|want| want == reason.id());
    if got == case.expect && reason_ok {
        return Ok(());
    }
    Err(format!("expected {:?}{}, got {got:?} ({})", case.expect, case.reason.as_ref().map_or(String::new(), |r| format!(" ({r})")), reason.id()))
}

fn claims(token: &TokenDoc) -> Result<Claims, String> {
    Ok(Claims {
        iss: "policy-test".into(),
        jti: None,
        exp: i64::MAX / 4,
        iat: None,
        project_id: token.project_id,
        project_path: ProjectPath::parse(&token.project).ok_or_else(|| format!("token.project {:?} is not a project path", token.project))?,
        user_id: token.user_id,
        user_login: token.user.clone(),
        user_access_level: token.user_access_level,
        pipeline_id: None,
        job_id: 1,
        git_ref: token.git_ref.clone(),
        ref_type: token.ref_type.clone(),
        ref_protected: token.ref_protected,
        environment: token.environment.clone(),
        environment_protected: token.environment_protected,
        scopes: token.scopes.as_ref().map(|s| s.iter().copied().collect()),
    })
}
