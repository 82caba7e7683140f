//! The only place that turns a refusal into a response: status code, challenge header and body are
//! chosen here from the reason id, so every family refuses the same way for the same reason.

use std::borrow::Cow;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::classify::Family;
use crate::reason::Reason;

/// A refusal: the reason id and one human line saying what was wrong (never token bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: Cow<'static, str>,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection { reason, message: message.into() }
    }

    /// The status code for this refusal.
    pub fn status(&self) -> StatusCode {
        use Reason::*;
        match self.reason {
            BadRequest | ConflictingCredentials => StatusCode::BAD_REQUEST,
            MissingCredential | NonJobRejected | TokenTooLarge | MalformedToken | UnknownIssuer | UnknownKid
            | AlgNotAllowed | BadSignature | ClaimInvalid | TokenExpired | TokenNotYetValid | WrongAudience
            | LifetimeTooLong | TokenRevoked | RegistryScopeMissing => StatusCode::UNAUTHORIZED,
            UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            KeySetStale | OverCapacity => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            // Fail closed: anything else, the allow reasons included, is a plain refusal.
            UnmatchedRequest | NotInAllowlist | ScopeNotGranted | ElevationDisabled | RefNotProtected
            | ConditionNotMet | UserCeiling | UserRoleUnknown | TokenCeiling | UnknownProjectId | UnresolvedTarget | Granted
            | GrantedViaOwnProject | NonJobPassthrough => StatusCode::FORBIDDEN,
        }
    }
}

/// Builds the response for `rejection`, in the form the family's clients show their users: one text
/// line for Git (`remote: …`), JSON with `message` and `error` for the package registries and the API
/// (npm prints `error`, GitLab's own clients read `message`). A 401 carries the Basic challenge Git
/// and package clients answer with credentials.
pub fn response(rejection: &Rejection, request_id: &str, family: Option<Family>) -> Response<Body> {
    let status = rejection.status();
    let line = format!("jobgate: {} (reason: {}, request: {request_id})", rejection.message, rejection.reason.id());
    let (body, content_type) = match family {
        Some(Family::Registry) => {
            let code = if status == StatusCode::UNAUTHORIZED { "UNAUTHORIZED" } else { "DENIED" };
            let json = serde_json::json!({"errors": [{"code": code, "message": line, "detail": {"reason": rejection.reason.id()}}]});
            (format!("{json}\n"), "application/json")
        }
        Some(Family::Packages | Family::Api) => {
            let json = serde_json::json!({
                "message": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
                "error": line,
                "reason": rejection.reason.id(),
                "request_id": request_id,
            });
            (format!("{json}\n"), "application/json")
        }
        _ => (format!("{line}\n"), "text/plain; charset=utf-8"),
    };
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    // The reason phrase is what Maven and pip print; make it say why.
    let phrase = format!("{} (jobgate: {})", status.canonical_reason().unwrap_or(""), rejection.reason.id());
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(phrase) {
        response.extensions_mut().insert(phrase);
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"GitLab\""));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_a_refusal_status() {
        for reason in Reason::ALL {
            let status = Rejection::new(reason, "x").status();
            assert!(status.is_client_error() || status.is_server_error(), "{reason}");
        }
    }

    #[test]
    fn unauthorized_carries_the_basic_challenge() {
        let r = response(&Rejection::new(Reason::TokenExpired, "token has expired"), "rid", None);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"GitLab\"");
        let r = response(&Rejection::new(Reason::ScopeNotGranted, "no"), "rid", Some(Family::Packages));
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
