//! `decide`: (policy, classified request, verified claims) → [`Decision`]. Pure: no I/O, no lock,
//! no allocation. DESIGN.md §4 in order: admission and baseline, elevation (if enabled at instance,
//! every group above and the project), token and user ceilings, protection. `decide_traced` runs the
//! same code and narrates each step for `jobgate explain`; the silent [`NoTrace`] compiles away.

use super::load::{Entry, Environments, Policy, Project, Scoped};
use super::model::{Inbound, Mode, RefType, Refs};
use crate::classify::{Classified, ProjectRef, Target};
use crate::path::ProjectPath;
use crate::reason::Reason;
use crate::scope::{Scope, ScopeSet};
use crate::token::claims::Claims;

/// Proof that the policy allowed a request. Only `decide` constructs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    scopes: ScopeSet,
    reason: Reason,
}

impl Permit {
    /// The job's effective scopes on the target.
    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }

    /// `granted`, or `granted_via_own_project` for group- and instance-level reads.
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

/// Why the policy said no, what was asked, and whether the refusal is enforced (`mode: audit` lets
/// the request pass and only records the would-deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub needed: Scope,
    pub enforced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow(Permit),
    Deny(Denial),
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Allow(permit) => permit.reason,
            Decision::Deny(denial) => denial.reason,
        }
    }
}

/// Receives the narration of a decision.
pub trait Trace {
    const ON: bool;
    fn note(&mut self, line: impl FnOnce() -> String);
}

/// No narration: every `note` is compiled out.
pub struct NoTrace;

impl Trace for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn note(&mut self, _line: impl FnOnce() -> String) {}
}

impl Trace for Vec<String> {
    const ON: bool = true;
    fn note(&mut self, line: impl FnOnce() -> String) {
        self.push(line());
    }
}

/// Decides whether the job behind `claims` may do `request`.
pub fn decide(policy: &Policy, request: &Classified, claims: &Claims) -> Decision {
    decide_traced(policy, request, claims, &mut NoTrace)
}

/// What the project and every group above it contribute, gathered in one pass.
struct Gathered {
    admitted_by_entry: bool,
    granted: ScopeSet,
    held_back: ScopeSet,
    /// Why the first entry that would have granted the needed scope held it back.
    held_reason: Option<Reason>,
    elevation: bool,
    /// The nearest `mode` written (the project's, else the closest group's).
    mode: Option<Mode>,
    member_role: Option<crate::scope::Role>,
}

/// [`decide`], narrating each step into `trace`.
pub fn decide_traced<T: Trace>(policy: &Policy, request: &Classified, claims: &Claims, trace: &mut T) -> Decision {
    decide_with_role(policy, request, claims, None, trace)
}

/// [`decide_traced`], with the user's role in the target project as the platform (GitLab) states it:
/// when known, it is the user ceiling on another project instead of the policy's `members`.
pub fn decide_with_role<T: Trace>(
    policy: &Policy,
    request: &Classified,
    claims: &Claims,
    target_role: Option<crate::scope::Role>,
    trace: &mut T,
) -> Decision {
    let needed = request.scope;
    let instance = &policy.instance;
    let project_ref = match &request.target {
        Target::Project(project_ref) => project_ref,
        Target::OwnJob => {
            trace.note(|| "target: the job's own record: any valid token".to_owned());
            return Decision::Allow(Permit { scopes: claims.scopes.unwrap_or(ScopeSet::ALL), reason: Reason::Granted });
        }
        Target::Group(_) | Target::Instance => return decide_unresolved(policy, request, claims, trace),
        Target::Image(name) => {
            let project = image_project(policy, name, claims);
            trace.note(|| format!("target: {} belongs to project {project}", request.target));
            let resolved = Classified { target: Target::Project(ProjectRef::Path(project)), ..request.clone() };
            return decide_traced(policy, &resolved, claims, trace);
        }
    };
    let Some(target) = resolve(policy, project_ref, claims) else {
        trace.note(|| format!("target: {} is in neither the policy nor the token", request.target));
        return Decision::Deny(Denial { reason: Reason::UnknownProjectId, needed, enforced: !instance.audit });
    };
    let source = &claims.project_path;
    let own = target == source;
    let project = policy.projects.get(target);
    trace.note(|| match project {
        Some(p) => format!("target {target}: in the policy, inbound {:?}", p.inbound),
        None => format!("target {target}: not in the policy (closed to other projects)"),
    });
    let g = gather(policy, target, project, claims, needed, trace);
    let audit = g.mode.map_or(instance.audit, |mode| mode == Mode::Audit);
    let deny = |reason| Decision::Deny(Denial { reason, needed, enforced: !audit });

    let open = project.is_some_and(|p| p.inbound == Inbound::Open);
    trace.note(|| match (own, open, g.admitted_by_entry) {
        (true, _, _) => format!("admission: {source} is the job's own project"),
        (_, true, _) => "admission: the project is open to every project".to_owned(),
        (_, _, true) => format!("admission: an allowlist entry names {source} or a group above it"),
        _ => format!("admission: nothing admits {source}"),
    });
    if !(own || open || g.admitted_by_entry) {
        return deny(Reason::NotInAllowlist);
    }
    let baseline = if own {
        instance.own_project.intersect(project.map_or(ScopeSet::ALL, |p| p.own_project))
    } else {
        instance.cross_project
    };
    trace.note(|| format!("baseline ({}): [{baseline}]", if own { "own project" } else { "cross project" }));
    let elevation = instance.elevation && g.elevation;
    trace.note(|| {
        format!(
            "elevation: {} (instance {}, groups and project {})",
            on(elevation),
            on(instance.elevation),
            on(g.elevation)
        )
    });
    let scopes = if elevation { baseline.union(g.granted) } else { baseline };
    trace.note(|| format!("granted by entries: [{}]; held back by conditions: [{}]", g.granted, g.held_back));

    let token_ceiling = claims.scopes.unwrap_or(ScopeSet::ALL);
    let role = if own { claims.user_access_level.or(g.member_role) } else { target_role.or(g.member_role) };
    let user_ceiling = role.map_or(ScopeSet::ALL, |r| instance.role_ceiling(r));
    trace.note(|| format!("token ceiling: {}", claims.scopes.map_or("none".to_owned(), |s| format!("[{s}]"))));
    trace.note(|| match role {
        Some(r) => format!("user ceiling: {r:?} → [{user_ceiling}]"),
        None => "user ceiling: role unknown (the upstream checks the user)".to_owned(),
    });
    trace.note(|| {
        format!("effective scopes: [{}]; needed: {needed}", scopes.intersect(token_ceiling).intersect(user_ceiling))
    });
    if !scopes.contains(needed) {
        return deny(if g.granted.contains(needed) && !elevation {
            Reason::ElevationDisabled
        } else if g.held_back.contains(needed) {
            g.held_reason.unwrap_or(Reason::ConditionNotMet)
        } else {
            Reason::ScopeNotGranted
        });
    }
    if !token_ceiling.contains(needed) {
        return deny(Reason::TokenCeiling);
    }
    if role.is_none() && instance.require_user_ceiling {
        return deny(Reason::UserRoleUnknown);
    }
    if !user_ceiling.contains(needed) {
        return deny(Reason::UserCeiling);
    }
    let destructive = request.destructive || instance.destructive_scopes.contains(needed);
    trace.note(|| format!("destructive: {destructive}; ref protected: {}", claims.ref_protected));
    if destructive && instance.destructive_requires_protected_ref && !claims.ref_protected {
        return deny(Reason::RefNotProtected);
    }
    Decision::Allow(Permit { scopes: scopes.intersect(token_ceiling).intersect(user_ceiling), reason: Reason::Granted })
}

/// A group or the whole instance: no single project to decide on. Reads pass when the job holds the
/// needed scope on its own project (the upstream still applies its visibility rules); writes are denied.
fn decide_unresolved<T: Trace>(policy: &Policy, request: &Classified, claims: &Claims, trace: &mut T) -> Decision {
    let needed = request.scope;
    let deny = |reason| Decision::Deny(Denial { reason, needed, enforced: !policy.instance.audit });
    if request.action != crate::classify::Action::Read {
        trace.note(|| format!("target: {}: writes need a single project; denied", request.target));
        return deny(Reason::UnresolvedTarget);
    }
    trace.note(|| {
        format!("target: {}: a read; decided on the job's own project, visibility is the upstream's", request.target)
    });
    let own = Classified { target: Target::Project(ProjectRef::Path(claims.project_path.clone())), ..request.clone() };
    match decide_traced(policy, &own, claims, trace) {
        Decision::Allow(permit) => Decision::Allow(Permit { reason: Reason::GrantedViaOwnProject, ..permit }),
        denied => denied,
    }
}

/// One pass over the project and every group above it: matching entries, switches, modes, members.
fn gather<T: Trace>(
    policy: &Policy,
    target: &ProjectPath,
    project: Option<&Project>,
    claims: &Claims,
    needed: Scope,
    trace: &mut T,
) -> Gathered {
    let mut g = Gathered {
        admitted_by_entry: false,
        granted: ScopeSet::EMPTY,
        held_back: ScopeSet::EMPTY,
        held_reason: None,
        elevation: true,
        mode: None,
        member_role: None,
    };
    let levels = project.map(|p| (p.path.as_str(), &p.scoped)).into_iter().chain(
        target.ancestors().filter_map(|a| policy.groups.get(a).map(|group| (group.path.as_str(), &group.scoped))),
    );
    // Nearest first: the project, then each group upward.
    for (name, scoped) in levels {
        visit(&mut g, name, scoped, claims, needed, trace);
    }
    g
}

fn visit<T: Trace>(g: &mut Gathered, name: &str, scoped: &Scoped, claims: &Claims, needed: Scope, trace: &mut T) {
    g.elevation &= scoped.elevation;
    g.mode = g.mode.or(scoped.mode);
    g.member_role = g.member_role.max(scoped.members.role(claims.user_login.as_deref(), claims.user_id));
    if T::ON {
        let mode = match scoped.mode {
            Some(Mode::Audit) => "audit",
            Some(Mode::Enforce) => "enforce",
            None => "not set",
        };
        trace.note(|| format!("{name}: elevation {}, mode {mode}", on(scoped.elevation)));
        for entry in &scoped.allow.entries {
            if !claims.project_path.is_within(&entry.from) {
                trace
                    .note(|| format!("  {}: from {} does not match {}", entry.origin, entry.from, claims.project_path));
            }
        }
    }
    for entry in scoped.allow.matching(&claims.project_path) {
        g.admitted_by_entry = true;
        match unmet(entry, claims) {
            None => {
                trace.note(|| format!("  {}: from {} grants [{}]", entry.origin, entry.from, entry.scopes));
                g.granted = g.granted.union(entry.scopes);
            }
            Some(reason) => {
                trace.note(|| {
                    format!(
                        "  {}: from {} admits, but holds back [{}]: {reason}",
                        entry.origin, entry.from, entry.scopes
                    )
                });
                if entry.scopes.contains(needed) && g.held_reason.is_none() {
                    g.held_reason = Some(reason);
                }
                g.held_back = g.held_back.union(entry.scopes);
            }
        }
    }
}

/// The first condition of `entry` the job does not meet, if any.
fn unmet(entry: &Entry, claims: &Claims) -> Option<Reason> {
    if entry.refs == Refs::Protected && !claims.ref_protected {
        return Some(Reason::RefNotProtected);
    }
    let git_ref = claims.git_ref.as_deref().unwrap_or("");
    if !entry.ref_names.is_empty() && !entry.ref_names.iter().any(|g| g.matches(git_ref)) {
        return Some(Reason::ConditionNotMet);
    }
    let ref_type_ok = match entry.ref_type {
        None => true,
        Some(RefType::Branch) => claims.ref_type.as_deref() == Some("branch"),
        Some(RefType::Tag) => claims.ref_type.as_deref() == Some("tag"),
    };
    let environment_ok = match &entry.environments {
        Environments::Any => true,
        Environments::Protected => claims.environment.is_some() && claims.environment_protected,
        Environments::Named(names) => claims.environment.as_deref().is_some_and(|e| names.iter().any(|g| g.matches(e))),
    };
    (!ref_type_ok || !environment_ok).then_some(Reason::ConditionNotMet)
}

fn on(flag: bool) -> &'static str {
    if flag {
        "on"
    } else {
        "off"
    }
}

/// The project an image name belongs to: the longest prefix (the name itself, or without one or two
/// trailing components, as GitLab allows) that is the job's project or a project in the policy;
/// otherwise the whole name (a project nobody admits into).
fn image_project(policy: &Policy, name: &ProjectPath, claims: &Claims) -> ProjectPath {
    std::iter::once(name.as_str())
        .chain(name.ancestors().take(2))
        .find(|candidate| *candidate == claims.project_path.as_str() || policy.projects.contains_key(*candidate))
        .and_then(ProjectPath::parse)
        .unwrap_or_else(|| name.clone())
}

/// A project path for the request's target: paths as they are, ids through the token and the policy.
fn resolve<'a>(policy: &'a Policy, target: &'a ProjectRef, claims: &'a Claims) -> Option<&'a ProjectPath> {
    match target {
        ProjectRef::Path(path) => Some(path),
        ProjectRef::Id(id) if *id == claims.project_id => Some(&claims.project_path),
        ProjectRef::Id(id) => policy.ids.get(id),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
