//! `jobgate explain`: the whole derivation for one token and one request — the classified request,
//! the verified claims used, the baseline, each allowlist entry and why it did or did not apply, each
//! ceiling, the final scopes, the decision and its reason id. Read-only; the token is never printed.

use http::Method;

use crate::classify::classify;
use crate::policy::decide::{decide_traced, Decision};
use crate::snapshot::Snapshot;
use crate::token::verify::Verifier;

/// Explains one request. `url` may be absolute (`https://host/path?query`) or a path.
pub fn explain(snapshot: &Snapshot, verifier: &Verifier, token: &str, method: &str, url: &str, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    let path_and_query = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    };
    let (path, query) = path_and_query.split_once('?').map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    out.push(format!("request: {method} {path}{}", if query.is_some() { "?…" } else { "" }));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        out.push("decision: deny (bad_request): not an HTTP method".into());
        return out;
    };
    let request = match classify(&method, path, query) {
        Ok(request) => request,
        Err(unmatched) => {
            out.push(format!("classified: unmatched ({}): job tokens are denied", unmatched.why));
            out.push("decision: deny (unmatched_request)".into());
            return out;
        }
    };
    out.push(format!(
        "classified: family {} action {} scope {} target {} destructive {}",
        request.family.id(),
        request.action.id(),
        request.scope,
        request.target,
        request.destructive
    ));
    let verified = match verifier.verify(crate::token::strip_prefix(token.trim()), now) {
        Ok(verified) => verified,
        Err(e) => {
            out.push(format!("token: refused: {e}"));
            out.push(format!("decision: deny ({})", e.reason()));
            return out;
        }
    };
    let c = verified.claims();
    out.push(format!(
        "token: iss {} project {} (id {}) job {} user {:?}/{:?} role {:?} ref {:?} ({:?}, protected {}) environment {:?} (protected {}) scopes {}",
        c.iss,
        c.project_path,
        c.project_id,
        c.job_id,
        c.user_login,
        c.user_id,
        c.user_access_level,
        c.git_ref,
        c.ref_type,
        c.ref_protected,
        c.environment,
        c.environment_protected,
        c.scopes.map_or("none".to_owned(), |s| format!("[{s}]")),
    ));
    let mut trace = Vec::new();
    let decision = decide_traced(&snapshot.policy, &request, c, &mut trace);
    out.extend(trace);
    out.push(match decision {
        Decision::Allow(permit) => format!("decision: allow (granted) with [{}]", permit.scopes()),
        Decision::Deny(d) if d.enforced => format!("decision: deny ({})", d.reason),
        Decision::Deny(d) => format!("decision: would deny ({}), not enforced: audit mode", d.reason),
    });
    out
}
