//! A concurrent map bounded in entries whose entries die at a time of their own: dead entries go
//! when met, and when the map is full they are swept (at most once a second, so a flood of new keys
//! cannot make every insert sweep); a map still full keeps nothing new — the caller asks again next
//! time. Times are the caller's (seconds): nothing here reads a clock.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;

pub struct Expiring<K, V, S = RandomState> {
    entries: DashMap<K, (V, i64), S>,
    capacity: usize,
    last_sweep: AtomicI64,
}

impl<K: Eq + Hash, V: Clone> Expiring<K, V> {
    pub fn new(capacity: usize) -> Self {
        Expiring::with_hasher(capacity, RandomState::new())
    }
}

impl<K: Eq + Hash, V: Clone, S: BuildHasher + Clone> Expiring<K, V, S> {
    pub fn with_hasher(capacity: usize, hasher: S) -> Self {
        Expiring { entries: DashMap::with_hasher(hasher), capacity, last_sweep: AtomicI64::new(i64::MIN) }
    }

    /// The value for `key` while it lives (through its time) and `keep` accepts it; an entry that is
    /// dead or not accepted goes.
    pub fn get_if(&self, key: &K, now: i64, keep: impl Fn(&V) -> bool) -> Option<V> {
        let (value, until) = self.entries.get(key)?.clone();
        if until >= now && keep(&value) {
            return Some(value);
        }
        self.entries.remove(key);
        None
    }

    /// The value for `key` while it lives.
    pub fn get(&self, key: &K, now: i64) -> Option<V> {
        self.get_if(key, now, |_| true)
    }

    /// Keeps `value` for `key` through `until`; returns the value it replaced, if any. Full, and
    /// still full after a sweep: nothing is kept.
    pub fn insert(&self, key: K, value: V, until: i64, now: i64) -> Option<V> {
        if self.capacity == 0 {
            return None;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let last = self.last_sweep.load(Ordering::Relaxed);
            if last < now && self.last_sweep.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.entries.retain(|_, (_, at)| *at >= now);
            }
            if self.entries.len() >= self.capacity {
                return None;
            }
        }
        self.entries.insert(key, (value, until)).map(|(old, _)| old)
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries.retain(|key, (value, _)| keep(key, value));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Expiring;

    #[test]
    fn entries_die_at_their_time_and_the_map_stays_bounded() {
        let map = Expiring::new(2);
        map.insert("a", 1, 10, 0);
        map.insert("b", 2, 10, 0);
        assert_eq!(map.insert("c", 3, 10, 0), None, "full: not kept");
        assert_eq!((map.get(&"a", 10), map.get(&"c", 0)), (Some(1), None));
        assert_eq!(map.insert("a", 4, 10, 0), Some(1), "a key already held is replaced, full or not");
        assert_eq!(map.get(&"a", 11), None, "dead after its time, and gone");
        assert_eq!(map.len(), 1);
        map.insert("d", 5, 30, 20);
        map.insert("e", 6, 30, 20);
        assert_eq!((map.get(&"d", 20), map.get(&"e", 20), map.len()), (Some(5), Some(6), 2), "b was swept");
        assert_eq!(map.get_if(&"d", 20, |v| *v != 5), None, "refused by keep: gone");
        map.retain(|_, v| *v != 6);
        assert!(map.is_empty());
        assert_eq!(Expiring::new(0).insert("x", 1, 10, 0), None, "capacity 0 keeps nothing");
    }

    #[test]
    fn a_full_map_sweeps_at_most_once_a_second() {
        let map = Expiring::new(2);
        map.insert("a", 1, 6, 0);
        map.insert("b", 2, 100, 0);
        assert_eq!(map.insert("c", 3, 7, 7), None);
        assert_eq!(map.get(&"c", 7), Some(3), "a was dead: swept, c kept");
        map.insert("d", 4, 100, 7);
        assert_eq!(map.get(&"d", 7), None, "full, and swept once this second already");
        map.insert("d", 4, 100, 8);
        assert_eq!(map.get(&"d", 8), Some(4), "the next second sweeps c");
    }
}
