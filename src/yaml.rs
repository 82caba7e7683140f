//! The YAML files jobgate reads — the process config, policy files, policy tests — parsed with
//! serde_yaml, whose errors are turned into ones that name the file and the line. A key written
//! twice is an error everywhere (serde refuses repeated struct fields, [`UniqueMap`] repeated map
//! keys), naming both lines.

use std::collections::BTreeMap;
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

/// A scalar for a YAML file jobgate writes, as a JSON string (valid YAML, every character escaped).
pub fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Parses `text` (read from `path`) into `T`.
///
/// # Errors
/// [`YamlError`] with the line of the offending key or value.
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| {
        let mut line = e.location().map_or(0, |l| l.line());
        let mut message = strip_location(&e.to_string());
        if let Some((first, second)) = repeated_lines(text, &message, line) {
            line = second;
            message.push_str(&format!(" (first at line {first})"));
        }
        YamlError { path: path.to_owned(), line, message }
    })
}

/// serde_yaml appends " at line L column C"; the line is already in our prefix.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A YAML mapping read into a `BTreeMap`, refusing a key written twice: serde's own maps silently keep
/// the later value, which would let a repeated group or project replace the first (and drop, say, a
/// compliance switch). The error names the key; [`parse`] adds the line of its first appearance.
#[derive(Debug, Clone)]
pub struct UniqueMap<K, V>(pub BTreeMap<K, V>);

impl<K, V> Default for UniqueMap<K, V> {
    fn default() -> Self {
        UniqueMap(BTreeMap::new())
    }
}

/// The message prefix of a repeated key, which [`parse`] completes with the first line.
const REPEATED: &str = "repeated key ";

impl<'de, K, V> serde::Deserialize<'de> for UniqueMap<K, V>
where
    K: serde::Deserialize<'de> + Ord + std::fmt::Display,
    V: serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K, V> serde::de::Visitor<'de> for Visitor<K, V>
        where
            K: serde::Deserialize<'de> + Ord + std::fmt::Display,
            V: serde::Deserialize<'de>,
        {
            type Value = UniqueMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<K>()? {
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("{REPEATED}`{key}`")));
                    }
                    out.insert(key, map.next_value()?);
                }
                Ok(UniqueMap(out))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// For a repeated key in the mapping serde_yaml reports at `line` (where the mapping starts): the lines
/// of its first two appearances as a key from there on.
fn repeated_lines(text: &str, message: &str, line: usize) -> Option<(usize, usize)> {
    // Ours for maps, serde's for struct fields.
    let key =
        [REPEATED, "duplicate field "].iter().find_map(|prefix| message.split(prefix).nth(1))?.split('`').nth(1)?;
    let as_key = format!("{key}:");
    let mut at = text.lines().enumerate().skip(line.saturating_sub(1)).filter(|(_, l)| {
        let code = l.split(" #").next().unwrap_or("");
        code.split(['{', ',']).any(|part| {
            part.trim_start().trim_start_matches("- ").trim_matches(['"', '\'']).starts_with(&as_key)
                || part.trim_start().starts_with(&format!("\"{key}\":"))
        })
    });
    let first = at.next()?.0 + 1;
    let second = at.next()?.0 + 1;
    Some((first, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_an_error_naming_both_lines() {
        let text = "groups:\n  acme: 1\n  other: 2\n  acme: 3\n";
        #[derive(Debug, serde::Deserialize)]
        struct Doc {
            #[allow(dead_code)]
            groups: UniqueMap<String, u32>,
        }
        let err = parse::<Doc>(Path::new("p.yaml"), text).unwrap_err().to_string();
        assert!(err.starts_with("p.yaml:4: ") && err.contains("repeated key `acme` (first at line 2)"), "{err}");
        assert!(parse::<Doc>(Path::new("p.yaml"), "groups: { acme: 1, other: 2 }\n").is_ok());
    }
}
