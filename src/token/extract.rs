//! Finds the job credential in a request: HTTP Basic with user `gitlab-ci-token`, `Authorization:
//! Bearer <JWT>`, the `JOB-TOKEN` header and the `job_token` query parameter. Header names are
//! compared the way Rack sees them (case-insensitive, `_` equal to `-`), so `Job_Token` cannot slip
//! past us and reach GitLab. Two different credentials in one request are an error, never a choice.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderMap;
use super::{looks_like_jwt, strip_prefix};
use crate::query;

/// The Basic-auth user name GitLab reserves for job tokens.
pub const JOB_USER: &str = "gitlab-ci-token";

/// What a request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No credential at all.
    None,
    /// A credential that is not a job token (personal, deploy, OAuth, ...).
    NonJob,
    /// A job token, `glcbt-` prefix removed.
    Job(Cow<'a, str>),
    /// A JWT presented only as `Authorization: Bearer`: a job token if a configured issuer signed it,
    /// otherwise some other service's credential (an LFS server's transfer token, say).
    BearerJwt(Cow<'a, str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("two different credentials in one request")]
    Conflicting,
    #[error("malformed {0} credential")]
    Malformed(&'static str),
}

/// Header names that carry a job token, compared Rack-style.
const JOB_TOKEN_HEADERS: &[&str] = &["job-token"];
/// Header names that carry other GitLab credentials.
const OTHER_TOKEN_HEADERS: &[&str] = &["private-token", "deploy-token"];
/// Query parameters GitLab reads credentials from.
const JOB_TOKEN_PARAM: &str = "job_token";
const OTHER_TOKEN_PARAMS: &[&str] = &["private_token", "access_token"];

/// Collects every credential and checks they agree.
#[derive(Default)]
struct Found<'a> {
    job: Option<Cow<'a, str>>,
    /// How many job-credential places carried the token (Bearer counts once).
    places: usize,
    bearer: bool,
    non_job: bool,
    conflict: bool,
}

impl<'a> Found<'a> {
    fn job(&mut self, token: Cow<'a, str>) {
        let token = match token {
            Cow::Borrowed(t) => Cow::Borrowed(strip_prefix(t)),
            Cow::Owned(t) => Cow::Owned(strip_prefix(&t).to_owned()),
        };
        self.places += 1;
        match &self.job {
            Some(existing) if *existing != token => self.conflict = true,
            _ => self.job = Some(token),
        }
    }
}

/// Extracts the credential from headers and the raw query string.
///
/// # Errors
/// [`ExtractError::Conflicting`] for two different credentials (or a job token next to another kind
/// of credential), [`ExtractError::Malformed`] for an undecodable `Authorization` header.
pub fn extract<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Result<Credential<'a>, ExtractError> {
    let mut found = Found::default();
    let mut authorizations = headers.get_all(http::header::AUTHORIZATION).iter();
    if let Some(value) = authorizations.next() {
        if authorizations.next().is_some() {
            return Err(ExtractError::Conflicting);
        }
        let value = value.to_str().map_err(|_| ExtractError::Malformed("Authorization"))?;
        authorization(value, &mut found)?;
    }
    for (name, value) in headers {
        if JOB_TOKEN_HEADERS.iter().any(|n| rack_eq(name.as_str(), n)) {
            found.job(Cow::Borrowed(value.to_str().map_err(|_| ExtractError::Malformed("JOB-TOKEN"))?));
        } else if OTHER_TOKEN_HEADERS.iter().any(|n| rack_eq(name.as_str(), n)) {
            found.non_job = true;
        }
    }
    for (key, value) in query::pairs(query) {
        if key == JOB_TOKEN_PARAM {
            found.job(value);
        } else if OTHER_TOKEN_PARAMS.contains(&key.as_ref()) {
            found.non_job = true;
        }
    }
    match found {
        Found { conflict: true, .. } | Found { job: Some(_), non_job: true, .. } => Err(ExtractError::Conflicting),
        Found { job: Some(token), bearer: true, places: 1, .. } => Ok(Credential::BearerJwt(token)),
        Found { job: Some(token), .. } => Ok(Credential::Job(token)),
        Found { non_job: true, .. } => Ok(Credential::NonJob),
        _ => Ok(Credential::None),
    }
}

fn authorization<'a>(value: &'a str, found: &mut Found<'a>) -> Result<(), ExtractError> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| ExtractError::Malformed("Basic"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| ExtractError::Malformed("Basic"))?;
        match decoded.split_once(':') {
            Some((JOB_USER, password)) => found.job(Cow::Owned(password.to_owned())),
            Some(_) => found.non_job = true,
            None => return Err(ExtractError::Malformed("Basic")),
        }
    } else if scheme.eq_ignore_ascii_case("bearer") && looks_like_jwt(rest) {
        found.bearer = true;
        found.job(Cow::Borrowed(rest));
    } else {
        found.non_job = true;
    }
    Ok(())
}

/// Header name equality as Rack (and so GitLab) sees it: ASCII case-insensitive, `_` equals `-`.
pub fn rack_eq(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name.bytes().zip(canonical.bytes()).all(|(a, b)| {
            let a = if a == b'_' { b'-' } else { a.to_ascii_lowercase() };
            a == b
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJh.eyJi.c2ln";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
    }

    fn job(token: &str) -> Result<Credential<'static>, ExtractError> {
        Ok(Credential::Job(Cow::Owned(token.to_owned())))
    }

    #[test]
    fn each_credential_form() {
        let b = basic(JOB_USER, JWT);
        let bearer = format!("Bearer {JWT}");
        let prefixed = format!("glcbt-{JWT}");
        let query = format!("service=git-upload-pack&job_token={JWT}");
        let encoded_query = "job%5Ftoken=eyJh%2EeyJi.c2ln".to_owned();
        let cases: Vec<(HeaderMap, Option<&str>, Result<Credential, ExtractError>)> = vec![
            (headers(&[]), None, Ok(Credential::None)),
            (headers(&[("authorization", &b)]), None, job(JWT)),
            (headers(&[("authorization", &basic(JOB_USER, &prefixed))]), None, job(JWT)),
            (headers(&[("authorization", &bearer)]), None, Ok(Credential::BearerJwt(Cow::Borrowed(JWT)))),
            (headers(&[("authorization", "bearer glpat-abcdef")]), None, Ok(Credential::NonJob)),
            (headers(&[("authorization", &basic("alice", "pw"))]), None, Ok(Credential::NonJob)),
            (headers(&[("JOB-TOKEN", JWT)]), None, job(JWT)),
            (headers(&[("job_token", &prefixed)]), None, job(JWT)),
            (headers(&[("Private-Token", "glpat-x")]), None, Ok(Credential::NonJob)),
            (headers(&[]), Some(&query), job(JWT)),
            (headers(&[]), Some(&encoded_query), job(JWT)),
            (headers(&[]), Some("private_token=x"), Ok(Credential::NonJob)),
            (headers(&[("authorization", "Basic !!!")]), None, Err(ExtractError::Malformed("Basic"))),
        ];
        for (i, (h, q, want)) in cases.into_iter().enumerate() {
            assert_eq!(extract(&h, q), want, "case {i}");
        }
    }

    #[test]
    fn the_same_token_twice_is_fine_two_different_are_smuggling() {
        let b = basic(JOB_USER, JWT);
        let same = headers(&[("authorization", &b), ("job-token", JWT)]);
        assert_eq!(extract(&same, Some("job_token=glcbt-eyJh.eyJi.c2ln")), job(JWT));
        for (h, q) in [
            (headers(&[("authorization", &b), ("job-token", "eyJx.eyJy.eno")]), None),
            (headers(&[("job-token", JWT), ("job_token", "eyJx.eyJy.eno")]), None),
            (headers(&[("job-token", JWT)]), Some("job_token=eyJx.eyJy.eno")),
            (headers(&[]), Some("job_token=eyJh.eyJi.c2ln&job_token=eyJx.eyJy.eno")),
            (headers(&[("job-token", JWT), ("private-token", "glpat-x")]), None),
            (headers(&[("authorization", &b), ("authorization", &b)]), None),
            (headers(&[("authorization", &basic("alice", "pw"))]), Some("job_token=eyJh.eyJi.c2ln")),
        ] {
            assert_eq!(extract(&h, q), Err(ExtractError::Conflicting), "{h:?} {q:?}");
        }
    }

    #[test]
    fn rack_equality() {
        assert!(rack_eq("JOB_TOKEN", "job-token"));
        assert!(rack_eq("Job-Token", "job-token"));
        assert!(!rack_eq("job-tokens", "job-token"));
    }
}
