//! Engage audiences → marketing lists (`audience_lists`): a contact's steps hand memberships
//! off, the destination's list flusher sends them many contacts per call.
//!
//! Contacts are delivered one lease at a time, but `PUT /lists/{id}/add_contacts` takes many
//! ids. So a contact's step does not call: it records the desired membership (list, contact,
//! add/remove, event time) in the store, where the newest event per (list, contact) wins, and
//! settles its delivery as delivered with a trace line saying so (the hand-off is durable: it
//! is in the store before the delivery is settled). An identify's membership is recorded once
//! its upsert has succeeded (or was skipped as unchanged), so the contact exists when the
//! flusher sends it; an `Audience Entered`/`Exited` track's comes after any identify before it
//! (per-contact order, [`freshgate_core::plan`]).
//!
//! The flusher ([`run_flusher`]) takes due memberships every [`FLUSH_EVERY`], resolves contact
//! ids (known from the upsert, the shadow or the store; else one lookup by `external_id`
//! through the call path, counted in the budget), finds each list by name across all pages of
//! `GET /lists` or creates it once (a store claim decides which node does), and sends
//! [`freshgate_core::audience::batch_changes`] batches of up to [`MAX_IDS`] ids, each through
//! [`DestinationWorker::call`]. Failures are retried with the usual backoff and dead past the
//! retry horizon (or at once when Freshworks refuses), with the reason kept on the row.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use freshgate_core::audience::{AudienceChange, Membership, audience_change, batch_changes};
use freshgate_core::delivery::{self, Outcome};
use freshgate_core::plan::Step;
use freshgate_core::segment::StoredEvent;
use freshgate_store::{
    Attempt, ContactLease, DueMembership, ListAction, ListClaim, MembershipChange, MembershipEnd,
    MembershipResult, PendingDelivery, StoreError,
};
use tokio_util::sync::CancellationToken;

use super::call::{Endpoint, Quota, duration_ms};
use super::{DestinationWorker, Stop};
use crate::pipeline::{clock, now_ms};

/// How often the flusher looks for due memberships: how long a membership may wait for others
/// to share its call (at 200 contacts/s, a round carries about 400).
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Contact ids per `add_contacts` / `remove_contacts` call. The API's limit is not documented
/// (spec/freshworks.md §6); 100 is the bulk upsert's and keeps a refused call small.
pub const MAX_IDS: usize = 100;
/// Memberships taken per round.
const TAKE: usize = 1_000;
/// How long taken memberships are held from other nodes' flushers (ms of the pipeline clock).
const HOLD_MS: i64 = 60_000;
/// How long a node may take to find or create a list before another node may (ms).
const CLAIM_MS: i64 = 60_000;
/// A contact not found by `external_id` is looked up again this many times (its upsert may
/// still be in a bulk job) before the membership is given up.
const NOT_FOUND_TRIES: u32 = 3;
/// `GET /lists` pages read at most when looking for a list by name.
const MAX_LIST_PAGES: u32 = 1_000;

/// Marketing list ids by name, once known (the store holds them across restarts and nodes).
#[derive(Debug, Default)]
pub struct ListIds(Mutex<HashMap<String, i64>>);

impl ListIds {
    fn get(&self, name: &str) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    fn put(&self, name: &str, id: i64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), id);
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

/// The store's action of a membership change.
fn action_of(membership: Membership) -> ListAction {
    match membership {
        Membership::Add => ListAction::Add,
        Membership::Remove => ListAction::Remove,
    }
}

fn membership_of(action: ListAction) -> Membership {
    match action {
        ListAction::Add => Membership::Add,
        ListAction::Remove => Membership::Remove,
    }
}

/// For traces: what a run hands off (empty when nothing).
#[must_use]
pub fn hand_off_note(memberships: &[MembershipChange]) -> String {
    if memberships.is_empty() {
        return String::new();
    }
    let each: Vec<String> = memberships
        .iter()
        .map(|m| format!("{} to '{}'", m.action.as_str(), m.list))
        .collect();
    format!(
        "; list membership handed to the list flusher (sent in batches): {}",
        each.join(", ")
    )
}

impl DestinationWorker {
    /// The audience memberships an identify run carries (none without `audience_lists`).
    pub(super) fn identify_memberships(
        &self,
        contact_key: &str,
        run: &[(&PendingDelivery, &StoredEvent)],
    ) -> Vec<MembershipChange> {
        if !self.kinds.audience_lists {
            return Vec::new();
        }
        run.iter()
            .filter_map(|(p, e)| {
                let change = audience_change(e)?;
                Some(MembershipChange {
                    list: change.list,
                    contact_key: contact_key.to_owned(),
                    action: action_of(change.membership),
                    ts_ms: p.timestamp_ms,
                    contact_id: None,
                    delivery_id: Some(p.delivery_id),
                })
            })
            .collect()
    }

    /// Record memberships for the flusher, with the contact's id when known.
    pub(super) async fn hand_off(
        &self,
        mut changes: Vec<MembershipChange>,
        contact_id: Option<i64>,
    ) -> Result<(), Stop> {
        if changes.is_empty() {
            return Ok(());
        }
        for c in &mut changes {
            c.contact_id = c.contact_id.or(contact_id);
        }
        self.store
            .record_memberships(&self.name, changes, now_ms())
            .await?;
        Ok(())
    }

    /// Hand off the planned audience tracks among `steps` and settle them as delivered, the
    /// trace saying the membership went to the list flusher.
    pub(super) async fn hand_off_planned(
        &self,
        lease: &ContactLease,
        steps: &[&Step],
        pending: &[PendingDelivery],
    ) -> Result<(), Stop> {
        let planned: Vec<(&PendingDelivery, &AudienceChange)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::HandOffMembership { index, change } => Some((&pending[*index], change)),
                _ => None,
            })
            .collect();
        if planned.is_empty() {
            return Ok(());
        }
        let contact_id = self
            .contact_shadow(&lease.contact_key)
            .await?
            .and_then(|s| s.contact_id);
        let changes: Vec<MembershipChange> = planned
            .iter()
            .map(|(p, change)| MembershipChange {
                list: change.list.clone(),
                contact_key: lease.contact_key.clone(),
                action: action_of(change.membership),
                ts_ms: p.timestamp_ms,
                contact_id,
                delivery_id: Some(p.delivery_id),
            })
            .collect();
        self.hand_off(changes.clone(), None).await?;
        for ((p, _), change) in planned.iter().zip(&changes) {
            let attempt = Attempt {
                delivery_ids: vec![p.delivery_id],
                at_ms: now_ms(),
                request_line: format!(
                    "(batched) PUT /lists/{{{}}}/{}_contacts",
                    change.list,
                    change.action.as_str()
                ),
                request_body: None,
                status: None,
                response_body: None,
                outcome: format!("delivered{}", hand_off_note(std::slice::from_ref(change))),
            };
            self.settle_delivered(lease, &[p.delivery_id], attempt)
                .await?;
        }
        Ok(())
    }

    /// One flusher round: take due memberships, resolve ids and lists, send the batches,
    /// record how each ended. Returns how many were taken.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn flush_lists(&self, node_id: &str) -> Result<usize, StoreError> {
        let due = self
            .store
            .take_memberships(&self.name, now_ms(), HOLD_MS, TAKE)
            .await?;
        let taken = due.len();
        if taken == 0 {
            return Ok(0);
        }
        let mut results: Vec<MembershipResult> = Vec::with_capacity(taken);
        let mut attempts: Vec<Attempt> = Vec::new();
        let ready = self.resolve_contacts(due, &mut results).await?;

        // The fewest calls with the same end state, decided in pure code.
        let by_version: BTreeMap<(String, i64), Vec<(DueMembership, i64)>> =
            ready.into_iter().fold(BTreeMap::new(), |mut m, (d, id)| {
                m.entry((d.list.clone(), id)).or_default().push((d, id));
                m
            });
        let changes = by_version.values().flatten().map(|(d, id)| {
            (
                *id,
                AudienceChange {
                    list: d.list.clone(),
                    membership: membership_of(d.action),
                },
            )
        });
        for batch in batch_changes(changes, MAX_IDS) {
            let rows: Vec<(DueMembership, i64)> = batch
                .ids
                .iter()
                .flat_map(|id| {
                    by_version
                        .get(&(batch.list.clone(), *id))
                        .into_iter()
                        .flatten()
                        .cloned()
                })
                .collect();
            let delivery_ids: Vec<i64> = rows.iter().filter_map(|(d, _)| d.delivery_id).collect();
            let end = match self.list_id(&batch.list, node_id).await? {
                Ok(list_id) => {
                    let (end, attempt) = self
                        .send_batch(list_id, batch.membership, &batch.ids, &delivery_ids)
                        .await;
                    let end = if attempt.as_ref().and_then(|a| a.status) == Some(404) {
                        // The list was deleted in the CRM: forget its id, so that the next
                        // round finds it by name or creates it again, and retry then.
                        self.list_ids.forget(&batch.list);
                        self.store
                            .forget_list_id(&self.name, &batch.list, list_id)
                            .await?;
                        later(
                            now_ms() + 1_000,
                            &format!("list {list_id} ('{}') no longer exists", batch.list),
                        )
                    } else {
                        end
                    };
                    attempts.extend(attempt);
                    end
                }
                Err(end) => end,
            };
            for (d, id) in rows {
                let end = self.horizon(&d, end.clone());
                results.push(result(&d, Some(id), end));
            }
        }
        for r in &results {
            if let MembershipEnd::Dead { reason } = &r.end {
                tracing::warn!(
                    destination = self.name,
                    list = r.list,
                    contact = r.contact_key,
                    reason,
                    "list membership given up"
                );
            }
        }
        self.store
            .finish_memberships(&self.name, results, attempts)
            .await?;
        Ok(taken)
    }

    /// Contact ids for due memberships: from the row, the store, else one lookup each by
    /// `external_id`. Those without one get their end in `results`.
    async fn resolve_contacts(
        &self,
        due: Vec<DueMembership>,
        results: &mut Vec<MembershipResult>,
    ) -> Result<Vec<(DueMembership, i64)>, StoreError> {
        let missing: Vec<String> = due
            .iter()
            .filter(|d| d.contact_id.is_none())
            .map(|d| d.contact_key.clone())
            .collect();
        let mut known: HashMap<String, i64> = if missing.is_empty() {
            HashMap::new()
        } else {
            self.store
                .contact_ids(&self.name, missing)
                .await?
                .into_iter()
                .collect()
        };
        let mut ready = Vec::with_capacity(due.len());
        let mut found_ids: Vec<(String, i64)> = Vec::new();
        // One lookup per contact, however many lists it changes.
        let mut looked_up: HashMap<String, Result<i64, MembershipEnd>> = HashMap::new();
        for d in due {
            if let Some(id) = d.contact_id.or_else(|| known.get(&d.contact_key).copied()) {
                ready.push((d, id));
                continue;
            }
            let answer = match looked_up.get(&d.contact_key) {
                Some(a) => a.clone(),
                None => {
                    let a = self.lookup(&d).await;
                    if let Ok(id) = a {
                        found_ids.push((d.contact_key.clone(), id));
                        known.insert(d.contact_key.clone(), id);
                    }
                    looked_up.insert(d.contact_key.clone(), a.clone());
                    a
                }
            };
            match answer {
                Ok(id) => ready.push((d, id)),
                Err(end) => {
                    let end = self.horizon(&d, end);
                    results.push(result(&d, None, end));
                }
            }
        }
        self.store.put_contact_ids(&self.name, found_ids).await?;
        Ok(ready)
    }

    /// One lookup of a contact by `external_id`.
    async fn lookup(&self, d: &DueMembership) -> Result<i64, MembershipEnd> {
        let called = match self
            .call(Endpoint::Lookup, Quota::Take(1), || {
                self.client.lookup_contacts("external_id", &d.contact_key)
            })
            .await
        {
            Ok(c) => c,
            Err(wait) => return Err(later(wait.0, "quota spent")),
        };
        match (&called.result, called.outcome) {
            (Ok(x), _) => match x.body.first() {
                Some(c) => Ok(c.id),
                None if d.attempts + 1 >= NOT_FOUND_TRIES => Err(MembershipEnd::Dead {
                    reason: format!(
                        "no Freshworks contact has external_id '{}' (looked up {} times)",
                        d.contact_key, NOT_FOUND_TRIES
                    ),
                }),
                None => Err(later(
                    called.at_ms + 5_000,
                    &format!("no contact with external_id '{}' yet", d.contact_key),
                )),
            },
            (Err(_), outcome) => Err(self.failed(outcome, d.attempts).await),
        }
    }

    /// The id of the list `name`: cached, recorded in the store, found by name across all
    /// pages of `GET /lists`, or created, by the one node holding the store's claim. `Err`:
    /// how the memberships waiting for it end this round.
    async fn list_id(
        &self,
        name: &str,
        node_id: &str,
    ) -> Result<Result<i64, MembershipEnd>, StoreError> {
        if let Some(id) = self.list_ids.get(name) {
            return Ok(Ok(id));
        }
        let now = now_ms();
        match self
            .store
            .claim_list(&self.name, name, node_id, now, CLAIM_MS)
            .await?
        {
            ListClaim::Known(id) => {
                self.list_ids.put(name, id);
                Ok(Ok(id))
            }
            ListClaim::Busy { until_ms } => Ok(Err(later(
                until_ms.min(now + 1_000),
                &format!("list '{name}' is being created by another node"),
            ))),
            ListClaim::Claimed => match self.find_or_create_list(name).await {
                Ok(id) => {
                    let id = self.store.put_list_id(&self.name, name, id).await?;
                    self.list_ids.put(name, id);
                    Ok(Ok(id))
                }
                Err(end) => Ok(Err(end)),
            },
        }
    }

    async fn find_or_create_list(&self, name: &str) -> Result<i64, MembershipEnd> {
        for page in 1..=MAX_LIST_PAGES {
            let called = self
                .call(Endpoint::Lists, Quota::Take(1), || self.client.lists(page))
                .await
                .map_err(|wait| later(wait.0, "quota spent"))?;
            let body = match (called.result, called.outcome) {
                (Ok(x), _) => x.body,
                (Err(_), outcome) => return Err(self.failed(outcome, 0).await),
            };
            if let Some(list) = body.lists.iter().find(|l| l.name == name) {
                return Ok(list.id);
            }
            let last_page = body
                .meta
                .as_ref()
                .map_or(body.lists.is_empty(), |m| u64::from(page) >= m.total_pages);
            if last_page || body.lists.is_empty() {
                break;
            }
        }
        let called = self
            .call(Endpoint::CreateList, Quota::Take(1), || {
                self.client.create_list(name)
            })
            .await
            .map_err(|wait| later(wait.0, "quota spent"))?;
        match (called.result, called.outcome) {
            (Ok(x), _) => {
                tracing::info!(
                    destination = self.name,
                    list = name,
                    id = x.body.list.id,
                    "marketing list created"
                );
                Ok(x.body.list.id)
            }
            (Err(_), outcome) => Err(self.failed(outcome, 0).await),
        }
    }

    /// One membership call for many contacts, and its record for the traces of
    /// `delivery_ids`.
    async fn send_batch(
        &self,
        list_id: i64,
        membership: Membership,
        ids: &[i64],
        delivery_ids: &[i64],
    ) -> (MembershipEnd, Option<Attempt>) {
        let called = match self
            .call(Endpoint::ListMembership, Quota::Take(1), || async {
                match membership {
                    Membership::Add => self.client.add_to_list(list_id, ids).await,
                    Membership::Remove => self.client.remove_from_list(list_id, ids).await,
                }
            })
            .await
        {
            Ok(c) => c,
            Err(wait) => return (later(wait.0, "quota spent"), None),
        };
        let mut attempt = called.attempt(delivery_ids);
        let end = match called.outcome {
            Outcome::Success => {
                self.resume().await;
                MembershipEnd::Done
            }
            outcome => self.failed(outcome, 0).await,
        };
        attempt.outcome = match &end {
            MembershipEnd::Done => {
                format!("list membership sent: {} contacts in this call", ids.len())
            }
            MembershipEnd::Retry { at_ms, error } => {
                format!("list membership retried at {at_ms}: {error}")
            }
            MembershipEnd::Dead { reason } => format!("list membership given up: {reason}"),
        };
        (end, Some(attempt))
    }

    /// How a failed call ends the memberships waiting on it (a pause pauses the destination).
    async fn failed(&self, outcome: Outcome, attempts: u32) -> MembershipEnd {
        match outcome {
            Outcome::Success => MembershipEnd::Done,
            Outcome::DeadLetter { reason } => MembershipEnd::Dead { reason },
            Outcome::Pause { reason } => {
                let until = self.pause(&reason).await;
                later(until, &format!("paused: {reason}"))
            }
            Outcome::Retry { after, reason } | Outcome::Throttled { after, reason } => {
                let delay = delivery::retry_delay(attempts + 1, after, rand::random::<f64>());
                later(now_ms() + duration_ms(delay), &reason)
            }
        }
    }

    /// A retry past the destination's retry horizon is given up.
    fn horizon(&self, d: &DueMembership, end: MembershipEnd) -> MembershipEnd {
        match end {
            MembershipEnd::Retry { at_ms, error }
                if delivery::horizon_exceeded(d.first_at_ms, at_ms, self.horizon_ms) =>
            {
                MembershipEnd::Dead {
                    reason: format!("retry horizon exceeded; last error: {error}"),
                }
            }
            other => other,
        }
    }
}

fn later(at_ms: i64, error: &str) -> MembershipEnd {
    MembershipEnd::Retry {
        at_ms,
        error: error.to_owned(),
    }
}

fn result(d: &DueMembership, contact_id: Option<i64>, end: MembershipEnd) -> MembershipResult {
    MembershipResult {
        list: d.list.clone(),
        contact_key: d.contact_key.clone(),
        action: d.action,
        ts_ms: d.ts_ms,
        contact_id,
        end,
    }
}

/// The list flusher of one destination: a round every [`FLUSH_EVERY`] (at once again while
/// rounds come back full) until `stop`. Dead memberships are logged with their reason.
pub async fn run_flusher(worker: Arc<DestinationWorker>, node_id: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = clock::sleep_clock_ms(clock::clock_ms(FLUSH_EVERY)) => {}
        }
        if worker.paused_until().is_some_and(|until| until > now_ms()) {
            continue;
        }
        loop {
            match worker.flush_lists(&node_id).await {
                Ok(n) if n >= TAKE && !stop.is_cancelled() => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(destination = worker.name, error = %e, "list flusher: store error");
                    break;
                }
            }
        }
    }
}
