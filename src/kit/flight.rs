//! Single flight per key: concurrent callers for one key take turns, and each first looks for what
//! an earlier flight left behind (in a cache of the caller's), so the work — a question to GitLab,
//! a mint — happens once however many requests need it at the same moment.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;

pub struct SingleFlight<K> {
    gates: DashMap<K, Arc<tokio::sync::Mutex<()>>>,
}

impl<K: Eq + Hash + Clone> Default for SingleFlight<K> {
    fn default() -> Self {
        SingleFlight { gates: DashMap::new() }
    }
}

impl<K: Eq + Hash + Clone> SingleFlight<K> {
    /// What `landed` finds, or else the result of `fly` — one flight per `key` at a time; a caller
    /// that waited looks again with `landed` before flying itself.
    pub async fn run<T, F>(&self, key: K, landed: impl Fn() -> Option<T>, fly: impl FnOnce() -> F) -> T
    where
        F: Future<Output = T>,
    {
        if let Some(done) = landed() {
            return done;
        }
        let gate = self.gates.entry(key.clone()).or_default().clone();
        let result = {
            let _turn = gate.lock().await;
            match landed() {
                Some(done) => done,
                None => fly().await,
            }
        };
        // Callers still waiting hold the gate; the next flight for this key gets a new one.
        self.gates.remove(&key);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::SingleFlight;

    #[tokio::test]
    async fn concurrent_callers_share_one_flight() {
        let flights = Arc::new(SingleFlight::default());
        let (flown, cache) = (Arc::new(AtomicUsize::new(0)), Arc::new(dashmap::DashMap::new()));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (flights, flown, cache) = (flights.clone(), flown.clone(), cache.clone());
                tokio::spawn(async move {
                    let landed = || cache.get("k").map(|v| *v);
                    flights
                        .run("k", landed, || async {
                            flown.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            cache.insert("k", 7);
                            7
                        })
                        .await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 7);
        }
        assert_eq!(flown.load(Ordering::SeqCst), 1);
    }
}
