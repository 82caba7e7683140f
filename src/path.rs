//! Project and group paths: validated, case-folded once, compared as plain strings afterwards.
//! Validation is strict on purpose: a segment is GitLab's path alphabet and nothing else, so no
//! percent-encoding, dot segment, backslash or matrix parameter can ever reach a decision.

use std::fmt;

/// GitLab nests groups at most 20 deep; a project adds one more segment.
const MAX_SEGMENTS: usize = 21;

/// A lower-cased `group/sub/project` path (or a group path), proven well-formed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectPath(String);

impl ProjectPath {
    /// Parses a path such as `Acme/Platform/app`; `None` if any segment is not a plain GitLab name.
    pub fn parse(raw: &str) -> Option<ProjectPath> {
        let mut count = 0;
        for segment in raw.split('/') {
            count += 1;
            if count > MAX_SEGMENTS || !is_name(segment) {
                return None;
            }
        }
        Some(ProjectPath(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The groups above this path, nearest first: `a/b/c` → `a/b`, `a`.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        let s = self.0.as_str();
        s.match_indices('/').rev().map(move |(i, _)| &s[..i])
    }

    /// True when `self` is `other` or lies below the group `other`.
    pub fn is_within(&self, other: &ProjectPath) -> bool {
        let (me, group) = (self.0.as_str(), other.0.as_str());
        me == group || (me.starts_with(group) && me.as_bytes().get(group.len()) == Some(&b'/'))
    }
}

/// One path segment: letters, digits, `_`, `-`, `.`; not `.` or `..`; not starting with `-` or `.`.
pub fn is_name(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 255
        && !matches!(bytes[0], b'-' | b'.')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Lets maps keyed by `ProjectPath` be searched with an already lower-cased `&str` (hashes agree).
impl std::borrow::Borrow<str> for ProjectPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl serde::Serialize for ProjectPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_folds_case() {
        let p = ProjectPath::parse("Acme/Platform/App").unwrap();
        assert_eq!(p.as_str(), "acme/platform/app");
        assert_eq!(p.ancestors().collect::<Vec<_>>(), vec!["acme/platform", "acme"]);
    }

    #[test]
    fn rejects_anything_that_is_not_a_plain_name() {
        for bad in [
            "",
            "a//b",
            "/a",
            "a/",
            "a/./b",
            "a/../b",
            "..",
            "a/%2e%2e/b",
            "a%2Fb",
            "a\\b",
            "a;x=1/b",
            "a/b c",
            "-a/b",
            ".hidden/x",
            "a/b\0",
            "ä/b",
        ] {
            assert!(ProjectPath::parse(bad).is_none(), "{bad:?} must be refused");
        }
        let deep = vec!["g"; 22].join("/");
        assert!(ProjectPath::parse(&deep).is_none());
    }

    #[test]
    fn within_respects_segment_boundaries() {
        let app = ProjectPath::parse("acme/app").unwrap();
        assert!(app.is_within(&ProjectPath::parse("acme").unwrap()));
        assert!(app.is_within(&app));
        assert!(!app.is_within(&ProjectPath::parse("ac").unwrap()));
        assert!(!ProjectPath::parse("acme-x/app").unwrap().is_within(&ProjectPath::parse("acme").unwrap()));
    }
}
