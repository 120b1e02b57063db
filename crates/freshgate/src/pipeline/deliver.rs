//! Delivering one leased contact: its pending events in FIFO order, consecutive identifies
//! coalesced into one upsert, the contact shadow consulted (newest event wins per field,
//! unchanged contacts cost no call), the outcome classified and settled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshgate_core::coalesce::{IdentifyInput, MissingTraits};
use freshgate_core::delivery::{self, Outcome};
use freshgate_core::mapping::{self, FieldIndex, Identity, MappingReport};
use freshgate_core::segment::{self, EventType};
use freshgate_core::shadow::{self, ContactShadow};
use freshgate_store::{Attempt, ContactLease, PendingDelivery, Settlement, Store, StoreError};
use freshworks_client::{FreshworksClient, FreshworksError};
use serde_json::Value;

use super::budget::BudgetGate;
use super::fields::{self, FieldCache, FieldsError};
use super::{clock, now_ms};
use crate::config::ResolvedDestination;
use crate::telemetry::events;

/// Longest quota wait stored with a contact given back. A longer one (the hour's quota is
/// spent) is not stored: the dispatcher waits for the budget before leasing, and the budget is
/// recomputed at start from the ledger and the configured limits, so a restart with a higher
/// limit delivers at once instead of an hour later.
/// In the pipeline clock's milliseconds, like the quota windows.
const MAX_STORED_QUOTA_WAIT_MS: i64 = 60_000;

/// Pending deliveries read per round.
const ROUND: usize = 100;
/// Response bodies kept in traces are cut to this many bytes.
const MAX_KEPT_BODY: usize = 4096;

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
    /// Set while paused by an authentication failure: until when (Unix ms).
    pub paused: Mutex<Option<i64>>,
    /// Ready contacts that make a batch go through `bulk_upsert` (0: never).
    pub bulk_min_contacts: usize,
    /// Send everything through `bulk_upsert` (`freshgate backfill`).
    pub force_bulk: bool,
    /// Unmapped trait keys seen, until written to the store.
    pub unmapped: Arc<super::unmapped::UnmappedTally>,
    /// How long after a confirmed write an unchanged identify is skipped (ms).
    pub unchanged_skip_ms: i64,
}

/// A contact's leading identifies, each with its parsed event.
type Group = Vec<(PendingDelivery, segment::StoredEvent)>;

/// A contact's coalesced identify group, mapped and planned, ready to send.
#[derive(Clone)]
pub struct Prepared {
    /// The contact's lease.
    pub lease: ContactLease,
    /// Deliveries the group covers.
    pub delivery_ids: Vec<i64>,
    /// Earliest first attempt among them (retry horizon).
    pub first_attempt_ms: Option<i64>,
    /// Most attempts among them (backoff).
    pub attempts: u32,
    /// Segment `userId` (stored as `external_id`).
    pub user_id: String,
    /// Lower-cased email to send.
    pub email: String,
    /// Fields to send.
    pub plan: shadow::UpsertPlan,
    /// The shadow before sending.
    pub shadow: Option<ContactShadow>,
    /// Mapping report suffix for traces.
    pub summary: String,
    /// Timestamp of the event that set the email.
    pub email_ts_ms: Option<i64>,
    /// How the write finds the contact (`mapping::identifier`).
    pub identity: Identity,
}

/// A failure that stops work on this lease.
pub enum Stop {
    /// Retry later (already settled, or give the key back until then).
    Later(Option<i64>),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
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
        Ok(Self {
            name: destination.config.name.clone(),
            mode: destination.config.missing_traits,
            horizon_ms: horizon_hours.saturating_mul(3_600_000),
            pause_probe,
            client,
            store,
            budget,
            fields,
            paused: Mutex::new(None),
            bulk_min_contacts: destination.config.bulk_min_contacts,
            force_bulk: false,
            unmapped: Arc::default(),
            unchanged_skip_ms: i64::try_from(destination.config.unchanged_skip_secs)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
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

    async fn pause(&self, reason: &str) -> i64 {
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

    async fn resume(&self) {
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
            match self.next_group(lease).await? {
                None => return Ok(()),
                Some(prepared) => self.send_single(prepared).await?,
            }
        }
    }

    /// The next identify group of a leased contact that needs a call, settling on the way
    /// everything that needs none (not handled, rejected, unchanged). `None`: nothing left.
    ///
    /// # Errors
    /// `Stop::Later` when the contact must wait (quota, pause), `Stop::Store`.
    pub async fn next_group(&self, lease: &ContactLease) -> Result<Option<Prepared>, Stop> {
        loop {
            let pending = self.store.pending_for(lease, ROUND).await?;
            if pending.is_empty() {
                return Ok(None);
            }
            let (settle_now, group) = self.split(pending);
            if !settle_now.is_empty() {
                self.store.settle(lease, now_ms(), settle_now, None).await?;
            }
            if group.is_empty() {
                continue;
            }
            if let Some(prepared) = self.prepare(lease, group).await? {
                return Ok(Some(prepared));
            }
        }
    }

    /// Split a contact's pending deliveries: what is settled without a call, and the leading
    /// run of identifies (later events wait for it: per-contact order).
    fn split(&self, pending: Vec<PendingDelivery>) -> (Vec<(i64, Settlement)>, Group) {
        let mut settle_now: Vec<(i64, Settlement)> = Vec::new();
        let mut group: Group = Vec::new();
        for p in pending {
            let parsed = match segment::parse_stored_event(&p.raw) {
                Ok(e) => e,
                Err(e) => {
                    settle_now.push((
                        p.delivery_id,
                        Settlement::DeadLettered {
                            reason: format!("stored event cannot be read: {e}"),
                        },
                    ));
                    continue;
                }
            };
            if parsed.event_type != EventType::Identify {
                if group.is_empty() {
                    settle_now.push((
                        p.delivery_id,
                        Settlement::Skipped {
                            reason: format!(
                                "not handled by this destination: {}",
                                parsed.event_type.as_str()
                            ),
                        },
                    ));
                    continue;
                }
                break;
            }
            if let Some(reason) = identify_rejection(&parsed) {
                events::deliveries(&self.name, "rejected", 1);
                settle_now.push((p.delivery_id, Settlement::Skipped { reason }));
                continue;
            }
            group.push((p, parsed));
        }
        (settle_now, group)
    }

    async fn field_index(&self) -> Result<Arc<FieldIndex>, Stop> {
        let result = self
            .fields
            .get(now_ms(), || async {
                self.budget.acquire(1).await.map_err(FieldsError::Budget)?;
                let started = Instant::now();
                let r = fields::fetch(&self.client).await;
                events::freshworks_call(
                    &self.name,
                    "fields",
                    r.as_ref()
                        .map_or_else(FreshworksError::status, |_| Some(200)),
                    started.elapsed().as_secs_f64(),
                );
                r.map_err(FieldsError::Call)
            })
            .await;
        match result {
            Ok(index) => Ok(index),
            Err(FieldsError::Budget(until)) => Err(Stop::Later(quota_not_before(until))),
            Err(FieldsError::Call(e)) => {
                let status = e.status();
                let outcome = match &e {
                    FreshworksError::Http {
                        status,
                        retry_after,
                        body,
                        ..
                    } => delivery::classify_at(
                        *status,
                        retry_after.as_deref(),
                        body.as_bytes(),
                        time::OffsetDateTime::now_utc(),
                    ),
                    other => delivery::transport_error(&other.to_string()),
                };
                tracing::warn!(destination = self.name, ?status, error = %e, "cannot read contact fields");
                match outcome {
                    Outcome::Pause { reason } => Err(Stop::Later(Some(self.pause(&reason).await))),
                    Outcome::Retry { after, .. } => {
                        if status == Some(429) {
                            self.budget.observe_429();
                        }
                        let wait = after.unwrap_or(Duration::from_secs(5));
                        Err(Stop::Later(Some(now_ms() + duration_ms(wait))))
                    }
                    // A 4xx on a GET of metadata is not the events' fault: keep them, retry later.
                    _ => Err(Stop::Later(Some(now_ms() + 60_000))),
                }
            }
        }
    }

    /// Coalesce, map and plan a group against the contact's shadow. `None` when it was settled
    /// without a call (no email anywhere, or nothing changed).
    async fn prepare(&self, lease: &ContactLease, group: Group) -> Result<Option<Prepared>, Stop> {
        let delivery_ids: Vec<i64> = group.iter().map(|(p, _)| p.delivery_id).collect();
        let user_id = group
            .iter()
            .rev()
            .find_map(|(_, e)| e.user_id.clone())
            .unwrap_or_else(|| lease.contact_key.clone());
        let inputs: Vec<IdentifyInput> = group
            .iter()
            .map(|(p, e)| IdentifyInput {
                seq: p.event_id,
                ts_ms: p.timestamp_ms,
                traits: e.traits.clone(),
            })
            .collect();
        let first_attempt_ms = group.iter().filter_map(|(p, _)| p.first_attempt_ms).min();
        let attempts = group.iter().map(|(p, _)| p.attempts).max().unwrap_or(0);
        let coalesced = freshgate_core::coalesce::coalesce(&inputs, self.mode);

        let mut index = self.field_index().await?;
        let mut mapped = mapping::map_traits(&index, &coalesced);
        let evidence = fields::refresh_evidence(&index, &mapped.report);
        if !evidence.is_empty()
            && self
                .fields
                .invalidate_on_evidence(now_ms(), &evidence)
                .await
        {
            index = self.field_index().await?;
            mapped = mapping::map_traits(&index, &coalesced);
        }
        self.report(&mapped.report);

        let shadow: Option<ContactShadow> = self
            .store
            .shadow(&self.name, &lease.contact_key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        // Newest event wins for the email too: a late event carrying an older address must not
        // move the contact back to it.
        if let Some(s) = &shadow
            && let (Some(shadow_email), Some(shadow_ts)) = (&s.email, s.email_ts_ms)
            && mapped.email_ts_ms.is_none_or(|ts| ts < shadow_ts)
        {
            mapped.email = Some(shadow_email.clone());
            mapped.email_ts_ms = Some(shadow_ts);
        }
        let email_ts_ms = mapped.email_ts_ms;
        let Some(email) = mapped
            .email
            .clone()
            .or_else(|| shadow.as_ref().and_then(|s| s.email.clone()))
        else {
            let reason = "rejected: identify has no traits.email (Freshmarketer requires it)";
            events::deliveries(&self.name, "rejected", delivery_ids.len());
            let skipped = Settlement::Skipped {
                reason: reason.into(),
            };
            self.settle_all(lease, &delivery_ids, skipped, None).await?;
            return Ok(None);
        };
        let plan = shadow::plan(shadow.as_ref(), &mapped, self.mode);
        let time_notes: Vec<String> = group
            .iter()
            .filter_map(|(_, e)| e.timestamp_note())
            .collect();
        let summary = report_summary(&mapped.report, &plan.stale, &time_notes);
        let email_unchanged =
            shadow.as_ref().and_then(|s| s.email.as_deref()) == Some(email.as_str());
        // Skipped only while the CRM recently confirmed the contact: it may have been deleted
        // or merged since (or the emulator restarted empty), and must not stay hidden.
        let recently_confirmed = shadow
            .as_ref()
            .is_some_and(|s| s.skips_unchanged(now_ms(), self.unchanged_skip_ms));
        if plan.unchanged && email_unchanged && recently_confirmed {
            events::deliveries(&self.name, "unchanged", delivery_ids.len());
            // Move the shadow's timestamps forward: these events confirmed the values, so an
            // older event arriving later must still count as stale.
            let mut confirmed = shadow::apply(shadow.as_ref(), &user_id, &email, &plan, None);
            confirmed.email_ts_ms = newest(confirmed.email_ts_ms, email_ts_ms);
            if let Ok(bytes) = serde_json::to_vec(&confirmed) {
                self.store
                    .put_shadow(&self.name, &lease.contact_key, bytes)
                    .await?;
            }
            let reason =
                format!("unchanged: every mapped field equals what was last sent{summary}");
            self.settle_all(lease, &delivery_ids, Settlement::Skipped { reason }, None)
                .await?;
            return Ok(None);
        }
        let identity = mapping::identifier(&user_id, &email, shadow.as_ref());
        Ok(Some(Prepared {
            lease: lease.clone(),
            identity,
            delivery_ids,
            first_attempt_ms,
            attempts,
            user_id,
            email,
            plan,
            shadow,
            summary,
            email_ts_ms,
        }))
    }

    async fn settle_all(
        &self,
        lease: &ContactLease,
        delivery_ids: &[i64],
        settlement: Settlement,
        attempt: Option<Attempt>,
    ) -> Result<(), Stop> {
        let settlements = delivery_ids
            .iter()
            .map(|id| (*id, settlement.clone()))
            .collect();
        self.store
            .settle(lease, now_ms(), settlements, attempt)
            .await?;
        Ok(())
    }

    /// Record, before a write to these contacts is sent, that its outcome is in doubt until
    /// settled (see `ContactShadow::in_doubt`). The one place both the single and the bulk path
    /// mark their writes; it costs a store write only for contacts with a confirmed shadow.
    ///
    /// # Errors
    /// `Stop::Store`: then nothing may be sent.
    pub async fn mark_in_doubt(&self, prepared: &[Prepared]) -> Result<(), Stop> {
        let marks = prepared.iter().filter_map(|p| {
            let marked = shadow::in_doubt(p.shadow.as_ref())?;
            let bytes = serde_json::to_vec(&marked).ok()?;
            Some(
                self.store
                    .put_shadow(&self.name, &p.lease.contact_key, bytes),
            )
        });
        for r in futures::future::join_all(marks).await {
            r?;
        }
        Ok(())
    }

    /// One `POST /contacts/upsert` for a prepared group.
    async fn send_single(&self, p: Prepared) -> Result<(), Stop> {
        let body = mapping::upsert_body(&p.user_id, &p.email, &p.plan, &p.identity);
        // Marked before the quota is taken: the call then follows its budget slot at once, as
        // the account's own accounting sees it.
        self.mark_in_doubt(std::slice::from_ref(&p)).await?;
        if let Err(until) = self.budget.acquire(1).await {
            return Err(Stop::Later(quota_not_before(until)));
        }
        let started = Instant::now();
        let result = self.client.upsert_contact(&body).await;
        let at = now_ms();
        events::freshworks_call(
            &self.name,
            "contacts_upsert",
            result
                .as_ref()
                .map_or_else(FreshworksError::status, |x| Some(x.status)),
            started.elapsed().as_secs_f64(),
        );
        match result {
            Ok(exchange) => {
                if let Some(remaining) = exchange.rate_limit_remaining {
                    self.budget.observe_remaining(remaining);
                }
                let id = exchange.body.contact.id;
                let mut attempt = Attempt {
                    delivery_ids: p.delivery_ids.clone(),
                    at_ms: at,
                    request_line: exchange.request_line.clone(),
                    request_body: exchange.request_body.clone(),
                    status: Some(exchange.status),
                    response_body: Some(truncate(&exchange.raw)),
                    outcome: format!("delivered to contact {id}{}", p.summary),
                };
                // The contact the shadow knew is gone (deleted or merged in the CRM): complete
                // the new one with every value the shadow knows, then settle.
                if let Some(full) = shadow::recreated(p.shadow.as_ref(), &p.plan, Some(id)) {
                    attempt.outcome = format!(
                        "created contact {id} anew (contact {} is gone from the CRM); its other known fields follow",
                        p.shadow
                            .as_ref()
                            .and_then(|s| s.contact_id)
                            .unwrap_or_default()
                    );
                    self.store
                        .settle(&p.lease, at, Vec::new(), Some(attempt))
                        .await?;
                    let again = Prepared {
                        plan: full,
                        identity: Identity::ExternalId(p.user_id.clone()),
                        ..p
                    };
                    return Box::pin(self.send_single(again)).await;
                }
                self.delivered(&p, Some(id), attempt).await
            }
            Err(error) => {
                let outcome = outcome_of(&error);
                let mut attempt = Attempt {
                    delivery_ids: p.delivery_ids.clone(),
                    at_ms: at,
                    request_line: error.request_line().to_owned(),
                    request_body: error.request_body().map(str::to_owned),
                    status: error.status(),
                    response_body: Some(truncate(
                        error.response_body().unwrap_or(&error.to_string()),
                    )),
                    outcome: String::new(),
                };
                if matches!(outcome, Outcome::Success) {
                    attempt.outcome =
                        format!("delivered (response unreadable: {error}){}", p.summary);
                    return self.delivered(&p, None, attempt).await;
                }
                self.failed(&p, outcome, error.status(), attempt).await
            }
        }
    }

    /// Record a success: the shadow moves forward, the deliveries are done.
    ///
    /// # Errors
    /// `Stop::Store`.
    pub async fn delivered(
        &self,
        p: &Prepared,
        contact_id: Option<i64>,
        attempt: Attempt,
    ) -> Result<(), Stop> {
        self.resume().await;
        let mut new_shadow =
            shadow::apply(p.shadow.as_ref(), &p.user_id, &p.email, &p.plan, contact_id);
        new_shadow.email_ts_ms = newest(new_shadow.email_ts_ms, p.email_ts_ms);
        new_shadow.confirmed_at_ms = Some(now_ms());
        if let Ok(bytes) = serde_json::to_vec(&new_shadow) {
            self.store
                .put_shadow(&self.name, &p.lease.contact_key, bytes)
                .await?;
        }
        events::deliveries(&self.name, "delivered", p.delivery_ids.len());
        self.settle_all(
            &p.lease,
            &p.delivery_ids,
            Settlement::Delivered,
            Some(attempt),
        )
        .await
    }

    /// Record a failure by its outcome.
    ///
    /// # Errors
    /// `Stop::Later` when the contact must wait (retry scheduled, paused), `Stop::Store`.
    pub async fn failed(
        &self,
        p: &Prepared,
        outcome: Outcome,
        status: Option<u16>,
        mut attempt: Attempt,
    ) -> Result<(), Stop> {
        let at = attempt.at_ms;
        let (settlement, label, stop) = match outcome {
            Outcome::Success => return self.delivered(p, None, attempt).await,
            Outcome::DeadLetter { reason }
                if matches!(p.identity, Identity::ExternalId(_))
                    && delivery::is_uniqueness_conflict(&reason) =>
            {
                attempt.outcome = format!("refused by external_id: {reason}");
                self.store
                    .settle(&p.lease, at, Vec::new(), Some(attempt))
                    .await?;
                return self.unknown_external_id(p, reason).await;
            }
            Outcome::DeadLetter { reason } => {
                attempt.outcome = format!("dead-lettered: {reason}{}", p.summary);
                (Settlement::DeadLettered { reason }, "dead", None)
            }
            Outcome::Pause { reason } => {
                let until = self.pause(&reason).await;
                attempt.outcome = format!("paused: {reason}");
                // Events stay pending and untouched; the attempt is still recorded.
                self.store
                    .settle(&p.lease, at, Vec::new(), Some(attempt))
                    .await?;
                return Err(Stop::Later(Some(until)));
            }
            Outcome::Retry { after, reason } => {
                if status == Some(429) {
                    self.budget.observe_429();
                }
                let first = p.first_attempt_ms.unwrap_or(at);
                if delivery::horizon_exceeded(first, at, self.horizon_ms) {
                    let reason = format!("retry horizon exceeded; last error: {reason}");
                    attempt.outcome = format!("dead-lettered: {reason}");
                    (Settlement::DeadLettered { reason }, "dead", None)
                } else {
                    let delay = delivery::retry_delay(p.attempts, after, rand::random::<f64>());
                    let at_ms = at + duration_ms(delay);
                    attempt.outcome = format!("retry in {} ms: {reason}", duration_ms(delay));
                    (
                        Settlement::Retry {
                            at_ms,
                            error: reason,
                        },
                        "retry",
                        Some(at_ms),
                    )
                }
            }
        };
        // A dead letter needs an operator (WARN); a retry is routine (INFO).
        if stop.is_none() {
            tracing::warn!(
                destination = self.name,
                contact = p.lease.contact_key,
                outcome = attempt.outcome,
                "delivery dead-lettered"
            );
        } else {
            tracing::info!(
                destination = self.name,
                contact = p.lease.contact_key,
                outcome = attempt.outcome,
                "delivery attempt failed"
            );
        }
        events::deliveries(&self.name, label, p.delivery_ids.len());
        self.settle_all(&p.lease, &p.delivery_ids, settlement, Some(attempt))
            .await?;
        match stop {
            Some(at_ms) => Err(Stop::Later(Some(at_ms))),
            None => Ok(()),
        }
    }

    /// A write keyed by `external_id` was refused (typically: a contact created elsewhere, by a
    /// web form, owns the email and has no `external_id`). When no contact has this
    /// `external_id`, the email identifies the contact: the group is sent again keyed by it.
    /// When one has it, the refusal stands and the group is dead-lettered. One lookup call, on
    /// this path only.
    async fn unknown_external_id(&self, p: &Prepared, refusal: String) -> Result<(), Stop> {
        if let Err(until) = self.budget.acquire(1).await {
            return Err(Stop::Later(quota_not_before(until)));
        }
        let started = Instant::now();
        let found = self.client.lookup_contacts("external_id", &p.user_id).await;
        events::freshworks_call(
            &self.name,
            "lookup",
            found
                .as_ref()
                .map_or_else(FreshworksError::status, |x| Some(x.status)),
            started.elapsed().as_secs_f64(),
        );
        let by_email = Prepared {
            identity: Identity::Email(freshgate_core::email::normalize(&p.email)),
            ..p.clone()
        };
        let mut attempt = Attempt {
            delivery_ids: p.delivery_ids.clone(),
            at_ms: now_ms(),
            request_line: format!("GET /lookup?f=external_id&q={}", p.user_id),
            request_body: None,
            status: None,
            response_body: None,
            outcome: String::new(),
        };
        match found {
            Ok(x) if x.body.is_empty() => Box::pin(self.send_single(by_email)).await,
            Ok(x) => {
                attempt.status = Some(x.status);
                attempt.outcome = format!(
                    "dead-lettered: {refusal} (contact {} has this external_id)",
                    x.body.first().map_or(0, |c| c.id)
                );
                events::deliveries(&self.name, "dead", p.delivery_ids.len());
                let dead = Settlement::DeadLettered { reason: refusal };
                self.settle_all(&p.lease, &p.delivery_ids, dead, Some(attempt))
                    .await
            }
            Err(error) => {
                let status = error.status();
                attempt.status = status;
                attempt.response_body = Some(truncate(
                    error.response_body().unwrap_or(&error.to_string()),
                ));
                // The lookup's own failure decides (a 5xx is retried, a 401 pauses); a
                // lookup that cannot succeed leaves the refusal as the verdict.
                let outcome = match outcome_of(&error) {
                    Outcome::DeadLetter { .. } | Outcome::Success => {
                        Outcome::DeadLetter { reason: refusal }
                    }
                    other => other,
                };
                Box::pin(self.failed(&by_email, outcome, status, attempt)).await
            }
        }
    }

    fn report(&self, report: &MappingReport) {
        // Keys come from clients: they go to the store, never into a metric label.
        events::unmapped_traits(&self.name, report.unmapped.len());
        self.unmapped.note(&self.name, &report.unmapped, now_ms());
        for f in &report.coercion_failures {
            events::coercion_failure(&self.name, &f.field);
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

/// The later of two optional timestamps.
fn newest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// How a failed call is classified.
#[must_use]
pub fn outcome_of(error: &FreshworksError) -> Outcome {
    match error {
        FreshworksError::Http {
            status,
            retry_after,
            body,
            ..
        } => delivery::classify_at(
            *status,
            retry_after.as_deref(),
            body.as_bytes(),
            time::OffsetDateTime::now_utc(),
        ),
        // 2xx we could not read: the write most likely happened; do not resend blindly.
        FreshworksError::Decode { .. } => Outcome::Success,
        other => delivery::transport_error(&other.to_string()),
    }
}

/// Why an identify is not sent at all (the seed's rules), if it is not.
fn identify_rejection(event: &segment::StoredEvent) -> Option<String> {
    if event.user_id.as_deref().is_none_or(str::is_empty) {
        return Some("rejected: identify has no userId (Freshmarketer requires it)".into());
    }
    let email = event
        .traits
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim);
    if email.is_none_or(str::is_empty) {
        return Some("rejected: identify has no traits.email (Freshmarketer requires it)".into());
    }
    None
}

/// The mapping report as a suffix for traces: what was not sent and why, and event times that
/// were not taken as sent.
fn report_summary(report: &MappingReport, stale: &[String], time_notes: &[String]) -> String {
    let mut parts: Vec<String> = time_notes.to_vec();
    if !report.unmapped.is_empty() {
        parts.push(format!("unmapped traits: {}", report.unmapped.join(", ")));
    }
    if !report.ambiguous.is_empty() {
        let a: Vec<String> = report
            .ambiguous
            .iter()
            .map(|(k, fields)| format!("{k} -> {}", fields.join("|")))
            .collect();
        parts.push(format!("ambiguous traits: {}", a.join(", ")));
    }
    if !report.coercion_failures.is_empty() {
        let c: Vec<String> = report
            .coercion_failures
            .iter()
            .map(|f| format!("{} -> {}: {}", f.trait_key, f.field, f.reason))
            .collect();
        parts.push(format!("dropped values: {}", c.join("; ")));
    }
    if !stale.is_empty() {
        parts.push(format!("older than last sent, kept: {}", stale.join(", ")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join("; "))
    }
}

pub(super) fn truncate(s: &str) -> String {
    if s.len() <= MAX_KEPT_BODY {
        return s.to_owned();
    }
    let mut end = MAX_KEPT_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
