//! The contact upsert sink's part around a call, shared by the single and the bulk path: the
//! shadow marked in doubt before the write, moved forward after it, and the web-form fallback
//! when a write keyed by `external_id` meets a uniqueness refusal.

use freshgate_core::delivery::{self, Outcome};
use freshgate_core::mapping::Identity;
use freshgate_core::reason::DeadReason;
use freshgate_core::shadow::{self, ContactShadow};
use freshgate_store::{Attempt, ContactLease};

use super::call::{Endpoint, Quota};
use super::settle::Covered;
use super::worker::quota_not_before;
use super::{DestinationWorker, Stop};
use crate::pipeline::now_ms;

/// A contact's coalesced identify run, mapped and planned, ready to send.
#[derive(Clone)]
pub struct Prepared {
    /// The contact's lease.
    pub lease: ContactLease,
    /// Deliveries the run covers.
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
    /// The contact's sales account ids when this upsert changes its associations
    /// (`traits.company`, or a group that came before the contact existed): sent as
    /// `sales_accounts` in `plan`, kept in the shadow once written.
    pub account_ids: Option<Vec<i64>>,
    /// Engage audience memberships the run's identifies carry, handed to the list flusher
    /// once the contact is written (see [`super::lists`]).
    pub memberships: Vec<freshgate_store::MembershipChange>,
}

impl Prepared {
    /// The deliveries and retry history the settle needs.
    pub fn covered(&self) -> Covered<'_> {
        Covered {
            lease: &self.lease,
            delivery_ids: &self.delivery_ids,
            first_attempt_ms: self.first_attempt_ms,
            attempts: self.attempts,
        }
    }
}

/// What one lookup of a contact by `external_id` gave: its id (already recorded with the
/// contact's key) when a contact has it, the classified outcome, and the attempt to record.
pub(super) struct LookedUp {
    /// The contact's Freshworks id, when one has this `external_id`.
    pub id: Option<i64>,
    /// The lookup's outcome (`Success` with no id: answered, no such contact).
    pub outcome: Outcome,
    /// The call, for the trace; its outcome words are the caller's.
    pub attempt: Attempt,
}

impl DestinationWorker {
    /// The contact's shadow as stored; one that does not parse (written by another version)
    /// counts as none, as if nothing were known of the contact.
    ///
    /// # Errors
    /// The store's.
    pub(super) async fn contact_shadow(
        &self,
        contact_key: &str,
    ) -> Result<Option<ContactShadow>, freshgate_store::StoreError> {
        Ok(self
            .store
            .shadow(&self.name, contact_key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// One lookup by `external_id` through the call path (counted in the budget); a found id is
    /// kept for the contact, so it is looked up once. The lookup the track, account and list
    /// steps share when a contact's id is not known (bulk job answers carry none).
    ///
    /// # Errors
    /// `Stop::Later` when the quota makes it wait, `Stop::Store`.
    pub(super) async fn look_up_contact(
        &self,
        lease: &ContactLease,
        user_id: &str,
        delivery_ids: &[i64],
    ) -> Result<LookedUp, Stop> {
        let called = self
            .call(Endpoint::Lookup, Quota::Take(1), || {
                self.client.lookup_contacts("external_id", user_id)
            })
            .await
            .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
        let id = called
            .result
            .as_ref()
            .ok()
            .and_then(|x| x.body.first().map(|c| c.id));
        if let Some(id) = id {
            self.store
                .put_contact_ids(&self.name, vec![(lease.contact_key.clone(), id)])
                .await?;
        }
        let attempt = called.attempt(delivery_ids);
        Ok(LookedUp {
            id,
            outcome: called.outcome,
            attempt,
        })
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

    /// Record a written contact: the shadow moves forward, the deliveries are done.
    ///
    /// # Errors
    /// `Stop::Store`.
    pub async fn contact_delivered(
        &self,
        p: &Prepared,
        contact_id: Option<i64>,
        attempt: Attempt,
    ) -> Result<(), Stop> {
        let mut new_shadow =
            shadow::apply(p.shadow.as_ref(), &p.user_id, &p.email, &p.plan, contact_id);
        new_shadow.email_ts_ms = new_shadow.email_ts_ms.max(p.email_ts_ms);
        new_shadow.confirmed_at_ms = Some(now_ms());
        if let Some(ids) = &p.account_ids {
            new_shadow
                .fields
                .remove(freshgate_core::account::SALES_ACCOUNTS);
            new_shadow.account_ids.clone_from(ids);
            new_shadow
                .pending_account_ids
                .retain(|id| !ids.contains(id));
        }
        // Every answer that names the contact's id is kept: tracks, accounts and lists need it.
        if let Some(id) = contact_id {
            self.store
                .put_contact_ids(&self.name, vec![(p.lease.contact_key.clone(), id)])
                .await?;
        }
        if let Ok(bytes) = serde_json::to_vec(&new_shadow) {
            self.store
                .put_shadow(&self.name, &p.lease.contact_key, bytes)
                .await?;
        }
        // Recorded before the settle: a crash in between resends the upsert and records again.
        self.hand_off(p.memberships.clone(), new_shadow.contact_id)
            .await?;
        self.settle_delivered(&p.lease, &p.delivery_ids, attempt)
            .await
    }

    /// Record a contact write that did not happen, by its outcome. A uniqueness refusal of a
    /// write keyed by `external_id` first tries the contact's email
    /// ([`Self::unknown_external_id`]).
    ///
    /// # Errors
    /// `Stop::Later` when the contact must wait (retry scheduled, paused), `Stop::Store`.
    pub async fn contact_failed(
        &self,
        p: &Prepared,
        outcome: Outcome,
        mut attempt: Attempt,
    ) -> Result<(), Stop> {
        match outcome {
            Outcome::Success => self.contact_delivered(p, None, attempt).await,
            Outcome::DeadLetter { reason }
                if matches!(p.identity, Identity::ExternalId(_))
                    && delivery::is_uniqueness_conflict(&reason) =>
            {
                attempt.outcome = format!("refused by external_id: {reason}");
                self.record_attempt(&p.lease, attempt).await?;
                self.unknown_external_id(p, reason).await
            }
            other => {
                self.settle_failure(&p.covered(), other, &p.summary, attempt)
                    .await
            }
        }
    }

    /// A write keyed by `external_id` was refused (typically: a contact created elsewhere, by a
    /// web form, owns the email and has no `external_id`). When no contact has this
    /// `external_id`, the email identifies the contact: the run is sent again keyed by it.
    /// When one has it, the refusal stands and the run is dead-lettered. One lookup call, on
    /// this path only.
    async fn unknown_external_id(&self, p: &Prepared, refusal: String) -> Result<(), Stop> {
        let found = self
            .call(Endpoint::Lookup, Quota::Take(1), || {
                self.client.lookup_contacts("external_id", &p.user_id)
            })
            .await
            .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
        let by_email = Prepared {
            identity: Identity::Email(freshgate_core::email::normalize(&p.email)),
            ..p.clone()
        };
        let mut attempt = found.attempt(&p.delivery_ids);
        match (&found.result, found.outcome) {
            (Ok(x), _) if x.body.is_empty() => Box::pin(self.send_single(by_email)).await,
            (Ok(x), _) => {
                attempt.outcome = format!(
                    "dead-lettered: {refusal} (contact {} has this external_id)",
                    x.body.first().map_or(0, |c| c.id)
                );
                self.settle_dead(
                    &p.lease,
                    &p.delivery_ids,
                    DeadReason::Conflict,
                    refusal,
                    attempt,
                )
                .await
            }
            // The lookup's own failure decides (a 5xx is retried, a 401 pauses); a lookup
            // that cannot succeed leaves the refusal as the verdict.
            (Err(_), Outcome::DeadLetter { .. } | Outcome::Success) => {
                attempt.outcome = format!("dead-lettered: {refusal}{}", p.summary);
                self.settle_dead(
                    &p.lease,
                    &p.delivery_ids,
                    DeadReason::Conflict,
                    refusal,
                    attempt,
                )
                .await
            }
            (Err(_), other) => Box::pin(self.contact_failed(&by_email, other, attempt)).await,
        }
    }
}
