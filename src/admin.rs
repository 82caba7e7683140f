//! The admin listener (loopback by default, plain HTTP): liveness, readiness and metrics. It serves no job
//! traffic and changes no state yet; state-changing routes arrive with their credential check.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::reload::Reloader;

/// Routes one admin request.
pub fn handle<B>(reloader: &Reloader, request: &Request<B>) -> Response<Body> {
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
        (_, "/-/healthy" | "/-/ready" | "/metrics") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
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
