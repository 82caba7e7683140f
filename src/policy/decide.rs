//! `decide`: (policy, classified request, verified claims) → [`Decision`]. Pure: no I/O, no lock,
//! no allocation on the allow path. DESIGN.md §4 in order: admission and baseline, elevation (if
//! enabled at instance, every group above and the project), token and user ceilings, protection.

use super::load::Policy;
use super::model::{Inbound, Refs};
use super::scope::{Scope, ScopeSet};
use crate::classify::{Classified, ProjectRef, Target};
use crate::path::ProjectPath;
use crate::reason::Reason;
use crate::token::claims::Claims;

/// Proof that the policy allowed a request. Only `decide` constructs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    scopes: ScopeSet,
}

impl Permit {
    /// The job's effective scopes on the target.
    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }
}

/// Why the policy said no, and what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub needed: Scope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow(Permit),
    Deny(Denial),
}

/// Decides whether the job behind `claims` may do `request`.
pub fn decide(policy: &Policy, request: &Classified, claims: &Claims) -> Decision {
    let needed = request.scope;
    let deny = |reason| Decision::Deny(Denial { reason, needed });
    let Target::Project(project_ref) = &request.target;
    let Some(target) = resolve(policy, project_ref, claims) else {
        return deny(Reason::UnknownProjectId);
    };
    let instance = &policy.instance;
    let own = *target == claims.project_path;
    let project = policy.projects.get(target);
    let entries = project.map_or(&[][..], |p| p.allow.as_slice());
    let matching = || entries.iter().filter(|e| claims.project_path.is_within(&e.from));

    let admitted = own || project.is_some_and(|p| p.inbound == Inbound::Open) || matching().next().is_some();
    if !admitted {
        return deny(Reason::NotInAllowlist);
    }
    let baseline = if own { instance.own_project } else { instance.cross_project };

    let (mut granted, mut held_back) = (ScopeSet::EMPTY, ScopeSet::EMPTY);
    for entry in matching() {
        if entry.refs == Refs::Protected && !claims.ref_protected {
            held_back = held_back.union(entry.scopes);
        } else {
            granted = granted.union(entry.scopes);
        }
    }
    let elevation = instance.elevation
        && project.is_none_or(|p| p.elevation)
        && target.ancestors().all(|g| policy.groups.get(g).is_none_or(|g| g.elevation));
    let scopes = if elevation { baseline.union(granted) } else { baseline };

    let token_ceiling = claims.scopes.unwrap_or(ScopeSet::ALL);
    // The token states the user's role in its own project only; other targets get theirs from the
    // policy's members (a later step) and otherwise from the upstream's own checks.
    let user_ceiling = match claims.user_access_level {
        Some(role) if own => instance.role_ceiling(role),
        _ => ScopeSet::ALL,
    };
    if !scopes.contains(needed) {
        return deny(if granted.contains(needed) && !elevation {
            Reason::ElevationDisabled
        } else if held_back.contains(needed) {
            Reason::RefNotProtected
        } else {
            Reason::ScopeNotGranted
        });
    }
    if !token_ceiling.contains(needed) {
        return deny(Reason::TokenCeiling);
    }
    if !user_ceiling.contains(needed) {
        return deny(Reason::UserCeiling);
    }
    let destructive = request.destructive || instance.destructive_scopes.contains(needed);
    if destructive && instance.destructive_requires_protected_ref && !claims.ref_protected {
        return deny(Reason::RefNotProtected);
    }
    Decision::Allow(Permit { scopes: scopes.intersect(token_ceiling).intersect(user_ceiling) })
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
