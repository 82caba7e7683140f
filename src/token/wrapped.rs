//! GitLab's own wrapper tokens that carry a job token inside. GitLab's Terraform module registry
//! answers `…/:version/download` with `X-Terraform-Get: …/:version/file?token=<JWT>&archive=tgz`,
//! where the JWT is a `Gitlab::TerraformRegistryToken` (HS256 under GitLab's own secret) whose
//! `token` claim is the credential the download was asked with (`token.try(:token).presence ||
//! token.try(:id)`: a job's or deploy token's value, a personal access token's id), and `file`
//! authenticates by that parameter alone (`job_token_from_jwt`, `sent_through(:token_param)`;
//! `lib/api/terraform/modules/v1/namespace_packages.rb`). jobgate cannot verify the wrapper (GitLab
//! checks it), but the job token inside is a job credential like any other: the request is decided
//! as if it had been sent as `job_token`. Pure.

use std::borrow::Cow;

use serde::Deserialize;

use super::jws::Compact;

/// `GET/HEAD /api/v4/packages/terraform/modules/v1/:namespace/:name/:system/:version/file`.
fn is_module_file(path: &str) -> bool {
    path.strip_prefix("/api/v4/packages/terraform/modules/v1/").is_some_and(|rest| {
        let segments: Vec<&str> = rest.split('/').collect();
        segments.len() == 5 && segments[4] == "file" && segments[..4].iter().all(|s| !s.is_empty())
    })
}

#[derive(Deserialize)]
struct Wrapper {
    token: serde_json::Value,
}

/// For a Terraform module `file` request: its query with the wrapper's `token` parameter replaced by
/// what the wrapper carries — `job_token=<the job token>`, or, for a personal access token's id or a
/// deploy token, a credential of another kind (so the route's `non_job` rule applies). `None` for any
/// other request, or one without a `token` parameter.
///
/// # Errors
/// A `token` that is no readable wrapper: it is refused, not guessed.
pub fn terraform_file_query(path: &str, query: Option<&str>) -> Option<Result<String, &'static str>> {
    let query = query.filter(|_| is_module_file(path))?;
    let mut found = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("token", value)) if found.is_none() => found = Some(value),
            Some(("token", _)) => return Some(Err("more than one token parameter")),
            _ => rest.push(Cow::Borrowed(pair)),
        }
    }
    let wrapper = crate::query::form_decode(found?);
    let unwrapped = Compact::parse(&wrapper).ok().and_then(|jws| jws.payload::<Wrapper>().ok()).map(|w| w.token);
    let param = match unwrapped {
        Some(serde_json::Value::String(token)) if token.starts_with("gldt-") => {
            "private_token=wrapped-deploy-token".to_owned()
        }
        Some(serde_json::Value::String(token)) if !token.is_empty() => {
            format!("job_token={}", crate::query::form_encode(&token))
        }
        Some(serde_json::Value::Number(_)) => "private_token=wrapped-personal-access-token".to_owned(),
        _ => return Some(Err("the Terraform module token parameter is not GitLab's wrapper token")),
    };
    rest.push(Cow::Owned(param));
    Some(Ok(rest.join("&")))
}

/// What a `Gitlab::ConanToken` carries (`lib/gitlab/conan_token.rb`: an HS256 JWT under GitLab's own
/// secret, `access_token` = the job's token for `from_job`, a personal token's id, or a deploy token,
/// and `user_id`). Conan sends it as `Authorization: Bearer` after logging in.
#[derive(Debug, PartialEq, Eq)]
pub enum ConanWrapped {
    /// The job token inside.
    Job(String),
    /// Another kind of credential (a personal token's id, a deploy token).
    Other,
}

#[derive(Deserialize)]
struct ConanPayload {
    access_token: serde_json::Value,
    user_id: serde_json::Value,
}

/// The credential inside a Conan token, when `token` is one (`None`: not GitLab's Conan JWT).
pub fn conan(token: &str) -> Option<ConanWrapped> {
    let payload: ConanPayload = Compact::parse(token).ok()?.payload().ok()?;
    if payload.user_id.is_null() {
        return None;
    }
    Some(match payload.access_token {
        serde_json::Value::String(inner) if inner.starts_with("glcbt-") || super::looks_like_jwt(&inner) => {
            ConanWrapped::Job(inner)
        }
        _ => ConanWrapped::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn wrapper(token: serde_json::Value) -> String {
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2ln",
            part(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
            part(serde_json::json!({"token": token, "exp": 1}))
        )
    }

    #[test]
    fn a_conan_token_carries_the_job_token_or_another_credential() {
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let wrap = |inner: serde_json::Value| {
            format!(
                "{}.{}.c2ln",
                part(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
                part(serde_json::json!({"access_token": inner, "user_id": 5, "exp": 1}))
            )
        };
        assert_eq!(conan(&wrap("glcbt-64_abc".into())), Some(ConanWrapped::Job("glcbt-64_abc".into())));
        assert_eq!(conan(&wrap(17.into())), Some(ConanWrapped::Other));
        assert_eq!(conan(&wrap("gldt-deploy".into())), Some(ConanWrapped::Other));
        assert_eq!(conan(&wrapper("glcbt-64_abc".into())), None, "Terraform's wrapper is not Conan's");
        assert_eq!(conan("not.a.jwt"), None);
    }

    #[test]
    fn the_wrapped_credential_is_decided_as_what_it_is() {
        let file = "/api/v4/packages/terraform/modules/v1/acme/vpc/aws/1.0.0/file";
        let job = format!("token={}&archive=tgz", wrapper("glcbt-64_abc".into()));
        assert_eq!(terraform_file_query(file, Some(&job)), Some(Ok("archive=tgz&job_token=glcbt-64_abc".to_owned())));
        let pat = format!("archive=tgz&token={}", wrapper(17.into()));
        assert_eq!(
            terraform_file_query(file, Some(&pat)),
            Some(Ok("archive=tgz&private_token=wrapped-personal-access-token".to_owned()))
        );
        let deploy = format!("token={}", wrapper("gldt-xyz".into()));
        assert_eq!(
            terraform_file_query(file, Some(&deploy)),
            Some(Ok("private_token=wrapped-deploy-token".to_owned()))
        );
        assert!(matches!(terraform_file_query(file, Some("token=glcbt-64_plain")), Some(Err(_))));
        assert!(matches!(terraform_file_query(file, Some(&format!("{job}&{job}"))), Some(Err(_))));
        assert_eq!(terraform_file_query(file, Some("archive=tgz")), None);
        assert_eq!(
            terraform_file_query("/api/v4/packages/terraform/modules/v1/acme/vpc/aws/versions", Some(&job)),
            None
        );
    }
}
