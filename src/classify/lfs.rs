//! Git LFS: the batch API (`POST /P/info/lfs/objects/batch`, whose action is in the JSON body),
//! object transfers (`/P/gitlab-lfs/objects/<oid>[/<size>]` and other object paths under
//! `/P/info/lfs/objects/`) and the locks API. The batch body is peeked by the pipeline (bounded) and
//! its `operation` read with [`batch_operation`]; until then a batch counts as a write (fail closed).

use http::Method;
use serde::Deserialize;

use super::{project_at, Action, Classified, Family, ProjectRef, Target, Unmatched};
use crate::scope::Scope;

/// The operation a batch request asks for, found by peeking at its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOperation(pub Action);

/// `None` when the path is not an LFS path at all.
pub(super) fn classify(method: &Method, path: &str) -> Option<Result<Classified, Unmatched>> {
    let (project, rest) = if let Some((project, rest)) = project_at(path, "/info/lfs/") {
        (project, rest)
    } else {
        let (project, rest) = project_at(path, "/gitlab-lfs/")?;
        if !rest.starts_with("objects/") {
            return Some(Err(Unmatched { why: "unknown gitlab-lfs path" }));
        }
        (project, rest)
    };
    Some(project.and_then(|project| {
        if rest.split('/').any(|s| super::api::is_traversal(s) || super::api::is_encoded_slash(s)) {
            return Err(Unmatched { why: "dot segments, empty segments and encoded dots or backslashes are refused" });
        }
        let read = method == Method::GET || method == Method::HEAD;
        let write = match rest {
            // A batch is a write until its body says `download` (see `batch_operation`).
            "objects/batch" if method == Method::POST => true,
            "objects/batch" => return Err(Unmatched { why: "the LFS batch API only answers POST" }),
            "locks" if read => false,
            "locks" | "locks/verify" if method == Method::POST => true,
            r if r.starts_with("locks/") && r.ends_with("/unlock") && method == Method::POST => true,
            r if r.starts_with("objects/") && read => false,
            r if r.starts_with("objects/") && (method == Method::PUT || method == Method::POST) => true,
            _ => return Err(Unmatched { why: "unknown LFS endpoint or method" }),
        };
        Ok(lfs(project, if write { Action::Write } else { Action::Read }))
    }))
}

pub fn lfs(project: ProjectRef, action: Action) -> Classified {
    Classified {
        family: Family::Lfs,
        target: Target::Project(project),
        action,
        scope: if action == Action::Read { Scope::ReadRepository } else { Scope::WriteRepository },
        destructive: false,
    }
}

/// Whether this request is an LFS batch call, whose body must be peeked.
pub fn is_batch(method: &Method, path: &str) -> bool {
    // Exactly `/<project>[.git]/info/lfs/objects/batch`: an object path that merely ends that way is
    // an object transfer, and its body must never turn it into a read.
    method == Method::POST
        && project_at(path, "/info/lfs/").is_some_and(|(project, rest)| project.is_ok() && rest == "objects/batch")
}

#[derive(Deserialize)]
struct Batch {
    operation: String,
}

/// Reads the `operation` of a batch request body.
///
/// # Errors
/// A message for a body that is not JSON or names no known operation.
pub fn batch_operation(body: &[u8]) -> Result<BatchOperation, &'static str> {
    let batch: Batch = serde_json::from_slice(body).map_err(|_| "LFS batch body is not JSON with an `operation`")?;
    match batch.operation.as_str() {
        "download" => Ok(BatchOperation(Action::Read)),
        "upload" => Ok(BatchOperation(Action::Write)),
        _ => Err("LFS batch `operation` must be download or upload"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use super::*;
    use crate::path::ProjectPath;

    #[test]
    fn lfs_shapes() {
        let p = |s: &str| Target::Project(ProjectRef::Path(ProjectPath::parse(s).unwrap()));
        for (method, path, target, scope) in [
            (Method::POST, "/acme/app.git/info/lfs/objects/batch", p("acme/app"), Scope::WriteRepository),
            (Method::GET, "/acme/sub/app/info/lfs/objects/storage/0123abcd", p("acme/sub/app"), Scope::ReadRepository),
            (Method::PUT, "/acme/app.git/info/lfs/objects/storage/0123abcd", p("acme/app"), Scope::WriteRepository),
            (Method::POST, "/acme/app.git/info/lfs/objects/storage/verify", p("acme/app"), Scope::WriteRepository),
            (Method::GET, "/acme/app.git/gitlab-lfs/objects/0123abcd/42", p("acme/app"), Scope::ReadRepository),
            (Method::PUT, "/acme/app.git/gitlab-lfs/objects/0123abcd/42", p("acme/app"), Scope::WriteRepository),
            (Method::GET, "/acme/app.git/info/lfs/locks", p("acme/app"), Scope::ReadRepository),
            (Method::POST, "/acme/app.git/info/lfs/locks", p("acme/app"), Scope::WriteRepository),
            (Method::POST, "/acme/app.git/info/lfs/locks/verify", p("acme/app"), Scope::WriteRepository),
            (Method::POST, "/acme/app.git/info/lfs/locks/17/unlock", p("acme/app"), Scope::WriteRepository),
        ] {
            let c = classify(&method, path, None).unwrap_or_else(|u| panic!("{method} {path}: {}", u.why));
            assert_eq!((c.family, c.target, c.scope), (Family::Lfs, target, scope), "{method} {path}");
        }
        for (method, path) in [
            (Method::DELETE, "/acme/app.git/info/lfs/objects/storage/x"),
            (Method::GET, "/acme/app.git/info/lfs/objects/batch"),
            (Method::GET, "/acme/app.git/info/lfs/other"),
            (Method::GET, "/acme/../app.git/info/lfs/objects/x"),
            (Method::GET, "/acme%2Fapp.git/info/lfs/objects/x"),
            (Method::GET, "/acme/app.git/gitlab-lfs/other"),
            (Method::GET, "/acme/app.git/info/lfs/objects/../../../secret.git/info/lfs/objects/x"),
            (Method::GET, "/acme/app.git/info/lfs/objects/%2e%2e/x"),
            (Method::GET, "/acme/app.git/info/lfs/objects//x"),
        ] {
            assert!(classify(&method, path, None).is_err(), "{method} {path} must be unmatched");
        }
    }

    #[test]
    fn batch_operations() {
        assert_eq!(batch_operation(br#"{"operation":"download","objects":[]}"#), Ok(BatchOperation(Action::Read)));
        assert_eq!(
            batch_operation(br#"{"operation":"upload","transfers":["basic"],"objects":[]}"#),
            Ok(BatchOperation(Action::Write))
        );
        for bad in [
            &b"not json"[..],
            br#"{"objects":[]}"#,
            br#"{"operation":"delete"}"#,
            br#"{"operation":"download","operation":"upload"}"#,
        ] {
            assert!(batch_operation(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
