//! The one body type jobgate's responses and upstream requests use: a boxed stream of bytes, so
//! streamed upstream bodies and small generated ones travel the same way.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// No body at all.
pub fn empty() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// A streamed body (request or response), passed through chunk by chunk, never buffered.
pub fn stream<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}
