//! `record`'s audit half: one JSON line per request, written off the request path through a bounded
//! channel. A full channel drops the line and counts the drop; it never blocks a request. Lines carry
//! no token, no `Authorization` value and no query string: the record type has no field for them.

pub mod decisions;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AuditSink;
use crate::infra::audit::decisions::DecisionLog;

const CHANNEL_CAPACITY: usize = 8192;

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: String,
    pub method: String,
    /// The request path without its query string.
    pub path: String,
    pub family: Option<&'static str>,
    pub action: Option<&'static str>,
    /// The scope the request needed.
    pub scope: Option<&'static str>,
    /// The target project (path or numeric id) as classified.
    pub target: Option<String>,
    pub job_id: Option<u64>,
    pub token_project: Option<String>,
    pub user_id: Option<u64>,
    /// The job's ref and whether it is protected (what `refs: protected` and destructive actions
    /// depend on; `policy suggest` reads them).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub ref_protected: Option<bool>,
    /// The kind of credential jobgate sent upstream for a job, never the credential itself.
    #[serde(serialize_with = "display")]
    pub upstream_credential: Option<UpstreamCredential>,
    /// `allow`, `deny`, `passthrough` or `challenge` (a request without a credential asked for one).
    pub decision: &'static str,
    /// False for a policy denial in `mode: audit`: recorded, not enforced (the request passed).
    pub enforced: bool,
    pub reason: &'static str,
    pub status: u16,
    pub duration_ms: f64,
    pub generation: u64,
}

/// Which credential jobgate sent upstream for a job, as the audit line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCredential {
    /// `job_credential`: the job's own, as it came.
    Job,
    /// `none`: `credentials: strip`.
    Stripped,
    /// `static`: `credentials: replace`.
    Static,
    /// `job_token`: the job's `CI_JOB_TOKEN`, to GitLab's registry realm.
    JobToken,
    /// `impersonation:<token id>`: an impersonation token of the job's user.
    Impersonation(u64),
}

impl std::fmt::Display for UpstreamCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamCredential::Job => f.write_str("job_credential"),
            UpstreamCredential::Stripped => f.write_str("none"),
            UpstreamCredential::Static => f.write_str("static"),
            UpstreamCredential::JobToken => f.write_str("job_token"),
            UpstreamCredential::Impersonation(id) => write!(f, "impersonation:{id}"),
        }
    }
}

fn display<S: serde::Serializer>(value: &Option<UpstreamCredential>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.collect_str(value),
        None => s.serialize_none(),
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// The sending half, shared by all connections.
#[derive(Clone)]
pub struct Audit {
    sender: mpsc::Sender<AuditRecord>,
    dropped: prometheus::IntCounter,
    /// Set by [`Audit::reopen`]; the writer reopens its file before the next batch.
    reopen: Arc<AtomicBool>,
    /// What the writer wrote, for the decision view.
    decisions: Arc<DecisionLog>,
}

impl Audit {
    /// Opens `sink` and starts its writer: one thread of its own with plain blocking writes, so a
    /// batch costs no hop through the runtime's blocking pool.
    ///
    /// # Errors
    /// The audit file cannot be opened for appending, or the thread cannot start.
    pub async fn start(sink: &AuditSink, dropped: prometheus::IntCounter) -> std::io::Result<Audit> {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let reopen = Arc::new(AtomicBool::new(false));
        let out = Output::open(sink.file.clone())?;
        let (flag, decisions) = (reopen.clone(), Arc::new(DecisionLog::default()));
        let log = decisions.clone();
        std::thread::Builder::new()
            .name("jobgate-audit".into())
            .spawn(move || write_lines(receiver, out, &flag, &log))?;
        Ok(Audit { sender, dropped, reopen, decisions })
    }

    /// An audit whose lines a test reads from the returned receiver.
    #[cfg(test)]
    pub(crate) fn channel() -> (Audit, mpsc::Receiver<AuditRecord>) {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let dropped = prometheus::IntCounter::new("dropped", "test").unwrap_or_else(|_| unreachable!());
        (Audit { sender, dropped, reopen: Arc::default(), decisions: Arc::default() }, receiver)
    }

    /// Queues a line; drops it (and counts) when the writer is behind.
    pub fn record(&self, record: AuditRecord) {
        if self.sender.try_send(record).is_err() {
            self.dropped.inc();
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// The recent decisions and the access matrix, as written.
    pub fn decisions(&self) -> &DecisionLog {
        &self.decisions
    }

    /// After logrotate moved the file away (SIGHUP): the next lines go to a new file at the path.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

/// Where lines go: standard output, or a file kept by its path so it can be reopened.
enum Output {
    Stdout(std::io::Stdout),
    File { path: PathBuf, file: std::fs::File },
}

impl Output {
    fn open(path: Option<PathBuf>) -> std::io::Result<Output> {
        Ok(match path {
            None => Output::Stdout(std::io::stdout()),
            Some(path) => Output::File { file: append(&path)?, path },
        })
    }

    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            match append(path) {
                Ok(reopened) => *file = reopened,
                Err(e) => {
                    tracing::error!(error = %e, "reopening the audit log {} failed; writing on to the old file", path.display())
                }
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Output::File { file, .. } => file.write_all(bytes),
        }
    }
}

fn append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// After each write the writer rests this long, so lines gather into batches instead of each request
/// waking the thread (a futex wake-up per line under load); a line waits at most this much longer.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

fn write_lines(
    mut receiver: mpsc::Receiver<AuditRecord>,
    mut out: Output,
    reopen: &AtomicBool,
    decisions: &DecisionLog,
) {
    let mut batch = Vec::with_capacity(1024);
    let mut buffer = Vec::with_capacity(256 * 1024);
    while receiver.blocking_recv_many(&mut batch, 1024) > 0 {
        if reopen.swap(false, Ordering::AcqRel) {
            out.reopen();
        }
        for record in &batch {
            if serde_json::to_writer(&mut buffer, record).is_ok() {
                buffer.push(b'\n');
            }
        }
        if let Err(e) = out.write(&buffer) {
            tracing::error!(error = %e, "audit log write failed");
        }
        buffer.clear();
        decisions.add(batch.drain(..));
        std::thread::sleep(GATHER);
    }
}
