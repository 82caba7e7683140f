//! Name globs for ref and environment conditions: `*` matches any run of characters (slashes
//! included), `?` exactly one; everything else matches itself. Linear time, no recursion.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern (iterative wildcard matching with one backtrack point).
    pub fn matches(&self, name: &str) -> bool {
        let (p, n) = (self.0.as_bytes(), name.as_bytes());
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, ni));
                    pi += 1;
                }
                Some(c) if *c == b'?' || *c == n[ni] => {
                    pi += 1;
                    ni += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        pi = sp + 1;
                        ni = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|c| *c == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases = [
            ("main", "main", true),
            ("main", "mainx", false),
            ("release/*", "release/1.0", true),
            ("release/*", "release/", true),
            ("release/*", "releases/1", false),
            ("*", "", true),
            ("v?.*", "v1.2.3", true),
            ("v?.*", "v10.2", false),
            ("*-prod", "eu-west-prod", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("review/*", "review/feat/x", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(Glob::new(pattern).matches(name), want, "{pattern} ~ {name}");
        }
    }
}
