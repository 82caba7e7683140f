//! `classify`: method + path (+ query) → [`Classified`] — which family, which target, which action,
//! which scope. It matches the raw request target with a strict grammar and never guesses: a shape it
//! does not know is [`Unmatched`], which the pipeline denies to job tokens. Pure; no I/O.

mod api;
mod git;
pub mod lfs;
pub mod registry;

use http::Method;
use serde::Serialize;

use crate::path::ProjectPath;
use crate::scope::Scope;

/// The endpoint family a request belongs to; it picks the upstream and the style of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Git,
    Lfs,
    Registry,
    Packages,
    Api,
}

impl Family {
    /// Every family, in [`FamilyMap`] order.
    pub const ALL: [Family; 5] = [Family::Git, Family::Lfs, Family::Registry, Family::Packages, Family::Api];

    pub(crate) fn index(self) -> usize {
        match self {
            Family::Git => 0,
            Family::Lfs => 1,
            Family::Registry => 2,
            Family::Packages => 3,
            Family::Api => 4,
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Family::Git => "git",
            Family::Lfs => "lfs",
            Family::Registry => "registry",
            Family::Packages => "packages",
            Family::Api => "api",
        }
    }
}

/// One `T` per family: upstreams, non-job settings, per-family metrics. Indexed by [`Family`], so no
/// list of families is ever written out by hand twice.
#[derive(Debug, Clone, Default)]
pub struct FamilyMap<T>([T; 5]);

impl<T> FamilyMap<T> {
    /// The map holding `f(family)` for every family.
    pub fn from_fn(mut f: impl FnMut(Family) -> T) -> FamilyMap<T> {
        FamilyMap(Family::ALL.map(&mut f))
    }
}

impl<T> std::ops::Index<Family> for FamilyMap<T> {
    type Output = T;
    fn index(&self, family: Family) -> &T {
        &self.0[family.index()]
    }
}

/// What the request does to its target, coarsely (for audit and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Read,
    Write,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
        }
    }
}

/// A project named by path or by numeric id (the API allows both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ProjectRef {
    Path(ProjectPath),
    Id(u64),
}

/// What a classified request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Project(ProjectRef),
    /// A group (group-level packages and API, npm `@scope/`): no single project to decide on.
    Group(ProjectRef),
    /// Instance-level endpoints with no resolvable project.
    Instance,
    /// `GET /api/v4/job` and the registry's `/v2/`: any valid token.
    OwnJob,
    /// A container image name: the project is the longest known project-path prefix (up to two
    /// components may follow the project's path).
    Image(ProjectPath),
}

impl Target {
    /// Whether the target is one decided project (by path, id or image name), or the job itself.
    pub fn is_single(&self) -> bool {
        !matches!(self, Target::Group(_) | Target::Instance)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Project(ProjectRef::Path(path)) => write!(f, "{path}"),
            Target::Project(ProjectRef::Id(id)) => write!(f, "project id {id}"),
            Target::Group(ProjectRef::Path(path)) => write!(f, "group {path}"),
            Target::Group(ProjectRef::Id(id)) => write!(f, "group id {id}"),
            Target::Instance => f.write_str("the instance"),
            Target::OwnJob => f.write_str("the job itself"),
            Target::Image(name) => write!(f, "image {name}"),
        }
    }
}

/// The output of `classify`: everything `decide` needs to know about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub family: Family,
    pub target: Target,
    pub action: Action,
    /// The scope the request needs on its target.
    pub scope: Scope,
    /// Destructive requests also need a protected ref.
    pub destructive: bool,
}

/// A request shape jobgate does not know; `why` says which rule it broke (static text, no input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmatched {
    pub why: &'static str,
}

/// Classifies one request from its method, raw path and raw query.
///
/// # Errors
/// [`Unmatched`] for every shape outside the endpoint table.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Result<Classified, Unmatched> {
    if let Some(rest) = path.strip_prefix("/api/") {
        return api::classify(method, rest);
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        return registry::classify(method, rest, query).map(|r| r.request);
    }
    // Terraform's service discovery: OpenTofu and Terraform send the module token here too.
    if path == "/.well-known/terraform.json" && (*method == Method::GET || *method == Method::HEAD) {
        return Ok(Classified {
            family: Family::Api,
            target: Target::OwnJob,
            action: Action::Read,
            scope: crate::scope::Scope::ReadApi,
            destructive: false,
        });
    }
    lfs::classify(method, path)
        .or_else(|| git::classify(method, path, query))
        .unwrap_or(Err(Unmatched { why: "no known endpoint has this shape" }))
}

/// [`classify`], plus the source image of a cross-repository registry mount, which must be readable
/// too (the pipeline decides both).
///
/// # Errors
/// As [`classify`].
pub fn classify_with_mount(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Result<(Classified, Option<ProjectPath>), Unmatched> {
    match path.strip_prefix("/v2/") {
        Some(rest) => registry::classify(method, rest, query).map(|r| (r.request, r.mount_from)),
        None => classify(method, path, query).map(|request| (request, None)),
    }
}

/// Splits `/<project>[.git]<marker><rest>` at the first `marker`: the project (validated) and the rest.
/// `None` when the marker is absent.
fn project_at<'a>(path: &'a str, marker: &str) -> Option<(Result<ProjectRef, Unmatched>, &'a str)> {
    let index = path.find(marker)?;
    let project = path[..index].strip_prefix('/').unwrap_or("");
    let project = project.strip_suffix(".git").unwrap_or(project);
    let parsed = ProjectPath::parse(project).map(ProjectRef::Path).ok_or(Unmatched { why: "not a plain project path" });
    Some((parsed, &path[index + marker.len()..]))
}

/// Splits `/<project>[.git]/<rest>` at the first `suffix` that ends the path, returning the project.
/// `None` when the path does not end that way or the project part is not a clean project path.
fn project_before<'a>(path: &'a str, suffix: &str) -> Option<&'a str> {
    let project = path.strip_prefix('/')?.strip_suffix(suffix)?;
    Some(project.strip_suffix(".git").unwrap_or(project))
}

/// The registry's paths: its API, the token realm and the realm's key set. On a registry host
/// (`hosts:`) nothing else is served; on the GitLab host these are GitLab's own.
pub fn is_registry_path(path: &str) -> bool {
    path.starts_with("/v2/") || path == "/jwt/auth" || path == "/-/jwks"
}

/// The TLS server name (SNI) the client's connection was opened for, kept in each request's
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sni(pub std::sync::Arc<str>);

/// What a request's host is to jobgate (`hosts:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRole {
    /// No `hosts:` configured: every family on every host.
    Any,
    GitLab,
    Registry,
    /// The `hosts.passthrough` entry at this index: passed to its upstream, undecided.
    Passthrough(usize),
}

/// The configured host names by role; empty: every host is served alike.
#[derive(Debug, Clone, Default)]
pub struct HostRules {
    gitlab: Vec<String>,
    registry: Vec<String>,
    passthrough: Vec<Vec<String>>,
}

impl HostRules {
    /// The GitLab host's names, the registry host's, and each passed-through host's (in order).
    pub fn new(gitlab: Vec<String>, registry: Vec<String>, passthrough: Vec<Vec<String>>) -> HostRules {
        HostRules { gitlab, registry, passthrough }
    }

    /// The role of the host the request names (`Host`, or HTTP/2's `:authority`; port and case
    /// ignored); `None` for a host no route serves, none named at all, or one that is not the name
    /// the TLS connection was opened for (a coalesced HTTP/2 connection, or domain fronting: 421
    /// sends the client to a connection of its own).
    pub fn role(&self, parts: &http::request::Parts) -> Option<HostRole> {
        if self.gitlab.is_empty() && self.registry.is_empty() && self.passthrough.is_empty() {
            return Some(HostRole::Any);
        }
        let named = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(http::uri::Authority::as_str))?;
        let host = named
            .parse::<http::uri::Authority>()
            .ok()?
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if parts.extensions.get::<Sni>().is_some_and(|Sni(sni)| !sni.eq_ignore_ascii_case(&host)) {
            return None;
        }
        if self.registry.contains(&host) {
            Some(HostRole::Registry)
        } else if self.gitlab.contains(&host) {
            Some(HostRole::GitLab)
        } else {
            // An exact name, or `*.` standing for the first label.
            let wildcard = host.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            self.passthrough
                .iter()
                .position(|names| names.iter().any(|n| *n == host || Some(n) == wildcard.as_ref()))
                .map(HostRole::Passthrough)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostRole;

    #[test]
    fn hosts_are_matched_by_name_and_a_wildcard_covers_one_label() {
        let config: crate::config::HostsConfig =
            serde_yaml::from_str("{ gitlab: [gitlab.test], registry: [registry.test], passthrough: [ { names: [kas.test], upstream: { url: 'http://127.0.0.1:1' } }, { names: ['*.pages.test'], upstream: { url: 'http://127.0.0.1:2' } } ] }").unwrap();
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let rules = config.rules();
        let role =
            |host: &str| rules.role(&http::Request::get("/").header("host", host).body(()).unwrap().into_parts().0);
        assert_eq!(role("GitLab.test:443"), Some(HostRole::GitLab));
        assert_eq!(role("registry.test"), Some(HostRole::Registry));
        assert_eq!(role("kas.test"), Some(HostRole::Passthrough(0)));
        assert_eq!(role("acme.pages.test"), Some(HostRole::Passthrough(1)));
        assert_eq!(role("a.b.pages.test"), None, "one label only");
        assert_eq!(role("pages.test"), None);
        let bad: crate::config::HostsConfig = serde_yaml::from_str("{ gitlab: ['*.gitlab.test'] }").unwrap();
        assert!(bad.problems().iter().any(|p| p.contains("only passthrough names")), "{:?}", bad.problems());
    }
}
