//! The audit lines `policy suggest` reads: jobgate's own JSON lines, read back (bounded to what
//! `suggest` needs), and `--since` as a time or a duration.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Deserialize;

/// The file suggestions are written to (in `--out`); a previous one in the policy folder is
/// replaced, not merged, when suggesting anew.
pub const POLICY_FILE: &str = "suggested.yaml";

/// The fields of an audit line (`audit::AuditRecord`) suggestions need. Unknown fields are ignored,
/// missing optional ones (lines written before `ref` was recorded) are `None`.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditLine {
    pub time: String,
    pub method: String,
    pub path: String,
    pub family: Option<String>,
    pub action: Option<String>,
    pub scope: Option<String>,
    pub target: Option<String>,
    pub job_id: Option<u64>,
    pub token_project: Option<String>,
    pub user_id: Option<u64>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub ref_protected: Option<bool>,
    pub decision: String,
    pub reason: String,
}

/// Audit lines read from files, and the lines that were not audit lines (`file:line: why`).
#[derive(Debug, Default)]
pub struct Lines {
    pub lines: Vec<AuditLine>,
    pub unreadable: Vec<String>,
}

/// Reads audit files — plain or gzip (rotated `.gz`, found by content) — keeping lines at or after
/// `since`.
///
/// # Errors
/// A file cannot be opened or read.
pub fn read(files: &[PathBuf], since: Option<SystemTime>) -> Result<Lines, String> {
    let mut out = Lines::default();
    for file in files {
        let failed = |e: std::io::Error| format!("{}: {e}", file.display());
        let mut reader = std::io::BufReader::new(std::fs::File::open(file).map_err(failed)?);
        let gzip = reader.fill_buf().map_err(failed)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead> = if gzip {
            Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(reader)))
        } else {
            Box::new(reader)
        };
        for (number, line) in reader.lines().enumerate() {
            let line = line.map_err(failed)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<AuditLine>(&line) {
                Ok(parsed)
                    if since
                        .is_none_or(|since| humantime::parse_rfc3339_weak(&parsed.time).is_ok_and(|t| t >= since)) =>
                {
                    out.lines.push(parsed)
                }
                Ok(_) => {}
                Err(e) => out.unreadable.push(format!("{}:{}: not an audit line: {e}", file.display(), number + 1)),
            }
        }
    }
    Ok(out)
}

/// Reads `--since`: an RFC 3339 time, or a duration before now (`24h`, `7days`).
///
/// # Errors
/// Neither.
pub fn since(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_duration(text).map(|ago| SystemTime::now() - ago))
        .map_err(|_| format!("--since {text:?}: neither an RFC 3339 time nor a duration like 24h"))
}
