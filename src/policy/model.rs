//! The policy file format, exactly as operators write it. Unknown keys, scopes and roles are load
//! errors (serde reports them with the line). Nothing here is used on the request path: `load`
//! compiles these documents into the indexed [`super::Policy`].

use crate::yaml::UniqueMap;
use serde::Deserialize;

use crate::scope::{Role, ScopeSet};

/// One policy file. Several files in the policy folder are merged; each project, group and the
/// instance section may be defined in one file only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub instance: Option<InstanceDoc>,
    #[serde(default)]
    pub groups: UniqueMap<String, GroupDoc>,
    #[serde(default)]
    pub projects: UniqueMap<String, ProjectDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceDoc {
    /// The instance-wide compliance switch for elevation.
    #[serde(default = "yes")]
    pub elevation: bool,
    /// What a job may do in its own project.
    pub own_project: ScopeSet,
    /// What a job may do in another project that admits it.
    pub cross_project: ScopeSet,
    #[serde(default = "yes")]
    pub destructive_requires_protected_ref: bool,
    /// Scopes whose every use is destructive (for example `write_repository`).
    #[serde(default)]
    pub destructive_scopes: ScopeSet,
    /// Overrides of the role → maximum scopes table.
    #[serde(default)]
    pub roles: UniqueMap<Role, ScopeSet>,
    #[serde(default)]
    pub mode: Mode,
    /// Deny when the user's role in the target is known neither from the token nor from `members`
    /// (for upstreams that cannot check the user themselves).
    #[serde(default)]
    pub require_user_ceiling: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDoc {
    /// `false` switches elevation off for every project below the group.
    pub elevation: Option<bool>,
    /// `audit` for every project below the group.
    pub mode: Option<Mode>,
    /// Entries that apply to every project below the group.
    #[serde(default)]
    pub allow: Vec<AllowDoc>,
    /// Users' roles in the group (inherited by every project below).
    #[serde(default)]
    pub members: Vec<MemberDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectDoc {
    pub id: Option<u64>,
    #[serde(default)]
    pub inbound: Inbound,
    #[serde(default)]
    pub allow: Vec<AllowDoc>,
    pub elevation: Option<bool>,
    pub mode: Option<Mode>,
    #[serde(default)]
    pub members: Vec<MemberDoc>,
    /// Narrows the instance's `own_project` baseline for this project's own jobs (never widens it).
    pub own_project: Option<ScopeSet>,
}

/// `enforce` refuses what the policy denies; `audit` logs it as would-deny and lets it pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// Who may reach a project from other projects' jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inbound {
    /// Only the projects and groups named in `allow`.
    #[default]
    Allowlist,
    /// Every project's jobs get the cross-project baseline.
    Open,
}

/// One allowlist entry: admits `from` and grants it `scopes` when every condition holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowDoc {
    /// A project path, or a group path (every project below it).
    pub from: String,
    #[serde(default)]
    pub scopes: ScopeSet,
    #[serde(default)]
    pub refs: Refs,
    /// Ref name globs (`*` any run of characters, `?` one), e.g. `[main, "release/*"]`.
    pub ref_names: Option<Vec<String>>,
    pub ref_type: Option<RefType>,
    /// `protected`, or a list of environment name globs.
    pub environments: Option<EnvironmentsDoc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refs {
    #[default]
    Any,
    /// The grant applies only to jobs on protected refs.
    Protected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefType {
    Branch,
    Tag,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EnvironmentsDoc {
    Keyword(EnvironmentKeyword),
    Names(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentKeyword {
    /// Only jobs deploying to a protected environment.
    Protected,
}

/// A user's role: by login (`user`) or by numeric id (`user_id`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDoc {
    pub user: Option<String>,
    pub user_id: Option<u64>,
    pub role: Role,
}

fn yes() -> bool {
    true
}
