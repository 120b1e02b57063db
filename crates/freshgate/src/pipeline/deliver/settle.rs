//! Settling: how a delivery ended (delivered, retried later, dead-lettered, skipped) is
//! recorded here once, for every kind of step, with its metric and log line. Reasons arrive as
//! enums ([`SkipReason`], [`DeadReason`], a classified [`Outcome`]) and are stored with their
//! words; sinks never build a `Settlement` themselves.

use freshgate_core::delivery::{self, Outcome};
use freshgate_core::plan::Step;
use freshgate_core::reason::{DeadReason, SkipReason};
use freshgate_store::{Attempt, ContactLease, Settlement};

use super::call::duration_ms;
use super::{DestinationWorker, Stop};
use crate::pipeline::now_ms;
use crate::telemetry::events;

/// The deliveries one call was made for, and their retry history.
#[derive(Debug, Clone, Copy)]
pub struct Covered<'a> {
    /// The contact's lease.
    pub lease: &'a ContactLease,
    /// The deliveries.
    pub delivery_ids: &'a [i64],
    /// Earliest first attempt among them (retry horizon).
    pub first_attempt_ms: Option<i64>,
    /// Most attempts among them (backoff).
    pub attempts: u32,
}

impl DestinationWorker {
    /// Settle the steps that need no call (planner skips and dead letters), in one store
    /// write. `ids` maps a planner index to its delivery id.
    pub(super) async fn settle_planned(
        &self,
        lease: &ContactLease,
        steps: &[&Step],
        ids: &[i64],
    ) -> Result<(), Stop> {
        let settlements: Vec<(i64, Settlement)> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Skip { index, reason } => {
                    self.count_skip(reason, 1);
                    Some((ids[*index], skipped(reason, "")))
                }
                Step::DeadLetter {
                    index,
                    reason,
                    detail,
                } => Some((ids[*index], dead(*reason, detail.clone()))),
                // Settled by their sinks.
                Step::UpsertContact { .. }
                | Step::UpsertAccount { .. }
                | Step::HandOffMembership { .. }
                | Step::TrackActivity { .. }
                | Step::AwaitIdentify { .. } => None,
            })
            .collect();
        if !settlements.is_empty() {
            self.store
                .settle(lease, now_ms(), settlements, None)
                .await?;
        }
        Ok(())
    }

    /// Settle deliveries skipped for `reason`; `suffix` adds what traces should show.
    pub(super) async fn settle_skipped(
        &self,
        lease: &ContactLease,
        delivery_ids: &[i64],
        reason: &SkipReason,
        suffix: &str,
    ) -> Result<(), Stop> {
        self.count_skip(reason, delivery_ids.len());
        self.settle_all(lease, delivery_ids, skipped(reason, suffix), None)
            .await
    }

    /// Settle deliveries as delivered by the call `attempt` records.
    pub(super) async fn settle_delivered(
        &self,
        lease: &ContactLease,
        delivery_ids: &[i64],
        attempt: Attempt,
    ) -> Result<(), Stop> {
        self.resume().await;
        events::deliveries(&self.name, "delivered", delivery_ids.len());
        self.settle_all(lease, delivery_ids, Settlement::Delivered, Some(attempt))
            .await
    }

    /// Dead-letter deliveries for `reason` (its words in `detail`), with the call that decided.
    pub(super) async fn settle_dead(
        &self,
        lease: &ContactLease,
        delivery_ids: &[i64],
        reason: DeadReason,
        detail: String,
        attempt: Attempt,
    ) -> Result<(), Stop> {
        tracing::warn!(
            destination = self.name,
            contact = lease.contact_key,
            reason = reason.code(),
            outcome = attempt.outcome,
            "delivery dead-lettered"
        );
        events::deliveries(&self.name, "dead", delivery_ids.len());
        self.settle_all(lease, delivery_ids, dead(reason, detail), Some(attempt))
            .await
    }

    /// Record a call that settles nothing (the deliveries stay pending as they are).
    pub(super) async fn record_attempt(
        &self,
        lease: &ContactLease,
        attempt: Attempt,
    ) -> Result<(), Stop> {
        self.store
            .settle(lease, attempt.at_ms, Vec::new(), Some(attempt))
            .await?;
        Ok(())
    }

    /// Settle a call that did not deliver, by its outcome: dead-lettered, retried later (or
    /// dead past the retry horizon), or the destination paused. `summary` is added to the
    /// words of a dead letter.
    ///
    /// # Errors
    /// `Stop::Later` when the contact must wait (retry scheduled, paused), `Stop::Store`.
    pub(super) async fn settle_failure(
        &self,
        covered: &Covered<'_>,
        outcome: Outcome,
        summary: &str,
        mut attempt: Attempt,
    ) -> Result<(), Stop> {
        let at = attempt.at_ms;
        let reason = match outcome {
            Outcome::Success => {
                // A caller that could not deliver on success says why in the attempt.
                return self
                    .settle_delivered(covered.lease, covered.delivery_ids, attempt)
                    .await;
            }
            Outcome::DeadLetter { reason } => {
                attempt.outcome = format!("dead-lettered: {reason}{summary}");
                let code = DeadReason::of_refusal(&reason);
                return self
                    .settle_dead(covered.lease, covered.delivery_ids, code, reason, attempt)
                    .await;
            }
            Outcome::Pause { reason } => {
                let until = self.pause(&reason).await;
                attempt.outcome = format!("paused: {reason}");
                // Events stay pending and untouched; the attempt is still recorded.
                self.record_attempt(covered.lease, attempt).await?;
                return Err(Stop::Later(Some(until)));
            }
            // The call path already told the budget about a throttle.
            Outcome::Retry { after, reason } | Outcome::Throttled { after, reason } => {
                (after, reason)
            }
        };
        let (after, reason) = reason;
        let first = covered.first_attempt_ms.unwrap_or(at);
        if delivery::horizon_exceeded(first, at, self.horizon_ms) {
            let reason = format!("retry horizon exceeded; last error: {reason}");
            attempt.outcome = format!("dead-lettered: {reason}");
            return self
                .settle_dead(
                    covered.lease,
                    covered.delivery_ids,
                    DeadReason::RetryHorizon,
                    reason,
                    attempt,
                )
                .await;
        }
        let delay = delivery::retry_delay(covered.attempts, after, rand::random::<f64>());
        let at_ms = at + duration_ms(delay);
        attempt.outcome = format!("retry in {} ms: {reason}", duration_ms(delay));
        // A retry is routine (INFO); a dead letter needs an operator (WARN, above).
        tracing::info!(
            destination = self.name,
            contact = covered.lease.contact_key,
            outcome = attempt.outcome,
            "delivery attempt failed"
        );
        events::deliveries(&self.name, "retry", covered.delivery_ids.len());
        let retry = Settlement::Retry {
            at_ms,
            error: reason,
        };
        self.settle_all(covered.lease, covered.delivery_ids, retry, Some(attempt))
            .await?;
        Err(Stop::Later(Some(at_ms)))
    }

    fn count_skip(&self, reason: &SkipReason, n: usize) {
        if let Some(label) = reason.metric_label() {
            events::deliveries(&self.name, label, n);
        }
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
}

/// The settlement of a skip: its code, its words, then `suffix`.
fn skipped(reason: &SkipReason, suffix: &str) -> Settlement {
    Settlement::Skipped {
        code: reason.code().to_owned(),
        reason: format!("{}{suffix}", reason.detail()),
    }
}

/// The settlement of a dead letter: its code and its words.
fn dead(reason: DeadReason, detail: String) -> Settlement {
    Settlement::DeadLettered {
        code: reason.code().to_owned(),
        reason: detail,
    }
}
