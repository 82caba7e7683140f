//! Loads every `*.yaml` in the policy folder, validates it and compiles one indexed [`Policy`].
//! Every error names the file and line. A folder that fails to load never replaces a running policy:
//! this file only builds; swapping is the caller's business.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::model::{AllowDoc, EnvironmentsDoc, Inbound, MemberDoc, Mode, PolicyDoc, RefType, Refs};
use crate::glob::Glob;
use crate::path::ProjectPath;
use crate::scope::{Role, Scope, ScopeSet};
use crate::yaml::{self, YamlError};

/// A policy load error: file, line (0 when unknown) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct PolicyError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl From<YamlError> for PolicyError {
    fn from(YamlError { path, line, message }: YamlError) -> PolicyError {
        PolicyError { path, line, message }
    }
}

/// Instance-wide settings.
#[derive(Debug, Clone)]
pub struct Instance {
    pub elevation: bool,
    pub own_project: ScopeSet,
    pub cross_project: ScopeSet,
    pub destructive_requires_protected_ref: bool,
    pub destructive_scopes: ScopeSet,
    pub audit: bool,
    pub require_user_ceiling: bool,
    role_ceilings: [ScopeSet; 5],
}

impl Instance {
    pub fn role_ceiling(&self, role: Role) -> ScopeSet {
        self.role_ceilings[role as usize]
    }
}

impl Default for Instance {
    /// The seed defaults of DESIGN.md §4: read everything and push images in the own project,
    /// read-only elsewhere (where admitted).
    fn default() -> Self {
        use Scope::*;
        Instance {
            elevation: true,
            own_project: [ReadRepository, ReadRegistry, WriteRegistry, ReadPackageRegistry, ReadApi]
                .into_iter()
                .collect(),
            cross_project: [ReadRepository, ReadRegistry, ReadPackageRegistry].into_iter().collect(),
            destructive_requires_protected_ref: true,
            destructive_scopes: ScopeSet::EMPTY,
            audit: false,
            require_user_ceiling: false,
            role_ceilings: ROLES.map(Role::default_ceiling),
        }
    }
}

const ROLES: [Role; 5] = [Role::Guest, Role::Reporter, Role::Developer, Role::Maintainer, Role::Owner];

/// Settings shared by groups and projects.
#[derive(Debug, Clone, Default)]
pub struct Scoped {
    pub elevation: bool,
    /// The mode written here, if any: the nearest one written (project, then groups upward, then
    /// the instance) decides.
    pub mode: Option<Mode>,
    pub allow: Allowlist,
    pub members: Members,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub path: ProjectPath,
    pub scoped: Scoped,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub path: ProjectPath,
    /// The numeric id the policy gives it, if any.
    pub id: Option<u64>,
    pub inbound: Inbound,
    pub scoped: Scoped,
    /// Intersected with the instance's own-project baseline.
    pub own_project: ScopeSet,
}

/// Allowlist entries, indexed by the source path they name.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    pub entries: Vec<Entry>,
    by_source: HashMap<ProjectPath, Vec<usize>>,
}

impl Allowlist {
    /// Entries whose `from` is `source` or one of its groups: one lookup per path level.
    pub fn matching<'a>(&'a self, source: &'a ProjectPath) -> impl Iterator<Item = &'a Entry> + 'a {
        std::iter::once(source.as_str())
            .chain(source.ancestors())
            .filter_map(|key| self.by_source.get(key))
            .flatten()
            .map(|i| &self.entries[*i])
    }
}

/// A compiled allowlist entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub from: ProjectPath,
    pub scopes: ScopeSet,
    pub refs: Refs,
    pub ref_names: Vec<Glob>,
    pub ref_type: Option<RefType>,
    pub environments: Environments,
    /// Where the entry was written (`projects.acme/app.allow[0]` in `file`), for `explain`.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environments {
    Any,
    Protected,
    Named(Vec<Glob>),
}

/// Roles by login and by user id.
#[derive(Debug, Clone, Default)]
pub struct Members {
    by_login: HashMap<String, Role>,
    by_id: HashMap<u64, Role>,
}

impl Members {
    pub fn role(&self, login: Option<&str>, id: Option<u64>) -> Option<Role> {
        let by_login = login.and_then(|l| self.by_login.get(&l.to_ascii_lowercase()));
        let by_id = id.and_then(|i| self.by_id.get(&i));
        by_login.into_iter().chain(by_id).copied().max()
    }
}

/// The whole policy, indexed for `decide`: lower-cased paths, ids resolved.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub instance: Instance,
    pub groups: HashMap<ProjectPath, Group>,
    pub projects: HashMap<ProjectPath, Project>,
    pub ids: HashMap<u64, ProjectPath>,
    /// The files this policy was built from.
    pub files: Vec<PathBuf>,
}

impl Policy {
    /// Loads and merges every `*.yaml` / `*.yml` file directly in `dir` (sorted by name).
    ///
    /// # Errors
    /// The first problem found, with file and line.
    pub fn load_dir(dir: &Path) -> Result<Policy, PolicyError> {
        Policy::load_dir_with(dir, &[])
    }

    /// [`Policy::load_dir`] with `extra` documents (name, text) added after the folder's files, as
    /// if they were in it; each replaces a file of the same name there (`policy suggest` checks its
    /// output against the running policy).
    ///
    /// # Errors
    /// As [`Policy::load_dir`].
    pub fn load_dir_with(dir: &Path, extra: &[(PathBuf, String)]) -> Result<Policy, PolicyError> {
        let error = |path: &Path, message: String| PolicyError { path: path.to_owned(), line: 0, message };
        let entries = std::fs::read_dir(dir).map_err(|e| error(dir, format!("cannot read policy folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .filter(|p| extra.iter().all(|(name, _)| name != p))
            .collect();
        files.sort();
        let mut builder = Builder::default();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| error(file, format!("cannot read: {e}")))?;
            builder.add(file, &text)?;
        }
        for (name, text) in extra {
            builder.add(name, text)?;
        }
        let mut policy = builder.policy;
        policy.files = files;
        policy.files.extend(extra.iter().map(|(name, _)| name.clone()));
        Ok(policy)
    }

    /// Parses one policy document (tests, benches).
    ///
    /// # Errors
    /// As [`Policy::load_dir`].
    pub fn from_yaml(name: &Path, text: &str) -> Result<Policy, PolicyError> {
        let mut builder = Builder::default();
        builder.add(name, text)?;
        Ok(builder.policy)
    }
}

#[derive(Default)]
struct Builder {
    policy: Policy,
    instance_from: Option<PathBuf>,
}

/// Builds errors for one file, finding lines for semantic errors that serde cannot place.
struct Errors<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Errors<'_> {
    fn at(&self, key: &str, message: String) -> PolicyError {
        PolicyError { path: self.file.to_owned(), line: line_of(self.text, key), message }
    }
}

impl Builder {
    fn add(&mut self, file: &Path, text: &str) -> Result<(), PolicyError> {
        let doc: PolicyDoc = yaml::parse(file, text).map_err(PolicyError::from)?;
        let errors = Errors { file, text };
        if let Some(instance) = doc.instance {
            if let Some(first) = &self.instance_from {
                return Err(errors.at("instance", format!("instance is already defined in {}", first.display())));
            }
            self.instance_from = Some(file.to_owned());
            let mut role_ceilings = ROLES.map(Role::default_ceiling);
            for (role, scopes) in instance.roles.0 {
                role_ceilings[role as usize] = scopes;
            }
            self.policy.instance = Instance {
                elevation: instance.elevation,
                own_project: instance.own_project,
                cross_project: instance.cross_project,
                destructive_requires_protected_ref: instance.destructive_requires_protected_ref,
                destructive_scopes: instance.destructive_scopes,
                audit: instance.mode == Mode::Audit,
                require_user_ceiling: instance.require_user_ceiling,
                role_ceilings,
            };
        }
        for (raw, group) in doc.groups.0 {
            let path =
                ProjectPath::parse(&raw).ok_or_else(|| errors.at(&raw, format!("{raw:?} is not a group path")))?;
            let origin = format!("groups.{raw}");
            let scoped = scoped(&errors, &origin, group.elevation, group.mode, group.allow, group.members)?;
            if self.policy.groups.insert(path.clone(), Group { path, scoped }).is_some() {
                return Err(errors.at(&raw, format!("group {raw:?} is defined twice")));
            }
        }
        for (raw, project) in doc.projects.0 {
            let path =
                ProjectPath::parse(&raw).ok_or_else(|| errors.at(&raw, format!("{raw:?} is not a project path")))?;
            let origin = format!("projects.{raw}");
            let scoped = scoped(&errors, &origin, project.elevation, project.mode, project.allow, project.members)?;
            if let Some(id) = project.id {
                if let Some(other) = self.policy.ids.insert(id, path.clone()) {
                    return Err(errors.at(&raw, format!("project id {id} is used by {other} and {path}")));
                }
            }
            let compiled = Project {
                path: path.clone(),
                id: project.id,
                inbound: project.inbound,
                scoped,
                own_project: project.own_project.unwrap_or(ScopeSet::ALL),
            };
            if self.policy.projects.insert(path, compiled).is_some() {
                return Err(errors.at(&raw, format!("project {raw:?} is defined twice")));
            }
        }
        Ok(())
    }
}

fn scoped(
    errors: &Errors<'_>,
    origin: &str,
    elevation: Option<bool>,
    mode: Option<Mode>,
    allow: Vec<AllowDoc>,
    members: Vec<MemberDoc>,
) -> Result<Scoped, PolicyError> {
    let mut list = Allowlist::default();
    for (i, entry) in allow.into_iter().enumerate() {
        let compiled = entry_of(errors, format!("{origin}.allow[{i}] ({})", errors.file.display()), entry)?;
        list.by_source.entry(compiled.from.clone()).or_default().push(list.entries.len());
        list.entries.push(compiled);
    }
    let mut roles = Members::default();
    for member in members {
        match (member.user, member.user_id) {
            (Some(login), None) => {
                if roles.by_login.insert(login.to_ascii_lowercase(), member.role).is_some() {
                    return Err(errors.at(&login, format!("{origin}.members: user {login:?} is listed twice")));
                }
            }
            (None, Some(id)) => {
                if roles.by_id.insert(id, member.role).is_some() {
                    return Err(errors.at(&id.to_string(), format!("{origin}.members: user_id {id} is listed twice")));
                }
            }
            _ => return Err(errors.at("members", format!("{origin}.members: name exactly one of user or user_id"))),
        }
    }
    Ok(Scoped { elevation: elevation.unwrap_or(true), mode, allow: list, members: roles })
}

fn entry_of(errors: &Errors<'_>, origin: String, entry: AllowDoc) -> Result<Entry, PolicyError> {
    let from = ProjectPath::parse(&entry.from)
        .ok_or_else(|| errors.at(&entry.from, format!("allow.from {:?} is not a project or group path", entry.from)))?;
    let environments = match entry.environments {
        None => Environments::Any,
        Some(EnvironmentsDoc::Keyword(_)) => Environments::Protected,
        Some(EnvironmentsDoc::Names(names)) if names.is_empty() => {
            return Err(errors.at("environments", format!("{origin}: environments lists no name")));
        }
        Some(EnvironmentsDoc::Names(names)) => Environments::Named(names.iter().map(|n| Glob::new(n)).collect()),
    };
    // An empty condition list fails closed, like `environments: []`: it is an error, never "any ref".
    if entry.ref_names.as_ref().is_some_and(Vec::is_empty) {
        return Err(errors.at("ref_names", format!("{origin}: ref_names lists no name (omit it for any ref)")));
    }
    Ok(Entry {
        from,
        scopes: entry.scopes,
        refs: entry.refs,
        ref_names: entry.ref_names.iter().flatten().map(|n| Glob::new(n)).collect(),
        ref_type: entry.ref_type,
        environments,
        origin,
    })
}

/// The 1-based line where `key` first appears outside a comment; 0 when not found. serde_yaml
/// reports lines for syntax and type errors only, so semantic errors find theirs here.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            line.split(" #").next().is_some_and(|code| !code.trim_start().starts_with('#') && code.contains(key))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
