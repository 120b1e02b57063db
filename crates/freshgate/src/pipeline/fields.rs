//! The account's field metadata of one entity (contact fields, or sales account fields for
//! groups and companies): cached in memory and in the store (entity-keyed), refreshed when the
//! mapping shows evidence that the account changed, and otherwise after a long TTL.
//!
//! Every fetch is one API call of the account's hourly quota, so the cache is frugal:
//! - it is kept in the store, so a restart, a crash loop, `freshgate backfill` after `serve`, or
//!   another node (PostgreSQL) reuses a fresh copy instead of fetching again;
//! - it refreshes on evidence rather than on a short timer (see [`refresh_evidence`]): a trait
//!   key that matches no field (an admin may just have created it), or a value that is not a
//!   choice of its dropdown, radio or multi-select field (a choice may just have been added);
//! - each piece of evidence counts once per fetch, and refreshes are at least a minute apart:
//!   a trait that simply has no field (most do) would otherwise cost a call every minute;
//! - ages are measured on the pipeline clock, the same one the quota budget uses.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use freshgate_core::fields::{FieldDef, FieldType};
use freshgate_core::mapping::{Entity, FieldIndex, MappingReport};
use freshgate_store::{FieldMetadata, Store};
use freshworks_client::FreshworksError;
use tokio::sync::Mutex;

/// Refreshing because of an unmapped trait happens at most this often.
const MIN_REFRESH_MS: i64 = 60_000;

/// Evidence remembered per fetch; past this, new evidence no longer triggers refreshes until
/// the next fetch (a source sending endless distinct trait names must not drain the quota).
const MAX_CHECKED_KEYS: usize = 10_000;

struct Cached {
    index: Arc<FieldIndex>,
    fetched_at_ms: i64,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// Set by an unmapped-trait invalidation: the stored copy is as old as ours, skip it.
    bypass_store: bool,
    /// Evidence already seen with the current metadata.
    checked_evidence: HashSet<String>,
    /// The evidence that made the next fetch happen: seen once it is done.
    pending_check: Vec<String>,
}

/// The field metadata of one entity of one account, as one destination worker uses it.
pub struct FieldCache {
    entity: Entity,
    ttl_ms: i64,
    /// The store's key: the account's base URL (destinations on one account share it).
    account: String,
    store: Arc<dyn Store>,
    state: Mutex<State>,
}

/// Why fields could not be had.
pub enum FieldsError {
    /// The quota is spent until this time (Unix ms).
    Budget(i64),
    /// The call failed, and what that means.
    Call(FreshworksError, freshgate_core::delivery::Outcome),
}

impl FieldCache {
    /// An empty cache of contact fields over the store's copy for `account`.
    #[must_use]
    pub fn new(ttl: Duration, account: String, store: Arc<dyn Store>) -> Self {
        Self::for_entity(Entity::Contact, ttl, account, store)
    }

    /// An empty cache of `entity`'s fields over the store's copy for `account` (contact
    /// fields in `field_metadata`, any other entity in `entity_field_metadata`).
    #[must_use]
    pub fn for_entity(
        entity: Entity,
        ttl: Duration,
        account: String,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            entity,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            account,
            store,
            state: Mutex::new(State::default()),
        }
    }

    fn fresh(&self, fetched_at_ms: i64, now: i64) -> bool {
        now.saturating_sub(fetched_at_ms) < self.ttl_ms
    }

    /// The field index at `now` (Unix ms, pipeline clock): from memory, else from the store,
    /// else fetched (and then stored). `fetch` is charged to the budget by the caller's closure.
    ///
    /// # Errors
    /// When a fetch was needed and failed.
    pub async fn get<F, Fut>(&self, now: i64, fetch: F) -> Result<Arc<FieldIndex>, FieldsError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<FieldDef>, FieldsError>>,
    {
        let mut state = self.state.lock().await;
        if let Some(c) = state.cached.as_ref()
            && self.fresh(c.fetched_at_ms, now)
        {
            return Ok(Arc::clone(&c.index));
        }
        if !state.bypass_store
            && let Some(stored) = self.load(now).await
        {
            let index = Arc::clone(&stored.index);
            if state
                .cached
                .as_ref()
                .is_none_or(|c| c.fetched_at_ms < stored.fetched_at_ms)
            {
                state.checked_evidence.clear();
            }
            state.cached = Some(stored);
            return Ok(index);
        }
        let fields = fetch().await?;
        let fetched_at_ms = now;
        self.save(&fields, fetched_at_ms).await;
        let index = Arc::new(FieldIndex::for_entity(self.entity, &fields));
        state.cached = Some(Cached {
            index: Arc::clone(&index),
            fetched_at_ms,
        });
        state.bypass_store = false;
        state.checked_evidence = std::mem::take(&mut state.pending_check)
            .into_iter()
            .collect();
        Ok(index)
    }

    /// The stored copy, if fresh and readable. A store failure only costs a fetch.
    async fn load(&self, now: i64) -> Option<Cached> {
        let stored = match self.entity {
            Entity::Contact => self.store.field_metadata(&self.account).await,
            other => {
                self.store
                    .entity_field_metadata(&self.account, other.as_str())
                    .await
            }
        };
        let stored = match stored {
            Ok(stored) => stored?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read stored field metadata; fetching it");
                return None;
            }
        };
        if !self.fresh(stored.fetched_at_ms, now) {
            return None;
        }
        match serde_json::from_slice::<Vec<FieldDef>>(&stored.body) {
            Ok(fields) => Some(Cached {
                index: Arc::new(FieldIndex::for_entity(self.entity, &fields)),
                fetched_at_ms: stored.fetched_at_ms,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "stored field metadata is unreadable; fetching it");
                None
            }
        }
    }

    /// Keep a fetched copy in the store.
    async fn save(&self, fields: &[FieldDef], fetched_at_ms: i64) {
        if self.entity == Entity::Contact {
            remember(self.store.as_ref(), &self.account, fields, fetched_at_ms).await;
            return;
        }
        let Some(metadata) = metadata_of(fields, fetched_at_ms) else {
            return;
        };
        if let Err(e) = self
            .store
            .put_entity_field_metadata(&self.account, self.entity.as_str(), metadata)
            .await
        {
            tracing::warn!(error = %e, "cannot store field metadata");
        }
    }

    /// At `now`, the mapping found `evidence` (see [`refresh_evidence`]) that the metadata may
    /// be out of date. Forget the cache (so the next [`FieldCache::get`] fetches) if a piece of
    /// it was not already seen with the current metadata and the metadata is at least a minute
    /// old. Returns whether it was forgotten.
    pub async fn invalidate_on_evidence(&self, now: i64, evidence: &[String]) -> bool {
        let mut state = self.state.lock().await;
        let Some(c) = state.cached.as_ref() else {
            return false;
        };
        if now.saturating_sub(c.fetched_at_ms) < MIN_REFRESH_MS
            || state.checked_evidence.len() >= MAX_CHECKED_KEYS
        {
            return false;
        }
        let unseen: Vec<String> = evidence
            .iter()
            .filter(|k| !state.checked_evidence.contains(*k))
            .cloned()
            .collect();
        if unseen.is_empty() {
            return false;
        }
        state.cached = None;
        state.bypass_store = true;
        state.pending_check = unseen;
        true
    }
}

/// Keep `account`'s field list fetched at `fetched_at_ms` in the store, where every
/// [`FieldCache`] of that account (this process after a restart, other nodes) finds it. A
/// failure is logged: it only costs a fetch later.
pub async fn remember(store: &dyn Store, account: &str, fields: &[FieldDef], fetched_at_ms: i64) {
    let Some(metadata) = metadata_of(fields, fetched_at_ms) else {
        return;
    };
    if let Err(e) = store.put_field_metadata(account, metadata).await {
        tracing::warn!(error = %e, "cannot store field metadata");
    }
}

/// A field list as the store keeps it (`None`, logged, when it cannot be serialised).
fn metadata_of(fields: &[FieldDef], fetched_at_ms: i64) -> Option<FieldMetadata> {
    match serde_json::to_vec(fields) {
        Ok(body) => Some(FieldMetadata {
            fetched_at_ms,
            body,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialise field metadata");
            None
        }
    }
}

/// What in a mapping report suggests the account's fields changed since they were fetched: the
/// trait keys that matched no field, and `choice:<key>` for a value that is not a choice of its
/// dropdown, radio or multi-select field. (A bad number or date says nothing about the account.)
#[must_use]
pub fn refresh_evidence(index: &FieldIndex, report: &MappingReport) -> Vec<String> {
    let choice_field = |name: &str| {
        index.field(name).is_some_and(|f| {
            matches!(
                f.field_type,
                FieldType::Dropdown | FieldType::Radio | FieldType::MultiSelectDropdown
            )
        })
    };
    report
        .unmapped
        .iter()
        .cloned()
        .chain(
            report
                .coercion_failures
                .iter()
                .filter(|f| choice_field(&f.field))
                .map(|f| format!("choice:{}", f.trait_key)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(freshgate_store::sqlite::open_in(dir.path()).unwrap()) as Arc<dyn Store>
    }

    fn cache(store: &Arc<dyn Store>) -> FieldCache {
        FieldCache::new(
            Duration::from_secs(3600),
            "https://acme.example".into(),
            Arc::clone(store),
        )
    }

    /// A `get` that counts its fetches; the account has one custom field, `cf_plan`.
    async fn get(c: &FieldCache, now: i64, fetches: &AtomicUsize) -> Arc<FieldIndex> {
        c.get(now, || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(vec![FieldDef::new("cf_plan", "Plan", FieldType::Text, &[])])
        })
        .await
        .ok()
        .unwrap()
    }

    #[tokio::test]
    async fn a_restarted_cache_reuses_the_stored_copy_until_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let fetches = AtomicUsize::new(0);
        get(&cache(&s), 0, &fetches).await;
        // A new process (new cache, same store) within the TTL: no call.
        let restarted = cache(&s);
        let index = get(&restarted, HOUR_MS - 1, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(format!("{index:?}").contains("cf_plan"));
        // Past the TTL: fetched again, and the new copy is what the store keeps.
        get(&cache(&s), HOUR_MS, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        get(&cache(&s), HOUR_MS + 10, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unmapped_key_refreshes_once_and_not_within_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let c = cache(&s);
        let fetches = AtomicUsize::new(0);
        get(&c, 0, &fetches).await;
        let plan = ["favourite_colour".to_owned()];
        assert!(
            !c.invalidate_on_evidence(10_000, &plan).await,
            "too soon after the fetch"
        );
        assert!(c.invalidate_on_evidence(61_000, &plan).await);
        get(&c, 61_000, &fetches).await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "fetched, not read back from the store"
        );
        // Still unmapped after that refresh: the key is known to have no field.
        assert!(!c.invalidate_on_evidence(10 * 60_000, &plan).await);
        // A key nobody has looked for yet still refreshes.
        assert!(
            c.invalidate_on_evidence(10 * 60_000, &["shoe_size".to_owned()])
                .await
        );
        get(&c, 10 * 60_000, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn evidence_is_unmapped_keys_and_values_outside_a_choice_list() {
        use freshgate_core::mapping::CoercionFailure;
        let index = FieldIndex::new(&[
            FieldDef::new("cf_tier", "Tier", FieldType::Dropdown, &["Gold"]),
            FieldDef::new("cf_seats", "Seats", FieldType::Number, &[]),
        ]);
        let failure = |key: &str, field: &str| CoercionFailure {
            trait_key: key.into(),
            field: field.into(),
            reason: "bad".into(),
        };
        let report = MappingReport {
            unmapped: vec!["shoe_size".into()],
            ambiguous: Vec::new(),
            coercion_failures: vec![failure("tier", "cf_tier"), failure("seats", "cf_seats")],
        };
        assert_eq!(
            refresh_evidence(&index, &report),
            ["shoe_size", "choice:tier"],
            "a bad number says nothing about the account"
        );
        assert!(refresh_evidence(&index, &MappingReport::default()).is_empty());
    }

    #[tokio::test]
    async fn account_fields_are_kept_apart_from_contact_fields() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let accounts = || {
            FieldCache::for_entity(
                Entity::SalesAccount,
                Duration::from_secs(3600),
                "https://acme.example".into(),
                Arc::clone(&s),
            )
        };
        let fetches = AtomicUsize::new(0);
        get(&accounts(), 0, &fetches).await;
        // The contact cache of the same account does not see the account fields...
        get(&cache(&s), 1, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // ...and a restarted account cache reuses its own stored copy.
        let index = get(&accounts(), 2, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert_eq!(index.entity(), Entity::SalesAccount);
        assert!(
            s.entity_field_metadata("https://acme.example", "sales_account")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn an_unreadable_stored_copy_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.put_field_metadata(
            "https://acme.example",
            FieldMetadata {
                fetched_at_ms: 0,
                body: b"not json".to_vec(),
            },
        )
        .await
        .unwrap();
        let fetches = AtomicUsize::new(0);
        get(&cache(&s), 1, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // and the good copy replaced it
        get(&cache(&s), 2, &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
