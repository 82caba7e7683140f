//! The admin listener (loopback by default, plain HTTP): liveness, readiness, metrics, and
//! `POST /-/reload`. State-changing routes need `Authorization: Bearer <token>` with the token from
//! `admin.token_file`; without a configured token they are refused, never open.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::reload::Reloader;

/// The admin credential, read once at start.
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    /// Reads the token file (surrounding whitespace ignored).
    ///
    /// # Errors
    /// The file cannot be read or is empty.
    pub fn load(file: Option<&std::path::Path>) -> Result<AdminToken, String> {
        let Some(file) = file else { return Ok(AdminToken(None)) };
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("{}: empty admin token", file.display()));
        }
        Ok(AdminToken(Some(digest(token))))
    }

    /// Constant-time check of an `Authorization: Bearer` header (digests compared, so lengths leak nothing).
    fn allows<B>(&self, request: &Request<B>) -> bool {
        let Some(expected) = self.0 else { return false };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim()));
        presented.is_some_and(|p| p.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
    }
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// Routes one admin request.
pub fn handle<B>(reloader: &Reloader, token: &AdminToken, request: &Request<B>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/-/healthy") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/-/ready") => {
            let status = if reloader.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json(status, &reloader.status())
        }
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(body::full(reloader.gateway().metrics.render()));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        (&Method::POST, "/-/reload") if !token.allows(request) => {
            text(StatusCode::UNAUTHORIZED, "admin token required (admin.token_file)\n")
        }
        (&Method::POST, "/-/reload") => match reloader.reload("admin") {
            Ok(generation) => json(StatusCode::OK, &serde_json::json!({"reloaded": true, "generation": generation})),
            Err(error) => json(StatusCode::UNPROCESSABLE_ENTITY, &serde_json::json!({"reloaded": false, "error": error})),
        },
        (_, "/-/healthy" | "/-/ready" | "/metrics" | "/-/reload") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(format!("{value:#}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
