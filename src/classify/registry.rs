//! The container registry (distribution API under `/v2/`): pull = GET/HEAD of manifests, blobs, tag
//! lists and referrers; push = uploads and manifest PUT; DELETE is a destructive push; `/v2/` itself
//! needs any valid token; `/v2/_catalog` is denied to jobs. A cross-repository mount
//! (`?mount=&from=`) needs push on the target AND pull on the source: the source is returned
//! separately and the pipeline decides both (never downgraded to a plain upload).

use http::Method;

use super::{Action, Classified, Family, Target, Unmatched};
use crate::path::ProjectPath;
use crate::query;
use crate::scope::Scope;

/// A registry request: the request itself, and the mount source that must also be readable.
pub struct RegistryRequest {
    pub request: Classified,
    pub mount_from: Option<ProjectPath>,
}

/// The request a realm scope action (`pull`, `push`, `delete` or `*`) stands for on `image`.
pub fn for_action(image: &ProjectPath, action: &str) -> Option<Classified> {
    let (action, destructive) = match action {
        "pull" => (Action::Read, false),
        "push" => (Action::Write, false),
        "delete" | "*" => (Action::Write, true),
        _ => return None,
    };
    Some(registry(Target::Image(image.clone()), action, destructive))
}

const fn unmatched(why: &'static str) -> Unmatched {
    Unmatched { why }
}

/// `rest` is the path after `/v2/`.
pub fn classify(method: &Method, rest: &str, query: Option<&str>) -> Result<RegistryRequest, Unmatched> {
    let read = method == Method::GET || method == Method::HEAD;
    if rest.is_empty() {
        return if read {
            Ok(RegistryRequest { request: registry(Target::OwnJob, Action::Read, false), mount_from: None })
        } else {
            Err(unmatched("/v2/ only answers GET"))
        };
    }
    if rest.starts_with("_catalog") {
        return Err(unmatched("the catalog lists every repository: denied to jobs"));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| (super::api::is_traversal(s) && !s.is_empty()) || super::api::is_encoded_slash(s)) {
        return Err(unmatched("dot segments and encoded dots or backslashes are refused"));
    }
    // Find the API suffix: the name is everything before it.
    let at = |word: &str| segments.iter().rposition(|s| *s == word);
    let (name_end, write, destructive) = if let Some(i) = at("manifests").filter(|i| *i + 2 == segments.len()) {
        match *method {
            Method::GET | Method::HEAD => (i, false, false),
            Method::PUT => (i, true, false),
            Method::DELETE => (i, true, true),
            _ => return Err(unmatched("manifests answer GET, HEAD, PUT and DELETE")),
        }
    } else if let Some(i) = at("uploads").filter(|i| *i >= 1 && segments[*i - 1] == "blobs") {
        if segments.len() > i + 2 {
            return Err(unmatched("unknown upload path"));
        }
        (i - 1, true, false)
    } else if let Some(i) = at("blobs").filter(|i| *i + 2 == segments.len()) {
        match *method {
            Method::GET | Method::HEAD => (i, false, false),
            Method::DELETE => (i, true, true),
            _ => return Err(unmatched("blobs answer GET, HEAD and DELETE")),
        }
    } else if let Some(i) = at("tags").filter(|i| *i + 2 == segments.len() && segments[*i + 1] == "list") {
        if !read {
            return Err(unmatched("tags/list only answers GET"));
        }
        (i, false, false)
    } else if let Some(i) = at("referrers").filter(|i| *i + 2 == segments.len()) {
        if !read {
            return Err(unmatched("referrers only answer GET"));
        }
        (i, false, false)
    } else {
        return Err(unmatched("unknown registry endpoint"));
    };
    let name = segments[..name_end].join("/");
    let image = ProjectPath::parse(&name).ok_or(unmatched("not an image name"))?;
    let mut mount_from = None;
    if write && segments.get(name_end + 1) == Some(&"uploads") {
        // Go's query parser drops `;`-joined pairs that another parser would read: refuse the doubt.
        if query.is_some_and(|q| q.contains(';')) {
            return Err(unmatched("`;` in an upload query"));
        }
        let pairs: Vec<_> = query::pairs(query).collect();
        let from = pairs.iter().filter(|(k, _)| k == "from").map(|(_, v)| v.as_ref()).collect::<Vec<_>>();
        let mount = pairs.iter().any(|(k, _)| k == "mount");
        match (mount, from.as_slice()) {
            (false, []) => {}
            (true, [from]) => {
                mount_from = Some(ProjectPath::parse(from).ok_or(unmatched("mount source is not an image name"))?)
            }
            _ => return Err(unmatched("a mount needs exactly one mount and one from")),
        }
    }
    let action = if write { Action::Write } else { Action::Read };
    Ok(RegistryRequest { request: registry(Target::Image(image), action, destructive), mount_from })
}

fn registry(target: Target, action: Action, destructive: bool) -> Classified {
    Classified {
        family: Family::Registry,
        target,
        action,
        scope: if action == Action::Read { Scope::ReadRegistry } else { Scope::WriteRegistry },
        destructive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> Target {
        Target::Image(ProjectPath::parse(name).unwrap())
    }

    #[test]
    fn distribution_api_shapes() {
        let cases = [
            (Method::GET, "", None, Target::OwnJob, Scope::ReadRegistry, false),
            (Method::GET, "acme/app/manifests/latest", None, image("acme/app"), Scope::ReadRegistry, false),
            (
                Method::HEAD,
                "acme/app/img/manifests/sha256:abc",
                None,
                image("acme/app/img"),
                Scope::ReadRegistry,
                false,
            ),
            (Method::PUT, "acme/app/manifests/1.0", None, image("acme/app"), Scope::WriteRegistry, false),
            (Method::DELETE, "acme/app/manifests/sha256:abc", None, image("acme/app"), Scope::WriteRegistry, true),
            (Method::GET, "acme/app/blobs/sha256:abc", None, image("acme/app"), Scope::ReadRegistry, false),
            (Method::DELETE, "acme/app/blobs/sha256:abc", None, image("acme/app"), Scope::WriteRegistry, true),
            (Method::POST, "acme/app/blobs/uploads/", None, image("acme/app"), Scope::WriteRegistry, false),
            (Method::PATCH, "acme/app/blobs/uploads/uuid-1", None, image("acme/app"), Scope::WriteRegistry, false),
            (
                Method::PUT,
                "acme/app/blobs/uploads/uuid-1",
                Some("digest=sha256:abc"),
                image("acme/app"),
                Scope::WriteRegistry,
                false,
            ),
            (Method::GET, "acme/app/tags/list", Some("n=10"), image("acme/app"), Scope::ReadRegistry, false),
            (Method::GET, "acme/app/referrers/sha256:abc", None, image("acme/app"), Scope::ReadRegistry, false),
            // a repository may be named like an endpoint word
            (Method::GET, "acme/manifests/manifests/latest", None, image("acme/manifests"), Scope::ReadRegistry, false),
        ];
        for (method, rest, query, target, scope, destructive) in cases {
            let r = classify(&method, rest, query).unwrap_or_else(|u| panic!("{method} {rest}: {}", u.why));
            assert_eq!(
                (r.request.target, r.request.scope, r.request.destructive),
                (target, scope, destructive),
                "{method} {rest}"
            );
            assert!(r.mount_from.is_none());
        }
        let mount =
            classify(&Method::POST, "acme/app/blobs/uploads/", Some("mount=sha256:abc&from=acme/lib/img")).unwrap();
        assert_eq!(mount.mount_from.unwrap().as_str(), "acme/lib/img");
        assert_eq!(mount.request.scope, Scope::WriteRegistry);
    }

    #[test]
    fn everything_else_is_unmatched() {
        for (method, rest, query) in [
            (Method::GET, "_catalog", None),
            (Method::POST, "", None),
            (Method::GET, "acme/app", None),
            (Method::POST, "acme/app/manifests/latest", None),
            (Method::PUT, "acme/app/blobs/sha256:abc", None),
            (Method::GET, "acme/../secret/manifests/latest", None),
            (Method::GET, "acme/%2e%2e/secret/manifests/latest", None),
            (Method::POST, "acme/app/blobs/uploads/", Some("mount=sha256:abc")),
            (Method::POST, "acme/app/blobs/uploads/", Some("mount=x&from=a/b&from=c/d")),
            (Method::POST, "acme/app/blobs/uploads/", Some("mount=x&from=../b")),
            (Method::DELETE, "acme/app/tags/list", None),
        ] {
            assert!(classify(&method, rest, query).is_err(), "{method} {rest} {query:?} must be unmatched");
        }
    }
}
