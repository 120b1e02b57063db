//! The sales account sink: a `group` call (or an identify's `traits.company`) becomes one
//! `POST /sales_accounts/upsert` planned against the account shadow (per-field newest wins; an
//! account unchanged since the CRM confirmed it costs no call), then the contact associated
//! with it (`sales_accounts` on the contact, the first account primary).
//!
//! A group's association is its own contact upsert keyed by `external_id`, sent only when the
//! contact exists (its id known from `Store::contact_ids`, the contact shadow, else one lookup
//! by `external_id`) and is not yet associated. A company's association rides on the
//! identify's own contact upsert (see `steps.rs`), so it costs no call of its own.

use super::contact::LookedUp;
use freshgate_core::account::{self, AccountSpec};
use freshgate_core::account_shadow::{self, AccountShadow};
use freshgate_core::delivery::Outcome;
use freshgate_core::mapping::FieldIndex;
use freshgate_core::reason::{DeadReason, SkipReason};
use freshgate_core::segment::StoredEvent;
use freshgate_core::shadow::ContactShadow;
use freshgate_store::{Attempt, ContactLease, PendingDelivery};
use freshworks_client::SalesAccountUpsert;

use super::call::{Endpoint, Quota};
use super::settle::Covered;
use super::steps::report_summary;
use super::worker::quota_not_before;
use super::{DestinationWorker, Stop};
use crate::pipeline::{fields, now_ms};

/// Account locks (striped): contacts are leased one by one, but many contacts name one account.
const LOCK_STRIPES: usize = 64;

/// One lock per stripe of account keys: the read of an account's shadow, its upsert and the
/// shadow's update happen under it, so two contacts of one account never plan against the same
/// old shadow in this process (an older group would otherwise overwrite a newer value, and the
/// first touch of an account would be sent twice).
pub struct AccountLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for AccountLocks {
    fn default() -> Self {
        Self {
            stripes: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl AccountLocks {
    fn of(&self, key: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let stripe = usize::try_from(h.finish() % LOCK_STRIPES as u64).unwrap_or(0);
        &self.stripes[stripe]
    }
}

/// The trace words of a group whose contact does not exist (yet).
const NO_CONTACT: &str =
    "no contact with this userId yet: its next identify associates it with the account";

/// What became of an account upsert.
pub(super) enum Upserted {
    /// The account is written (or was unchanged): its id when known, and the call's attempt
    /// when one was made.
    Ready {
        /// The Freshworks sales account id.
        account_id: Option<i64>,
        /// The upsert call, if one was needed.
        attempt: Option<Attempt>,
    },
    /// The upsert call did not write it.
    Failed {
        /// What the call's answer means.
        outcome: Outcome,
        /// The call.
        attempt: Attempt,
    },
}

/// What became of associating the contact with an account.
enum Associated {
    /// Already associated (by freshgate, as the contact shadow says): no call.
    Already,
    /// Associated by this call.
    Now(Attempt),
    /// No contact to associate: the user has no `userId`, or no contact has it yet (then the
    /// account waits in the contact shadow for the contact's next upsert).
    NoContact,
    /// The association call failed.
    Failed {
        /// What the call's answer means.
        outcome: Outcome,
        /// The call.
        attempt: Attempt,
    },
}

impl DestinationWorker {
    /// Deliver one group call: the account upserted, the contact associated, the delivery
    /// settled once with the call that decided it.
    ///
    /// # Errors
    /// `Stop::Later` when the contact must wait (quota, retry, pause), `Stop::Store`.
    pub(super) async fn group_account(
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
        let spec = self
            .account_spec(
                |index| account::group_account(index, event),
                |built| built.as_ref().ok(),
            )
            .await?;
        let spec = match spec {
            Ok(spec) => spec,
            Err(why) => {
                return self
                    .settle_skipped(lease, &ids, &SkipReason::NoAccount(why), "")
                    .await;
            }
        };
        let summary = report_summary(&spec.report, &[], &[]);
        let (account_id, account_attempt) = match self.upsert_account(&spec, &ids).await? {
            Upserted::Ready {
                account_id,
                attempt,
            } => (account_id, attempt),
            Upserted::Failed { outcome, attempt } => {
                return self
                    .settle_failure(&covered, outcome, &summary, attempt)
                    .await;
            }
        };
        let associated = match account_id {
            Some(id) => {
                self.associate(lease, event.user_id.as_deref(), id, &ids)
                    .await?
            }
            // The upsert's answer was unreadable: the account exists, its id is unknown.
            None => Associated::NoContact,
        };
        let named = format!("sales account {}", account_id.unwrap_or_default());
        match (associated, account_attempt) {
            (Associated::Already, None) => {
                self.settle_skipped(lease, &ids, &SkipReason::Unchanged, &summary)
                    .await
            }
            (Associated::Already, Some(mut attempt)) => {
                attempt.outcome = format!("delivered to {named}{summary}");
                self.settle_delivered(lease, &ids, attempt).await
            }
            (Associated::NoContact, Some(mut attempt)) => {
                attempt.outcome = format!("delivered to {named}; {NO_CONTACT}{summary}");
                self.settle_delivered(lease, &ids, attempt).await
            }
            (Associated::NoContact, None) => {
                let note = format!("; {named} unchanged; {NO_CONTACT}");
                self.settle_skipped(lease, &ids, &SkipReason::Unchanged, &note)
                    .await
            }
            (Associated::Now(mut attempt), upsert) => {
                if let Some(mut upsert) = upsert {
                    upsert.outcome = format!("{named} upserted{summary}");
                    self.record_attempt(lease, upsert).await?;
                }
                attempt.outcome = format!("contact associated with {named}{summary}");
                self.settle_delivered(lease, &ids, attempt).await
            }
            (Associated::Failed { outcome, attempt }, upsert) => {
                if let Some(mut upsert) = upsert {
                    upsert.outcome = format!("{named} upserted{summary}");
                    self.record_attempt(lease, upsert).await?;
                }
                self.settle_failure(&covered, outcome, &summary, attempt)
                    .await
            }
        }
    }

    /// An account spec built by `build` against the sales account fields, refreshed once
    /// (like the contact fields) when the mapping shows evidence that they changed.
    async fn account_spec<T>(
        &self,
        build: impl Fn(&FieldIndex) -> T,
        spec_of: impl Fn(&T) -> Option<&AccountSpec>,
    ) -> Result<T, Stop> {
        let index = self.account_field_index().await?;
        let built = build(&index);
        let evidence = spec_of(&built)
            .map(|spec| fields::refresh_evidence(&index, &spec.report))
            .unwrap_or_default();
        if !evidence.is_empty()
            && self
                .account_fields
                .invalidate_on_evidence(now_ms(), &evidence)
                .await
        {
            let index = self.account_field_index().await?;
            return Ok(build(&index));
        }
        Ok(built)
    }

    /// Upsert `spec` unless its shadow shows it unchanged; the shadow is marked in doubt
    /// before the call and moved forward after it (per-field newest wins).
    ///
    /// # Errors
    /// `Stop::Later` when the quota is spent, `Stop::Store`.
    pub(super) async fn upsert_account(
        &self,
        spec: &AccountSpec,
        delivery_ids: &[i64],
    ) -> Result<Upserted, Stop> {
        let key = spec.key.store_key();
        let _serialised = self.account_locks.of(&key).lock().await;
        let shadow: Option<AccountShadow> = self
            .store
            .account_shadow(&self.name, &key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        let plan =
            account_shadow::plan_account(shadow.as_ref(), spec, now_ms(), self.unchanged_skip_ms);
        if plan.unchanged {
            return Ok(Upserted::Ready {
                account_id: shadow.and_then(|s| s.account_id),
                attempt: None,
            });
        }
        self.put_account_shadow(&key, &account_shadow::account_in_doubt(shadow.as_ref()))
            .await?;
        let body = SalesAccountUpsert::of_fields(&spec.name, &plan.send);
        let called = self
            .call(Endpoint::AccountsUpsert, Quota::Take(1), || {
                self.client.upsert_account(&body)
            })
            .await
            .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
        let attempt = called.attempt(delivery_ids);
        let account_id = match (&called.result, called.outcome) {
            (Ok(x), _) => Some(x.body.sales_account.id),
            (Err(_), Outcome::Success) => None,
            (Err(_), outcome) => return Ok(Upserted::Failed { outcome, attempt }),
        };
        let next =
            account_shadow::apply_account(shadow.as_ref(), spec, &plan, account_id, now_ms());
        self.put_account_shadow(&key, &next).await?;
        Ok(Upserted::Ready {
            account_id: next.account_id,
            attempt: Some(attempt),
        })
    }

    async fn put_account_shadow(&self, key: &str, shadow: &AccountShadow) -> Result<(), Stop> {
        if let Ok(bytes) = serde_json::to_vec(shadow) {
            self.store
                .put_account_shadow(&self.name, key, bytes)
                .await?;
        }
        Ok(())
    }

    /// Associate the leased contact (Segment `user_id`) with `account_id`, unless freshgate
    /// already did. The contact must exist: its id is known, or one lookup by `external_id`
    /// finds it.
    async fn associate(
        &self,
        lease: &ContactLease,
        user_id: Option<&str>,
        account_id: i64,
        delivery_ids: &[i64],
    ) -> Result<Associated, Stop> {
        let Some(user_id) = user_id.filter(|u| !u.is_empty()) else {
            return Ok(Associated::NoContact);
        };
        let shadow = self.contact_shadow(&lease.contact_key).await?;
        let associated = shadow
            .as_ref()
            .map_or(&[][..], |s| s.account_ids.as_slice());
        let Some(account_ids) = account::with_account(associated, account_id) else {
            return Ok(Associated::Already);
        };
        let known = self
            .store
            .contact_ids(&self.name, vec![lease.contact_key.clone()])
            .await?
            .first()
            .map(|(_, id)| *id)
            .or_else(|| shadow.as_ref().and_then(|s| s.contact_id));
        if known.is_none() {
            match self.find_contact(lease, user_id, delivery_ids).await? {
                Ok(Some(_)) => {}
                Ok(None) => {
                    // Kept for the contact's next upsert, which creates it.
                    let mut next = shadow.unwrap_or_default();
                    if !next.pending_account_ids.contains(&account_id) {
                        next.pending_account_ids.push(account_id);
                    }
                    self.put_contact_shadow(lease, &next).await?;
                    return Ok(Associated::NoContact);
                }
                Err((outcome, attempt)) => return Ok(Associated::Failed { outcome, attempt }),
            }
        }
        let body = account::association_body(user_id, &account_ids);
        let called = self
            .call(Endpoint::ContactsUpsert, Quota::Take(1), || {
                self.client.upsert_contact(&body)
            })
            .await
            .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
        let attempt = called.attempt(delivery_ids);
        let contact_id = match (&called.result, called.outcome) {
            (Ok(x), _) => Some(x.body.contact.id),
            (Err(_), Outcome::Success) => None,
            (Err(_), outcome) => return Ok(Associated::Failed { outcome, attempt }),
        };
        if let Some(id) = contact_id {
            self.store
                .put_contact_ids(&self.name, vec![(lease.contact_key.clone(), id)])
                .await?;
        }
        let mut next = shadow.unwrap_or_default();
        next.pending_account_ids
            .retain(|id| !account_ids.contains(id));
        next.account_ids = account_ids;
        next.contact_id = next.contact_id.or(contact_id);
        self.put_contact_shadow(lease, &next).await?;
        Ok(Associated::Now(attempt))
    }

    async fn put_contact_shadow(
        &self,
        lease: &ContactLease,
        shadow: &ContactShadow,
    ) -> Result<(), Stop> {
        if let Ok(bytes) = serde_json::to_vec(shadow) {
            self.store
                .put_shadow(&self.name, &lease.contact_key, bytes)
                .await?;
        }
        Ok(())
    }

    /// One lookup by `external_id` (counted in the budget): the contact's id, recorded, or
    /// `None` when no contact has it; `Err` with the lookup's outcome when it failed.
    async fn find_contact(
        &self,
        lease: &ContactLease,
        user_id: &str,
        delivery_ids: &[i64],
    ) -> Result<Result<Option<i64>, (Outcome, Attempt)>, Stop> {
        let LookedUp {
            id,
            outcome,
            mut attempt,
        } = self.look_up_contact(lease, user_id, delivery_ids).await?;
        if id.is_none() && outcome != Outcome::Success {
            return Ok(Err((outcome, attempt)));
        }
        attempt.outcome = match id {
            Some(id) => format!("contact {id} found by external_id"),
            None => "no contact has this external_id".to_owned(),
        };
        self.record_attempt(lease, attempt).await?;
        Ok(Ok(id))
    }

    /// The account of a run's `traits.company` (`company_accounts`): upserted now, before the
    /// run's contact upsert, which then carries the association. `Ok(Some(ids))`: the
    /// contact's account ids to send (the association changed); `Ok(None)`: nothing to
    /// associate (no company, already associated, or the account was refused — recorded, the
    /// contact is still written). `Err(Stop)` when the run must wait; a retryable failure is
    /// settled for the run first.
    ///
    /// # Errors
    /// `Stop::Later`, `Stop::Store`.
    pub(super) async fn company_account(
        &self,
        covered: &Covered<'_>,
        company: Option<(&StoredEvent, i64)>,
        associated: &[i64],
        notes: &mut Vec<String>,
    ) -> Result<Option<Vec<i64>>, Stop> {
        let Some((event, ts_ms)) = company else {
            return Ok(None);
        };
        let spec = self
            .account_spec(
                |index| account::company_account(index, &event.traits, ts_ms),
                |built| built.as_ref().and_then(|r| r.as_ref().ok()),
            )
            .await?;
        let spec = match spec {
            None => return Ok(None),
            Some(Ok(spec)) => spec,
            Some(Err(why)) => {
                notes.push(format!("company not delivered: {why}"));
                return Ok(None);
            }
        };
        let summary = report_summary(&spec.report, &[], &[]);
        let named = |id: Option<i64>| format!("sales account {}", id.unwrap_or_default());
        match self.upsert_account(&spec, covered.delivery_ids).await? {
            Upserted::Ready {
                account_id,
                attempt,
            } => {
                if let Some(mut attempt) = attempt {
                    attempt.outcome =
                        format!("{} upserted (traits.company){summary}", named(account_id));
                    self.record_attempt(covered.lease, attempt).await?;
                }
                Ok(account_id.and_then(|id| account::with_account(associated, id)))
            }
            Upserted::Failed {
                outcome: Outcome::DeadLetter { reason },
                mut attempt,
            } => {
                // A refused company must not hold back the contact: noted, the contact is
                // written without the association.
                let code = DeadReason::of_refusal(&reason).code();
                attempt.outcome = format!("company account refused ({code}): {reason}{summary}");
                self.record_attempt(covered.lease, attempt).await?;
                notes.push(format!("company account refused: {reason}"));
                Ok(None)
            }
            Upserted::Failed { outcome, attempt } => {
                self.settle_failure(covered, outcome, &summary, attempt)
                    .await?;
                Err(Stop::Later(None))
            }
        }
    }
}
