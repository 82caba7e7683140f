//! The verified-token cache: SHA-256 of the token → its claims, for the key-set generation that
//! verified it. A hit costs a hash and a lookup; an entry dies at the token's `exp` (plus leeway) or
//! as soon as its issuer's key set changes. Bounded (`kit::Expiring`): when full, expired entries are
//! swept; if it is still full, new tokens are simply not cached (verification still works, only slower).

use std::sync::Arc;

use super::claims::Claims;
use crate::kit::Expiring;

/// The cache key: SHA-256 of the token. Collisions cannot be crafted, and no token is stored.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    sha256(token.as_bytes())
}

/// SHA-256 as a fixed array (token cache keys, key-set change detection, secret comparison).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

#[derive(Clone)]
pub struct Entry {
    pub claims: Arc<Claims>,
    pub issuer: usize,
    pub generation: u64,
    /// Seconds since the epoch after which the entry is dead (`exp` + leeway).
    pub dies_at: i64,
}

pub struct TokenCache {
    entries: Expiring<TokenDigest, Entry, BuildDigestHasher>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { entries: Expiring::with_hasher(capacity, BuildDigestHasher) }
    }

    /// The live entry for `digest`, if `valid` accepts its issuer and generation; dead entries go.
    pub fn get(&self, digest: &TokenDigest, now: i64, valid: impl Fn(usize, u64) -> bool) -> Option<Entry> {
        self.entries.get_if(digest, now, |e| valid(e.issuer, e.generation))
    }

    pub fn insert(&self, digest: TokenDigest, entry: Entry, now: i64) {
        let dies_at = entry.dies_at;
        self.entries.insert(digest, entry, dies_at, now);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The key is already a uniform SHA-256 digest: its first eight bytes are a perfect hash.
#[derive(Clone, Copy, Default)]
pub struct BuildDigestHasher;

pub struct DigestHasher(u64);

impl std::hash::BuildHasher for BuildDigestHasher {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length prefix (a usize) and then the bytes; keep the bytes.
        if bytes.len() >= 8 {
            let mut first = [0; 8];
            first.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ProjectPath;

    fn entry(generation: u64, dies_at: i64) -> Entry {
        let claims = Claims { git_ref: None, ..Claims::job("i", ProjectPath::parse("a/b").unwrap(), 1, 1, dies_at) };
        Entry { claims: Arc::new(claims), issuer: 0, generation, dies_at }
    }

    #[test]
    fn entries_die_at_exp_and_with_their_key_set() {
        let cache = TokenCache::new(10);
        let d = digest("token");
        cache.insert(d, entry(7, 100), 50);
        assert!(cache.get(&d, 100, |_, g| g == 7).is_some());
        assert!(cache.get(&d, 100, |_, g| g == 8).is_none(), "a new key set invalidates");
        assert!(cache.is_empty(), "and the dead entry is gone");
        cache.insert(d, entry(7, 100), 50);
        assert!(cache.get(&d, 101, |_, _| true).is_none(), "expired");
    }

    #[test]
    fn bounded_with_a_sweep_of_expired_entries() {
        let cache = TokenCache::new(2);
        cache.insert(digest("a"), entry(1, 10), 5);
        cache.insert(digest("b"), entry(1, 100), 5);
        cache.insert(digest("c"), entry(1, 100), 5);
        assert_eq!(cache.len(), 2, "full: c is not cached");
        cache.insert(digest("c"), entry(1, 100), 50);
        assert!(cache.get(&digest("c"), 50, |_, _| true).is_some(), "the sweep dropped expired a");
        assert!(cache.get(&digest("a"), 50, |_, _| true).is_none());
    }
}
