//! The track activity sink: a track (or page / screen) a rule takes becomes, on its contact,
//! the lifecycle stage set by a contact upsert and/or one `POST /sales_activities`.
//!
//! - Names → ids: the rule's activity type and lifecycle stage names are resolved against the
//!   account's selectors, cached per worker for `fields_ttl_secs` ([`SelectorCache`]). A name the
//!   account lacks (also after reading the lists again, at most once a minute) dead-letters
//!   the event with `unknown_name` (never retried forever); so does
//!   an owner that cannot be chosen (`no_owner`).
//! - The contact id: from the stage upsert's answer, else `Store::contact_ids` (every single
//!   upsert answer records it), else the shadow, else one `GET /lookup` by `external_id`
//!   through the call path (counted in the budget), then recorded.
//! - Lifecycle stage: newest event wins against identify-set values of `lifecycle_stage_id`
//!   (the contact shadow keeps the field's event time; an older identify arriving later is
//!   stale against it, and an older track does not overwrite a newer identify's stage).
//! - Never twice for a `messageId`: the intent is recorded before the call
//!   (`Store::intend_activity`) and the id after it. The Freshworks API has no idempotency key
//!   and no way to list a contact's activities we rely on, so an intent found without its id
//!   (the process died, or the answer was lost, between the call and the settle) is not sent
//!   again: the event is skipped with `activity_in_doubt`. An answer that says the activity was
//!   not created (any HTTP error status, or the quota refusing the call before it is sent)
//!   clears the intent, and the event is retried as usual.

use super::contact::LookedUp;
use std::sync::Mutex;
use std::time::Duration;

use freshgate_core::activity::{NoOwner, OwnerCandidate, activity_spec, choose_owner, offset_of};
use freshgate_core::delivery::Outcome;
use freshgate_core::mapping;
use freshgate_core::plan::Step;
use freshgate_core::reason::{DeadReason, SkipReason};
use freshgate_core::routing::stored_call_name;
use freshgate_core::rules::NameIds;
use freshgate_core::segment::StoredEvent;
use freshgate_core::shadow::{ContactShadow, ShadowField, UpsertPlan};
use freshgate_store::{ActivityIntent, Attempt, ContactLease, PendingDelivery};
use freshworks_client::{SalesActivityRequest, SelectorChoice};
use serde_json::json;
use time::UtcOffset;

use super::call::{Endpoint, Quota, duration_ms};
use super::settle::Covered;
use super::worker::quota_not_before;
use super::{DestinationWorker, Stop};
use crate::pipeline::{clock, now_ms};

/// How often at most a name the cached selectors lack makes them be read again.
const NAMES_RECHECK: Duration = Duration::from_secs(60);

/// The contact field a lifecycle stage is written to.
const STAGE_FIELD: &str = "lifecycle_stage_id";

/// The account's names → ids and the activity owner, each read once per TTL.
pub struct SelectorCache {
    ttl_ms: i64,
    names: Mutex<Option<(i64, NameIds)>>,
    owner: Mutex<Option<(i64, Result<i64, NoOwner>)>>,
    /// The account's UTC offset, learnt from the timestamps its answers carry (UTC until then).
    offset: Mutex<Option<UtcOffset>>,
    /// Held while the selectors are read, so that concurrent contacts finding the cache cold
    /// wait for one read instead of each making its own (the mixed bench saw 150 reads).
    refreshing: tokio::sync::Mutex<()>,
}

impl SelectorCache {
    /// An empty cache whose entries live `ttl`.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: duration_ms(ttl),
            names: Mutex::new(None),
            owner: Mutex::new(None),
            offset: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Learn the account's offset from a record's `updated_at` / `created_at`, if it has one.
    pub fn learn_offset(&self, record: &serde_json::Map<String, serde_json::Value>) {
        let learnt = ["updated_at", "created_at"]
            .iter()
            .find_map(|k| record.get(*k)?.as_str().and_then(offset_of));
        if let Some(offset) = learnt {
            *self
                .offset
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(offset);
        }
    }

    /// Whether the cached names were read more than `age_ms` ago (or never).
    #[must_use]
    pub fn names_older_than(&self, age_ms: i64) -> bool {
        self.older_than(&self.names, age_ms)
    }

    fn older_than<T>(&self, slot: &Mutex<Option<(i64, T)>>, age_ms: i64) -> bool {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_none_or(|(at, _)| now_ms() - at > age_ms)
    }

    /// The account's offset as far as known (UTC until an answer told it).
    #[must_use]
    pub fn offset(&self) -> UtcOffset {
        self.offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or(UtcOffset::UTC)
    }

    fn fresh<T: Clone>(&self, slot: &Mutex<Option<(i64, T)>>) -> Option<T> {
        let guard = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(at, _)| now_ms() - at < self.ttl_ms)
            .map(|(_, v)| v.clone())
    }

    fn put<T>(slot: &Mutex<Option<(i64, T)>>, value: T) {
        *slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now_ms(), value));
    }
}

impl DestinationWorker {
    /// Deliver one track a rule takes (see the module comment). The delivery is settled, or
    /// `Err(Stop::Later)` says when to try again.
    ///
    /// # Errors
    /// `Stop::Later` (quota, retry, pause, metadata not readable), `Stop::Store`.
    pub async fn track_activity(
        &self,
        lease: &ContactLease,
        pending: &PendingDelivery,
        event: &StoredEvent,
    ) -> Result<(), Stop> {
        let ids = [pending.delivery_id];
        let covered = Covered {
            lease,
            delivery_ids: &ids,
            first_attempt_ms: pending.first_attempt_ms,
            attempts: pending.attempts,
        };
        // The rules may have changed since ingest: look the rule up again.
        let rule = match self
            .kinds
            .rules_for(event.event_type)
            .map(|r| r.find(stored_call_name(event)))
        {
            Some(Ok(rule)) => rule,
            Some(Err(no_rule)) => {
                return self
                    .settle_skipped(lease, &ids, &SkipReason::NoRule(no_rule), "")
                    .await;
            }
            None => {
                let reason = SkipReason::NotHandled(event.event_type);
                return self.settle_skipped(lease, &ids, &reason, "").await;
            }
        };
        // The activity's own idempotency record, checked before anything is sent.
        let activity_wanted = rule.activity_type.is_some();
        if activity_wanted {
            match self
                .store
                .activity_intents(&self.name, vec![event.message_id.clone()])
                .await?
                .into_iter()
                .next()
                .map(|(_, intent)| intent)
            {
                Some(ActivityIntent::Created { activity_id }) => {
                    let reason = SkipReason::ActivityExists { activity_id };
                    return self.settle_skipped(lease, &ids, &reason, "").await;
                }
                Some(ActivityIntent::Intended { at_ms }) => {
                    let reason = SkipReason::ActivityInDoubt { at_ms };
                    return self.settle_skipped(lease, &ids, &reason, "").await;
                }
                None => {}
            }
        }
        let spec = activity_spec(event, rule, self.selectors.offset());
        let mut names = self.name_ids(false).await?;
        // A name missing from a cached list may have been added since (the operator fixed the
        // account and replays the dead letters): read the list again, at most once a minute.
        let missing = spec
            .activity
            .as_ref()
            .is_some_and(|a| names.activity_type(&a.type_name).is_err())
            || spec
                .lifecycle_stage
                .as_ref()
                .is_some_and(|c| names.lifecycle_stage(&c.stage_name).is_err());
        if missing
            && self
                .selectors
                .names_older_than(clock::clock_ms(NAMES_RECHECK))
        {
            names = self.name_ids(true).await?;
        }
        let type_id = match spec
            .activity
            .as_ref()
            .map(|a| names.activity_type(&a.type_name))
            .transpose()
        {
            Ok(id) => id,
            Err(unknown) => {
                return self
                    .dead_without_call(lease, pending, DeadReason::UnknownName, unknown.to_string())
                    .await;
            }
        };
        let stage_id = match spec
            .lifecycle_stage
            .as_ref()
            .map(|s| names.lifecycle_stage(&s.stage_name))
            .transpose()
        {
            Ok(id) => id,
            Err(unknown) => {
                return self
                    .dead_without_call(lease, pending, DeadReason::UnknownName, unknown.to_string())
                    .await;
            }
        };
        let owner_id = if activity_wanted {
            match self.owner_id().await? {
                Ok(id) => Some(id),
                Err(no_owner) => {
                    return self
                        .dead_without_call(
                            lease,
                            pending,
                            DeadReason::NoOwner,
                            no_owner.to_string(),
                        )
                        .await;
                }
            }
        } else {
            None
        };
        let user_id = event
            .user_id
            .clone()
            .unwrap_or_else(|| lease.contact_key.clone());

        // 1. The lifecycle stage, newest event wins.
        let mut contact_id = None;
        let mut stage_attempt = None;
        let mut notes = Vec::new();
        if let (Some(change), Some(stage_id)) = (&spec.lifecycle_stage, stage_id) {
            let shadow = self.contact_shadow(&lease.contact_key).await?;
            let newer = shadow
                .as_ref()
                .and_then(|s| s.fields.get(STAGE_FIELD))
                .is_some_and(|f| f.ts_ms > change.ts_ms);
            if newer {
                notes.push(format!(
                    "lifecycle stage '{}' not set: a newer event set {STAGE_FIELD}",
                    change.stage_name
                ));
            } else {
                match self
                    .set_stage(&covered, &user_id, shadow, stage_id, change.ts_ms)
                    .await?
                {
                    Some((id, mut attempt)) => {
                        contact_id = Some(id);
                        let words = format!(
                            "lifecycle stage '{}' ({stage_id}) set on contact {id}",
                            change.stage_name
                        );
                        attempt.outcome = format!("track step: {words}");
                        stage_attempt = Some(attempt);
                        notes.push(words);
                    }
                    // Settled (dead-lettered) by the stage call.
                    None => return Ok(()),
                }
            }
        }
        let note = if notes.is_empty() {
            String::new()
        } else {
            format!("; {}", notes.join("; "))
        };

        // 2. The activity.
        let (Some(body), Some(type_id), Some(owner_id)) = (&spec.activity, type_id, owner_id)
        else {
            // A stage-only rule.
            return if let Some(attempt) = stage_attempt {
                self.settle_delivered(lease, &ids, attempt).await
            } else {
                self.settle_skipped(lease, &ids, &SkipReason::StaleStage, "")
                    .await
            };
        };
        // The stage's call shows in the trace beside the activity's.
        if let Some(attempt) = stage_attempt {
            self.record_attempt(lease, attempt).await?;
        }
        let contact_id = match contact_id {
            Some(id) => id,
            None => match self.contact_id(&covered, &user_id).await? {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        if let Some(intent) = self
            .store
            .intend_activity(&self.name, &event.message_id, now_ms())
            .await?
        {
            // Another attempt got there between the check and now.
            let reason = match intent {
                ActivityIntent::Created { activity_id } => {
                    SkipReason::ActivityExists { activity_id }
                }
                ActivityIntent::Intended { at_ms } => SkipReason::ActivityInDoubt { at_ms },
            };
            return self.settle_skipped(lease, &ids, &reason, "").await;
        }
        let request = SalesActivityRequest::for_contact(body, type_id, contact_id, owner_id);
        let called = match self
            .call(Endpoint::SalesActivities, Quota::Take(1), || {
                self.client.create_activity(&request)
            })
            .await
        {
            Ok(called) => called,
            Err(wait) => {
                // Nothing was sent.
                self.store
                    .clear_activity_intent(&self.name, &event.message_id)
                    .await?;
                return Err(Stop::Later(quota_not_before(wait.0)));
            }
        };
        let mut attempt = called.attempt(&ids);
        match (&called.result, called.outcome) {
            (Ok(exchange), _) => {
                let activity_id = exchange.body.sales_activity.id;
                self.store
                    .activity_created(&self.name, &event.message_id, activity_id)
                    .await?;
                attempt.outcome = format!(
                    "track step: created sales activity {activity_id} on contact {contact_id}{note}"
                );
                self.settle_delivered(lease, &ids, attempt).await
            }
            (Err(error), Outcome::Success) => {
                // A 2xx we could not read: created, id unknown; the intent stays, so it is
                // never sent again.
                attempt.outcome = format!(
                    "track step: created sales activity on contact {contact_id} (response unreadable: {error}){note}"
                );
                self.settle_delivered(lease, &ids, attempt).await
            }
            (Err(error), outcome) => {
                // An HTTP error status says it was not created: the next attempt may send it.
                // No answer at all leaves the intent: it may exist.
                if error.status().is_some() {
                    self.store
                        .clear_activity_intent(&self.name, &event.message_id)
                        .await?;
                }
                self.settle_failure(&covered, outcome, &note, attempt).await
            }
        }
    }

    /// Set the contact's lifecycle stage by upsert (keyed as the contact's writes are) and move
    /// the shadow's field forward. `Some((contact id, the call's attempt))` when written; `None`
    /// when the delivery was settled (dead-lettered) by the answer.
    async fn set_stage(
        &self,
        covered: &Covered<'_>,
        user_id: &str,
        shadow: Option<ContactShadow>,
        stage_id: i64,
        ts_ms: i64,
    ) -> Result<Option<(i64, Attempt)>, Stop> {
        let mut plan = UpsertPlan::default();
        plan.send.insert(
            STAGE_FIELD.to_owned(),
            mapping::MappedField {
                value: json!(stage_id),
                ts_ms,
                custom: false,
            },
        );
        let email = shadow.as_ref().and_then(|s| s.email.clone());
        let body = match &email {
            Some(email) => {
                let identity = mapping::identifier(user_id, email, shadow.as_ref());
                mapping::upsert_body(user_id, email, &plan, &identity)
            }
            None => json!({
                "unique_identifier": { "external_id": user_id },
                "contact": { STAGE_FIELD: stage_id },
            }),
        };
        let called = self
            .call(Endpoint::ContactsUpsert, Quota::Take(1), || {
                self.client.upsert_contact(&body)
            })
            .await
            .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
        match &called.result {
            Ok(exchange) => {
                let id = exchange.body.contact.id;
                self.selectors.learn_offset(&exchange.body.contact.other);
                self.store
                    .put_contact_ids(&self.name, vec![(covered.lease.contact_key.clone(), id)])
                    .await?;
                let mut next = shadow.unwrap_or_default();
                next.contact_id = Some(id);
                next.not_from_traits.insert(STAGE_FIELD.to_owned());
                next.fields.insert(
                    STAGE_FIELD.to_owned(),
                    ShadowField {
                        value: json!(stage_id),
                        ts_ms,
                        custom: false,
                    },
                );
                if let Ok(bytes) = serde_json::to_vec(&next) {
                    self.store
                        .put_shadow(&self.name, &covered.lease.contact_key, bytes)
                        .await?;
                }
                Ok(Some((id, called.attempt(covered.delivery_ids))))
            }
            Err(_) => {
                let mut attempt = called.attempt(covered.delivery_ids);
                attempt.outcome = "lifecycle stage upsert failed".into();
                let outcome = match called.outcome {
                    // An unreadable 2xx gave no id: try again.
                    Outcome::Success => Outcome::Retry {
                        after: None,
                        reason: "lifecycle stage upsert answer unreadable".into(),
                    },
                    o => o,
                };
                self.settle_failure(covered, outcome, "", attempt).await?;
                Ok(None)
            }
        }
    }

    /// The contact's Freshworks id: recorded ids, the shadow, else one lookup by
    /// `external_id` (recorded). `None` when the delivery was settled by the lookup's answer.
    async fn contact_id(&self, covered: &Covered<'_>, user_id: &str) -> Result<Option<i64>, Stop> {
        let key = covered.lease.contact_key.clone();
        if let Some((_, id)) = self
            .store
            .contact_ids(&self.name, vec![key.clone()])
            .await?
            .into_iter()
            .next()
        {
            return Ok(Some(id));
        }
        let shadow = self.contact_shadow(&key).await?;
        if let Some(id) = shadow.and_then(|s| s.contact_id) {
            self.store
                .put_contact_ids(&self.name, vec![(key, id)])
                .await?;
            return Ok(Some(id));
        }
        let LookedUp {
            id,
            outcome,
            mut attempt,
        } = self
            .look_up_contact(covered.lease, user_id, covered.delivery_ids)
            .await?;
        if let Some(id) = id {
            attempt.outcome = format!("track step: contact id {id} found by external_id");
            self.record_attempt(covered.lease, attempt).await?;
            return Ok(Some(id));
        }
        let outcome = match outcome {
            // Answered, but no contact carries the external_id (yet): retried until the
            // retry horizon.
            Outcome::Success => Outcome::Retry {
                after: None,
                reason: format!("no contact with external_id {user_id:?} found"),
            },
            o => o,
        };
        attempt.outcome = "contact id lookup".into();
        self.settle_failure(covered, outcome, "", attempt).await?;
        Ok(None)
    }

    /// The account's activity type and lifecycle stage ids by name (only the selectors the
    /// rules use are read), cached.
    async fn name_ids(&self, reread: bool) -> Result<NameIds, Stop> {
        if !reread && let Some(names) = self.selectors.fresh(&self.selectors.names) {
            return Ok(names);
        }
        let _one_read = self.selectors.refreshing.lock().await;
        if !reread && let Some(names) = self.selectors.fresh(&self.selectors.names) {
            return Ok(names);
        }
        let by_name = |choices: Vec<SelectorChoice>| -> std::collections::BTreeMap<String, i64> {
            choices.into_iter().map(|c| (c.name, c.id)).collect()
        };
        let mut names = NameIds::default();
        if !self.kinds.activity_types().is_empty() {
            let called = self
                .call(Endpoint::Selector, Quota::Take(1), || {
                    self.client.sales_activity_types()
                })
                .await
                .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
            match called.result {
                Ok(x) => names.activity_types = by_name(x.body.sales_activity_types),
                Err(e) => {
                    return Err(self
                        .metadata_unreadable("activity types", &e, called.outcome)
                        .await);
                }
            }
        }
        if !self.kinds.lifecycle_stages().is_empty() {
            let called = self
                .call(Endpoint::Selector, Quota::Take(1), || {
                    self.client.lifecycle_stages()
                })
                .await
                .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
            match called.result {
                Ok(x) => names.lifecycle_stages = by_name(x.body.lifecycle_stages),
                Err(e) => {
                    return Err(self
                        .metadata_unreadable("lifecycle stages", &e, called.outcome)
                        .await);
                }
            }
        }
        SelectorCache::put(&self.selectors.names, names.clone());
        Ok(names)
    }

    /// The owner of created activities (`owner_email`, else the first active user), cached.
    async fn owner_id(&self) -> Result<Result<i64, NoOwner>, Stop> {
        // A failed choice is kept for a minute only: the operator may be fixing the account.
        let usable = || {
            let cached = self.selectors.fresh(&self.selectors.owner);
            let stale_failure = cached.as_ref().is_some_and(Result::is_err)
                && self
                    .selectors
                    .older_than(&self.selectors.owner, clock::clock_ms(NAMES_RECHECK));
            cached.filter(|_| !stale_failure)
        };
        if let Some(owner) = usable() {
            return Ok(owner);
        }
        let _one_read = self.selectors.refreshing.lock().await;
        if let Some(owner) = usable() {
            return Ok(owner);
        }
        let called = self
            .call(Endpoint::Selector, Quota::Take(1), || self.client.owners())
            .await
            .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
        let owners: Vec<OwnerCandidate> = match called.result {
            Ok(x) => x
                .body
                .users
                .into_iter()
                .map(|o| OwnerCandidate {
                    id: o.id,
                    email: o.email,
                    active: o.is_active,
                })
                .collect(),
            Err(e) => return Err(self.metadata_unreadable("owners", &e, called.outcome).await),
        };
        let owner = choose_owner(self.kinds.owner_email.as_deref(), &owners);
        SelectorCache::put(&self.selectors.owner, owner.clone());
        Ok(owner)
    }

    /// A selector could not be read: not the event's fault, it waits (or the destination
    /// pauses on a refused key).
    async fn metadata_unreadable(
        &self,
        what: &str,
        error: &freshworks_client::FreshworksError,
        outcome: Outcome,
    ) -> Stop {
        tracing::warn!(destination = self.name, status = ?error.status(), error = %error, "cannot read the account's {what}");
        match outcome {
            Outcome::Pause { reason } => Stop::Later(Some(self.pause(&reason).await)),
            Outcome::Retry { after, .. } | Outcome::Throttled { after, .. } => {
                let wait = after.unwrap_or(Duration::from_secs(5));
                Stop::Later(Some(now_ms() + duration_ms(wait)))
            }
            Outcome::Success => {
                Stop::Later(Some(now_ms() + clock::clock_ms(Duration::from_secs(5))))
            }
            Outcome::DeadLetter { .. } => {
                Stop::Later(Some(now_ms() + clock::clock_ms(Duration::from_secs(60))))
            }
        }
    }

    /// Dead-letter one delivery for a reason found without a call of its own.
    async fn dead_without_call(
        &self,
        lease: &ContactLease,
        pending: &PendingDelivery,
        reason: DeadReason,
        detail: String,
    ) -> Result<(), Stop> {
        tracing::warn!(
            destination = self.name,
            contact = lease.contact_key,
            reason = reason.code(),
            detail,
            "track dead-lettered"
        );
        crate::telemetry::events::deliveries(&self.name, "dead", 1);
        let step = Step::DeadLetter {
            index: 0,
            reason,
            detail,
        };
        self.settle_planned(lease, &[&step], &[pending.delivery_id])
            .await
    }
}
