//! The REST API and the package registries under `/api/v4/`. `:id` is a numeric id or a URL-encoded
//! path (`acme%2Fapp`): decoded here for the decision only — the request is forwarded with its original
//! bytes, since GitLab needs `%2F` kept encoded. Anything else under `/api/` (users, admin, GraphQL) is
//! unmatched: denied to job tokens.

use http::Method;

use super::{Action, Classified, Family, ProjectRef, Target, Unmatched};
use crate::path::ProjectPath;
use crate::scope::Scope;

/// Package formats GitLab serves under `.../packages/<format>/`.
const FORMATS: &[&str] = &[
    "npm",
    "maven",
    "pypi",
    "generic",
    "conan",
    "nuget",
    "composer",
    "helm",
    "rubygems",
    "debian",
    "go",
    "terraform",
    "ml_models",
];

const fn unmatched(why: &'static str) -> Unmatched {
    Unmatched { why }
}

/// `rest` is the path after `/api/`.
pub(super) fn classify(method: &Method, rest: &str) -> Result<Classified, Unmatched> {
    let rest = rest
        .strip_prefix("v4/")
        .ok_or(unmatched("only /api/v4/ is known (GraphQL and others are denied to job tokens)"))?;
    let mut segments: Vec<&str> = rest.split('/').collect();
    // One trailing slash is a legitimate spelling (PyPI's simple index uses it); no other empty segment is.
    if segments.len() > 2 && segments.last() == Some(&"") {
        segments.pop();
    }
    if segments.iter().skip(2).any(|s| is_traversal(s)) || segments.first().is_some_and(|s| is_traversal(s)) {
        return Err(unmatched("dot segments, empty segments and encoded dots or backslashes are refused"));
    }
    match segments.as_slice() {
        ["job"] if is_read(method) => Ok(api(Target::OwnJob, method)),
        // The runner's API: a runner token asks for jobs; a job's own token (JOB-TOKEN, or `token` in
        // the JSON body) updates that job, sends its trace, uploads its artifacts and fetches its
        // dependencies'. GitLab ties each to the job; any valid token may ask (`runners/…` and
        // `jobs/request` carry runner tokens: non-job traffic).
        ["jobs", "request"] | ["runners", ..] => Ok(Classified { destructive: false, ..api(Target::OwnJob, method) }),
        ["jobs", id, tail @ ..]
            if id.bytes().all(|b| b.is_ascii_digit())
                && matches!(tail, [] | ["trace"] | ["artifacts"] | ["artifacts", "authorize"]) =>
        {
            Ok(Classified { destructive: false, ..api(Target::OwnJob, method) })
        }
        // Terraform state locking (`plan` takes the lock, in merge request pipelines too): a write,
        // not a destructive one.
        ["projects", id, "terraform", "state", _, "lock"] if *method == Method::POST || *method == Method::DELETE => {
            Ok(Classified { destructive: false, ..api(Target::Project(id_or_path(id)?), method) })
        }
        ["projects", id, "packages", format, tail @ ..] => {
            let target = Target::Project(id_or_path(id)?);
            packages(method, target, format, tail)
        }
        ["projects", id, ..] => Ok(api(Target::Project(id_or_path(id)?), method)),
        ["groups", id, "-", "packages", format, tail @ ..] => {
            let target = Target::Group(id_or_path(id)?);
            packages(method, target, format, tail)
        }
        ["groups", id, ..] => Ok(api(Target::Group(id_or_path(id)?), method)),
        // Composer's group endpoints are spelled with a singular `group`.
        ["group", id, "-", "packages", "composer", tail @ ..] => {
            packages(method, Target::Group(id_or_path(id)?), "composer", tail)
        }
        ["packages", format, tail @ ..] => {
            let target = match (*format, tail.first()) {
                // npm puts scoped names first: `@scope/name` or `@scope%2fname` → the top-level group.
                ("npm", Some(name)) if name.starts_with('@') => {
                    let scope = name[1..].split(['/', '%']).next().unwrap_or("");
                    Target::Group(ProjectRef::Path(ProjectPath::parse(scope).ok_or(unmatched("not an npm scope"))?))
                }
                // Terraform modules live in a namespace: the top-level group.
                ("terraform", _) if tail.starts_with(&["modules", "v1"]) && tail.len() > 2 => Target::Group(
                    ProjectRef::Path(ProjectPath::parse(tail[2]).ok_or(unmatched("not a Terraform module namespace"))?),
                ),
                _ => Target::Instance,
            };
            packages(method, target, format, tail)
        }
        _ => Err(unmatched("this API endpoint is not open to job tokens")),
    }
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn api(target: Target, method: &Method) -> Classified {
    let read = is_read(method);
    Classified {
        family: Family::Api,
        target,
        action: if read { Action::Read } else { Action::Write },
        scope: if read { Scope::ReadApi } else { Scope::Api },
        // Every API write is destructive: it needs a protected ref unless the policy says otherwise.
        destructive: !read,
    }
}

fn packages(method: &Method, target: Target, format: &str, tail: &[&str]) -> Result<Classified, Unmatched> {
    if !FORMATS.contains(&format) {
        return Err(unmatched("unknown package format"));
    }
    // npm audit posts the dependency list to read advisories: a read that uses POST.
    let npm_audit = format == "npm" && tail.starts_with(&["-", "npm", "v1", "security"]);
    let read = is_read(method) || (method == Method::POST && npm_audit);
    Ok(Classified {
        family: Family::Packages,
        target,
        action: if read { Action::Read } else { Action::Write },
        scope: if read { Scope::ReadPackageRegistry } else { Scope::WritePackageRegistry },
        destructive: method == Method::DELETE,
    })
}

/// A numeric id, or a project path with `/` encoded as `%2F` (no other escapes are accepted).
fn id_or_path(raw: &str) -> Result<ProjectRef, Unmatched> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().map(ProjectRef::Id).map_err(|_| unmatched("project id out of range"));
    }
    let decoded = raw.replace("%2F", "/").replace("%2f", "/");
    ProjectPath::parse(&decoded).map(ProjectRef::Path).ok_or(unmatched("not a project id or URL-encoded path"))
}

/// Segments that a proxy or framework might resolve differently from us.
/// A segment that another parser could split in two (`..%2f`, `a%2Fb`): never part of an LFS object
/// path or a registry name (API ids are the one place `%2F` belongs, and they are decoded there).
pub(super) fn is_encoded_slash(segment: &str) -> bool {
    segment.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
}

pub(super) fn is_traversal(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    segment.is_empty()
        || segment == "."
        || segment == ".."
        || lower.contains("%2e")
        || segment.contains('\\')
        || lower.contains("%5c")
        || lower.contains("%25")
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use super::*;

    fn path(p: &str) -> ProjectRef {
        ProjectRef::Path(ProjectPath::parse(p).unwrap())
    }

    #[test]
    fn packages_and_api() {
        let cases: Vec<(Method, &str, Family, Target, Scope, bool)> = vec![
            (
                Method::GET,
                "/api/v4/projects/42/packages/npm/foo",
                Family::Packages,
                Target::Project(ProjectRef::Id(42)),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::PUT,
                "/api/v4/projects/acme%2Fapp/packages/npm/foo",
                Family::Packages,
                Target::Project(path("acme/app")),
                Scope::WritePackageRegistry,
                false,
            ),
            (
                Method::PUT,
                "/api/v4/projects/acme%2fsub%2Fapp/packages/maven/com/acme/lib/1.0/lib-1.0.jar",
                Family::Packages,
                Target::Project(path("acme/sub/app")),
                Scope::WritePackageRegistry,
                false,
            ),
            (
                Method::POST,
                "/api/v4/projects/42/packages/pypi",
                Family::Packages,
                Target::Project(ProjectRef::Id(42)),
                Scope::WritePackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/projects/42/packages/pypi/simple/foo",
                Family::Packages,
                Target::Project(ProjectRef::Id(42)),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::POST,
                "/api/v4/projects/42/packages/npm/-/npm/v1/security/advisories/bulk",
                Family::Packages,
                Target::Project(ProjectRef::Id(42)),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::DELETE,
                "/api/v4/projects/42/packages/generic/tool/1.0/tool.bin",
                Family::Packages,
                Target::Project(ProjectRef::Id(42)),
                Scope::WritePackageRegistry,
                true,
            ),
            (
                Method::GET,
                "/api/v4/groups/acme/-/packages/maven/com/acme/lib/maven-metadata.xml",
                Family::Packages,
                Target::Group(path("acme")),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/packages/npm/@acme/lib",
                Family::Packages,
                Target::Group(path("acme")),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/packages/npm/@acme%2flib",
                Family::Packages,
                Target::Group(path("acme")),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/packages/conan/v1/ping",
                Family::Packages,
                Target::Instance,
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/projects/42/issues",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::ReadApi,
                false,
            ),
            (
                Method::GET,
                "/api/v4/projects/acme%2Fapp",
                Family::Api,
                Target::Project(path("acme/app")),
                Scope::ReadApi,
                false,
            ),
            (
                Method::POST,
                "/api/v4/projects/42/issues",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::Api,
                true,
            ),
            (
                Method::DELETE,
                "/api/v4/groups/7/variables/x",
                Family::Api,
                Target::Group(ProjectRef::Id(7)),
                Scope::Api,
                true,
            ),
            (Method::GET, "/api/v4/job", Family::Api, Target::OwnJob, Scope::ReadApi, false),
            (
                Method::GET,
                "/api/v4/projects/42/packages/pypi/simple/foo/",
                Family::Packages,
                Target::Project(ProjectRef::Id(42)),
                Scope::ReadPackageRegistry,
                false,
            ),
            (Method::POST, "/api/v4/jobs/request", Family::Api, Target::OwnJob, Scope::Api, false),
            (Method::PUT, "/api/v4/jobs/1001", Family::Api, Target::OwnJob, Scope::Api, false),
            (Method::PATCH, "/api/v4/jobs/1001/trace", Family::Api, Target::OwnJob, Scope::Api, false),
            (Method::POST, "/api/v4/jobs/1001/artifacts/authorize", Family::Api, Target::OwnJob, Scope::Api, false),
            (Method::GET, "/api/v4/jobs/1000/artifacts", Family::Api, Target::OwnJob, Scope::ReadApi, false),
            (
                Method::POST,
                "/api/v4/projects/42/terraform/state/prod/lock",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::Api,
                false,
            ),
            (
                Method::DELETE,
                "/api/v4/projects/42/terraform/state/prod/lock",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::Api,
                false,
            ),
            (
                Method::POST,
                "/api/v4/projects/42/terraform/state/prod",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::Api,
                true,
            ),
            (
                Method::DELETE,
                "/api/v4/projects/42/terraform/state/prod",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::Api,
                true,
            ),
            (
                Method::GET,
                "/api/v4/group/acme/-/packages/composer/packages",
                Family::Packages,
                Target::Group(path("acme")),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/group/7/-/packages/composer/p2/acme/lib.json",
                Family::Packages,
                Target::Group(ProjectRef::Id(7)),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/packages/terraform/modules/v1/acme/vpc/aws/versions",
                Family::Packages,
                Target::Group(path("acme")),
                Scope::ReadPackageRegistry,
                false,
            ),
            (
                Method::GET,
                "/api/v4/projects/42/jobs/artifacts/main/download",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::ReadApi,
                false,
            ),
            (
                Method::POST,
                "/api/v4/projects/42/releases",
                Family::Api,
                Target::Project(ProjectRef::Id(42)),
                Scope::Api,
                true,
            ),
            (
                Method::POST,
                "/api/v4/projects/acme%2Fapp/trigger/pipeline",
                Family::Api,
                Target::Project(path("acme/app")),
                Scope::Api,
                true,
            ),
        ];
        for (method, p, family, target, scope, destructive) in cases {
            let c = classify(&method, p, None).unwrap_or_else(|u| panic!("{method} {p}: {}", u.why));
            assert_eq!(
                (c.family, &c.target, c.scope, c.destructive),
                (family, &target, scope, destructive),
                "{method} {p}"
            );
        }
    }

    #[test]
    fn everything_else_under_api_is_unmatched() {
        for (method, p) in [
            (Method::GET, "/api/v4/users"),
            (Method::GET, "/api/v4/user"),
            (Method::POST, "/api/graphql"),
            (Method::GET, "/api/v3/projects/42"),
            (Method::GET, "/api/v4/admin/ci/variables"),
            (Method::POST, "/api/v4/job"),
            (Method::GET, "/api/v4/projects/42/packages/evil/x"),
            (Method::GET, "/api/v4/projects/acme%2E%2E%2Fsecret/issues"),
            (Method::GET, "/api/v4/projects/acme%252Fapp/issues"),
            (Method::GET, "/api/v4/projects/42/../43/issues"),
            (Method::GET, "/api/v4/projects/42/issues/%2e%2e/%2e%2e/43"),
            (Method::GET, "/api/v4/projects/42//issues"),
            (Method::GET, "/api/v4/projects/42/issues//"),
            (Method::GET, "/api/v4/projects/42/issues%5c..%5c"),
            (Method::GET, "/api/v4/projects//issues"),
            (Method::GET, "/api/v4/projects/acme%2F/issues"),
            (Method::GET, "/api/v4/projects/99999999999999999999999/issues"),
            (Method::PUT, "/api/v4/jobs/../projects/42"),
            (Method::GET, "/api/v4/jobs/1001/artifacts/secret.zip"),
            (Method::POST, "/api/v4/jobs/abc/trace"),
            (Method::GET, "/api/v4/group/acme/-/packages/npm/x"),
        ] {
            assert!(classify(&method, p, None).is_err(), "{method} {p} must be unmatched");
        }
    }
}
