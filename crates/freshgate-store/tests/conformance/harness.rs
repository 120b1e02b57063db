//! The backend factory the suite is written against, and builders for test data.

use async_trait::async_trait;
use freshgate_store::{
    AppendBatch, Attempt, ContactLease, NewDelivery, NewEvent, PendingDelivery, Store,
};

/// The destination most cases deliver to.
pub const DEST: &str = "crm";
/// A second destination, to check isolation and skipped-at-append deliveries.
pub const OTHER: &str = "other";
/// Dedup window used by `batch`.
pub const WINDOW_MS: i64 = 60_000;
/// Lease length used by the helpers.
pub const LEASE_MS: i64 = 30_000;

/// A store under test together with whatever keeps its data alive (a temp dir, a schema).
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The store.
    fn store(&self) -> &dyn Store;
    /// Close the store and open a new one on the same data.
    async fn reopen(&mut self);
}

/// Creates fresh, empty stores of one backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new empty store.
    async fn fresh(&self) -> Box<dyn Fixture>;
}

/// An event from source `web` for `key`, received (and timestamped) at `at`, to `DEST`.
pub fn ev(message_id: &str, key: &str, at: i64) -> NewEvent {
    NewEvent {
        source: "web".to_owned(),
        message_id: message_id.to_owned(),
        event_type: "identify".to_owned(),
        contact_key: key.to_owned(),
        timestamp_ms: at,
        received_at_ms: at,
        raw: format!(r#"{{"messageId":"{message_id}","userId":"{key}"}}"#).into_bytes(),
        email: None,
        deliveries: vec![NewDelivery {
            destination: DEST.to_owned(),
            skip_reason: None,
            skip_code: None,
        }],
    }
}

/// `ev` with an extra delivery to `OTHER`, skipped at append.
pub fn ev_with_skip(message_id: &str, key: &str, at: i64) -> NewEvent {
    let mut e = ev(message_id, key, at);
    e.deliveries.push(NewDelivery {
        destination: OTHER.to_owned(),
        skip_reason: Some("not handled by this destination".to_owned()),
        skip_code: Some("not_handled".to_owned()),
    });
    e
}

/// A batch of `events` with the default dedup window.
pub fn batch(events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        events,
        rejected: Vec::new(),
        dedup_window_ms: WINDOW_MS,
    }
}

/// Append and say how many events were (accepted, duplicates).
pub async fn append_counted(store: &dyn Store, batch: AppendBatch) -> (usize, usize) {
    let out = store.append(batch).await.unwrap();
    (out.accepted, out.duplicates)
}

/// Append and assert nothing was a duplicate.
pub async fn append_all(store: &dyn Store, events: Vec<NewEvent>) {
    let n = events.len();
    let out = store.append(batch(events)).await.unwrap();
    assert_eq!(out.accepted, n, "all appended");
}

/// Lease every due key of `DEST` at `now`.
pub async fn lease_all(store: &dyn Store, now: i64) -> Vec<ContactLease> {
    store
        .lease_contacts(DEST, "worker-1", now, LEASE_MS, 100)
        .await
        .unwrap()
}

/// Lease every due key at `now` and return the one for `key` (which must be due).
pub async fn lease_key(store: &dyn Store, key: &str, now: i64) -> ContactLease {
    lease_all(store, now)
        .await
        .into_iter()
        .find(|l| l.contact_key == key)
        .unwrap_or_else(|| panic!("{key} should be leasable at {now}"))
}

/// Message ids of pending deliveries, in the order returned.
pub fn mids(pending: &[PendingDelivery]) -> Vec<&str> {
    pending.iter().map(|p| p.message_id.as_str()).collect()
}

/// The pending deliveries of a lease (up to 100).
pub async fn pending(store: &dyn Store, lease: &ContactLease) -> Vec<PendingDelivery> {
    store.pending_for(lease, 100).await.unwrap()
}

/// An attempt record for `ids` at `at` with HTTP `status`.
pub fn attempt(ids: &[i64], at: i64, status: u16, outcome: &str) -> Attempt {
    Attempt {
        delivery_ids: ids.to_vec(),
        at_ms: at,
        request_line: "POST /crm/sales/api/contacts/upsert".to_owned(),
        request_body: Some(r#"{"unique_identifier":{"emails":"a@example.com"}}"#.to_owned()),
        status: Some(status),
        response_body: Some(format!("status {status}")),
        outcome: outcome.to_owned(),
    }
}

/// Instantiate every conformance case as a `#[tokio::test]` for one backend expression.
#[macro_export]
macro_rules! conformance {
    ($backend:expr => $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let mut fixture = $crate::harness::Backend::fresh(&$backend).await;
                $crate::cases::$case(&mut *fixture).await;
            }
        )*
    };
}

/// Every conformance case, for one backend expression: each backend runs the same list.
#[macro_export]
macro_rules! every_case {
    ($backend:expr) => {
        $crate::conformance!($backend =>
            dedup_within_batch,
            dedup_across_batches_and_window,
            duplicates_leave_pending_counts,
            renewed_message_ids_stay_findable,
            rejected_inputs_kept,
            fifo_per_key,
            leases_exclusive,
            expired_lease_taken_over,
            retry_schedules_key,
            release_not_before,
            dead_letters_listed_and_requeued,
            replay_reopens_finished,
            history_is_never_rewritten,
            skipped_at_append_never_pending,
            late_deliveries_for_stored_events,
            shadow_get_put,
            shadows_forgotten,
            contacts_matching_a_filter,
            field_metadata_newest_wins,
            quota_ledger_windows,
            quota_reservations_respect_the_caps,
            stats_figures,
            prune_keeps_dead_and_pending,
            traces_show_attempts,
            survives_reopen,
            closed_store_refuses_writes,
            rejected_pruned_by_age_and_bytes,
            unmapped_traits_counted_and_bounded,
            events_listed_newest_first_by_keyset,
            time_range_pages_by_receive_time,
            expired_pauses_cleared_others_kept,
            backlog_agrees_with_stats,
            counters_follow_every_path,
            per_minute_counts,
            pauses_recorded_and_cleared,
            dead_letter_counts_every_attempt,
            contact_ids_upserted_and_read_in_batch,
            account_shadow_get_put,
            list_created_once_by_one_claimant,
            list_claim_race_has_one_winner,
            activity_intents_prevent_duplicates,
            activity_intent_race_has_one_caller,
            entity_field_metadata_by_entity,
            list_memberships_newest_wins_and_finish,
            list_membership_call_joins_the_event_trace,
        );
    };
}
