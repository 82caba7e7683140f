//! The YAML files jobgate reads — the process config, policy files, policy tests — parsed with
//! serde_yaml, whose errors are turned into ones that name the file and the line.

use std::path::{Path, PathBuf};

/// A file that is not the YAML its reader expects.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct YamlError {
    pub path: PathBuf,
    /// 1-based; 0 when serde_yaml knows no location.
    pub line: usize,
    pub message: String,
}

/// Parses `text` (read from `path`) into `T`.
///
/// # Errors
/// [`YamlError`] with the line of the offending key or value.
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| YamlError {
        path: path.to_owned(),
        line: e.location().map_or(0, |l| l.line()),
        message: strip_location(&e.to_string()),
    })
}

/// serde_yaml appends " at line L column C"; the line is already in our prefix.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
