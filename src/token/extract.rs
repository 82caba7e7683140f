//! Finds the job credential in a request, looking everywhere GitLab looks for any credential (the
//! [`CREDENTIAL_HEADERS`] and [`CREDENTIAL_PARAMS`] lists, which `forward` strips too): HTTP Basic
//! with user `gitlab-ci-token`, `Authorization: Bearer <JWT>`, `JOB-TOKEN`, `job_token` and `token`
//! are job-token places; the rest carry other credentials. Names are compared the way Rack sees
//! them (header names case-insensitive with `_` equal to `-`; parameter names percent-decoded, split
//! on `&` and `;`, brackets folded as Rack's nested-parameter parser folds them), so no spelling slips
//! past us and reaches GitLab. Two different credentials in one request are an error, never a
//! choice; a credential parameter in an odd spelling (`job_token]`, `job_token[]`) is refused.

use std::borrow::Cow;

use super::{looks_like_jwt, strip_prefix};
use crate::query;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderMap;

/// The Basic-auth user name GitLab reserves for job tokens.
pub const JOB_USER: &str = "gitlab-ci-token";

/// What a request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No credential at all.
    None,
    /// A credential that is not a job token (personal, deploy, OAuth, ...).
    NonJob,
    /// A job token, as sent (GitLab needs its `glcbt-` prefix; `verify` takes it off for a JWT).
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

/// What a credential place holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A job token.
    Job,
    /// A job token when it looks like one (a JWT, or `glcbt-`), else another credential: GitLab
    /// reads `token` as a job token, a runner token and a static-object token alike.
    JobIfShaped,
    /// Another kind of credential (personal, deploy, OAuth, feed, agent).
    Other,
}

/// Every header GitLab reads a credential from besides `Authorization`: `lib/gitlab/auth/
/// auth_finders.rb` (gitlabhq 00c11526) — `PRIVATE_TOKEN_HEADER`, `JOB_TOKEN_HEADER`,
/// `DEPLOY_TOKEN_HEADER`, `X-Gitlab-Static-Object-Token`, and the KAS agent headers of
/// `cluster_agent_token_from_authorization_token`; and NuGet's API key (`X-NuGet-ApiKey`,
/// `lib/api/nuget_project_packages.rb`), where `nuget push` puts the job's token.
pub const CREDENTIAL_HEADERS: &[(&str, Slot)] = &[
    ("job-token", Slot::Job),
    ("x-nuget-apikey", Slot::JobIfShaped),
    ("private-token", Slot::Other),
    ("deploy-token", Slot::Other),
    ("x-gitlab-static-object-token", Slot::Other),
    ("gitlab-agent-api-request", Slot::Other),
    ("gitlab-agentk-api-request", Slot::Other),
];

/// Every parameter GitLab reads a credential from: the same file's `PRIVATE_TOKEN_PARAM`,
/// `JOB_TOKEN_PARAM`, `RUNNER_(JOB_)TOKEN_PARAM` (`token`), `feed_token`/`rss_token`, and
/// Doorkeeper's default `access_token_methods` (`access_token`, `bearer_token`), which GitLab's
/// initializer leaves as they are. `find_user_from_job_bearer_token` reads a job token through
/// Doorkeeper's places too, so a job-token-shaped value there (a JWT, `glcbt-…`) is the job's.
pub const CREDENTIAL_PARAMS: &[(&str, Slot)] = &[
    ("job_token", Slot::Job),
    ("token", Slot::JobIfShaped),
    ("private_token", Slot::Other),
    ("access_token", Slot::JobIfShaped),
    ("bearer_token", Slot::JobIfShaped),
    ("feed_token", Slot::Other),
    ("rss_token", Slot::Other),
];

/// Whether `name` (a header name) carries a credential: `Authorization` or one of [`CREDENTIAL_HEADERS`].
pub fn is_credential_header(name: &str) -> bool {
    rack_eq(name, "authorization") || CREDENTIAL_HEADERS.iter().any(|(n, _)| rack_eq(name, n))
}

/// The credential slot a raw query parameter name names, as Rack reads the name: percent-decoded,
/// and with brackets folded (`job_token]` and `[job_token]` are `job_token` to Rack). The second
/// value says whether the name was spelled plainly.
pub fn credential_param(raw_name: &str) -> Option<(Slot, bool)> {
    let name = query::form_decode(raw_name);
    let base = name.trim_start_matches(['[', ']']).split(['[', ']']).next().unwrap_or("");
    let slot = CREDENTIAL_PARAMS.iter().find(|(n, _)| *n == base).map(|(_, slot)| *slot)?;
    Some((slot, base == name))
}

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
    fn slot(&mut self, slot: Slot, value: Cow<'a, str>) {
        match slot {
            Slot::Job => self.job(value),
            Slot::JobIfShaped if looks_like_jwt(&value) || value.starts_with("glcbt-") => self.job(value),
            Slot::JobIfShaped | Slot::Other => self.non_job = true,
        }
    }

    fn job(&mut self, token: Cow<'a, str>) {
        self.places += 1;
        match &self.job {
            // The same token with and without GitLab's prefix is one credential.
            Some(existing) if strip_prefix(existing) != strip_prefix(&token) => self.conflict = true,
            Some(_) => {}
            None => self.job = Some(token),
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
        let Some((_, slot)) = CREDENTIAL_HEADERS.iter().find(|(n, _)| rack_eq(name.as_str(), n)) else { continue };
        let value = value.to_str().map_err(|_| ExtractError::Malformed("credential header"))?;
        found.slot(*slot, Cow::Borrowed(value));
    }
    // Rack 2 splits parameters on `;` as well as `&`.
    for pair in query.into_iter().flat_map(|q| q.split(['&', ';'])).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match credential_param(name) {
            Some((slot, true)) => found.slot(slot, query::form_decode(value)),
            Some((_, false)) => return Err(ExtractError::Malformed("credential query parameter")),
            None => {}
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
            // Another user with a job token as the password (Conan's CI login is `ci_user`, which
            // GitLab ignores on its routes): the job's token all the same.
            Some((_, password)) if password.starts_with("glcbt-") || looks_like_jwt(password) => {
                found.job(Cow::Owned(password.to_owned()))
            }
            Some(_) => found.non_job = true,
            None => return Err(ExtractError::Malformed("Basic")),
        }
    } else if let Some(token) = rest
        .strip_prefix("ci:")
        .and_then(|r| r.split_once(':'))
        .map(|(_, token)| token)
        .filter(|_| scheme.eq_ignore_ascii_case("bearer"))
    {
        // The Kubernetes CI/CD tunnel's `ci:<agent id>:<CI_JOB_TOKEN>` (KAS): the job's token.
        found.job(Cow::Borrowed(token));
    } else if scheme.eq_ignore_ascii_case("bearer") && rest.starts_with("glcbt-") {
        // GitLab's job-token prefix: a job token whatever follows it.
        found.job(Cow::Borrowed(rest));
    } else if scheme.eq_ignore_ascii_case("bearer") && looks_like_jwt(rest) {
        found.bearer = true;
        found.job(Cow::Borrowed(rest));
    } else if rest.is_empty() && (scheme.starts_with("glcbt-") || looks_like_jwt(scheme)) {
        // No scheme at all: RubyGems' `gem push` sends the token as the whole header, and GitLab's
        // `token_locator.rb` reads it so on those routes.
        found.job(Cow::Borrowed(scheme));
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
            (headers(&[("authorization", &basic(JOB_USER, &prefixed))]), None, job(&prefixed)),
            (headers(&[("authorization", &format!("Bearer {prefixed}"))]), None, job(&prefixed)),
            (headers(&[("authorization", "Bearer glcbt-64_opaque")]), None, job("glcbt-64_opaque")),
            // The Kubernetes CI/CD tunnel (KAS): `ci:<agent id>:<job token>`.
            (headers(&[("authorization", "Bearer ci:7:glcbt-64_opaque")]), None, job("glcbt-64_opaque")),
            (headers(&[("authorization", &bearer)]), None, Ok(Credential::BearerJwt(Cow::Borrowed(JWT)))),
            (headers(&[("authorization", "bearer glpat-abcdef")]), None, Ok(Credential::NonJob)),
            (headers(&[("authorization", &basic("alice", "pw"))]), None, Ok(Credential::NonJob)),
            (headers(&[("authorization", &basic("ci_user", &prefixed))]), None, job(&prefixed)),
            (headers(&[("JOB-TOKEN", JWT)]), None, job(JWT)),
            (headers(&[("job_token", &prefixed)]), None, job(&prefixed)),
            (headers(&[("Private-Token", "glpat-x")]), None, Ok(Credential::NonJob)),
            (headers(&[("X-NuGet-ApiKey", &prefixed)]), None, job(&prefixed)),
            (headers(&[("X-NuGet-ApiKey", "glpat-x")]), None, Ok(Credential::NonJob)),
            (headers(&[("authorization", "glcbt-64_opaque")]), None, job("glcbt-64_opaque")),
            (headers(&[("authorization", "glpat-x")]), None, Ok(Credential::NonJob)),
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
