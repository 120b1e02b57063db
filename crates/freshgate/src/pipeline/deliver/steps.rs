//! The planner glue: a leased contact's pending deliveries are read and planned
//! ([`freshgate_core::plan::steps`]); the steps that need no call are settled on the way, and
//! the next contact upsert is coalesced, mapped against the account's fields and planned
//! against the contact's shadow (newest event wins per field; an unchanged contact costs no
//! call).

use std::sync::Arc;
use std::time::Duration;

use freshgate_core::account;
use freshgate_core::activity::{AwaitIdentify, await_identify};
use freshgate_core::coalesce::IdentifyInput;
use freshgate_core::delivery::Outcome;
use freshgate_core::mapping::{self, FieldIndex, MappedField, MappingReport};
use freshgate_core::plan::{self, Pending, Step};
use freshgate_core::reason::SkipReason;
use freshgate_core::segment::{self, StoredEvent};
use freshgate_core::shadow;
use freshgate_store::{ContactLease, PendingDelivery};

use super::call::{Endpoint, Quota, duration_ms};
use super::settle::Covered;
use super::worker::quota_not_before;
use super::{DestinationWorker, Prepared, Stop};
use crate::pipeline::fields::{self, FieldsError};
use crate::pipeline::{clock, now_ms};
use crate::telemetry::events;

/// Pending deliveries read per round.
const ROUND: usize = 100;
/// Work stops this long before the lease ends (as the worker's drain does).
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often a track waiting for its user's identify is looked at again.
const IDENTIFY_RECHECK: Duration = Duration::from_secs(60);

/// The identifies one upsert covers, each with its parsed event.
type Run<'a> = Vec<(&'a PendingDelivery, &'a StoredEvent)>;

impl DestinationWorker {
    /// The next contact upsert of a leased contact that needs a call, settling on the way
    /// every step that needs none (not handled, rejected, unreadable, unchanged) and running
    /// the track activities planned before it (one call each, see `activity`). `None`:
    /// nothing left.
    ///
    /// # Errors
    /// `Stop::Later` when the contact must wait (quota, pause), `Stop::Store`.
    pub async fn next_upsert(&self, lease: &ContactLease) -> Result<Option<Prepared>, Stop> {
        loop {
            let pending = self.store.pending_for(lease, ROUND).await?;
            if pending.is_empty() {
                return Ok(None);
            }
            let parsed: Vec<Result<StoredEvent, String>> = pending
                .iter()
                .map(|p| segment::parse_stored_event(&p.raw).map_err(|e| e.to_string()))
                .collect();
            let view: Vec<Pending<'_>> = parsed
                .iter()
                .map(|r| match r {
                    Ok(e) => Pending::Event(e),
                    Err(why) => Pending::Unreadable(why),
                })
                .collect();
            let contact_known = self.contact_known(&lease.contact_key, &parsed).await?;
            let steps = plan::steps(&view, &self.kinds, contact_known);
            // Steps run in order: everything before the first call is settled now, the call
            // is prepared; what comes after it is planned again once it is settled.
            let first_call = steps.iter().position(Step::calls);
            let ids: Vec<i64> = pending.iter().map(|p| p.delivery_id).collect();
            let (before, wait) =
                self.waits_decided(&steps[..first_call.unwrap_or(steps.len())], &pending);
            let before: Vec<&Step> = before.iter().collect();
            self.hand_off_planned(lease, &before, &pending).await?;
            self.settle_planned(lease, &before, &ids).await?;
            // Exhaustive on purpose: a new kind of step must say here how it is run.
            match first_call.map(|i| &steps[i]) {
                Some(Step::UpsertContact { members }) => {
                    let run: Run<'_> = members
                        .iter()
                        .filter_map(|i| Some((&pending[*i], parsed[*i].as_ref().ok()?)))
                        .collect();
                    if let Some(prepared) = self.prepare(lease, run).await? {
                        return Ok(Some(prepared));
                    }
                }
                Some(Step::UpsertAccount { index }) => {
                    // The planner makes account steps of readable events only.
                    if let Ok(event) = &parsed[*index] {
                        self.group_account(lease, &pending[*index], event).await?;
                    }
                }
                Some(Step::TrackActivity { index }) => {
                    if let Ok(event) = &parsed[*index] {
                        self.track_activity(lease, &pending[*index], event).await?;
                    }
                    // Many tracks can follow one another without returning to the worker:
                    // stop while the lease still holds, and when the destination paused.
                    if now_ms() + clock::clock_ms(LEASE_MARGIN) > lease.until_ms {
                        return Err(Stop::Later(None));
                    }
                    if let Some(until) = self.paused_until()
                        && until > now_ms()
                    {
                        return Err(Stop::Later(Some(until)));
                    }
                }
                // Only tracks waiting for an identify are left: look again later.
                _ if wait.is_some() => return Err(Stop::Later(wait)),
                // Nothing calls (all settled above): read what is left.
                None
                | Some(
                    Step::Skip { .. }
                    | Step::DeadLetter { .. }
                    | Step::HandOffMembership { .. }
                    | Step::AwaitIdentify { .. },
                ) => {}
            }
        }
    }

    /// Whether the contact exists in Freshworks as far as the store knows (an id or a shadow);
    /// read only when a pending track or page could need it.
    async fn contact_known(
        &self,
        contact_key: &str,
        parsed: &[Result<StoredEvent, String>],
    ) -> Result<bool, Stop> {
        let needs = parsed.iter().any(|e| {
            e.as_ref().is_ok_and(|e| {
                self.kinds
                    .rules_for(e.event_type)
                    .is_some_and(|r| !r.is_empty())
            })
        });
        if !needs {
            return Ok(false);
        }
        if !self
            .store
            .contact_ids(&self.name, vec![contact_key.to_owned()])
            .await?
            .is_empty()
        {
            return Ok(true);
        }
        // A shadow alone is not enough: one may hold only a group's pending association.
        Ok(self
            .contact_shadow(contact_key)
            .await?
            .is_some_and(|s| s.written()))
    }

    /// The call-less steps with every [`Step::AwaitIdentify`] decided: skipped with the reason
    /// once `identify_wait_secs` after it was received is over, else left pending; the second
    /// value is when to look again (the earliest end of a wait, at most a minute away so an
    /// identify arriving meanwhile is not held up for the whole wait).
    fn waits_decided(
        &self,
        steps: &[Step],
        pending: &[PendingDelivery],
    ) -> (Vec<Step>, Option<i64>) {
        let now = now_ms();
        let mut wait: Option<i64> = None;
        let decided = steps
            .iter()
            .filter_map(|step| match step {
                Step::AwaitIdentify { index } => match await_identify(
                    pending[*index].received_at_ms,
                    now,
                    self.kinds.identify_wait_secs,
                ) {
                    AwaitIdentify::GiveUp(no_identify) => Some(Step::Skip {
                        index: *index,
                        reason: SkipReason::NoIdentify(no_identify),
                    }),
                    AwaitIdentify::Wait { until_ms } => {
                        let recheck = now + clock::clock_ms(IDENTIFY_RECHECK);
                        let at = until_ms.min(recheck);
                        wait = Some(wait.map_or(at, |w| w.min(at)));
                        None
                    }
                },
                other => Some(other.clone()),
            })
            .collect();
        (decided, wait)
    }

    async fn field_index(&self) -> Result<Arc<FieldIndex>, Stop> {
        self.index_of(&self.fields, Endpoint::Fields, || {
            self.client.contact_fields()
        })
        .await
    }

    /// The sales account field index (groups, companies), fetched like the contact fields.
    pub(super) async fn account_field_index(&self) -> Result<Arc<FieldIndex>, Stop> {
        self.index_of(&self.account_fields, Endpoint::AccountFields, || {
            self.client.account_fields()
        })
        .await
    }

    /// The field index of `cache`, fetched through the call path (`endpoint`, one call of the
    /// budget) when neither memory nor the store holds a fresh copy.
    async fn index_of<Fut>(
        &self,
        cache: &fields::FieldCache,
        endpoint: Endpoint,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Arc<FieldIndex>, Stop>
    where
        Fut: std::future::Future<
                Output = Result<
                    freshworks_client::Exchange<freshworks_client::FieldsResponse>,
                    freshworks_client::FreshworksError,
                >,
            >,
    {
        let result = cache
            .get(now_ms(), || async {
                let called = self
                    .call(endpoint, Quota::Take(1), fetch)
                    .await
                    .map_err(|wait| FieldsError::Budget(wait.0))?;
                called
                    .result
                    .map(|x| x.body.fields)
                    .map_err(|e| FieldsError::Call(e, called.outcome))
            })
            .await;
        match result {
            Ok(index) => Ok(index),
            Err(FieldsError::Budget(until)) => Err(Stop::Later(quota_not_before(until))),
            Err(FieldsError::Call(e, outcome)) => {
                tracing::warn!(destination = self.name, endpoint = endpoint.metric_label(), status = ?e.status(), error = %e, "cannot read field metadata");
                match outcome {
                    Outcome::Pause { reason } => Err(Stop::Later(Some(self.pause(&reason).await))),
                    Outcome::Retry { after, .. } | Outcome::Throttled { after, .. } => {
                        let wait = after.unwrap_or(Duration::from_secs(5));
                        Err(Stop::Later(Some(now_ms() + duration_ms(wait))))
                    }
                    // An unreadable answer: try again soon.
                    Outcome::Success => Err(Stop::Later(Some(now_ms() + 5_000))),
                    // A 4xx on a GET of metadata is not the events' fault: keep them, retry later.
                    Outcome::DeadLetter { .. } => Err(Stop::Later(Some(now_ms() + 60_000))),
                }
            }
        }
    }

    /// Coalesce, map and plan a run against the contact's shadow. `None` when it was settled
    /// without a call (no email anywhere, or nothing changed).
    async fn prepare(&self, lease: &ContactLease, run: Run<'_>) -> Result<Option<Prepared>, Stop> {
        let delivery_ids: Vec<i64> = run.iter().map(|(p, _)| p.delivery_id).collect();
        let user_id = run
            .iter()
            .rev()
            .find_map(|(_, e)| e.user_id.clone())
            .unwrap_or_else(|| lease.contact_key.clone());
        let inputs: Vec<IdentifyInput> = run
            .iter()
            .map(|(p, e)| IdentifyInput {
                seq: p.event_id,
                ts_ms: p.timestamp_ms,
                traits: e.traits.clone(),
            })
            .collect();
        let first_attempt_ms = run.iter().filter_map(|(p, _)| p.first_attempt_ms).min();
        let memberships = self.identify_memberships(&lease.contact_key, &run);
        let attempts = run.iter().map(|(p, _)| p.attempts).max().unwrap_or(0);
        let coalesced = freshgate_core::coalesce::coalesce(&inputs, self.mode);

        let mut index = self.field_index().await?;
        let mut mapped = mapping::map_traits(&index, &coalesced);
        self.drop_company_keys(&mut mapped.report);
        let evidence = fields::refresh_evidence(&index, &mapped.report);
        if !evidence.is_empty()
            && self
                .fields
                .invalidate_on_evidence(now_ms(), &evidence)
                .await
        {
            index = self.field_index().await?;
            mapped = mapping::map_traits(&index, &coalesced);
            self.drop_company_keys(&mut mapped.report);
        }
        self.report(&mapped.report);

        let shadow = self.contact_shadow(&lease.contact_key).await?;
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
            // No contact is written, but an audience membership may still find one by
            // `external_id` (or be given up with that reason, visibly).
            let note = super::lists::hand_off_note(&memberships);
            let contact_id = shadow.as_ref().and_then(|s| s.contact_id);
            self.hand_off(memberships, contact_id).await?;
            self.settle_skipped(lease, &delivery_ids, &SkipReason::NoEmail, &note)
                .await?;
            return Ok(None);
        };
        let mut plan = shadow::plan(shadow.as_ref(), &mapped, self.mode);
        let mut time_notes: Vec<String> =
            run.iter().filter_map(|(_, e)| e.timestamp_note()).collect();
        let associated = shadow
            .as_ref()
            .map_or(&[][..], |s| s.account_ids.as_slice());
        let mut account_ids = self
            .company_account(
                &Covered {
                    lease,
                    delivery_ids: &delivery_ids,
                    first_attempt_ms,
                    attempts,
                },
                self.company_of(&run),
                associated,
                &mut time_notes,
            )
            .await?;
        // Accounts a group named before this contact existed are associated now.
        for id in shadow.iter().flat_map(|s| &s.pending_account_ids) {
            let base = account_ids.as_deref().unwrap_or(associated);
            if let Some(next) = account::with_account(base, *id) {
                account_ids = Some(next);
            }
        }
        if let Some(ids) = &account_ids {
            // The association rides on this upsert; `contact_delivered` moves it from the
            // fields into `ContactShadow::account_ids`.
            let ts_ms = run.iter().map(|(p, _)| p.timestamp_ms).max().unwrap_or(0);
            plan.send.insert(
                account::SALES_ACCOUNTS.to_owned(),
                MappedField {
                    value: account::account_links(ids),
                    ts_ms,
                    custom: false,
                },
            );
        }
        let summary = format!(
            "{}{}",
            report_summary(&mapped.report, &plan.stale, &time_notes),
            super::lists::hand_off_note(&memberships)
        );
        if account_ids.is_none()
            && let Some(reason) = plan::skip_unchanged(
                shadow.as_ref(),
                &plan,
                &email,
                now_ms(),
                self.unchanged_skip_ms,
            )
        {
            // Move the shadow's timestamps forward: these events confirmed the values, so an
            // older event arriving later must still count as stale.
            let mut confirmed = shadow::apply(shadow.as_ref(), &user_id, &email, &plan, None);
            confirmed.email_ts_ms = confirmed.email_ts_ms.max(email_ts_ms);
            if let Ok(bytes) = serde_json::to_vec(&confirmed) {
                self.store
                    .put_shadow(&self.name, &lease.contact_key, bytes)
                    .await?;
            }
            self.hand_off(memberships, confirmed.contact_id).await?;
            self.settle_skipped(lease, &delivery_ids, &reason, &summary)
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
            account_ids,
            memberships,
        }))
    }

    /// With `company_accounts`, the company trait is the account's, not an unmapped trait.
    fn drop_company_keys(&self, report: &mut MappingReport) {
        if self.kinds.company_accounts {
            report.unmapped.retain(|k| !account::is_company_key(k));
        }
    }

    /// The run's newest identify carrying `traits.company`, with its timestamp, when
    /// `company_accounts` is on.
    fn company_of<'a>(&self, run: &Run<'a>) -> Option<(&'a StoredEvent, i64)> {
        if !self.kinds.company_accounts {
            return None;
        }
        run.iter()
            .filter(|(_, e)| {
                e.traits
                    .get(account::COMPANY_TRAIT)
                    .is_some_and(|c| !c.is_null())
            })
            .max_by_key(|(p, _)| (p.timestamp_ms, p.event_id))
            .map(|(p, e)| (*e, p.timestamp_ms))
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

/// The mapping report as a suffix for traces: what was not sent and why, and event times that
/// were not taken as sent.
pub(super) fn report_summary(
    report: &MappingReport,
    stale: &[String],
    time_notes: &[String],
) -> String {
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
