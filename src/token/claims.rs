//! The claims jobgate uses, in both token profiles (GitLab ID tokens, seed-style job tokens).
//! GitLab sends numeric ids as JSON strings and booleans as "true"/"false"; both forms parse here,
//! every date is range-checked, and nothing in this file can panic on a token's content.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use crate::path::ProjectPath;
use crate::scope::{Role, Scope, ScopeSet};

/// The largest date accepted (9999-12-31T23:59:59Z): keeps every later addition far from overflow.
const MAX_DATE: i64 = 253_402_300_799;

/// Claims of a verified job token. Only `verify` hands these out for requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Shared with the issuer it was verified against (one allocation per issuer, not per token:
    /// the verified-token cache holds up to `limits.token_cache_entries` of these).
    pub iss: Arc<str>,
    pub jti: Option<Box<str>>,
    pub exp: i64,
    pub iat: Option<i64>,
    pub project_id: u64,
    pub project_path: ProjectPath,
    pub user_id: Option<u64>,
    pub user_login: Option<Box<str>>,
    /// The user's role in the job's own project, when the token says.
    pub user_access_level: Option<Role>,
    pub pipeline_id: Option<u64>,
    pub job_id: u64,
    pub git_ref: Option<Box<str>>,
    /// `branch` and `tag` are not allocated.
    pub ref_type: Option<Cow<'static, str>>,
    pub ref_protected: bool,
    pub environment: Option<Box<str>>,
    pub environment_protected: bool,
    /// The token's own ceiling, when the issuer granted scopes.
    pub scopes: Option<ScopeSet>,
}

impl Claims {
    /// A job of `project_path` (id `project_id`) on `main`, signed by `iss`, with every other claim
    /// absent or false: what tests, benches and policy tests start from (`Claims { ..Claims::job(…) }`).
    pub fn job(iss: &str, project_path: ProjectPath, project_id: u64, job_id: u64, exp: i64) -> Claims {
        Claims {
            iss: iss.into(),
            jti: None,
            exp,
            iat: None,
            project_id,
            project_path,
            user_id: None,
            user_login: None,
            user_access_level: None,
            pipeline_id: None,
            job_id,
            git_ref: Some("main".into()),
            ref_type: None,
            ref_protected: false,
            environment: None,
            environment_protected: false,
            scopes: None,
        }
    }
}

/// The payload as it comes, before any check. Loose types, strict conversion in [`RawClaims::into_claims`].
#[derive(Debug, Deserialize)]
pub(crate) struct RawClaims {
    pub iss: Option<String>,
    pub aud: Option<OneOrMany>,
    exp: Option<Flex>,
    nbf: Option<Flex>,
    iat: Option<Flex>,
    jti: Option<String>,
    project_id: Option<Flex>,
    project_path: Option<String>,
    user_id: Option<Flex>,
    user_login: Option<String>,
    user_access_level: Option<String>,
    pipeline_id: Option<Flex>,
    job_id: Option<Flex>,
    build_id: Option<Flex>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    ref_type: Option<String>,
    ref_protected: Option<Flex>,
    environment: Option<String>,
    environment_protected: Option<Flex>,
    scopes: Option<OneOrMany>,
}

/// A JSON scalar in any of the forms GitLab uses for ids, dates and flags.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Flex {
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
}

/// A string, or an array of strings (`aud`, `scopes`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            OneOrMany::One(s) => (Some(s.as_str()), &[][..]),
            OneOrMany::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// Which claim is wrong, for logs and `jobgate explain` (never its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("claim `{0}` is missing or invalid")]
pub struct ClaimError(pub &'static str);

impl Flex {
    fn id(&self) -> Option<u64> {
        match self {
            Flex::Num(n) => n.as_u64(),
            Flex::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
            _ => None,
        }
    }

    /// NumericDate: an integer number of seconds; floats, strings and out-of-range values are refused.
    fn date(&self) -> Option<i64> {
        match self {
            Flex::Num(n) => n.as_i64().filter(|d| (0..=MAX_DATE).contains(d)),
            _ => None,
        }
    }

    fn flag(&self) -> Option<bool> {
        match self {
            Flex::Bool(b) => Some(*b),
            Flex::Str(s) if s == "true" => Some(true),
            Flex::Str(s) if s == "false" => Some(false),
            _ => None,
        }
    }
}

/// GitLab's two ref types without an allocation; anything else as sent.
pub fn ref_type(value: String) -> Cow<'static, str> {
    match value.as_str() {
        "branch" => Cow::Borrowed("branch"),
        "tag" => Cow::Borrowed("tag"),
        _ => Cow::Owned(value),
    }
}

fn required<T>(value: Option<T>, name: &'static str) -> Result<T, ClaimError> {
    value.ok_or(ClaimError(name))
}

/// An optional claim: absent is fine, present but malformed is an error.
fn optional<T>(raw: &Option<Flex>, name: &'static str, f: fn(&Flex) -> Option<T>) -> Result<Option<T>, ClaimError> {
    raw.as_ref().map(|v| f(v).ok_or(ClaimError(name))).transpose()
}

impl RawClaims {
    pub fn nbf(&self) -> Result<Option<i64>, ClaimError> {
        optional(&self.nbf, "nbf", Flex::date)
    }

    /// Converts the payload into [`Claims`]; each error names the claim.
    pub fn into_claims(self) -> Result<Claims, ClaimError> {
        let exp = required(self.exp.as_ref().and_then(Flex::date), "exp")?;
        let iat = optional(&self.iat, "iat", Flex::date)?;
        let project_id = required(self.project_id.as_ref().and_then(Flex::id), "project_id")?;
        let project_path = required(self.project_path.as_deref().and_then(ProjectPath::parse), "project_path")?;
        let job_id = required(self.job_id.as_ref().or(self.build_id.as_ref()).and_then(Flex::id), "job_id")?;
        let scopes = self.scopes.as_ref().map(|s| {
            // Unknown scope names narrow nothing and grant nothing: a ceiling only ever shrinks.
            s.iter().flat_map(|one| one.split(' ')).filter_map(Scope::parse).collect::<ScopeSet>()
        });
        Ok(Claims {
            iss: required(self.iss, "iss")?.into(),
            jti: self.jti.map(String::into_boxed_str),
            exp,
            iat,
            project_id,
            project_path,
            user_id: optional(&self.user_id, "user_id", Flex::id)?,
            user_login: self.user_login.map(String::into_boxed_str),
            // A level GitLab adds later (e.g. "planner") is treated as the lowest role: fail closed.
            user_access_level: self.user_access_level.map(|l| Role::parse(&l).unwrap_or(Role::Guest)),
            pipeline_id: optional(&self.pipeline_id, "pipeline_id", Flex::id)?,
            job_id,
            git_ref: self.git_ref.map(String::into_boxed_str),
            ref_type: self.ref_type.map(ref_type),
            ref_protected: optional(&self.ref_protected, "ref_protected", Flex::flag)?.unwrap_or(false),
            environment: self.environment.map(String::into_boxed_str),
            environment_protected: optional(&self.environment_protected, "environment_protected", Flex::flag)?
                .unwrap_or(false),
            scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Claims, ClaimError> {
        serde_json::from_str::<RawClaims>(json).unwrap().into_claims()
    }

    const GITLAB: &str = r#"{"iss":"https://gitlab.example.com","aud":"jobgate","exp":1900000000,
        "iat":1899999000,"nbf":1899999000,"jti":"j1","sub":"project_path:acme/app:ref_type:branch:ref:main",
        "namespace_id":"7","namespace_path":"acme","project_id":"42","project_path":"Acme/App",
        "user_id":"5","user_login":"ann","user_email":"ann@example.com","user_access_level":"developer",
        "pipeline_id":"1000","pipeline_source":"push","job_id":"2000","ref":"main","ref_type":"branch",
        "ref_path":"refs/heads/main","ref_protected":"true","runner_id":1,"runner_environment":"self-hosted"}"#;

    #[test]
    fn gitlab_id_token_with_string_ids_parses() {
        let c = parse(GITLAB).unwrap();
        assert_eq!(c.project_id, 42);
        assert_eq!(c.project_path.as_str(), "acme/app");
        assert_eq!(c.job_id, 2000);
        assert_eq!(c.user_id, Some(5));
        assert_eq!(c.user_access_level, Some(Role::Developer));
        assert!(c.ref_protected);
        assert_eq!(c.scopes, None);
    }

    #[test]
    fn seed_style_token_with_numbers_bools_and_scopes_parses() {
        let c = parse(
            r#"{"iss":"i","exp":1900000000,"project_id":42,"project_path":"acme/app","build_id":7,
                "ref_protected":false,"scopes":"read_repository write_repository bogus"}"#,
        )
        .unwrap();
        assert_eq!(c.job_id, 7);
        assert!(!c.ref_protected);
        let scopes = c.scopes.unwrap();
        assert!(scopes.contains(Scope::WriteRepository) && !scopes.contains(Scope::Api));
    }

    #[test]
    fn impossible_values_name_the_claim() {
        let base = r#""iss":"i","project_id":1,"project_path":"a/b","job_id":1"#;
        for (extra, claim) in [
            (r#""exp":1.5"#, "exp"),
            (r#""exp":"1900000000""#, "exp"),
            (r#""exp":99999999999999999"#, "exp"),
            (r#""exp":-1"#, "exp"),
            (r#""exp":1900000000,"iat":1e300"#, "iat"),
            (r#""exp":1900000000,"ref_protected":"yes""#, "ref_protected"),
        ] {
            assert_eq!(parse(&format!("{{{base},{extra}}}")), Err(ClaimError(claim)), "{extra}");
        }
        assert_eq!(
            parse(r#"{"iss":"i","exp":1900000000,"project_id":"-1","project_path":"a/b","job_id":1}"#),
            Err(ClaimError("project_id"))
        );
        assert_eq!(
            parse(r#"{"iss":"i","exp":1900000000,"project_id":1,"project_path":"a/../b","job_id":1}"#),
            Err(ClaimError("project_path"))
        );
    }
}
