//! Credentials in request bodies. GitLab reads its credential parameters (`job_token`, `token`,
//! `private_token`, … — [`CREDENTIAL_PARAMS`](crate::token::extract::CREDENTIAL_PARAMS)) from
//! Rails' `params`, which hold the query string *and* the body: form-urlencoded and multipart bodies
//! (Rack), JSON bodies (ActionDispatch's parameter parsers), and a POST without a `Content-Type` is
//! read as a form (Rack's `form_data?`). A pipeline trigger sends `--form token=$CI_JOB_TOKEN`.
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

use crate::token::extract::credential_param;

/// How a body is read for parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Form,
    Json,
    /// With the delimiter line its boundary makes (`--` + boundary).
    Multipart(Vec<u8>),
}

/// The longest header block of one multipart part, and the longest credential value, jobgate reads.
const MAX_PART_HEADERS: usize = 16 * 1024;
const MAX_VALUE: usize = 64 * 1024;

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
        // No Content-Type: a POST is a form to Rack; other methods carry no params.
        (None, _) => return Ok((parts.method == Method::POST).then_some(Kind::Form)),
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
fn watched(name: &str) -> bool {
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

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// An incremental multipart reader that finds the parts named like a credential parameter.
///
/// It is looser than Rack on purpose, so it never sees fewer parts than Rack does: a delimiter is
/// `--boundary` anywhere (Rack wants it at a line start, followed by a line end or `--`), and the
/// closing delimiter does not end the reading (each Rack version ends it differently). A boundary is
/// chosen by the client not to occur in the content, so the looseness costs a legitimate body
/// nothing.
#[derive(Debug)]
pub struct Scanner {
    delimiter: Vec<u8>,
    /// Inside a part's header block (after a delimiter), or else before the next delimiter.
    in_headers: bool,
    pending: Vec<u8>,
    /// Keep credential values (for the decision); without it, any credential part is an error.
    capture: bool,
    /// The credential part being read: its encoded name and value so far.
    current: Option<(String, Vec<u8>)>,
    /// Credential pairs found, `name=value` encoded.
    pub found: Vec<String>,
}

impl Scanner {
    pub fn new(delimiter: Vec<u8>, capture: bool) -> Scanner {
        Scanner { delimiter, in_headers: false, pending: Vec::new(), capture, current: None, found: Vec::new() }
    }

    /// Whether a credential part has begun and not ended (its value is not known yet).
    pub fn open_credential(&self) -> bool {
        self.current.is_some()
    }

    /// Reads the next bytes of the body.
    ///
    /// # Errors
    /// A credential part when not capturing; part headers or a credential value too long.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.pending.extend_from_slice(bytes);
        loop {
            if self.in_headers {
                let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                    if self.pending.len() > MAX_PART_HEADERS {
                        return Err(format!("multipart part headers longer than {MAX_PART_HEADERS} bytes"));
                    }
                    return Ok(());
                };
                let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                self.pending.drain(..end + 4);
                if let Some(name) = credential_name(&head) {
                    if !self.capture {
                        return Err(format!("a credential ({name}) in a multipart part beyond the inspected bytes"));
                    }
                    self.current = Some((name, Vec::new()));
                }
                self.in_headers = false;
                continue;
            }
            let Some(at) = find(&self.pending, &self.delimiter) else {
                // Keep what could be the start of a delimiter.
                let keep = (self.delimiter.len() - 1).min(self.pending.len());
                return self.take_value(self.pending.len() - keep);
            };
            self.take_value(at)?;
            if let Some((name, mut value)) = self.current.take() {
                if value.ends_with(b"\r\n") {
                    value.truncate(value.len() - 2);
                }
                let value = String::from_utf8(value).map_err(|_| format!("the credential part {name} is not UTF-8"))?;
                self.found.push(format!("{name}={}", encode(&value)));
            }
            self.pending.drain(..self.delimiter.len());
            self.in_headers = true;
        }
    }

    /// Moves the first `n` pending bytes into the credential value being read (or drops them).
    fn take_value(&mut self, n: usize) -> Result<(), String> {
        let bytes: Vec<u8> = self.pending.drain(..n).collect();
        if let Some((name, value)) = &mut self.current {
            if value.len() + bytes.len() > MAX_VALUE {
                return Err(format!("the credential part {name} is longer than {MAX_VALUE} bytes"));
            }
            value.extend_from_slice(&bytes);
        }
        Ok(())
    }
}

/// An incremental reader of a JSON body's top-level keys: finds the keys named like a credential
/// parameter, and (when capturing) their string values.
#[derive(Debug, Default)]
pub struct JsonScanner {
    depth: usize,
    top_is_object: bool,
    /// The next string at depth 1 is a key.
    expect_key: bool,
    in_string: bool,
    escaped: bool,
    /// The raw bytes of the string being read, when it is a top-level key or a credential value.
    collecting: Option<Vec<u8>>,
    /// The credential key whose value comes next.
    value_of: Option<String>,
    capture: bool,
    pub found: Vec<String>,
}

impl JsonScanner {
    pub fn new(capture: bool) -> JsonScanner {
        JsonScanner { capture, ..JsonScanner::default() }
    }

    /// Reads the next bytes of the body.
    ///
    /// # Errors
    /// A credential key when not capturing, a credential value that is not a string, a key or value
    /// too long.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        for &b in bytes {
            if self.in_string {
                if let Some(buf) = &mut self.collecting {
                    if buf.len() >= MAX_VALUE {
                        return Err(format!("a top-level JSON string longer than {MAX_VALUE} bytes"));
                    }
                    if self.escaped || b != b'"' {
                        buf.push(b);
                    }
                }
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => {
                        self.in_string = false;
                        self.string_ended()?;
                    }
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    let wanted = self.depth == 1 && self.top_is_object && (self.expect_key || self.value_of.is_some());
                    self.collecting = wanted.then(Vec::new);
                }
                b'{' | b'[' => {
                    self.not_a_credential_value()?;
                    self.depth += 1;
                    if self.depth == 1 {
                        self.top_is_object = b == b'{';
                        self.expect_key = self.top_is_object;
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b':' if self.depth == 1 => self.expect_key = false,
                b',' if self.depth == 1 => self.expect_key = self.top_is_object,
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => self.not_a_credential_value()?,
            }
        }
        Ok(())
    }

    fn not_a_credential_value(&mut self) -> Result<(), String> {
        match self.value_of.take() {
            Some(name) => Err(format!("the credential parameter {name} is not a string")),
            None => Ok(()),
        }
    }

    fn string_ended(&mut self) -> Result<(), String> {
        let Some(raw) = self.collecting.take() else { return Ok(()) };
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&raw);
        quoted.push(b'"');
        let text: String =
            serde_json::from_slice(&quoted).map_err(|_| "a top-level JSON string that does not parse".to_owned())?;
        if let Some(name) = self.value_of.take() {
            self.found.push(format!("{name}={}", encode(&text)));
        } else if self.expect_key {
            let name = encode(&text);
            if credential_param(&name).is_some() {
                if !self.capture {
                    return Err(format!("a credential ({name}) in a JSON body beyond the inspected bytes"));
                }
                self.value_of = Some(name);
            }
        }
        Ok(())
    }

    /// Whether a credential key was read and its value not yet.
    pub fn open_credential(&self) -> bool {
        self.value_of.is_some()
    }
}

/// The scanner for a body kind that can be read as it streams (multipart and JSON).
#[derive(Debug)]
pub enum Streaming {
    Multipart(Scanner),
    Json(JsonScanner),
}

impl Streaming {
    /// A scanner for `kind`, keeping credential values; `None` for a form body (read whole only).
    pub fn new(kind: &Kind) -> Option<Streaming> {
        match kind {
            Kind::Form => None,
            Kind::Json => Some(Streaming::Json(JsonScanner::new(true))),
            Kind::Multipart(delimiter) => Some(Streaming::Multipart(Scanner::new(delimiter.clone(), true))),
        }
    }

    /// Reads the next bytes.
    ///
    /// # Errors
    /// As the scanner's `feed`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Streaming::Multipart(s) => s.feed(bytes),
            Streaming::Json(s) => s.feed(bytes),
        }
    }

    /// The credentials read so far, once none is half read; from now on any further one is an
    /// error (it would come after the decision).
    ///
    /// # Errors
    /// A credential whose value is still being read.
    pub fn decided(&mut self) -> Result<Vec<String>, String> {
        let (open, found) = match self {
            Streaming::Multipart(s) => {
                s.capture = false;
                (s.open_credential(), std::mem::take(&mut s.found))
            }
            Streaming::Json(s) => {
                s.capture = false;
                (s.open_credential(), std::mem::take(&mut s.found))
            }
        };
        if open {
            return Err("a credential that crosses the inspected bytes".to_owned());
        }
        Ok(found)
    }
}

/// The rest of a body past its inspected bytes: the inspected bytes first, then each frame once the
/// scanner has read it. A further credential ends the stream with an error (`cut` is set) before
/// the frame that completes it leaves jobgate.
pub struct Scanned {
    pub head: Option<bytes::Bytes>,
    pub rest: crate::edge::body::Body,
    pub scanner: Streaming,
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Scanned {
    type Data = bytes::Bytes;
    type Error = crate::edge::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(head))));
        }
        match std::pin::Pin::new(&mut this.rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(Err(why)) = frame.data_ref().map(|data| this.scanner.feed(data)) {
                    this.cut.store(true, std::sync::atomic::Ordering::Release);
                    return Poll::Ready(Some(Err(why.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The credential parameter a part's headers name, if any. Every `name=` at a word boundary in a
/// `Content-Disposition` line counts, quoted or not (Rack's pattern finds one even inside a quoted
/// `filename`): stricter than Rack, never looser.
fn credential_name(head: &str) -> Option<String> {
    for line in head.split("\r\n") {
        let Some((header, value)) = line.split_once(':') else { continue };
        if !header.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let lower = value.to_ascii_lowercase();
        for (at, _) in lower.match_indices("name=") {
            // `\bname=`: not the end of a longer word such as `filename=`.
            if at > 0 && (lower.as_bytes()[at - 1].is_ascii_alphanumeric() || lower.as_bytes()[at - 1] == b'_') {
                continue;
            }
            let rest = &value[at + 5..];
            let candidates = match rest.strip_prefix('"') {
                Some(quoted) => vec![
                    quoted.split('"').next().unwrap_or_default(),
                    rest.split([';', ' ', '\t']).next().unwrap_or_default(),
                ],
                None => vec![rest.split([';', ' ', '\t']).next().unwrap_or_default()],
            };
            if let Some(name) = candidates.into_iter().find(|c| watched(&encode(c.trim_matches('"')))) {
                return Some(encode(name.trim_matches('"')));
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "body_credentials_tests.rs"]
mod tests;
