//! The only place that turns a refusal into a response: status code, challenge header and body are
//! chosen here from the reason id, so every family refuses the same way for the same reason.

use std::borrow::Cow;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
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
            | LifetimeTooLong | TokenRevoked => StatusCode::UNAUTHORIZED,
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

/// Builds the response for `rejection`. A 401 carries the Basic challenge Git clients answer with
/// credentials; the body is one line: message, reason id, request id.
pub fn response(rejection: &Rejection, request_id: &str) -> Response<Body> {
    let status = rejection.status();
    let text = format!("jobgate: {} (reason: {}, request: {request_id})\n", rejection.message, rejection.reason.id());
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
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
        let r = response(&Rejection::new(Reason::TokenExpired, "token has expired"), "rid");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"GitLab\"");
        let r = response(&Rejection::new(Reason::ScopeNotGranted, "no"), "rid");
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
