//! The decision view's memory: the most recent decisions (a bounded ring) and the access matrix —
//! per (job project, target) the requests, how many were allowed and refused, the last use, its job,
//! the scopes and refs seen. GitLab's "job token authentication log" has one row per project pair;
//! this one has jobs, refs and decisions too.
//!
//! The audit writer thread feeds it with the records it has just written, one lock per batch: the
//! request path never touches it (a line the audit channel dropped is missing here too).

use std::collections::{BTreeSet, HashMap, VecDeque};
#[allow(clippy::disallowed_types)] // Off the request path: only the audit thread and the admin page lock it.
use std::sync::Mutex;
use std::time::SystemTime;

use crate::infra::audit::AuditRecord;

/// Decisions kept for the page.
pub const RECENT: usize = 1000;
/// Project pairs the matrix keeps; pairs beyond it are counted, not shown.
pub const MAX_PAIRS: usize = 10_000;
/// Refs kept per pair.
const MAX_REFS: usize = 5;

/// One cell of the access matrix.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub requests: u64,
    pub allowed: u64,
    /// Refused, or in audit mode would have been.
    pub denied: u64,
    pub last: Option<SystemTime>,
    pub last_job: Option<u64>,
    pub scopes: BTreeSet<&'static str>,
    pub refs: BTreeSet<String>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<AuditRecord>,
    pairs: HashMap<(String, String), Cell>,
    pairs_dropped: u64,
    seen: u64,
}

/// Shared by the audit writer (which adds) and the admin page (which reads).
#[derive(Default)]
#[allow(clippy::disallowed_types)]
pub struct DecisionLog(Mutex<Inner>);

/// What the page shows: the matching recent decisions (newest first) and the matrix.
pub struct View {
    pub recent: Vec<AuditRecord>,
    pub kept: usize,
    pub seen: u64,
    pub pairs: Vec<((String, String), Cell)>,
    pub pairs_dropped: u64,
}

/// Which decisions to show: all three optional, all must match.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// A project or group: the job's project or the target is it or lies below it.
    pub project: Option<String>,
    pub job: Option<u64>,
    pub reason: Option<String>,
}

impl Filter {
    fn project_matches(&self, path: Option<&str>) -> bool {
        let (Some(want), Some(path)) = (self.project.as_deref(), path) else { return false };
        path == want || path.strip_prefix(want).is_some_and(|rest| rest.starts_with('/'))
    }

    fn matches(&self, record: &AuditRecord) -> bool {
        (self.project.is_none()
            || self.project_matches(record.token_project.as_deref())
            || self.project_matches(record.target.as_deref()))
            && self.job.is_none_or(|job| record.job_id == Some(job))
            && self.reason.as_deref().is_none_or(|reason| record.reason == reason)
    }
}

impl DecisionLog {
    /// Adds a batch of records the audit writer has written.
    pub fn add(&self, records: impl IntoIterator<Item = AuditRecord>) {
        let Ok(mut inner) = self.0.lock() else { return };
        for record in records {
            inner.seen += 1;
            if let (Some(source), Some(target)) = (&record.token_project, &record.target) {
                let key = (source.clone(), target.clone());
                let full = inner.pairs.len() >= MAX_PAIRS;
                match inner.pairs.get_mut(&key) {
                    Some(cell) => note(cell, &record),
                    None if full => inner.pairs_dropped += 1,
                    None => note(inner.pairs.entry(key).or_default(), &record),
                }
            }
            if inner.recent.len() == RECENT {
                inner.recent.pop_front();
            }
            inner.recent.push_back(record);
        }
    }

    /// The decisions matching `filter` (at most `limit`, newest first) and the matrix cells whose
    /// job project or target matches its project.
    pub fn view(&self, filter: &Filter, limit: usize) -> View {
        let Ok(inner) = self.0.lock() else {
            return View { recent: Vec::new(), kept: 0, seen: 0, pairs: Vec::new(), pairs_dropped: 0 };
        };
        let recent = inner.recent.iter().rev().filter(|r| filter.matches(r)).take(limit).cloned().collect();
        let mut pairs: Vec<_> = inner
            .pairs
            .iter()
            .filter(|((source, target), _)| {
                filter.project.is_none() || filter.project_matches(Some(source)) || filter.project_matches(Some(target))
            })
            .map(|(key, cell)| (key.clone(), cell.clone()))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        View { recent, kept: inner.recent.len(), seen: inner.seen, pairs, pairs_dropped: inner.pairs_dropped }
    }
}

fn note(cell: &mut Cell, record: &AuditRecord) {
    cell.requests += 1;
    match record.decision {
        "allow" => cell.allowed += 1,
        "deny" => cell.denied += 1,
        _ => {}
    }
    cell.last = Some(record.time);
    cell.last_job = record.job_id.or(cell.last_job);
    cell.scopes.extend(record.scope);
    if let Some(git_ref) = &record.git_ref {
        if cell.refs.len() < MAX_REFS || cell.refs.contains(git_ref) {
            cell.refs.insert(git_ref.clone());
        }
    }
}
