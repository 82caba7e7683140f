//! `jobgate policy suggest`: audit lines of job traffic the policy refused (or, in `mode: audit`,
//! would have refused) become allowlist entries that admit exactly that traffic, each with policy
//! tests pinning it to a request it came from.
//!
//! Only a missing admission or grant (`not_in_allowlist`, `scope_not_granted`) is ever suggested;
//! every other refusal — token errors, unmatched requests, ceilings of the token or the user,
//! compliance switches, unprotected destructive refs — is left out and counted, because a policy
//! entry that admitted it would widen what jobs can do past what the rules allow. Every suggestion
//! is checked before it is written: merged with the running policy, its pinned tests must pass by
//! the code `jobgate check` runs; one that does not is left out and said.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::enforce::expect::Report;
use crate::path::ProjectPath;
use crate::policy::Policy;
use crate::scope::{Scope, ScopeSet};
use crate::snapshot::Snapshot;
use crate::yaml::quoted as q;

pub use super::audit_lines::{read, since, AuditLine, Lines, POLICY_FILE};

/// What `suggest` found: the policy and test documents, and what it left out.
#[derive(Debug, Default)]
pub struct Suggestions {
    /// The policy document (`suggested.yaml`); `None` when nothing is suggested.
    pub policy: Option<String>,
    /// The policy tests pinning each entry (`tests/suggested.yaml`).
    pub tests: Option<String>,
    pub entries: usize,
    /// Entries for projects another policy file already defines: to add there by hand.
    pub for_existing: Vec<String>,
    /// Why lines were left out: one line per kind, with a count and an example.
    pub left_out: Vec<String>,
}

/// What one job project needed on a target from one kind of ref (protected, or any): the scopes
/// beyond the baseline, and the uses behind it.
#[derive(Debug, Default)]
struct Need<'a> {
    grant: ScopeSet,
    /// The first use of each needed scope: the requests the tests pin.
    examples: BTreeMap<Scope, &'a AuditLine>,
    jobs: BTreeSet<u64>,
    uses: usize,
    first: &'a str,
    last: &'a str,
}

/// Needs by (target, job project, every use from a protected ref).
type Needs<'a> = BTreeMap<(String, String, bool), Need<'a>>;

/// An entry to write: `from` (a project or group) on a target, and the needs it covers.
struct Entry<'a> {
    target: String,
    from: String,
    protected: bool,
    needs: Vec<(&'a str, &'a Need<'a>)>,
}

/// Suggests entries for the denied job traffic in `lines`, given the running policy (`snapshot`,
/// loaded from `policy_dir`). A scope every use of which came from a protected ref is granted with
/// `refs: protected`; the others from any ref.
pub fn suggest(snapshot: &Snapshot, policy_dir: &Path, lines: &[AuditLine]) -> Suggestions {
    let policy = &snapshot.policy;
    let known = known_projects(policy, lines);
    let mut uses = Vec::new();
    let mut left_out: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.decision == "deny") {
        match admission(policy, &known, line) {
            Ok(admitted) => uses.push((admitted, line)),
            Err(why) => {
                let slot = left_out.entry(why).or_insert_with(|| {
                    (
                        0,
                        format!(
                            "{} {}{}",
                            line.method,
                            line.path,
                            line.job_id.map_or(String::new(), |j| format!(" by job {j}"))
                        ),
                    )
                });
                slot.0 += 1;
            }
        }
    }
    let mut protected: BTreeMap<(&ProjectPath, &ProjectPath, Scope), bool> = BTreeMap::new();
    for ((target, source, scope), line) in &uses {
        *protected.entry((target, source, *scope)).or_insert(true) &= line.ref_protected == Some(true);
    }
    let mut needs = Needs::new();
    for ((target, source, scope), line) in &uses {
        let own = target == source;
        let baseline = if own {
            policy.instance.own_project.intersect(policy.projects.get(target).map_or(ScopeSet::ALL, |p| p.own_project))
        } else {
            policy.instance.cross_project
        };
        let key = (target.to_string(), source.to_string(), protected[&(target, source, *scope)]);
        let need = needs.entry(key).or_insert_with(|| Need { first: &line.time, ..Need::default() });
        if !baseline.contains(*scope) {
            need.grant = need.grant.union(std::iter::once(*scope).collect());
        }
        need.examples.entry(*scope).or_insert(line);
        need.jobs.extend(line.job_id);
        need.uses += 1;
        need.last = &line.time;
    }
    let mut out = Suggestions::default();
    let mut entries = Vec::new();
    for entry in merge(&needs, &known) {
        if policy.projects.contains_key(entry.target.as_str()) {
            out.for_existing.push(format!(
                "{} (defined in the policy already): add to its allow:\n{}",
                entry.target,
                render_entry(&entry, "  ")
            ));
            continue;
        }
        match check(snapshot, policy_dir, &entry) {
            Ok(()) => entries.push(entry),
            Err(why) => {
                let slot = left_out
                    .entry(format!(
                        "a suggestion for {} from {} does not admit its own request: {why}",
                        entry.target, entry.from
                    ))
                    .or_default();
                slot.0 += entry.needs.iter().map(|(_, n)| n.uses).sum::<usize>();
            }
        }
    }
    out.left_out = left_out
        .into_iter()
        .map(|(why, (count, example))| {
            format!(
                "{count} line(s): {why}{}",
                if example.is_empty() { String::new() } else { format!(" (e.g. {example})") }
            )
        })
        .collect();
    if !entries.is_empty() {
        out.entries = entries.len();
        out.policy = Some(render_policy(&entries, lines));
        out.tests = Some(entries.iter().map(render_tests).collect());
    }
    out
}

/// The target project, the job's project and the needed scope of a refusal a policy entry can
/// lift; otherwise why it is left out.
fn admission(
    policy: &Policy,
    known: &BTreeSet<String>,
    line: &AuditLine,
) -> Result<(ProjectPath, ProjectPath, Scope), String> {
    let (Some(_), Some(source)) = (line.job_id, line.token_project.as_deref().and_then(ProjectPath::parse)) else {
        return Err(
            "no verified job credential (missing, malformed, expired or unknown tokens): no entry can admit it".into(),
        );
    };
    let why = match line.reason.as_str() {
        "not_in_allowlist" | "scope_not_granted" => None,
        "unmatched_request" | "bad_request" | "unresolved_target" => {
            Some("the request names no single project endpoint: never suggested")
        }
        "token_ceiling" => Some("beyond the token's own scopes: a policy cannot widen a token"),
        "user_ceiling" | "user_role_unknown" => {
            Some("beyond what the job's user may do: jobgate never grants more than the user")
        }
        "ref_not_protected" => Some("a destructive action from an unprotected ref: run it from a protected ref"),
        "elevation_disabled" => Some("elevation is switched off for the target (compliance): not suggested"),
        "condition_not_met" => {
            Some("an existing entry's condition did not hold: widen that condition by hand if it is meant")
        }
        "unknown_project_id" | "project_id_mismatch" => {
            Some("the token and the policy disagree about a project (an attack pattern): never suggested")
        }
        _ => return Err(format!("refused for {} (not a missing grant)", line.reason)),
    };
    if let Some(why) = why {
        return Err(format!("{}: {why}", line.reason));
    }
    let scope = line.scope.as_deref().and_then(Scope::parse).ok_or_else(|| "no needed scope recorded".to_owned())?;
    let target = line.target.as_deref().unwrap_or_default();
    let target = if let Some(id) = target.strip_prefix("project id ") {
        id.parse()
            .ok()
            .and_then(|id| policy.ids.get(&id))
            .cloned()
            .ok_or("a numeric project id the policy does not name: give that project its `id:` and suggest again")?
    } else if let Some(image) = target.strip_prefix("image ").and_then(ProjectPath::parse) {
        // As `decide` does: the image's path or one of its two nearest parents that is a project.
        std::iter::once(image.as_str())
            .chain(image.ancestors().take(2))
            .find(|p| *p == source.as_str() || known.contains(*p))
            .and_then(ProjectPath::parse)
            .unwrap_or_else(|| image.clone())
    } else {
        ProjectPath::parse(target).ok_or("no single target project (a group or instance request)")?
    };
    Ok((target, source, scope))
}

/// Every project path the policy names or the audit lines show (as a job's project or a target).
fn known_projects(policy: &Policy, lines: &[AuditLine]) -> BTreeSet<String> {
    let seen = lines
        .iter()
        .flat_map(|l| [l.token_project.as_deref(), l.target.as_deref().filter(|t| !t.contains(' '))])
        .flatten();
    policy.projects.keys().map(|p| p.as_str()).chain(seen).map(str::to_owned).collect()
}

/// What one job project needs on a target, per kind of ref (protected or not).
type Kinds<'a> = Vec<(bool, &'a Need<'a>)>;

/// Needs per target, as entries: one per job project and kind of ref, or one for a group when every
/// project known below it needs the same on the target (and the target is not below it: its own
/// jobs would gain).
fn merge<'a>(needs: &'a Needs<'a>, known: &BTreeSet<String>) -> Vec<Entry<'a>> {
    let mut by_target: BTreeMap<&str, BTreeMap<&str, Kinds<'_>>> = BTreeMap::new();
    for ((target, source, protected), need) in needs {
        by_target.entry(target).or_default().entry(source).or_default().push((*protected, need));
    }
    let mut entries = Vec::new();
    for (target, sources) in by_target {
        let mut groups: BTreeMap<&str, Vec<(&str, &Kinds<'_>)>> = BTreeMap::new();
        let mut single = Vec::new();
        for (source, kinds) in &sources {
            match source.rsplit_once('/') {
                Some((group, _)) if !within(target, group) && source != &target => {
                    groups.entry(group).or_default().push((source, kinds))
                }
                _ => single.push((*source, kinds)),
            }
        }
        let signature = |kinds: &Kinds<'_>| kinds.iter().map(|(p, n)| (*p, n.grant)).collect::<Vec<_>>();
        for (group, members) in groups {
            let same = members.windows(2).all(|w| signature(w[0].1) == signature(w[1].1));
            let all = known.iter().filter(|p| within(p, group)).all(|p| members.iter().any(|(s, _)| s == p));
            if members.len() >= 2 && same && all {
                for (i, (protected, _)) in members[0].1.iter().enumerate() {
                    let needs = members.iter().map(|(source, kinds)| (*source, kinds[i].1)).collect();
                    entries.push(Entry {
                        target: target.to_owned(),
                        from: group.to_owned(),
                        protected: *protected,
                        needs,
                    });
                }
            } else {
                single.extend(members);
            }
        }
        for (source, kinds) in single {
            for (protected, need) in kinds {
                entries.push(Entry {
                    target: target.to_owned(),
                    from: source.to_owned(),
                    protected: *protected,
                    needs: vec![(source, need)],
                });
            }
        }
    }
    entries.sort_by(|a, b| (&a.target, &a.from, a.protected).cmp(&(&b.target, &b.from, b.protected)));
    entries
}

fn within(path: &str, group: &str) -> bool {
    path.strip_prefix(group).is_some_and(|rest| rest.starts_with('/'))
}

/// Merged with the running policy, the entry's pinned tests pass.
fn check(snapshot: &Snapshot, policy_dir: &Path, entry: &Entry<'_>) -> Result<(), String> {
    let document = format!("projects:\n  {}:\n    allow:\n{}", q(&entry.target), render_entry(entry, "      "));
    let name = policy_dir.join(POLICY_FILE);
    let policy = Policy::load_dir_with(policy_dir, &[(name.clone(), document)]).map_err(|e| e.to_string())?;
    let merged = Snapshot::new(policy, snapshot.api_routes.clone(), snapshot.generation);
    let mut report = Report::default();
    crate::enforce::expect::run_text(&merged, &name, &render_tests(entry), &mut report).map_err(|e| e.to_string())?;
    report.failures.first().map_or(Ok(()), |failure| Err(failure.clone()))
}

fn render_policy(entries: &[Entry<'_>], lines: &[AuditLine]) -> String {
    let mut out = format!(
        "# Suggested by `jobgate policy suggest` from {} audit line(s); tests/{POLICY_FILE} pins each entry to a\n\
         # request it came from. Review every entry before enforcing: it admits what these jobs did, no more.\nprojects:\n",
        lines.len()
    );
    let mut target = "";
    for entry in entries {
        if entry.target != target {
            target = &entry.target;
            out.push_str(&format!("  {}:\n    allow:\n", q(target)));
        }
        out.push_str(&render_entry(entry, "      "));
    }
    out
}

/// One allowlist item with a comment saying which uses it covers.
fn render_entry(entry: &Entry<'_>, indent: &str) -> String {
    let mut out = String::new();
    for (source, need) in &entry.needs {
        let jobs: Vec<String> = need.jobs.iter().map(u64::to_string).collect();
        out.push_str(&format!(
            "{indent}# {source}: {} request(s) by job(s) {} from {} to {}{}\n",
            need.uses,
            jobs.join(", "),
            need.first,
            need.last,
            if entry.protected { ", every one from a protected ref" } else { "" }
        ));
    }
    let grant = entry.needs.first().map_or(ScopeSet::EMPTY, |(_, n)| n.grant);
    let scopes: Vec<&str> = grant.iter().map(Scope::name).collect();
    out.push_str(&format!("{indent}- from: {}\n{indent}  scopes: [{}]\n", q(&entry.from), scopes.join(", ")));
    if entry.protected {
        out.push_str(&format!("{indent}  refs: protected\n"));
    }
    out
}

/// The entry's pinned cases: one per source and needed scope, from the first request seen.
fn render_tests(entry: &Entry<'_>) -> String {
    let mut out = String::new();
    for (source, need) in &entry.needs {
        for (scope, line) in &need.examples {
            let (method, url, lfs) = replayable(line);
            let mut token = format!("project: {}, ref_protected: {}", q(source), line.ref_protected == Some(true));
            if let Some(r) = &line.git_ref {
                token.push_str(&format!(", ref: {}", q(r)));
            }
            if let Some(user) = line.user_id {
                token.push_str(&format!(", user_id: {user}"));
            }
            let lfs = lfs.map_or(String::new(), |op| format!(", lfs_operation: {op}"));
            let name = format!(
                "suggested: {source} needs {scope} on {} (job {}, {})",
                entry.target,
                line.job_id.unwrap_or_default(),
                line.time
            );
            out.push_str(&format!(
                "- name: {}\n  token: {{ {token} }}\n  request: {{ method: {}, url: {}{lfs} }}\n  expect: allow\n",
                q(&name),
                q(method),
                q(&url)
            ));
        }
    }
    out
}

/// The request a test replays for an audit line. The line has no query string (audit lines never
/// do) and no body, so where those decide the classification the request is rebuilt from what the
/// line recorded: git's `info/refs` gets its `service`, an LFS batch its operation, a registry
/// realm call (a scope in the query) becomes the registry request that scope is for.
fn replayable(line: &AuditLine) -> (&str, String, Option<&'static str>) {
    let write = line.action.as_deref() == Some("write");
    match line.family.as_deref() {
        Some("git") if line.path.ends_with("/info/refs") => (
            "GET",
            format!("{}?service={}", line.path, if write { "git-receive-pack" } else { "git-upload-pack" }),
            None,
        ),
        Some("lfs") if line.path.ends_with("/info/lfs/objects/batch") => {
            ("POST", line.path.clone(), Some(if write { "upload" } else { "download" }))
        }
        Some("registry") if !line.path.starts_with("/v2/") => {
            let image = line.target.as_deref().and_then(|t| t.strip_prefix("image ")).unwrap_or_default();
            if write {
                ("POST", format!("/v2/{image}/blobs/uploads/"), None)
            } else {
                ("GET", format!("/v2/{image}/tags/list"), None)
            }
        }
        _ => (&line.method, line.path.clone(), None),
    }
}
