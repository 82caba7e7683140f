//! Header and query hygiene for upstream requests: hop-by-hop headers (and those `Connection`
//! names) go, identity and override headers a client could forge go, credentials go where the mode
//! says, HTTP/2 cookie crumbs are joined.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::token::extract::{credential_param, rack_eq};

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus `Expect`, which hyper has
/// already answered, and `Proxy-*`).
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Headers through which a client could claim an identity or origin that only jobgate may state, or
/// make the upstream read another method or path than the one decided (method and URL overrides);
/// compared Rack-style, so `X_Forwarded_For` is caught too.
pub(super) fn is_identity_header(name: &str) -> bool {
    const EXACT: [&str; 11] = [
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-request-id",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-original-method",
        "x-rewrite-url",
    ];
    // Header names are ASCII, so slicing at a byte index is safe.
    let starts = |prefix: &str| name.len() >= prefix.len() && rack_eq(&name[..prefix.len()], prefix);
    starts("x-forwarded-") || starts("x-jobgate-") || EXACT.iter().any(|n| rack_eq(name, n))
}

/// HTTP/2 clients may split `Cookie` into one field per crumb; an HTTP/1.1 upstream needs them joined
/// into one (RFC 9113 §8.2.3).
pub(super) fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

pub(super) fn remove_matching(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n.as_str())).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// The raw query minus every pair that names a credential parameter (in any spelling Rack reads,
/// `;`-joined ones included); kept pairs keep their bytes.
pub(super) fn without_credentials(query: &str) -> String {
    let names_credential = |pair: &str| {
        pair.split(';').any(|part| credential_param(part.split_once('=').map_or(part, |(k, _)| k)).is_some())
    };
    query.split('&').filter(|pair| !pair.is_empty() && !names_credential(pair)).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, x-forwarded-user"),
            ("x-secret", "1"),
            ("x-forwarded-user", "root"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("git-protocol", "version=2"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["git-protocol"]);
    }

    #[test]
    fn identity_headers_in_any_spelling() {
        for name in [
            "X-Forwarded-For",
            "x_forwarded_host",
            "X-JOBGATE-JOB-ID",
            "x_jobgate_scopes",
            "Forwarded",
            "X-Real-IP",
            "x-request-id",
            "X-HTTP-Method-Override",
            "x_original_url",
            "X-Rewrite-URL",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in ["x-forwardedfor", "git-protocol", "host", "authorization"] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn every_credential_leaves_the_query_in_any_spelling() {
        assert_eq!(without_credentials("service=git-upload-pack&job_token=abc"), "service=git-upload-pack");
        assert_eq!(without_credentials("job%5Ftoken=abc&a=%2F&&b"), "a=%2F&b");
        assert_eq!(without_credentials("job_token=abc"), "");
        for credential in [
            "private_token",
            "access_token",
            "bearer_token",
            "token",
            "feed_token",
            "rss_token",
            "job_token]",
            "[token]",
            "job_token[]",
        ] {
            assert_eq!(without_credentials(&format!("a=1&{credential}=x&b=2")), "a=1&b=2", "{credential}");
        }
        assert_eq!(
            without_credentials("service=git-upload-pack;private_token=x&b=2"),
            "b=2",
            "`;` joins pairs for Rack"
        );
    }

    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), vec!["a=1; b=2"]);
    }
}
