//! Policy tests that users write: `tests/*.yaml` next to their policy files, each a list of cases
//! (token claims + request → `allow` / `deny` / `would_deny`, optionally with the reason id).
//! `jobgate check` runs them and fails on any mismatch, like unit tests for policy. A case is decided
//! by `enforce`'s own functions (classification with the config's API routes, the mount rule, the
//! policy), so a case passes only if `serve` would decide the same for a job with those claims.

use std::path::{Path, PathBuf};

use http::{Method, Request};
use serde::Deserialize;

use crate::classify::lfs::BatchOperation;
use crate::classify::Action;
use crate::enforce::{authorize, check_target, classify_request, Disposition, NoTrace, Summary};
use crate::path::ProjectPath;
use crate::policy::PolicyError;
use crate::refusal::Refusal;
use crate::scope::{Role, Scope};
use crate::snapshot::Snapshot;
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
    /// Defaults to the policy's `id` for `project`.
    #[serde(default)]
    project_id: Option<u64>,
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
    /// For an LFS batch call: the body's `operation` (`download` or `upload`).
    #[serde(default)]
    lfs_operation: Option<LfsOperation>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LfsOperation {
    Download,
    Upload,
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

/// Runs every case in `dir/tests/*.yaml` against `snapshot`. A missing `tests` folder is an empty
/// report.
///
/// # Errors
/// A test file that does not parse (file and line).
pub fn run(snapshot: &Snapshot, dir: &Path) -> Result<Report, PolicyError> {
    let mut report = Report::default();
    let Ok(entries) = std::fs::read_dir(dir.join("tests")) else { return Ok(report) };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| PolicyError {
            path: file.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        run_text(snapshot, &file, &text, &mut report)?;
    }
    Ok(report)
}

/// Runs the cases of one test file's `text` (read from `file`) into `report`.
///
/// # Errors
/// The text does not parse (file and line).
pub fn run_text(snapshot: &Snapshot, file: &Path, text: &str, report: &mut Report) -> Result<(), PolicyError> {
    let cases: Vec<Case> = crate::yaml::parse(file, text).map_err(PolicyError::from)?;
    for case in cases {
        match check(snapshot, &case) {
            Ok(()) => report.passed += 1,
            Err(why) => report.failures.push(format!("{}: {}: {why}", file.display(), case.name)),
        }
    }
    Ok(())
}

fn check(snapshot: &Snapshot, case: &Case) -> Result<(), String> {
    let claims = claims(snapshot, &case.token)?;
    let batch = case
        .request
        .lfs_operation
        .map(|op| BatchOperation(if matches!(op, LfsOperation::Download) { Action::Read } else { Action::Write }));
    let summary = decide_case(snapshot, &claims, &case.request.method, &case.request.url, batch)?;
    let got = match summary {
        Summary { disposition: Disposition::Deny, enforced: false, .. } => Expect::WouldDeny,
        Summary { disposition: Disposition::Deny, .. } => Expect::Deny,
        _ => Expect::Allow,
    };
    let reason_ok = case.reason.as_deref().is_none_or(|want| want == summary.reason.id());
    if got == case.expect && reason_ok {
        return Ok(());
    }
    Err(format!(
        "expected {:?}{}, got {got:?} ({})",
        case.expect,
        case.reason.as_ref().map_or(String::new(), |r| format!(" ({r})")),
        summary.reason.id()
    ))
}

/// What `serve` decides for a job with (already verified) `claims` asking `method url`: the request
/// checks, classification with the API routes, the mount rule and the policy.
///
/// # Errors
/// A method or URL that is not HTTP.
pub fn decide_case(
    snapshot: &Snapshot,
    claims: &Claims,
    method: &str,
    url: &str,
    batch: Option<BatchOperation>,
) -> Result<Summary, String> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| "bad request method".to_owned())?;
    let parts =
        Request::builder().method(method).uri(url).body(()).map_err(|e| format!("url {url:?}: {e}"))?.into_parts().0;
    let deny = |refusal: Refusal| Summary { disposition: Disposition::Deny, enforced: true, reason: refusal.reason() };
    if let Err(refusal) = check_target(&parts) {
        return Ok(deny(refusal));
    }
    Ok(match classify_request(snapshot, &parts, batch) {
        Ok(routed) => authorize(snapshot, &routed, claims, None, None, &mut NoTrace).summary(),
        Err(unmatched) => deny(unmatched.into()),
    })
}

fn claims(snapshot: &Snapshot, token: &TokenDoc) -> Result<Claims, String> {
    let project_path = ProjectPath::parse(&token.project)
        .ok_or_else(|| format!("token.project {:?} is not a project path", token.project))?;
    let policy_id = snapshot.policy.projects.get(&project_path).and_then(|p| p.id);
    Ok(Claims {
        iss: "policy-test".into(),
        jti: None,
        exp: i64::MAX / 4,
        iat: None,
        project_id: token.project_id.or(policy_id).unwrap_or(0),
        project_path,
        user_id: token.user_id,
        user_login: token.user.clone().map(Into::into),
        user_access_level: token.user_access_level,
        pipeline_id: None,
        job_id: 1,
        git_ref: token.git_ref.clone().map(Into::into),
        ref_type: token.ref_type.clone().map(crate::token::claims::ref_type),
        ref_protected: token.ref_protected,
        environment: token.environment.clone().map(Into::into),
        environment_protected: token.environment_protected,
        scopes: token.scopes.as_ref().map(|s| s.iter().copied().collect()),
    })
}
