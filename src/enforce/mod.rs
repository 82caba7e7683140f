//! `enforce`: THE decision path — classify → extract → verify → decide — for one request,
//! synchronously and without I/O, against one policy snapshot, the issuers' key sets and the
//! revocation set. What it cannot know — a fresh key set, GitLab's answer for its job token or a
//! user's role, an LFS batch body — it says it needs ([`Step::Need`]) instead of refusing, and the
//! edge's one driver (`edge/drive.rs`) meets the need and asks again. The proxy path, the registry
//! token realms (`realm.rs`), `jobgate explain` (`explain.rs`) and the policy tests of `jobgate
//! check` (`expect.rs`) all call these functions; none of them composes the stages itself.
//! [`enforce`] narrates into a [`Trace`]; with [`NoTrace`] the narration compiles away.

mod authenticate;
mod authorize;
pub mod elevate;
pub mod expect;
pub mod explain;
mod need;
pub mod realm;

pub use authenticate::{authenticate, Authenticated, Job, JobCredential, Presented};
use authorize::role_key;
pub use authorize::{authorize, Ruling};
pub(crate) use need::decided;
pub use need::{Known, Need, Step};

use http::request::Parts;
use http::{header, Version};

use crate::classify::{classify_with_mount, lfs, Action, Classified, Family, FamilyMap, Target, Unmatched};
use crate::config::{ApiRoute, Config, NonJob};
use crate::path::ProjectPath;
pub use crate::policy::decide::{NoTrace, Trace};
use crate::policy::Permit;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::revoke::RevocationSet;
use crate::snapshot::Snapshot;
use crate::token::claims::Claims;
use crate::token::gitlab::JobIdentities;
use crate::token::registry::RegistryTokens;
use crate::token::verify::{VerifiedClaims, Verifier};

/// Everything a decision reads, borrowed for one request.
#[derive(Clone, Copy)]
pub struct Core<'a> {
    pub snapshot: &'a Snapshot,
    pub verifier: &'a Verifier,
    pub revocations: &'a RevocationSet,
    /// jobgate's own registry token issuer, when the registry family is configured.
    pub registry: Option<&'a RegistryTokens>,
    /// GitLab's answers about its own job tokens, when a `gitlab_job_tokens` issuer is configured.
    pub gitlab: Option<&'a JobIdentities>,
    pub non_job: &'a NonJobRules,
}

/// A classified request and, for a cross-repository registry mount, the image it reads from.
#[derive(Debug, Clone)]
pub struct Routed {
    pub request: Classified,
    pub mount_from: Option<ProjectPath>,
}

/// What `enforce` concluded.
#[derive(Debug)]
pub enum Verdict {
    /// A verified job and the policy's permit.
    Allow(VerifiedClaims, Permit),
    /// The policy denies, but in `mode: audit`: forwarded, and recorded as a would-deny.
    WouldDeny(VerifiedClaims, Refusal),
    /// Not job traffic, on a route that passes it to the upstream untouched.
    Passthrough,
    Refuse(Refusal, Option<VerifiedClaims>),
}

/// Everything `enforce` learned, for forwarding and for the record.
#[derive(Debug)]
pub struct Enforced {
    /// `None` when the request matched no known endpoint.
    pub request: Option<Classified>,
    pub verdict: Verdict,
    /// How verification went, when a credential reached a verifier.
    pub verified: Option<VerifyStats>,
    /// The kind of credential that proved the job, when one did.
    pub credential: Option<JobCredential>,
}

/// One verification, for the metrics the edge keeps (the edge times the decision that made it).
#[derive(Debug, Clone, Copy)]
pub struct VerifyStats {
    /// Some(true) for a cache hit, Some(false) for a miss, None for a registry token (never cached).
    pub cached: Option<bool>,
}

/// allow, passthrough or deny: the audit line's `decision` and the metrics' `decision` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Allow,
    Passthrough,
    Deny,
}

impl Disposition {
    pub fn id(self) -> &'static str {
        match self {
            Disposition::Allow => "allow",
            Disposition::Passthrough => "passthrough",
            Disposition::Deny => "deny",
        }
    }
}

/// A decision in the terms every consumer compares: serve's record, `explain`, the policy tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub disposition: Disposition,
    /// False for a would-deny in `mode: audit`.
    pub enforced: bool,
    pub reason: Reason,
}

impl Summary {
    /// A refusal's summary: denied, enforced.
    pub fn refused(refusal: &Refusal) -> Summary {
        Summary { disposition: Disposition::Deny, enforced: true, reason: refusal.reason() }
    }

    /// A refusal for want of any credential: the usual first round trip of git, npm and docker,
    /// which send their credential only when asked.
    pub fn is_challenge(&self) -> bool {
        self.disposition == Disposition::Deny && self.reason == Reason::MissingCredential
    }

    /// The decision as audit lines, metrics and `explain --json` name it: `allow`, `passthrough`,
    /// `deny`, or `challenge` (kept apart so that denial rates mean denials).
    pub fn decision(&self) -> &'static str {
        if self.is_challenge() {
            "challenge"
        } else {
            self.disposition.id()
        }
    }
}

impl Verdict {
    pub fn summary(&self) -> Summary {
        let (disposition, enforced, reason) = match self {
            Verdict::Allow(_, permit) => (Disposition::Allow, true, permit.reason()),
            Verdict::WouldDeny(_, refusal) => (Disposition::Deny, false, refusal.reason()),
            Verdict::Passthrough => (Disposition::Passthrough, true, Reason::NonJobPassthrough),
            Verdict::Refuse(refusal, _) => (Disposition::Deny, true, refusal.reason()),
        };
        Summary { disposition, enforced, reason }
    }

    pub fn claims(&self) -> Option<&VerifiedClaims> {
        match self {
            Verdict::Allow(claims, _) | Verdict::WouldDeny(claims, _) | Verdict::Refuse(_, Some(claims)) => {
                Some(claims)
            }
            Verdict::Passthrough | Verdict::Refuse(_, None) => None,
        }
    }
}

/// Classifies, extracts, verifies and decides one request at `now` (seconds since the epoch), with
/// what the driver has learned so far (`known`): decided, or what it needs first — a refetch of the
/// issuer's keys, GitLab's answer for its job token or the user's role, a verified job's LFS batch
/// body (only a verified job's body is ever read).
pub fn enforce<T: Trace>(core: &Core<'_>, parts: &Parts, known: &Known, now: i64, trace: &mut T) -> Step<Enforced> {
    let routed = classify_request(core.snapshot, parts, known.batch);
    let family = routed.as_ref().ok().map(|r| r.request.family);
    let mut verified = None;
    let authenticated = match check_target(parts) {
        Ok(()) => {
            decided!(authenticate(core, parts, core.non_job.for_family(family), family, known, now, &mut verified))
        }
        Err(refusal) => Err(refusal),
    };
    let job = match authenticated {
        Ok(Authenticated::Job(job)) => job,
        other => {
            narrate_classified(&routed, trace);
            let verdict = match other {
                Err(refusal) => {
                    trace.note(|| format!("credential: refused: {}", refusal.message));
                    Verdict::Refuse(refusal, None)
                }
                _ => {
                    trace.note(|| "credential: not a job token; passed through (non_job: passthrough)".to_owned());
                    Verdict::Passthrough
                }
            };
            let request = routed.ok().map(|r| r.request);
            return Step::Decided(Enforced { request, verdict, verified, credential: None });
        }
    };
    if let Ok(r) = &routed {
        if known.batch.is_none() && r.request.family == Family::Lfs && lfs::is_batch(&parts.method, parts.uri.path()) {
            return Step::Need(Need::LfsBatch { request: r.request.clone(), claims: job.claims });
        }
    }
    if let (Some(gitlab), Ok(r)) = (core.gitlab, &routed) {
        if let Some(key) = role_key(core.snapshot, gitlab, &r.request, job.claims.claims()) {
            if gitlab.role(&key, now).is_none() {
                return Step::Need(Need::Role(key));
            }
        }
    }
    narrate_classified(&routed, trace);
    trace.note(|| describe(job.claims.claims()));
    let roles = core.gitlab.map(|g| (g, now));
    let verdict = match &routed {
        Err(unmatched) => Verdict::Refuse(Refusal::from(*unmatched), Some(job.claims)),
        Ok(routed) => {
            match authorize(core.snapshot, routed, job.claims.claims(), job.access.as_deref(), roles, trace) {
                Ruling::Allow(permit) => Verdict::Allow(job.claims, permit),
                Ruling::Deny { refusal, enforced: true } => Verdict::Refuse(refusal, Some(job.claims)),
                Ruling::Deny { refusal, enforced: false } => Verdict::WouldDeny(job.claims, refusal),
            }
        }
    };
    let request = routed.ok().map(|r| r.request);
    Step::Decided(Enforced { request, verdict, verified, credential: Some(job.credential) })
}

fn narrate_classified<T: Trace>(routed: &Result<Routed, Unmatched>, trace: &mut T) {
    trace.note(|| match routed {
        Ok(Routed { request: r, mount_from }) => format!(
            "classified: family {} action {} scope {} target {} destructive {}{}",
            r.family.id(),
            r.action.id(),
            r.scope,
            r.target,
            r.destructive,
            mount_from.as_ref().map_or(String::new(), |from| format!(" (mounts from {from})")),
        ),
        Err(unmatched) => format!("classified: unmatched ({}): job tokens are denied", unmatched.why),
    });
}

/// Classification with everything the config adds: the endpoint table, the API routes the config
/// opens, and an LFS batch's peeked operation.
///
/// # Errors
/// [`Unmatched`] for shapes outside the table that no API route opens.
pub fn classify_request(
    snapshot: &Snapshot,
    parts: &Parts,
    batch: Option<lfs::BatchOperation>,
) -> Result<Routed, Unmatched> {
    let (method, path) = (&parts.method, parts.uri.path());
    let registry_path = crate::classify::is_registry_path(path);
    match snapshot.hosts.role(parts) {
        Some(crate::classify::HostRole::GitLab) if registry_path => {
            return Err(Unmatched { why: "on the GitLab host, /v2/ and /jwt/auth are GitLab's dependency proxy, which jobgate does not decide" });
        }
        Some(crate::classify::HostRole::Registry) if !registry_path => {
            return Err(Unmatched { why: "the registry host serves the container registry only" })
        }
        _ => {}
    }
    let mut routed = match classify_with_mount(method, path, parts.uri.query()) {
        Ok((request, mount_from)) => Routed { request, mount_from },
        Err(unmatched) => {
            Routed { request: opened_api_route(&snapshot.api_routes, parts).ok_or(unmatched)?, mount_from: None }
        }
    };
    // A batch is an upload until its body says `download`: the body may narrow the path's answer,
    // never widen it.
    if let (Some(lfs::BatchOperation(Action::Read)), Target::Project(project)) = (batch, &routed.request.target) {
        if routed.request.family == Family::Lfs && lfs::is_batch(method, path) {
            routed.request = lfs::lfs(project.clone(), Action::Read);
        }
    }
    Ok(routed)
}

/// The verified token in plain words, for `explain` (never the token itself).
fn describe(c: &Claims) -> String {
    let or = |value: Option<String>, none: &str| value.unwrap_or_else(|| none.to_owned());
    let user = match (&c.user_login, c.user_id) {
        (Some(login), Some(id)) => format!("{login} (id {id})"),
        (Some(login), None) => login.to_string(),
        (None, Some(id)) => format!("id {id}"),
        (None, None) => "unknown".to_owned(),
    };
    let git_ref = c.git_ref.as_ref().map(|r| {
        let kind = c.ref_type.as_deref().map_or(String::new(), |t| format!("{t} "));
        format!("{kind}{r}, {}", if c.ref_protected { "protected" } else { "not protected" })
    });
    let environment = c
        .environment
        .as_ref()
        .map(|e| format!("{e}, {}", if c.environment_protected { "protected" } else { "not protected" }));
    format!(
        "token: issuer {}, project {} (id {}), job {}, user {user}, role {}, ref {}, environment {}, scopes {}",
        c.iss,
        c.project_path,
        c.project_id,
        c.job_id,
        or(c.user_access_level.map(|r| r.to_string()), "not in the token"),
        or(git_ref, "none"),
        or(environment, "none"),
        or(c.scopes.map(|s| format!("[{s}]")), "not limited by the token"),
    )
}

/// An API endpoint the config opens to job tokens: an exact path match, decided on the job's own
/// project (the target is the instance).
fn opened_api_route(routes: &[ApiRoute], parts: &Parts) -> Option<Classified> {
    let route = routes.iter().find(|r| r.method == parts.method.as_str() && r.path == parts.uri.path())?;
    Some(Classified {
        family: Family::Api,
        target: Target::Instance,
        action: Action::Read,
        scope: route.scope,
        destructive: false,
    })
}

/// The `non_job` setting per family: the process-wide default, overridden by an upstream's own.
#[derive(Debug, Clone)]
pub struct NonJobRules {
    /// For requests that match no family.
    pub default: NonJob,
    pub families: FamilyMap<NonJob>,
}

impl NonJobRules {
    pub fn new(config: &Config) -> NonJobRules {
        let families =
            FamilyMap::from_fn(|family| config.upstreams.get(family).and_then(|u| u.non_job).unwrap_or(config.non_job));
        NonJobRules { default: config.non_job, families }
    }

    /// The same setting everywhere.
    pub fn uniform(non_job: NonJob) -> NonJobRules {
        NonJobRules { default: non_job, families: FamilyMap::from_fn(|_| non_job) }
    }

    pub fn for_family(&self, family: Option<Family>) -> NonJob {
        family.map_or(self.default, |family| self.families[family])
    }
}

/// Request-target shapes that would let jobgate and the upstream disagree about the request.
///
/// # Errors
/// A `bad_request` refusal saying which shape.
pub fn check_target(parts: &Parts) -> Result<(), Refusal> {
    let bad = |why: &'static str| Err(Refusal::new(Reason::BadRequest, why));
    if parts.version < Version::HTTP_2 && parts.uri.authority().is_some() {
        return bad("absolute-form request targets are not accepted");
    }
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return bad("more than one Host header");
    }
    if let (Some(authority), Some(host)) = (parts.uri.authority(), parts.headers.get(header::HOST)) {
        if authority.as_str().as_bytes() != host.as_bytes() {
            return bad(":authority and Host disagree");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, version: Version, hosts: &[&str]) -> Parts {
        let mut builder = Request::builder().uri(uri).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap_or_default().into_parts().0
    }

    #[test]
    fn request_targets_that_could_be_read_two_ways_are_refused() {
        assert!(check_target(&parts("/a/b.git/info/refs", Version::HTTP_11, &["x"])).is_ok());
        assert!(check_target(&parts("https://x/a/b.git/info/refs", Version::HTTP_2, &[])).is_ok());
        assert!(check_target(&parts("https://x/a", Version::HTTP_2, &["x"])).is_ok());
        for (uri, version, hosts) in [
            ("https://evil/a/b.git/info/refs", Version::HTTP_11, &["x"][..]),
            ("/a", Version::HTTP_11, &["a", "b"][..]),
            ("https://x/a", Version::HTTP_2, &["y"][..]),
        ] {
            assert!(check_target(&parts(uri, version, hosts)).is_err(), "{uri} {hosts:?}");
        }
    }
}
