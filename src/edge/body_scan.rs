//! The streaming halves of reading credentials in bodies (`body_credentials`): multipart and JSON
//! readers fed frame by frame, and the body that replays the inspected bytes, then scans the rest as
//! it streams upstream and cuts it off at a further credential.

use super::body_credentials::{encode, watched, Kind, MAX_PART_HEADERS, MAX_VALUE};
use crate::token::extract::credential_param;

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
            Kind::Form | Kind::Untyped { .. } => None,
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
    /// `None`: replayed as it is (a body with no parameters to read).
    pub scanner: Option<Streaming>,
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
                let scanner = this.scanner.as_mut();
                if let Some(Err(why)) = frame.data_ref().zip(scanner).map(|(data, scanner)| scanner.feed(data)) {
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
pub(super) fn credential_name(head: &str) -> Option<String> {
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
