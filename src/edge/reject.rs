//! The only place that turns a refusal into a response: status code, challenge header and body are
//! chosen here from the reason id and the route, so every family refuses the same way for the same
//! reason.

use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};

use crate::classify::{Classified, Family, Target};
use crate::edge::body::{self, Body};
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::token::registry::RegistryTokens;

/// The status code for `reason`.
pub fn status(reason: Reason) -> StatusCode {
    use Reason::*;
    match reason {
        BadRequest | ConflictingCredentials => StatusCode::BAD_REQUEST,
        MissingCredential | NonJobRejected | TokenTooLarge | MalformedToken | UnknownIssuer | UnknownKid
        | AlgNotAllowed | BadSignature | ClaimInvalid | TokenExpired | TokenNotYetValid | WrongAudience
        | LifetimeTooLong | TokenRevoked | TokenKindNotAllowed | ProjectIdMismatch | JobTokenInvalid
        | RegistryScopeMissing => StatusCode::UNAUTHORIZED,
        UpstreamUnavailable => StatusCode::BAD_GATEWAY,
        KeySetStale | OverCapacity | GitlabUnavailable | GitlabLookupBudget => StatusCode::SERVICE_UNAVAILABLE,
        UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        BodyNotInspected => StatusCode::PAYLOAD_TOO_LARGE,
        UnknownHost => StatusCode::MISDIRECTED_REQUEST,
        InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        // Fail closed: anything else, the allow reasons included (a `Refusal` cannot hold those), is a
        // plain refusal.
        NoGitlabCredential | GitlabRefused | ImpersonationRefused | CredentialInBody | UpgradeRefused
        | UnmatchedRequest | NotInAllowlist | ScopeNotGranted | ElevationDisabled | RefNotProtected
        | ConditionNotMet | UserCeiling | UserRoleUnknown | TokenCeiling | UnknownProjectId | UnresolvedTarget
        | Granted | GrantedViaOwnProject | NonJobPassthrough => StatusCode::FORBIDDEN,
    }
}

/// What a 401 asks the client for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="GitLab"`: Git and package clients answer with `gitlab-ci-token` credentials.
    GitLab,
    /// The registry's Bearer challenge, sending clients to jobgate's token realm.
    Registry { realm: String, service: String, scope: Option<String> },
    /// The token realm itself wants Basic job-token credentials.
    Realm,
}

impl Challenge {
    /// The challenge for a request on the proxy path: registry requests (when jobgate runs the realm)
    /// get the Bearer challenge naming the configured realm (else one on the request's host, when
    /// that is a plain host name), everything else GitLab's Basic one.
    pub fn for_request(parts: &Parts, request: Option<&Classified>, registry: Option<&RegistryTokens>) -> Challenge {
        let (Some(request), Some(registry)) = (request, registry) else { return Challenge::GitLab };
        if request.family != Family::Registry {
            return Challenge::GitLab;
        }
        let host =
            parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(parts.uri.authority().map(|a| a.as_str()));
        let plain = |h: &&str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        let realm = registry
            .realm
            .clone()
            .unwrap_or_else(|| format!("https://{}/jwt/auth", host.filter(plain).unwrap_or("localhost")));
        // Always offer pull and push: the realm grants only what the policy allows, and clients that
        // reuse their first token (oras) then hold every action they may use.
        let scope = match &request.target {
            Target::Image(name) => Some(format!("repository:{name}:pull,push")),
            _ => None,
        };
        Challenge::Registry { realm, service: registry.service.clone(), scope }
    }

    fn header(&self) -> String {
        match self {
            Challenge::GitLab => "Basic realm=\"GitLab\"".to_owned(),
            Challenge::Realm => "Basic realm=\"jobgate registry\"".to_owned(),
            Challenge::Registry { realm, service, scope } => {
                let scope = scope.as_ref().map_or(String::new(), |s| format!(",scope=\"{s}\""));
                format!("Bearer realm=\"{realm}\",service=\"{service}\"{scope}")
            }
        }
    }
}

/// Builds the response for `refusal`, in the form the family's clients show their users: one text
/// line for Git (`remote: …`), Git LFS's JSON error (`message`, `request_id`), JSON with `message` and
/// `error` for the package registries and the API (npm prints `error`, GitLab's own clients read
/// `message`), the distribution error format for the registry. A 401 carries `challenge`.
pub fn response(refusal: &Refusal, request_id: &str, family: Option<Family>, challenge: &Challenge) -> Response<Body> {
    let reason = refusal.reason();
    let status = status(reason);
    let line = format!("jobgate: {} (reason: {}, request: {request_id})", refusal.message, reason.id());
    let (body, content_type) = match family {
        Some(Family::Registry) => {
            let code = if status == StatusCode::UNAUTHORIZED { "UNAUTHORIZED" } else { "DENIED" };
            let json =
                serde_json::json!({"errors": [{"code": code, "message": line, "detail": {"reason": reason.id()}}]});
            (format!("{json}\n"), "application/json")
        }
        // git-lfs prints `message` from this form (`lfshttp.ClientError`); anything else becomes its
        // generic "Authorization error".
        Some(Family::Lfs) => {
            let json = serde_json::json!({"message": line, "request_id": request_id, "reason": reason.id()});
            (format!("{json}\n"), "application/vnd.git-lfs+json")
        }
        Some(Family::Packages | Family::Api) => {
            let json = serde_json::json!({
                "message": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
                "error": line,
                "reason": reason.id(),
                "request_id": request_id,
            });
            (format!("{json}\n"), "application/json")
        }
        _ => (format!("{line}\n"), "text/plain; charset=utf-8"),
    };
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    // The reason phrase is what Maven and pip print; make it say why.
    let phrase = format!("{} (jobgate: {})", status.canonical_reason().unwrap_or(""), reason.id());
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(phrase) {
        response.extensions_mut().insert(phrase);
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        if let Ok(value) = HeaderValue::from_str(&challenge.header()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
    }
    if reason == Reason::OverCapacity {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// GitLab's own JSON answer to a question jobgate asked for the job, passed on with its status;
/// when GitLab refused, the reason phrase says that it was GitLab (the policy allowed).
pub fn gitlab_answer(status: StatusCode, answer: bytes::Bytes) -> Response<Body> {
    let mut response = Response::new(body::full(answer));
    *response.status_mut() = status;
    if !status.is_success() {
        let phrase = format!(
            "{} (GitLab refused; jobgate: {})",
            status.canonical_reason().unwrap_or(""),
            Reason::GitlabRefused.id()
        );
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(phrase) {
            response.extensions_mut().insert(phrase);
        }
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An upstream's 401 or 403 to a request jobgate allowed and sent as the job's user: its reason
/// phrase says which side refused (what Maven, pip and curl print), the answer is GitLab's otherwise.
pub fn mark_upstream_refusal(response: &mut Response<Body>) {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let phrase =
            format!("{} (GitLab refused the job's user; jobgate allowed)", status.canonical_reason().unwrap_or(""));
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(phrase) {
            response.extensions_mut().insert(phrase);
        }
    }
}

/// A JSON answer (the realm's token, `/-/jwks`).
pub fn json(value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(format!("{value}\n")));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_a_refusal_status() {
        for reason in Reason::ALL {
            let status = status(reason);
            assert!(status.is_client_error() || status.is_server_error(), "{reason}");
        }
    }

    #[test]
    fn unauthorized_carries_the_routes_challenge() {
        let r = response(&Refusal::new(Reason::TokenExpired, "token has expired"), "rid", None, &Challenge::GitLab);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"GitLab\"");
        let registry = Challenge::Registry {
            realm: "https://h/jwt/auth".into(),
            service: "s".into(),
            scope: Some("repository:a/b:pull,push".into()),
        };
        let r = response(&Refusal::new(Reason::RegistryScopeMissing, "no"), "rid", Some(Family::Registry), &registry);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"https://h/jwt/auth\",service=\"s\",scope=\"repository:a/b:pull,push\""
        );
        let r =
            response(&Refusal::new(Reason::ScopeNotGranted, "no"), "rid", Some(Family::Packages), &Challenge::GitLab);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
