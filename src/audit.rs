//! `record`'s audit half: one JSON line per request, written off the request path through a bounded
//! channel. A full channel drops the line and counts the drop; it never blocks a request. Lines carry
//! no token, no `Authorization` value and no query string: the record type has no field for them.

use std::time::SystemTime;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::config::AuditSink;

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
    /// `allow`, `deny` or `passthrough`.
    pub decision: &'static str,
    /// False for a policy denial in `mode: audit`: recorded, not enforced (the request passed).
    pub enforced: bool,
    pub reason: &'static str,
    pub status: u16,
    pub duration_ms: f64,
    pub generation: u64,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// The sending half, shared by all connections.
#[derive(Clone)]
pub struct Audit {
    sender: mpsc::Sender<AuditRecord>,
    dropped: prometheus::IntCounter,
}

impl Audit {
    /// Starts the writer task for `sink`.
    ///
    /// # Errors
    /// The audit file cannot be opened for appending.
    pub async fn start(sink: &AuditSink, dropped: prometheus::IntCounter) -> std::io::Result<Audit> {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        match &sink.file {
            None => {
                tokio::spawn(write_lines(receiver, tokio::io::stdout()));
            }
            Some(path) => {
                let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
                tokio::spawn(write_lines(receiver, file));
            }
        }
        Ok(Audit { sender, dropped })
    }

    /// An audit whose lines a test reads from the returned receiver.
    #[cfg(test)]
    pub(crate) fn channel() -> (Audit, mpsc::Receiver<AuditRecord>) {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        (Audit { sender, dropped: prometheus::IntCounter::new("dropped", "test").unwrap_or_else(|_| unreachable!()) }, receiver)
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
}

async fn write_lines(mut receiver: mpsc::Receiver<AuditRecord>, mut out: impl tokio::io::AsyncWrite + Unpin) {
    let mut batch = Vec::with_capacity(64);
    let mut buffer = Vec::with_capacity(64 * 1024);
    while receiver.recv_many(&mut batch, 256).await > 0 {
        for record in batch.drain(..) {
            if serde_json::to_writer(&mut buffer, &record).is_ok() {
                buffer.push(b'\n');
            }
        }
        if let Err(e) = out.write_all(&buffer).await.and(out.flush().await) {
            tracing::error!(error = %e, "audit log write failed");
        }
        buffer.clear();
    }
}
