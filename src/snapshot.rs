//! The policy half of the hot state, built in one piece and swapped in one piece with a generation
//! number. A request loads ONE snapshot at its start, so a reload in the middle of a request never
//! mixes policy generations. Key sets live in their issuers' `KeySource`s (each one `ArcSwap`, loaded
//! once per verification), because they change on their own schedule (polls, unknown-kid refetches).

use crate::config::{ApiRoute, Config};
use crate::policy::{Policy, PolicyError};

pub struct Snapshot {
    pub generation: u64,
    pub policy: Policy,
    /// Extra API endpoints the config opens to job tokens.
    pub api_routes: Vec<ApiRoute>,
    /// Which families each host serves (`hosts:`).
    pub hosts: crate::classify::HostRules,
}

impl Snapshot {
    /// Reads the policy folder.
    ///
    /// # Errors
    /// The first policy file that does not load, with file and line.
    pub fn build(config: &Config, generation: u64) -> Result<Snapshot, PolicyError> {
        let mut snapshot = Snapshot::new(Policy::load_dir(&config.policy_dir)?, config.api_routes.clone(), generation);
        snapshot.hosts = config.hosts.as_ref().map_or_else(Default::default, crate::config::HostsConfig::rules);
        Ok(snapshot)
    }

    /// A snapshot serving every family on every host.
    pub fn new(policy: Policy, api_routes: Vec<ApiRoute>, generation: u64) -> Snapshot {
        Snapshot { generation, policy, api_routes, hosts: crate::classify::HostRules::default() }
    }
}
