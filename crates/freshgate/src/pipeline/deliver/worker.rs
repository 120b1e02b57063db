//! The delivery worker of one destination: its shared context, and what happens to a leased
//! contact as a whole (drained step by step, paused when the API key is refused, given back
//! with the time it may be taken again).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshgate_core::coalesce::MissingTraits;
use freshgate_core::mapping::Entity;
use freshgate_core::rules::DestinationKinds;
use freshgate_store::{ContactLease, Store, StoreError};
use freshworks_client::FreshworksClient;

use super::Stop;
use crate::config::ResolvedDestination;
use crate::pipeline::budget::BudgetGate;
use crate::pipeline::fields::FieldCache;
use crate::pipeline::{clock, now_ms};
use crate::telemetry::events;

/// Longest quota wait stored with a contact given back. A longer one (the hour's quota is
/// spent) is not stored: the dispatcher waits for the budget before leasing, and the budget is
/// recomputed at start from the ledger and the configured limits, so a restart with a higher
/// limit delivers at once instead of an hour later.
/// In the pipeline clock's milliseconds, like the quota windows.
const MAX_STORED_QUOTA_WAIT_MS: i64 = 60_000;

/// A destination's shared delivery context.
pub struct DestinationWorker {
    /// Destination name.
    pub name: String,
    /// Missing-traits mode.
    pub mode: MissingTraits,
    /// Retry horizon.
    pub horizon_ms: i64,
    /// How long a pause (401/403) lasts before the next probe.
    pub pause_probe: Duration,
    /// The API client.
    pub client: FreshworksClient,
    /// The queue.
    pub store: Arc<dyn Store>,
    /// The account's quota.
    pub budget: Arc<BudgetGate>,
    /// The account's field metadata.
    pub fields: FieldCache,
    /// The account's sales account field metadata (groups and companies).
    pub account_fields: FieldCache,
    /// What the destination delivers besides identify.
    pub kinds: DestinationKinds,
    /// Serialises the writes of one sales account within this process.
    pub account_locks: super::account::AccountLocks,
    /// Set while paused by an authentication failure: until when (Unix ms).
    pub paused: Mutex<Option<i64>>,
    /// Ready contacts that make a batch go through `bulk_upsert` (0: never).
    pub bulk_min_contacts: usize,
    /// Bulk jobs in flight at once.
    pub bulk_jobs: usize,
    /// Send everything through `bulk_upsert` (`freshgate backfill`).
    pub force_bulk: bool,
    /// Unmapped trait keys seen, until written to the store.
    pub unmapped: Arc<crate::pipeline::unmapped::UnmappedTally>,
    /// How long after a confirmed write an unchanged identify is skipped (ms).
    pub unchanged_skip_ms: i64,
    /// Marketing list ids by name, once known (see [`super::lists`]).
    pub list_ids: super::lists::ListIds,
    /// The account's activity types, lifecycle stages and activity owner, cached.
    pub selectors: super::activity::SelectorCache,
}

impl DestinationWorker {
    /// Build from a resolved destination.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        destination: &ResolvedDestination,
        store: Arc<dyn Store>,
        budget: Arc<BudgetGate>,
        pause_probe: Duration,
    ) -> anyhow::Result<Self> {
        let client = client_for(destination)?;
        let horizon_hours = i64::try_from(destination.config.retry_horizon_hours).unwrap_or(72);
        let fields = FieldCache::new(
            Duration::from_secs(destination.config.fields_ttl_secs),
            destination.base_url.clone(),
            Arc::clone(&store),
        );
        let account_fields = FieldCache::for_entity(
            Entity::SalesAccount,
            Duration::from_secs(destination.config.fields_ttl_secs),
            destination.base_url.clone(),
            Arc::clone(&store),
        );
        Ok(Self {
            name: destination.config.name.clone(),
            mode: destination.config.missing_traits,
            horizon_ms: horizon_hours.saturating_mul(3_600_000),
            pause_probe,
            client,
            store,
            budget,
            fields,
            account_fields,
            kinds: destination.kinds.clone(),
            account_locks: super::account::AccountLocks::default(),
            paused: Mutex::new(None),
            bulk_min_contacts: destination.config.bulk_min_contacts,
            bulk_jobs: destination.config.bulk_jobs,
            force_bulk: false,
            unmapped: Arc::default(),
            unchanged_skip_ms: i64::try_from(destination.config.unchanged_skip_secs)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
            list_ids: super::lists::ListIds::default(),
            selectors: super::activity::SelectorCache::new(Duration::from_secs(
                destination.config.fields_ttl_secs,
            )),
        })
    }

    /// When the destination is paused, until when (Unix ms).
    pub fn paused_until(&self) -> Option<i64> {
        self.paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .copied()
    }

    /// Pause the destination (Freshworks refused the key); returns until when (Unix ms).
    pub(super) async fn pause(&self, reason: &str) -> i64 {
        let now = now_ms();
        let until = now + clock::clock_ms(self.pause_probe);
        let since = {
            let mut p = self
                .paused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let was = p.replace(until);
            if was.is_none() {
                tracing::error!(
                    destination = self.name,
                    reason,
                    "DESTINATION PAUSED: Freshworks refused the API key; events are kept and delivery resumes when the key works again"
                );
                events::paused(&self.name, true);
            }
            now
        };
        // Recorded for `queue stats` and the console (a renewed pause keeps its start).
        let record = freshgate_store::DestinationPause {
            destination: self.name.clone(),
            reason: reason.to_owned(),
            since_ms: since,
            until_ms: until,
        };
        if let Err(e) = self.store.set_pause(&self.name, Some(record)).await {
            tracing::warn!(error = %e, "cannot record the pause in the store");
        }
        until
    }

    /// A call succeeded: a pause, if any, is over.
    pub(super) async fn resume(&self) {
        let was_paused = self
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .is_some();
        if was_paused {
            tracing::warn!(destination = self.name, "destination resumed");
            events::paused(&self.name, false);
            if let Err(e) = self.store.set_pause(&self.name, None).await {
                tracing::warn!(error = %e, "cannot record the resume in the store");
            }
        }
    }

    /// Deliver what the lease covers, then give the lease back.
    pub async fn run_lease(
        &self,
        lease: &ContactLease,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        let not_before = match self.drain(lease, stop).await {
            Ok(()) => None,
            Err(Stop::Later(not_before)) => not_before,
            // Another worker holds the contact now: nothing of ours to give back.
            Err(Stop::Store(StoreError::LeaseLost { .. })) => return,
            Err(Stop::Store(e)) => {
                tracing::warn!(destination = self.name, error = %e, "store error while delivering");
                Some(now_ms() + 1000)
            }
        };
        self.give_back(lease, not_before).await;
    }

    /// Release a lease, not to be taken again before `not_before` (Unix ms). A lease already
    /// taken over is not an error.
    pub async fn give_back(&self, lease: &ContactLease, not_before: Option<i64>) {
        if let Err(e) = self.store.release(lease, not_before).await
            && !matches!(e, StoreError::LeaseLost { .. })
        {
            tracing::warn!(destination = self.name, error = %e, "cannot release a lease");
        }
    }

    async fn drain(
        &self,
        lease: &ContactLease,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), Stop> {
        loop {
            if stop.is_cancelled()
                || now_ms() + clock::clock_ms(Duration::from_secs(5)) > lease.until_ms
            {
                return Err(Stop::Later(None));
            }
            if let Some(until) = self.paused_until()
                && until > now_ms()
            {
                return Err(Stop::Later(Some(until)));
            }
            match self.next_upsert(lease).await? {
                None => return Ok(()),
                Some(prepared) => self.send_single(prepared).await?,
            }
        }
    }
}

/// The Freshworks client of a destination (its URL, key and timeout).
///
/// # Errors
/// When the client cannot be built (bad URL or key characters).
pub fn client_for(
    destination: &ResolvedDestination,
) -> Result<FreshworksClient, freshworks_client::ClientError> {
    use secrecy::ExposeSecret;
    FreshworksClient::new(freshworks_client::ClientConfig {
        base_url: destination.base_url.clone(),
        api_key: destination.api_key.expose_secret().to_owned(),
        timeout: Duration::from_secs(destination.config.timeout_secs),
        user_agent: format!("freshgate/{}", env!("CARGO_PKG_VERSION")),
    })
}

/// The not-before time to store with a contact the quota deferred until `until` (Unix ms):
/// only short waits are stored (see [`MAX_STORED_QUOTA_WAIT_MS`]).
#[must_use]
pub fn quota_not_before(until: i64) -> Option<i64> {
    (until.saturating_sub(now_ms()) <= MAX_STORED_QUOTA_WAIT_MS).then_some(until)
}
