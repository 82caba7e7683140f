//! Credentials in request bodies. GitLab reads its credential parameters (`job_token`, `token`,
//! `private_token`, … — [`CREDENTIAL_PARAMS`](crate::token::extract::CREDENTIAL_PARAMS)) from
//! Rails' `params`, which hold the query string *and* the body: form-urlencoded and multipart bodies
//! (Rack), JSON bodies (ActionDispatch's parameter parsers, Grape), and a body without a
//! `Content-Type` — JSON to Grape (the API's default format) when it is one, and a form to Rack when
//! it is a POST's (`form_data?`). A pipeline trigger sends `--form token=$CI_JOB_TOKEN`.
//! On the API (`/api/…`, also as Workhorse cleans a path into it: `//api/…`, `/./api/…`), jobgate
//! therefore reads such bodies for the same parameters and decides with what it finds, as if they
//! were in the query string; a credential it cannot see is never "no credential". Where Rack's
//! reading is ambiguous it refuses: two `boundary=` parameters, and `_method` in a POST's form body
//! (`Rack::MethodOverride` would serve another method than the one decided).
//!
//! A body within the bound is read whole; a larger form body is refused. A larger multipart or JSON
//! body is decided on the credentials of its first bytes, and the rest streams upstream through a
//! scanner ([`Scanner`], [`JsonScanner`]) that cuts the body off at the first further credential —
//! before its value leaves jobgate, so the upstream receives a truncated request it never processes.

use http::request::Parts;
use http::{header, Method};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

pub use super::body_scan::{JsonScanner, Scanned, Scanner, Streaming};
use crate::token::extract::credential_param;

/// How a body is read for parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Form,
    Json,
    /// With the delimiter line its boundary makes (`--` + boundary).
    Multipart(Vec<u8>),
    /// No `Content-Type`: Grape reads the body in the API's default format, JSON
    /// (`Grape::Middleware::Formatter#read_body_input`, `format :json` in `lib/api/api.rb`), and Rack
    /// reads a POST's as a form (`form_data?`). Which it is, the first bytes say ([`Kind::for_body`]).
    Untyped {
        post: bool,
    },
}

impl Kind {
    /// How a body of this kind beginning with `head` is read (`ended`: `head` is all of it): an
    /// untyped body that begins like a JSON object is JSON — and so is one whose first bytes are all
    /// white space, since JSON may follow; else a POST's is a form, and any other method's carries no
    /// parameters (`None`: Grape would refuse it as JSON, Workhorse reads upload routes' bodies as files).
    pub fn for_body(&self, head: &[u8], ended: bool) -> Option<Kind> {
        match self {
            Kind::Untyped { post } => match head.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => Some(Kind::Json),
                None if !ended => Some(Kind::Json),
                _ if *post => Some(Kind::Form),
                _ => None,
            },
            kind => Some(kind.clone()),
        }
    }
}

/// The longest header block of one multipart part, and the longest credential value, jobgate reads.
pub(super) const MAX_PART_HEADERS: usize = 16 * 1024;
pub(super) const MAX_VALUE: usize = 64 * 1024;

/// Whether (and how) the body of this request must be read for credentials: an API path with a body
/// Rails would parse into `params`.
///
/// # Errors
/// A body Rails would parse but jobgate cannot: two `Content-Type` headers, multipart without a
/// boundary.
pub fn kind(parts: &Parts) -> Result<Option<Kind>, &'static str> {
    if !routed_to_api(parts.uri.path()) {
        return Ok(None);
    }
    let mut types = parts.headers.get_all(header::CONTENT_TYPE).iter();
    let value = match (types.next(), types.next()) {
        // No Content-Type: JSON to Grape, and a POST is a form to Rack too.
        (None, _) => {
            let read = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
            return Ok(read.then_some(Kind::Untyped { post: parts.method == Method::POST }));
        }
        (Some(value), None) => value.to_str().map_err(|_| "a Content-Type that is not text")?,
        (Some(_), Some(_)) => return Err("two Content-Type headers"),
    };
    // Rack's media type ends at the first `;` or `,`.
    let (media, params) = value.split_once([';', ',']).unwrap_or((value, ""));
    let media = media.trim().to_ascii_lowercase();
    Ok(match media.as_str() {
        "application/x-www-form-urlencoded" => Some(Kind::Form),
        "multipart/form-data" | "multipart/mixed" | "multipart/related" => {
            let mut boundaries = params
                .split(';')
                .filter_map(|p| p.split_once('='))
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim().trim_matches('"'));
            // Rack reads the last `boundary=`, other readers the first (GHSA-vgpv-f759-9wx3): two are
            // refused rather than guessed.
            match (boundaries.next(), boundaries.next()) {
                (Some(b), None) if !b.is_empty() => Some(Kind::Multipart(format!("--{b}").into_bytes())),
                (Some(_), Some(_)) => return Err("a multipart Content-Type naming its boundary twice"),
                _ => return Err("a multipart body without a boundary"),
            }
        }
        "" if parts.method == Method::POST => Some(Kind::Form),
        "application/json" | "text/x-json" | "application/jsonrequest" => Some(Kind::Json),
        m if m.ends_with("+json") => Some(Kind::Json),
        _ => None,
    })
}

/// The credential parameters of a whole body, as query-string pairs (`name=value`, encoded), in the
/// spelling they were sent (so an odd one is refused as it is in a query string).
///
/// # Errors
/// A JSON body that is not JSON, a credential that is not a string, a malformed multipart body.
pub fn params(kind: &Kind, body: &[u8]) -> Result<Vec<String>, String> {
    match kind {
        Kind::Untyped { .. } => kind.for_body(body, true).map_or(Ok(Vec::new()), |kind| params(&kind, body)),
        Kind::Form => {
            let text = std::str::from_utf8(body).map_err(|_| "a form body that is not UTF-8".to_owned())?;
            let pairs = text.split(['&', ';']).map(|pair| pair.split_once('=').unwrap_or((pair, "")));
            Ok(pairs
                .filter(|(name, _)| watched(name))
                .map(|(name, value)| {
                    format!(
                        "{}={}",
                        encode(&crate::query::form_decode(name)),
                        encode(&crate::query::form_decode(value))
                    )
                })
                .collect())
        }
        Kind::Json => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Err("a JSON body that does not parse".to_owned());
            };
            let Some(object) = value.as_object() else { return Ok(Vec::new()) };
            let mut found = Vec::new();
            for (name, value) in object {
                let name = encode(name);
                if credential_param(&name).is_some() {
                    let value =
                        value.as_str().ok_or_else(|| format!("the credential parameter {name} is not a string"))?;
                    found.push(format!("{name}={}", encode(value)));
                }
            }
            Ok(found)
        }
        Kind::Multipart(delimiter) => {
            let mut scanner = Scanner::new(delimiter.clone(), true);
            scanner.feed(body)?;
            if scanner.open_credential() {
                return Err("a credential part that does not end".to_owned());
            }
            Ok(scanner.found)
        }
    }
}

/// Whether a form or multipart parameter name matters to GitLab before its routes run: a credential
/// parameter, or Rack's method override (`_method`, read from a POST's form body by
/// `Rack::MethodOverride`, which Rails runs before the API).
pub(super) fn watched(name: &str) -> bool {
    credential_param(name).is_some() || crate::query::form_decode(name) == METHOD_OVERRIDE
}

/// Rack's method override parameter (`Rack::MethodOverride::METHOD_OVERRIDE_PARAM_KEY`).
pub const METHOD_OVERRIDE: &str = "_method";

/// Whether a path reaches GitLab's API once Workhorse has cleaned it (Go's `path.Clean`: `//` and
/// `.` segments go, `..` climbs) and Rails has squeezed its slashes: `//api/v4/…` and
/// `/x/../api/v4/…` are the API to GitLab, so their bodies are read like `/api/v4/…`'s.
pub fn routed_to_api(path: &str) -> bool {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    path.starts_with("/api/") || (segments.first() == Some(&"api") && segments.len() > 1)
}

/// Takes Rack's method override out of `found` (pairs from [`params`] or a scanner): whether there
/// was one.
pub fn take_method_override(found: &mut Vec<String>) -> bool {
    let key = format!("{}=", encode(METHOD_OVERRIDE));
    let before = found.len();
    found.retain(|pair| !pair.starts_with(&key));
    found.len() != before
}

pub(super) fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
#[path = "body_credentials_tests.rs"]
mod tests;
