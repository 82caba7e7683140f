//! Loads every `*.yaml` in the policy folder, validates it and compiles one indexed [`Policy`].
//! Every error names the file and line. A folder that fails to load never replaces a running policy:
//! this file only builds; swapping is the caller's business.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::model::{Inbound, PolicyDoc, Refs};
use super::scope::{Role, Scope, ScopeSet};
use crate::config::{parse_yaml, ConfigError};
use crate::path::ProjectPath;

/// A policy load error: file, line (0 when unknown) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct PolicyError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

/// Instance-wide settings.
#[derive(Debug, Clone)]
pub struct Instance {
    pub elevation: bool,
    pub own_project: ScopeSet,
    pub cross_project: ScopeSet,
    pub destructive_requires_protected_ref: bool,
    pub destructive_scopes: ScopeSet,
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
            own_project: [ReadRepository, ReadRegistry, WriteRegistry, ReadPackageRegistry, ReadApi].into_iter().collect(),
            cross_project: [ReadRepository, ReadRegistry, ReadPackageRegistry].into_iter().collect(),
            destructive_requires_protected_ref: true,
            destructive_scopes: ScopeSet::EMPTY,
            role_ceilings: ROLES.map(Role::default_ceiling),
        }
    }
}

const ROLES: [Role; 5] = [Role::Guest, Role::Reporter, Role::Developer, Role::Maintainer, Role::Owner];

#[derive(Debug, Clone)]
pub struct Group {
    pub elevation: bool,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub inbound: Inbound,
    pub allow: Vec<Entry>,
    pub elevation: bool,
}

/// A compiled allowlist entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub from: ProjectPath,
    pub scopes: ScopeSet,
    pub refs: Refs,
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
        let error = |path: &Path, message: String| PolicyError { path: path.to_owned(), line: 0, message };
        let entries = std::fs::read_dir(dir).map_err(|e| error(dir, format!("cannot read policy folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut builder = Builder::default();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| error(file, format!("cannot read: {e}")))?;
            builder.add(file, &text)?;
        }
        let mut policy = builder.policy;
        policy.files = files;
        Ok(policy)
    }

    /// Parses one policy document (tests, `jobgate check` on a single file).
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

impl Builder {
    fn add(&mut self, file: &Path, text: &str) -> Result<(), PolicyError> {
        let doc: PolicyDoc = parse_yaml(file, text).map_err(|e| match e {
            ConfigError::Parse { path, line, message } => PolicyError { path, line, message },
            other => PolicyError { path: file.to_owned(), line: 0, message: other.to_string() },
        })?;
        let fail = |key: &str, message: String| PolicyError { path: file.to_owned(), line: line_of(text, key), message };

        if let Some(instance) = doc.instance {
            if let Some(first) = &self.instance_from {
                return Err(fail("instance", format!("instance is already defined in {}", first.display())));
            }
            self.instance_from = Some(file.to_owned());
            let mut role_ceilings = ROLES.map(Role::default_ceiling);
            for (role, scopes) in instance.roles {
                role_ceilings[role as usize] = scopes;
            }
            self.policy.instance = super::load::Instance {
                elevation: instance.elevation,
                own_project: instance.own_project,
                cross_project: instance.cross_project,
                destructive_requires_protected_ref: instance.destructive_requires_protected_ref,
                destructive_scopes: instance.destructive_scopes,
                role_ceilings,
            };
        }
        for (raw, group) in doc.groups {
            let path = ProjectPath::parse(&raw).ok_or_else(|| fail(&raw, format!("{raw:?} is not a group path")))?;
            if self.policy.groups.insert(path, Group { elevation: group.elevation.unwrap_or(true) }).is_some() {
                return Err(fail(&raw, format!("group {raw:?} is defined twice")));
            }
        }
        for (raw, project) in doc.projects {
            let path = ProjectPath::parse(&raw).ok_or_else(|| fail(&raw, format!("{raw:?} is not a project path")))?;
            let mut allow = Vec::with_capacity(project.allow.len());
            for entry in project.allow {
                let from = ProjectPath::parse(&entry.from).ok_or_else(|| {
                    fail(&entry.from, format!("allow.from {:?} is not a project or group path", entry.from))
                })?;
                allow.push(Entry { from, scopes: entry.scopes, refs: entry.refs });
            }
            if let Some(id) = project.id {
                if let Some(other) = self.policy.ids.insert(id, path.clone()) {
                    return Err(fail(&raw, format!("project id {id} is used by {other} and {path}")));
                }
            }
            let compiled = Project { inbound: project.inbound, allow, elevation: project.elevation.unwrap_or(true) };
            if self.policy.projects.insert(path, compiled).is_some() {
                return Err(fail(&raw, format!("project {raw:?} is defined twice")));
            }
        }
        Ok(())
    }
}

/// The 1-based line where `key` first appears as a map key or value; 0 when not found. serde_yaml
/// reports lines for syntax and type errors only, so semantic errors find theirs here.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            let t = t.strip_prefix("from:").map_or(t, str::trim_start);
            let t = t.trim_start_matches(['"', '\'']);
            t.starts_with(key)
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_yaml(Path::new("p.yaml"), text)
    }

    #[test]
    fn defaults_without_instance_section() {
        let p = load("projects:\n  acme/app: {id: 42}\n").unwrap();
        assert!(p.instance.own_project.contains(Scope::WriteRegistry));
        assert!(!p.instance.cross_project.contains(Scope::WriteRegistry));
        assert_eq!(p.ids.get(&42).map(ProjectPath::as_str), Some("acme/app"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("projects:\n  acme/app:\n    allow:\n      - from: acme/lib\n        scopes: [root]\n", 5, "unknown variant `root`"),
            ("projects:\n  acme/app:\n    inbund: open\n", 3, "unknown field `inbund`"),
            ("projects:\n  acme/app:\n    allow:\n      - from: acme/../lib\n", 4, "not a project or group path"),
            ("groups:\n  \"acme//x\": {}\n", 2, "not a group path"),
            ("projects:\n  a/b: {id: 1}\n  a/c: {id: 1}\n", 3, "project id 1 is used"),
            ("instance:\n  own_project: [read_api]\n  cross_project: []\n  roles: {admin: []}\n", 4, "unknown variant `admin`"),
        ];
        for (text, line, message) in cases {
            let err = load(text).unwrap_err();
            assert_eq!(err.line, line, "{err}");
            assert!(err.to_string().contains(message), "{err}");
            assert!(err.to_string().starts_with("p.yaml:"), "{err}");
        }
    }

    #[test]
    fn folder_merge_refuses_double_definitions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "projects:\n  acme/app: {}\n").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "groups: {}\nprojects:\n  Acme/App: {}\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let err = Policy::load_dir(dir.path()).unwrap_err();
        assert!(err.path.ends_with("b.yaml") && err.line == 3, "{err}");
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        assert_eq!(Policy::load_dir(dir.path()).unwrap().files.len(), 1);
    }
}
