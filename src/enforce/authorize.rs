//! The policy's ruling for a verified job: `decide` with the user's role in the target (from
//! GitLab's answers, when jobgate may ask), plus what registry requests add — a registry token must
//! grant the action, and a cross-repository mount must be allowed to pull from its source. Pure.

use crate::classify::{Action, Classified, ProjectRef, Target};
use crate::policy::decide::{decide_with_role, Decision, Trace};
use crate::policy::Permit;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::scope::Scope;
use crate::snapshot::Snapshot;
use crate::token::claims::Claims;
use crate::token::gitlab::{ApiProject, JobIdentities, RoleKey};
use crate::token::registry::{grants, Access};

use super::{Disposition, Routed, Summary};

/// The policy's answer for one classified request.
#[derive(Debug)]
pub enum Ruling {
    Allow(Permit),
    /// `enforced: false` is a would-deny (`mode: audit`).
    Deny {
        refusal: Refusal,
        enforced: bool,
    },
}

impl Ruling {
    pub fn summary(&self) -> Summary {
        match self {
            Ruling::Allow(permit) => {
                Summary { disposition: Disposition::Allow, enforced: true, reason: permit.reason() }
            }
            Ruling::Deny { refusal, enforced } => {
                Summary { disposition: Disposition::Deny, enforced: *enforced, reason: refusal.reason() }
            }
        }
    }
}

/// Where GitLab must say the user's role before `authorize`: a project other than the job's own,
/// for a job GitLab verified, when jobgate may ask (it holds an API token). Image, group and instance
/// targets keep the policy's `members`.
pub(super) fn role_key(
    snapshot: &Snapshot,
    gitlab: &JobIdentities,
    request: &Classified,
    claims: &Claims,
) -> Option<RoleKey> {
    if !gitlab.asks_roles_for(claims) {
        return None;
    }
    let user = claims.user_id?;
    let project = match &request.target {
        Target::Project(ProjectRef::Id(id)) if *id != claims.project_id => ApiProject::Id(*id),
        Target::Project(ProjectRef::Path(path)) if *path != claims.project_path => {
            match snapshot.policy.projects.get(path).and_then(|p| p.id) {
                Some(id) => ApiProject::Id(id),
                None => ApiProject::Path(path.clone()),
            }
        }
        _ => return None,
    };
    Some(RoleKey { project, user })
}

/// The policy decision for a verified job, plus what registry requests add: a registry token must
/// grant the action, and a cross-repository mount must also be allowed to pull from its source.
/// `roles` (GitLab's answers, at `now`) give the user's role in another target project, when known.
pub fn authorize<T: Trace>(
    snapshot: &Snapshot,
    routed: &Routed,
    claims: &Claims,
    access: Option<&[Access]>,
    roles: Option<(&JobIdentities, i64)>,
    trace: &mut T,
) -> Ruling {
    // The token names its project twice; the policy's ids resolve API requests, so both must agree.
    if snapshot.policy.projects.get(&claims.project_path).and_then(|p| p.id).is_some_and(|id| id != claims.project_id) {
        trace.note(|| {
            format!("token: project_id {} is not the policy's id for {}", claims.project_id, claims.project_path)
        });
        let refusal = Refusal::new(
            Reason::ProjectIdMismatch,
            format!("the token's project_id is not the policy's id for {}", claims.project_path),
        );
        return Ruling::Deny { refusal, enforced: true };
    }
    let ruling = authorize_one(snapshot, &routed.request, claims, access, roles, trace);
    let (Ruling::Allow(_), Some(from)) = (&ruling, &routed.mount_from) else { return ruling };
    trace.note(|| format!("mount: the source image {from} must be readable too"));
    let pull = Classified {
        target: Target::Image(from.clone()),
        action: Action::Read,
        scope: Scope::ReadRegistry,
        destructive: false,
        ..routed.request.clone()
    };
    match authorize_one(snapshot, &pull, claims, access, roles, trace) {
        Ruling::Allow(_) => ruling,
        refused => refused,
    }
}

fn authorize_one<T: Trace>(
    snapshot: &Snapshot,
    request: &Classified,
    claims: &Claims,
    access: Option<&[Access]>,
    roles: Option<(&JobIdentities, i64)>,
    trace: &mut T,
) -> Ruling {
    if let (Some(access), Target::Image(name)) = (access, &request.target) {
        let action = match (request.action, request.destructive) {
            (Action::Read, _) => "pull",
            (Action::Write, false) => "push",
            (Action::Write, true) => "delete",
        };
        if !grants(access, name.as_str(), action) {
            trace.note(|| format!("registry token: does not grant {action} on {name}"));
            let refusal = Refusal::new(
                Reason::RegistryScopeMissing,
                format!("the registry token does not grant {action} on {name}"),
            );
            return Ruling::Deny { refusal, enforced: true };
        }
    }
    let target_role = roles
        .and_then(|(gitlab, now)| role_key(snapshot, gitlab, request, claims).and_then(|key| gitlab.role(&key, now)))
        .flatten();
    if let Some(role) = target_role {
        trace.note(|| format!("user role in the target, from GitLab: {role}"));
    }
    match decide_with_role(&snapshot.policy, request, claims, target_role, trace) {
        Decision::Allow(permit) => Ruling::Allow(permit),
        Decision::Deny(denial) => {
            Ruling::Deny { refusal: Refusal::denied(&denial, claims, request), enforced: denial.enforced }
        }
    }
}
