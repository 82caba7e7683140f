//! Git smart HTTP: `info/refs?service=…`, `git-upload-pack`, `git-receive-pack`. The dumb protocol
//! and every other path under a repository are left unmatched (denied), not guessed.

use http::Method;

use super::{project_before, Action, Classified, Family, ProjectRef, Target, Unmatched};
use crate::path::ProjectPath;
use crate::query;
use crate::scope::Scope;

#[derive(Clone, Copy)]
enum Service {
    UploadPack,
    ReceivePack,
}

/// `None` when the path is not a Git smart HTTP path at all; `Some(Err)` when it is but is malformed.
pub(super) fn classify(method: &Method, path: &str, query: Option<&str>) -> Option<Result<Classified, Unmatched>> {
    let (project, service) = if let Some(project) = project_before(path, "/info/refs") {
        if method != Method::GET && method != Method::HEAD {
            return Some(Err(Unmatched { why: "info/refs only answers GET" }));
        }
        (project, service_param(query))
    } else if let Some(project) = project_before(path, "/git-upload-pack") {
        (project, post_only(method, Service::UploadPack))
    } else if let Some(project) = project_before(path, "/git-receive-pack") {
        (project, post_only(method, Service::ReceivePack))
    } else {
        return None;
    };
    Some(service.and_then(|service| classified(project, service)))
}

fn post_only(method: &Method, service: Service) -> Result<Service, Unmatched> {
    if method == Method::POST {
        Ok(service)
    } else {
        Err(Unmatched { why: "git-upload-pack and git-receive-pack only answer POST" })
    }
}

fn classified(project: &str, service: Service) -> Result<Classified, Unmatched> {
    let project = ProjectPath::parse(project).ok_or(Unmatched { why: "not a plain project path" })?;
    let (action, scope) = match service {
        Service::UploadPack => (Action::Read, Scope::ReadRepository),
        Service::ReceivePack => (Action::Write, Scope::WriteRepository),
    };
    Ok(Classified {
        family: Family::Git,
        target: Target::Project(ProjectRef::Path(project)),
        action,
        scope,
        destructive: false,
    })
}

/// Exactly one `service` parameter (decoded as git-http-backend decodes it) naming a smart service.
fn service_param(query: Option<&str>) -> Result<Service, Unmatched> {
    let mut services = query::pairs(query).filter(|(name, _)| name == "service");
    let (Some((_, value)), None) = (services.next(), services.next()) else {
        return Err(Unmatched { why: "info/refs needs exactly one service parameter (dumb HTTP is not supported)" });
    };
    match value.as_ref() {
        "git-upload-pack" => Ok(Service::UploadPack),
        "git-receive-pack" => Ok(Service::ReceivePack),
        _ => Err(Unmatched { why: "unknown git service" }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use super::*;

    fn ok(method: Method, path: &str, query: Option<&str>, project: &str, scope: Scope) {
        let c = classify(&method, path, query).unwrap_or_else(|u| panic!("{method} {path}: {}", u.why));
        assert_eq!(c.family, Family::Git);
        assert_eq!(c.scope, scope, "{path}");
        assert_eq!(c.target, Target::Project(ProjectRef::Path(ProjectPath::parse(project).unwrap())));
    }

    #[test]
    fn smart_http_shapes() {
        let (read, write) = (Scope::ReadRepository, Scope::WriteRepository);
        ok(Method::GET, "/acme/app.git/info/refs", Some("service=git-upload-pack"), "acme/app", read);
        ok(Method::GET, "/acme/app/info/refs", Some("service=git-receive-pack"), "acme/app", write);
        ok(Method::HEAD, "/a/b/c/d/app/info/refs", Some("service=git-upload-pack"), "a/b/c/d/app", read);
        ok(Method::POST, "/Acme/Sub/App.git/git-upload-pack", None, "acme/sub/app", read);
        ok(Method::POST, "/acme/app/git-receive-pack", Some("job_token=x"), "acme/app", write);
        ok(Method::GET, "/acme/app/info/refs", Some("s%65rvice=git-receive-pack"), "acme/app", write);
        ok(Method::GET, "/acme/app/info/refs", Some("job_token=t&service=git-upload-pack"), "acme/app", read);
    }

    #[test]
    fn everything_else_is_unmatched() {
        let q = Some("service=git-upload-pack");
        for (method, path, query) in [
            (Method::GET, "/acme/app.git/info/refs", None),
            (Method::GET, "/acme/app.git/info/refs", Some("service=git-upload-archive")),
            (Method::GET, "/acme/app.git/info/refs", Some("service=git-upload-pack&service=git-receive-pack")),
            (Method::GET, "/acme/app.git/HEAD", None),
            (Method::GET, "/acme/app.git/objects/info/packs", None),
            (Method::POST, "/acme/app.git/info/refs", q),
            (Method::GET, "/acme/app.git/git-upload-pack", None),
            (Method::PUT, "/acme/app.git/git-receive-pack", None),
            (Method::GET, "/info/refs", q),
            (Method::GET, "/.git/info/refs", q),
            (Method::GET, "//acme/app/info/refs", q),
            (Method::GET, "/acme//app/info/refs", q),
            (Method::GET, "/acme/app/../secret/info/refs", q),
            (Method::GET, "/acme/./app/info/refs", q),
            (Method::GET, "/acme/%2e%2e/secret/info/refs", q),
            (Method::GET, "/acme%2Fapp/info/refs", q),
            (Method::GET, "/acme%2fapp/info/refs", q),
            (Method::GET, "/acme%5Capp/info/refs", q),
            (Method::GET, "/acme/%252e%252e/app/info/refs", q),
            (Method::GET, "/acme/app;x=1/info/refs", q),
            (Method::GET, "/acme/app/info/refs/", q),
            (Method::GET, "/acme/app/info/refs/.", q),
            (Method::POST, "/acme/app.git/git-upload-pack/", None),
            (Method::GET, "acme/app/info/refs", q),
        ] {
            assert!(classify(&method, path, query).is_err(), "{method} {path} {query:?} must be unmatched");
        }
    }
}
