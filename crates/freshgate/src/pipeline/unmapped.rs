//! Trait keys that matched no Freshworks field, tallied in memory by the delivery workers and
//! written to the store every few seconds (one write for many deliveries, off the delivery path).
//!
//! They used to be a metric label, one series per client-sent key: a client with random keys
//! grew `/metrics` without limit and published its strings. Now the only metric is an unlabelled
//! (per destination) count, and the keys live in the store, bounded there and bounded here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use freshgate_store::{
    MAX_UNMAPPED_TRAITS_PER_DESTINATION, Store, UnmappedTrait, clip_unmapped_key,
};
use tokio_util::sync::CancellationToken;

/// Most distinct (destination, key) pairs held between two flushes; sightings of new keys past
/// it are dropped (the store keeps only the most recent keys anyway).
pub const MAX_TALLIED: usize = 10 * MAX_UNMAPPED_TRAITS_PER_DESTINATION;

/// Sightings not yet written to the store.
#[derive(Debug, Default)]
pub struct UnmappedTally {
    seen: Mutex<HashMap<(String, String), UnmappedTrait>>,
}

impl UnmappedTally {
    /// Note that `keys` matched no field of `destination` at `at_ms`.
    pub fn note(&self, destination: &str, keys: &[String], at_ms: i64) {
        if keys.is_empty() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            let key = clip_unmapped_key(key);
            let id = (destination.to_owned(), key.to_owned());
            if let Some(t) = seen.get_mut(&id) {
                t.count = t.count.saturating_add(1);
                t.last_seen_ms = t.last_seen_ms.max(at_ms);
            } else if seen.len() < MAX_TALLIED {
                seen.insert(
                    id,
                    UnmappedTrait {
                        destination: destination.to_owned(),
                        key: key.to_owned(),
                        count: 1,
                        first_seen_ms: at_ms,
                        last_seen_ms: at_ms,
                    },
                );
            }
        }
    }

    /// Everything noted since the last call.
    pub fn take(&self) -> Vec<UnmappedTrait> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *seen).into_values().collect()
    }
}

/// Write the tally to the store every `every` until `stop`, and once more then.
pub async fn flush_until(
    store: Arc<dyn Store>,
    tally: Arc<UnmappedTally>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(every) => false,
        };
        let pending = tally.take();
        if !pending.is_empty()
            && let Err(e) = store.record_unmapped_traits(pending).await
        {
            tracing::warn!(error = %e, "could not record unmapped traits");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_add_up_and_new_keys_stop_at_the_bound() {
        let tally = UnmappedTally::default();
        tally.note("crm", &["plan".to_owned(), "plan".to_owned()], 5);
        tally.note("crm", &["plan".to_owned()], 9);
        let keys: Vec<String> = (0..MAX_TALLIED + 5).map(|i| format!("k{i}")).collect();
        tally.note("crm", &keys, 10);
        let taken = tally.take();
        assert_eq!(taken.len(), MAX_TALLIED);
        let plan = taken.iter().find(|t| t.key == "plan");
        assert_eq!(
            plan.map(|t| (t.count, t.first_seen_ms, t.last_seen_ms)),
            Some((3, 5, 9))
        );
        assert!(tally.take().is_empty());
    }
}
