//! Scopes, scope sets and user roles: parsed once at load time into enums and bit sets, so the request
//! path never compares scope names as strings.

use serde::{Deserialize, Serialize};

/// One token scope, GitLab's vocabulary plus the two package scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    ReadRepository,
    WriteRepository,
    ReadRegistry,
    WriteRegistry,
    ReadPackageRegistry,
    WritePackageRegistry,
    ReadApi,
    Api,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::ReadRepository,
        Scope::WriteRepository,
        Scope::ReadRegistry,
        Scope::WriteRegistry,
        Scope::ReadPackageRegistry,
        Scope::WritePackageRegistry,
        Scope::ReadApi,
        Scope::Api,
    ];

    /// The scope's name as GitLab spells it.
    pub fn name(self) -> &'static str {
        match self {
            Scope::ReadRepository => "read_repository",
            Scope::WriteRepository => "write_repository",
            Scope::ReadRegistry => "read_registry",
            Scope::WriteRegistry => "write_registry",
            Scope::ReadPackageRegistry => "read_package_registry",
            Scope::WritePackageRegistry => "write_package_registry",
            Scope::ReadApi => "read_api",
            Scope::Api => "api",
        }
    }

    /// Parses a scope name; `None` for names outside the vocabulary.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of scopes as a bit set: union, intersection and membership are single instructions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(u8);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);
    pub const ALL: ScopeSet = ScopeSet(u8::MAX);

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
    pub fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }
    pub fn intersect(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

impl std::fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::name)).finish()
    }
}

impl std::fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::name).collect();
        f.write_str(&names.join(" "))
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Scope>::deserialize(d)?.into_iter().collect())
    }
}

/// A user's role in a project, as GitLab names access levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Guest => "guest",
            Role::Reporter => "reporter",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
        })
    }
}

impl Role {
    /// Parses GitLab's `user_access_level` claim (names, case-insensitive).
    pub fn parse(name: &str) -> Option<Role> {
        match name.to_ascii_lowercase().as_str() {
            "guest" => Some(Role::Guest),
            "reporter" => Some(Role::Reporter),
            "developer" => Some(Role::Developer),
            "maintainer" => Some(Role::Maintainer),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// The most a user with this role could do, GitLab's defaults; the policy may override them.
    pub fn default_ceiling(self) -> ScopeSet {
        use Scope::*;
        let read = [ReadRepository, ReadRegistry, ReadPackageRegistry, ReadApi];
        match self {
            Role::Guest => [ReadApi].into_iter().collect(),
            Role::Reporter => read.into_iter().collect(),
            Role::Developer | Role::Maintainer | Role::Owner => ScopeSet::ALL,
        }
    }
}

/// A GitLab personal-token scope jobgate asks for when it acts as the job's user
/// (`app/models/personal_access_token.rb`'s scopes, those jobgate uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GitLabScope {
    ReadRepository,
    WriteRepository,
    ReadRegistry,
    WriteRegistry,
    ReadApi,
    Api,
}

impl GitLabScope {
    /// GitLab's name for it.
    pub fn name(self) -> &'static str {
        match self {
            GitLabScope::ReadRepository => "read_repository",
            GitLabScope::WriteRepository => "write_repository",
            GitLabScope::ReadRegistry => "read_registry",
            GitLabScope::WriteRegistry => "write_registry",
            GitLabScope::ReadApi => "read_api",
            GitLabScope::Api => "api",
        }
    }

    /// The narrowest GitLab scope that covers a jobgate scope. Personal tokens have no
    /// package-registry scopes (those are deploy-token scopes), so package reads need `read_api` and
    /// package writes `api`, which also opens the rest of the API — jobgate still presents the token
    /// only on requests the policy allowed.
    pub fn covering(scope: Scope) -> GitLabScope {
        match scope {
            Scope::ReadRepository => GitLabScope::ReadRepository,
            Scope::WriteRepository => GitLabScope::WriteRepository,
            Scope::ReadRegistry => GitLabScope::ReadRegistry,
            Scope::WriteRegistry => GitLabScope::WriteRegistry,
            Scope::ReadPackageRegistry | Scope::ReadApi => GitLabScope::ReadApi,
            Scope::WritePackageRegistry | Scope::Api => GitLabScope::Api,
        }
    }
}

impl std::fmt::Display for GitLabScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_algebra() {
        let a: ScopeSet = [Scope::ReadRepository, Scope::Api].into_iter().collect();
        let b: ScopeSet = [Scope::Api, Scope::ReadApi].into_iter().collect();
        assert!(a.contains(Scope::Api) && !a.contains(Scope::ReadApi));
        assert_eq!(a.intersect(b).iter().collect::<Vec<_>>(), vec![Scope::Api]);
        assert_eq!(a.union(b).iter().count(), 3);
        assert_eq!(a.to_string(), "read_repository api");
    }

    #[test]
    fn names_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.name()), Some(s));
        }
        assert_eq!(Scope::parse("sudo"), None);
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!(Role::parse("Developer"), Some(Role::Developer));
        assert_eq!(Role::parse("admin"), None);
        assert!(!Role::Reporter.default_ceiling().contains(Scope::WriteRepository));
    }
}
