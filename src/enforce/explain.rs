//! `jobgate explain`: the whole derivation for one token and one request, narrated by the very call
//! `serve` makes (`enforce::enforce` with a trace): the classified request, the verified claims, the
//! baseline, each allowlist entry and why it did or did not apply, each ceiling, the final scopes,
//! the decision and its reason id. Read-only; the token is never printed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request};

use crate::classify::lfs::BatchOperation;
use crate::enforce::{enforce, Core, Known, Step, Summary, Verdict};
use crate::token::extract::JOB_USER;

/// An explanation: the lines to print and the decision they lead to.
pub struct Explained {
    pub lines: Vec<String>,
    /// `None` when the request could not even be built (a bad method or URL).
    pub summary: Option<Summary>,
}

/// Explains one request at `now`. `url` may be absolute (`https://host/path?query`) or a path; the
/// token travels where a client would put it (see [`request`]); `batch` is what an LFS batch body
/// asks for (without it a batch counts as an upload, as it does before `serve` has read the body).
pub fn explain(
    core: &Core<'_>,
    token: &str,
    method: &str,
    url: &str,
    batch: Option<BatchOperation>,
    now: i64,
) -> Explained {
    let mut lines = Vec::new();
    let parts = match request(token, method, url) {
        Ok(parts) => parts,
        Err(why) => return Explained { lines: vec![format!("request: {why}")], summary: None },
    };
    lines.push(format!(
        "request: {} {}{}",
        parts.method,
        parts.uri.path(),
        if parts.uri.query().is_some() { "?…" } else { "" }
    ));
    // explain asks nobody: what the core needs comes to the refusal it would be without it.
    let enforced = match enforce(core, &parts, &Known::offline(batch), now, &mut lines) {
        Step::Decided(enforced) => enforced,
        Step::Need(need) => {
            let refusal = need.unmet();
            lines.push(format!("needs: {need:?}; explain asks nobody (serve would): {}", refusal.message));
            let summary = Summary::refused(&refusal);
            lines.push(format!("decision: deny ({})", summary.reason));
            return Explained { lines, summary: Some(summary) };
        }
    };
    let summary = enforced.verdict.summary();
    lines.push(match &enforced.verdict {
        Verdict::Allow(_, permit) => format!("decision: allow ({}) with [{}]", summary.reason, permit.scopes()),
        Verdict::WouldDeny(..) => format!("decision: would deny ({}), not enforced: audit mode", summary.reason),
        Verdict::Passthrough => format!("decision: passthrough ({})", summary.reason),
        Verdict::Refuse(..) => format!("decision: deny ({})", summary.reason),
    });
    Explained { lines, summary: Some(summary) }
}

/// The request a client would send: origin-form target, `Host` from an absolute URL, and the token
/// as `Authorization: Bearer` when it is one of jobgate's registry tokens, else as Basic
/// `gitlab-ci-token` credentials (an empty token: no credential at all).
///
/// # Errors
/// A method or URL that is not HTTP.
pub fn request(token: &str, method: &str, url: &str) -> Result<Parts, String> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("{method:?} is not an HTTP method"))?;
    let (host, target) = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..])),
        None => ("", url),
    };
    let mut builder = Request::builder().method(method).uri(target);
    if !host.is_empty() {
        builder = builder.header(header::HOST, host);
    }
    let token = token.trim();
    if !token.is_empty() {
        let value = if crate::token::jws::kind_of(token) == Some(crate::token::jws::Kind::Registry) {
            format!("Bearer {token}")
        } else {
            format!("Basic {}", STANDARD.encode(format!("{JOB_USER}:{token}")))
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| "the token is not a header value".to_owned())?;
        value.set_sensitive(true);
        builder = builder.header(header::AUTHORIZATION, value);
    }
    builder.body(()).map(|r| r.into_parts().0).map_err(|e| format!("{url:?}: {e}"))
}
