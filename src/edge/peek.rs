//! What GitLab reads from a request before it routes it, read by jobgate first: credentials in an API
//! body (bounded, like the LFS batch peek), a Terraform module wrapper's job token, an LFS batch body's
//! operation. Every read is bounded in bytes, time and a process-wide budget; the bytes read are
//! replayed upstream unchanged.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::Request;

use super::body::{self, Body};
use super::body_credentials;
use super::exit::Exit;
use super::gateway::Gateway;
use crate::classify::{lfs, Family};
use crate::reason::Reason;
use crate::refusal::Refusal;

/// The request as GitLab would read it: the body to forward, and the request to decide on when it
/// differs from the one sent (credentials from the body or a wrapper, as query parameters).
pub struct Asked {
    pub body: Body,
    pub decided_on: Option<Parts>,
    /// Whether the body held credentials (which `strip` and `replace` cannot take out).
    pub in_body: bool,
    /// For a body larger than the bound: set when its scanner cut the rest off at a further credential.
    pub cut: Option<Arc<AtomicBool>>,
}

impl Gateway {
    /// Credentials GitLab reads from an API body are decided like those of the query string; a
    /// Terraform module download's wrapper token is decided by the job token it carries.
    pub(super) async fn asked(&self, parts: &Parts, body: Body) -> Result<Asked, Exit> {
        let (body, in_body) = self.body_credentials(parts, body).await?;
        let (in_body, cut) = in_body.map_or((None, None), |b| (b.decided_on, b.cut));
        let unwrapped = match unwrapped_terraform_token(parts) {
            Ok(unwrapped) => unwrapped,
            Err(refusal) => return Err(Exit::new(refusal).family(Family::Packages)),
        };
        Ok(Asked { body, in_body: in_body.is_some(), decided_on: in_body.or(unwrapped), cut })
    }

    /// For an API request with a body GitLab reads parameters from: reads it (bounded like the LFS
    /// peek) for credential parameters. Returns the body to forward and, when it held credentials,
    /// the request to decide on (the credentials as query parameters) and, for a body larger than
    /// the bound, the flag its scanner sets when it cuts the rest off at a further credential.
    async fn body_credentials(&self, parts: &Parts, body: Body) -> Result<(Body, Option<InBody>), Refusal> {
        use hyper::body::Body as _;
        let kind = match body_credentials::kind(parts) {
            Ok(Some(kind)) if !body.is_end_stream() => kind,
            Ok(_) => return Ok((body, None)),
            Err(why) => return Err(Refusal::new(Reason::BadRequest, why)),
        };
        let limit = self.peek.credential_bytes;
        let mut body = body;
        // An untyped body's first bytes say whether it is read at all: only those are read first.
        let first = if matches!(kind, body_credentials::Kind::Untyped { .. }) { 1 } else { limit };
        let (mut bytes, mut ended) = self.read_prefix(&mut body, first, "API request body").await?;
        if first < limit && bytes.iter().all(u8::is_ascii_whitespace) {
            // Frames of white space say nothing yet: read on to the bound.
            self.read_on(&mut body, &mut bytes, &mut ended, limit).await?;
        }
        let Some(kind) = kind.for_body(&bytes, ended) else {
            let replayed = match ended {
                true => body::full(bytes),
                false => http_body_util::BodyExt::boxed(body_credentials::Scanned {
                    head: Some(bytes),
                    rest: body,
                    scanner: None,
                    cut: Arc::default(),
                }),
            };
            return Ok((replayed, None));
        };
        self.read_on(&mut body, &mut bytes, &mut ended, limit).await?;
        let uninspected = |why: String| {
            Refusal::new(Reason::BodyNotInspected, format!("the body may hold a credential GitLab would read: {why}"))
        };
        let (body, mut found, cut) = if ended {
            let found = body_credentials::params(&kind, &bytes).map_err(|why| Refusal::new(Reason::BadRequest, why))?;
            (body::full(bytes), found, None)
        } else {
            let mut scanner = body_credentials::Streaming::new(&kind).ok_or_else(|| {
                uninspected(format!("a form body larger than {limit} bytes (limits.body_credential_bytes)"))
            })?;
            scanner.feed(&bytes).map_err(uninspected)?;
            let found = scanner.decided().map_err(uninspected)?;
            let cut = Arc::new(AtomicBool::new(false));
            let scanned =
                body_credentials::Scanned { head: Some(bytes), rest: body, scanner: Some(scanner), cut: cut.clone() };
            (http_body_util::BodyExt::boxed(scanned), found, Some(cut))
        };
        // `Rack::MethodOverride` turns a POST with `_method` in its form body into that method before
        // GitLab routes it: the method decided would not be the method served.
        if body_credentials::take_method_override(&mut found) && parts.method == http::Method::POST {
            return Err(Refusal::new(
                Reason::BadRequest,
                "a method override (_method) in the body: GitLab would serve another method than the one decided; send the method itself",
            ));
        }
        let decided_on = if found.is_empty() { None } else { Some(with_params(parts, &found)?) };
        Ok((body, Some(InBody { decided_on, cut })))
    }

    /// Reads on after `bytes` until the body ends or more than `limit` bytes are held in all (nothing
    /// when that is so already).
    async fn read_on(&self, body: &mut Body, bytes: &mut Bytes, ended: &mut bool, limit: usize) -> Result<(), Refusal> {
        if *ended || bytes.len() > limit {
            return Ok(());
        }
        let (more, rest_ended) = self.read_prefix(body, limit - bytes.len(), "API request body").await?;
        *bytes = [bytes.as_ref(), more.as_ref()].concat().into();
        *ended = rest_ended;
        Ok(())
    }

    /// Reads `body` up to `limit` bytes (the frame that crosses it included), within the peek
    /// deadline and the process-wide budget: the bytes, and whether the body ended within them.
    async fn read_prefix(&self, body: &mut Body, limit: usize, what: &str) -> Result<(Bytes, bool), Refusal> {
        use http_body_util::BodyExt;
        use hyper::body::Body as _;
        // The budget holds what can arrive: the declared length when smaller than the bound.
        let expected = body.size_hint().upper().and_then(|n| usize::try_from(n).ok()).map_or(limit, |n| n.min(limit));
        let kib = u32::try_from(expected.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let _budget = self.peek.budget.clone().try_acquire_many_owned(kib).map_err(|_| {
            Refusal::new(Reason::OverCapacity, format!("too many bodies being read ({what}); retry later"))
        })?;
        let read = async {
            let mut bytes = bytes::BytesMut::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) =
                    frame.map_err(|_| Refusal::new(Reason::BadRequest, format!("{what} unreadable")))?.into_data()
                {
                    bytes.extend_from_slice(&data);
                    if bytes.len() > limit {
                        return Ok((bytes.freeze(), false));
                    }
                }
            }
            Ok((bytes.freeze(), true))
        };
        tokio::time::timeout(self.peek.deadline, read)
            .await
            .map_err(|_| Refusal::new(Reason::BadRequest, format!("{what} not received in time")))?
    }

    /// Reads an LFS batch body — at most `limits.lfs_batch_bytes`, within `timeouts.body_peek_secs`,
    /// and only while the process-wide peek budget lasts — and finds its operation. The bytes are
    /// replayed upstream unchanged.
    pub(super) async fn peek_lfs_batch(&self, mut body: Body) -> Result<(Body, lfs::BatchOperation), Refusal> {
        let limit = self.peek.bytes_per_request;
        let (bytes, ended) = self.read_prefix(&mut body, limit, "LFS batch body").await?;
        if !ended {
            return Err(Refusal::new(Reason::BadRequest, format!("LFS batch body larger than {limit} bytes")));
        }
        let operation = lfs::batch_operation(&bytes).map_err(|why| Refusal::new(Reason::BadRequest, why))?;
        Ok((body::full(bytes), operation))
    }
}

/// What an API body held: the request to decide on (its credentials as query parameters), and the
/// flag set when the rest of a large body was cut off at a further credential.
struct InBody {
    decided_on: Option<Parts>,
    cut: Option<Arc<AtomicBool>>,
}

/// `parts` with `params` (encoded `name=value` pairs) added to its query string: the request as
/// GitLab's `params` see it, for the decision only (the forwarded request is unchanged).
fn with_params(parts: &Parts, params: &[String]) -> Result<Parts, Refusal> {
    let added = params.join("&");
    with_query(parts, &parts.uri.query().map_or_else(|| added.clone(), |q| format!("{q}&{added}")))
}

/// For a Terraform module download: the request with its wrapper token replaced by the credential
/// the wrapper carries, for the decision only.
fn unwrapped_terraform_token(parts: &Parts) -> Result<Option<Parts>, Refusal> {
    let Some(query) = crate::token::wrapped::terraform_file_query(parts.uri.path(), parts.uri.query()) else {
        return Ok(None);
    };
    let query = query.map_err(|why| Refusal::new(Reason::MalformedToken, why))?;
    with_query(parts, &query).map(Some)
}

/// `parts` with another query string, for the decision only.
fn with_query(parts: &Parts, query: &str) -> Result<Parts, Refusal> {
    let unreadable = |_| Refusal::new(Reason::BadRequest, "a credential that cannot be read as a parameter");
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query = Some(
        format!("{}?{query}", parts.uri.path())
            .parse()
            .map_err(|e: http::uri::InvalidUri| unreadable(e.to_string()))?,
    );
    let uri = http::Uri::from_parts(uri).map_err(|e| unreadable(e.to_string()))?;
    let mut request = Request::builder()
        .method(parts.method.clone())
        .version(parts.version)
        .uri(uri)
        .body(())
        .map_err(|e| unreadable(e.to_string()))?;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    Ok(request.into_parts().0)
}

/// Reads (and drops) a small request body before refusing, so a client still sending it gets the
/// refusal instead of a reset connection. Bounded in size and time; larger bodies are cut off.
pub(super) async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    const LIMIT: usize = 1024 * 1024;
    let read = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
}
