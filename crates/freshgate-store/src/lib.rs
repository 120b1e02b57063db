//! The queue of record behind one trait.
//!
//! Everything freshgate has acknowledged lives here until it is delivered, dead-lettered or pruned:
//! the raw bytes of each accepted event, one delivery row per (event, destination), a lease per
//! (destination, contact key) that gives per-contact FIFO across workers (and, with PostgreSQL,
//! across nodes), every delivery attempt (for traces), dead letters with their reason, the history
//! of each delivery (an outcome is appended to it when a replay reopens the delivery, never
//! overwritten), the rejected
//! input that never became an event, the per-contact "shadow" of what was last sent, and the quota
//! spend per Freshworks account.
//!
//! The store knows nothing of Freshworks or HTTP: the pipeline decides, the store remembers.
//! All times are Unix milliseconds (`i64`) passed in by the caller, so tests control the clock.

mod counters;
mod listing;
mod memberships;
#[cfg(feature = "postgres")]
pub mod postgres;
mod records;
pub mod sqlite;

use async_trait::async_trait;
pub use memberships::{
    DueMembership, ListAction, MembershipChange, MembershipCounts, MembershipEnd, MembershipResult,
};
pub use records::{ActivityIntent, ListClaim};
use serde::{Deserialize, Serialize};

/// Row id of an accepted event.
pub type EventId = i64;
/// Row id of one (event, destination) delivery.
pub type DeliveryId = i64;

/// An event that passed validation, ready to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Name of the source (write key owner) it came from.
    pub source: String,
    /// Segment `messageId` (assigned at ingest when the client sent none). Dedup key per source.
    pub message_id: String,
    /// `identify`, `track`, `page`, `screen`, `group`, `alias` (or `delete` from webhooks).
    pub event_type: String,
    /// `userId` if present and non-empty, else `anonymousId`: the per-contact ordering key.
    pub contact_key: String,
    /// Corrected event time (`timestamp` after the Segment clock-skew rule), Unix ms.
    pub timestamp_ms: i64,
    /// Server receive time, Unix ms.
    pub received_at_ms: i64,
    /// The normalised event JSON, exactly as it will be replayed and shown.
    pub raw: Vec<u8>,
    /// An identify's `traits.email` as sent: the append records the (email, contact) pair so
    /// that `events list --email` finds the contact (see [`email_key`]).
    pub email: Option<String>,
    /// One entry per destination fed by the source.
    pub deliveries: Vec<NewDelivery>,
}

/// The form in which emails are recorded and searched: lower-cased, so that a search matches
/// whatever case the client sent. Both the append and the listing go through it.
#[must_use]
pub fn email_key(email: &str) -> String {
    email.to_lowercase()
}

/// How many deliveries of one call type to one destination are in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    /// Destination name.
    pub destination: String,
    /// The event's call type (`identify`, `track`, ...).
    pub event_type: String,
    /// The state.
    pub status: DeliveryStatus,
    /// How many.
    pub count: u64,
}

/// The initial state of an event's delivery to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Destination name from the config.
    pub destination: String,
    /// `None`: pending, to be delivered. `Some(reason)`: recorded as skipped right away
    /// (for example "not handled by this destination" or an `integrations` opt-out).
    pub skip_reason: Option<String>,
    /// The skip's stable code (`freshgate_core::reason::SkipReason::code`), set with
    /// `skip_reason`.
    #[doc(alias = "reason_code")]
    pub skip_code: Option<String>,
}

/// A stored event with no delivery to some destination: one accepted before the destination
/// existed (see [`Store::events_without_delivery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnroutedEvent {
    /// Row id.
    pub event_id: EventId,
    /// Name of the source it came from (the destination may not take it).
    pub source: String,
    /// The per-contact ordering key.
    pub contact_key: String,
    /// The normalised event JSON, for the routing decision.
    pub raw: Vec<u8>,
}

/// A first delivery of a stored event to a destination, decided by routing after the fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateDelivery {
    /// The stored event.
    pub event_id: EventId,
    /// Its per-contact ordering key.
    pub contact_key: String,
    /// The destination and whether it is pending or skipped at once.
    pub delivery: NewDelivery,
}

/// Input that never became an event (bad item in a batch, failed signature, …), kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedInput {
    /// Source name when known.
    pub source: Option<String>,
    /// The raw bytes exactly as received (the item, not the whole batch).
    pub raw: Vec<u8>,
    /// Human-readable reason, e.g. `"missing userId and anonymousId"`.
    pub reason: String,
    /// Receive time, Unix ms.
    pub received_at_ms: i64,
}

/// One atomic append: all of it is committed (fsync) before the call returns, or none of it.
#[derive(Debug, Clone, Default)]
pub struct AppendBatch {
    /// Accepted events, in arrival order.
    pub events: Vec<NewEvent>,
    /// Rejected items that must be kept with their reason.
    pub rejected: Vec<RejectedInput>,
    /// An event whose `(source, message_id)` was received within this many ms is a duplicate.
    pub dedup_window_ms: i64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Events stored.
    pub accepted: usize,
    /// Events recognised as duplicates (acknowledged, not stored again).
    pub duplicates: usize,
    /// Rejected inputs recorded.
    pub rejected: usize,
}

/// A lease on one (destination, contact key): while held, no other worker or node touches the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactLease {
    /// Destination name.
    pub destination: String,
    /// Contact key.
    pub contact_key: String,
    /// Opaque token proving ownership; settle/release with a stale token fail with `LeaseLost`.
    pub token: String,
    /// Lease expiry, Unix ms.
    pub until_ms: i64,
}

/// A pending delivery as handed to a worker, in per-contact order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// Delivery row id.
    pub delivery_id: DeliveryId,
    /// Event row id (arrival order within the store).
    pub event_id: EventId,
    /// Source name.
    pub source: String,
    /// Segment `messageId`.
    pub message_id: String,
    /// Event type.
    pub event_type: String,
    /// Event time, Unix ms.
    pub timestamp_ms: i64,
    /// Receive time, Unix ms.
    pub received_at_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// First attempt time, Unix ms (for the retry horizon), if any attempt was made.
    pub first_attempt_ms: Option<i64>,
    /// Normalised event JSON.
    pub raw: Vec<u8>,
}

/// How one delivery ended (or did not, yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Delivered.
    Delivered,
    /// Nothing to send (unchanged since last sent, coalesced into a later event, not handled …).
    Skipped {
        /// Why, as a stable code (`freshgate_core::reason::SkipReason::code`).
        code: String,
        /// Why, in words.
        reason: String,
    },
    /// Permanent failure: kept in the dead-letter queue.
    DeadLettered {
        /// Why, as a stable code (`freshgate_core::reason::DeadReason::code`): what the
        /// dead-letter filter selects on.
        code: String,
        /// Why, in words.
        reason: String,
    },
    /// Try again at `at_ms`; the whole contact key waits until then (per-contact FIFO).
    Retry {
        /// Next attempt time, Unix ms.
        at_ms: i64,
        /// Last error, in words.
        error: String,
    },
}

/// One request/response exchange made for one or more deliveries (coalescing sends one for many).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Deliveries this exchange was made for.
    pub delivery_ids: Vec<DeliveryId>,
    /// When, Unix ms.
    pub at_ms: i64,
    /// e.g. `POST /contacts/upsert`.
    pub request_line: String,
    /// Request body as sent (JSON), if any.
    pub request_body: Option<String>,
    /// HTTP status, or `None` when no response arrived (timeout, connection error).
    pub status: Option<u16>,
    /// Response body (truncated by the caller) or transport error text.
    pub response_body: Option<String>,
    /// Outcome in words: `delivered`, `retry: …`, `dead-lettered: …`.
    pub outcome: String,
}

/// The state of a delivery row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting to be (re)tried.
    Pending,
    /// Delivered.
    Delivered,
    /// Nothing sent, by design.
    Skipped,
    /// Permanent failure.
    Dead,
}

impl DeliveryStatus {
    /// The lower-case name stored in the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Skipped => "skipped",
            Self::Dead => "dead",
        }
    }

    /// The status stored as `s`.
    ///
    /// # Errors
    /// `Database` for a name no version of the schema writes.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "skipped" => Ok(Self::Skipped),
            "dead" => Ok(Self::Dead),
            other => Err(StoreError::Database(format!(
                "unknown delivery status {other:?}"
            ))),
        }
    }
}

/// Why a finished delivery was put back to pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reopen {
    /// `freshgate replay` (or `serve --emulator` refilling a new emulator).
    Replay,
    /// A dead letter replayed (`freshgate dlq replay`, the console).
    DeadLetterReplay,
}

impl Reopen {
    /// The name stored in the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::DeadLetterReplay => "dead_letter_replay",
        }
    }

    /// The cause stored as `s`.
    ///
    /// # Errors
    /// `Database` for a name no version of the schema writes.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "replay" => Ok(Self::Replay),
            "dead_letter_replay" => Ok(Self::DeadLetterReplay),
            other => Err(StoreError::Database(format!(
                "unknown reopen cause {other:?}"
            ))),
        }
    }
}

/// An outcome a delivery had before it was reopened: appended to its history when the reopen
/// happened and never changed after, so a replay does not erase what happened first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastOutcome {
    /// How it had ended (delivered, skipped or dead).
    pub status: DeliveryStatus,
    /// Reason for skip / dead letter.
    pub reason: Option<String>,
    /// Attempts it had taken.
    pub attempts: u32,
    /// When it had ended, Unix ms.
    pub finished_ms: Option<i64>,
    /// When it was reopened, Unix ms.
    pub reopened_ms: i64,
    /// What reopened it.
    pub reopened_by: Reopen,
}

/// A finished delivery that a replay may put back, with its event for the routing decision
/// (see [`Store::finished_deliveries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedDelivery {
    /// Delivery row id (the page cursor).
    pub delivery_id: DeliveryId,
    /// Destination name.
    pub destination: String,
    /// Source of the event.
    pub source: String,
    /// How it ended.
    pub status: DeliveryStatus,
    /// The normalised event JSON.
    pub raw: Vec<u8>,
}

/// Everything known about one event: for `freshgate events show` and the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTrace {
    /// Event row id.
    pub event_id: EventId,
    /// Source name.
    pub source: String,
    /// Segment `messageId`.
    pub message_id: String,
    /// Event type.
    pub event_type: String,
    /// Contact key.
    pub contact_key: String,
    /// Event time, Unix ms.
    pub timestamp_ms: i64,
    /// Receive time, Unix ms.
    pub received_at_ms: i64,
    /// Normalised event JSON (lossy UTF-8).
    pub raw: String,
    /// One entry per destination.
    pub deliveries: Vec<DeliveryTrace>,
}

/// One delivery of an event, with its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTrace {
    /// Delivery row id.
    pub delivery_id: DeliveryId,
    /// Destination name.
    pub destination: String,
    /// Current state.
    pub status: DeliveryStatus,
    /// Reason for skip / dead letter, or last retry error.
    pub reason: Option<String>,
    /// Next attempt time when pending, Unix ms.
    pub next_attempt_ms: Option<i64>,
    /// Attempts, oldest first (those made before a reopen too).
    pub attempts: Vec<Attempt>,
    /// The outcomes it had before each reopen, oldest first; the current state (above) is
    /// the latest.
    #[serde(default)]
    pub history: Vec<PastOutcome>,
}

/// Which dead letters or deliveries an operation applies to. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFilter {
    /// Only this delivery (the console's "replay this one").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<DeliveryId>,
    /// Only this destination.
    pub destination: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this contact key.
    pub contact_key: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only deliveries whose reason contains this text.
    pub reason_contains: Option<String>,
    /// Only deliveries with this reason code (e.g. `conflict`, `retry_horizon`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Only events received at or after this time, Unix ms.
    pub since_ms: Option<i64>,
    /// Only events received before this time, Unix ms.
    pub until_ms: Option<i64>,
    /// At most this many rows (list operations).
    pub limit: Option<usize>,
}

/// A dead letter as listed by `freshgate dlq list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Delivery row id.
    pub delivery_id: DeliveryId,
    /// Destination.
    pub destination: String,
    /// Source.
    pub source: String,
    /// Segment `messageId`.
    pub message_id: String,
    /// Event type.
    pub event_type: String,
    /// Contact key.
    pub contact_key: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Why, as a stable code (none for dead letters recorded before codes were kept).
    #[serde(default)]
    pub reason_code: Option<String>,
    /// When it was dead-lettered, Unix ms.
    pub dead_at_ms: i64,
    /// Number of attempts made.
    pub attempts: u32,
}

/// A rejected input as listed by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    /// Row id.
    pub id: i64,
    /// Source, when known.
    pub source: Option<String>,
    /// Reason.
    pub reason: String,
    /// Receive time, Unix ms.
    pub received_at_ms: i64,
    /// Raw bytes (lossy UTF-8).
    pub raw: String,
}

/// A trait key that matched no Freshworks field of a destination: how often, first and last seen.
/// Kept in the store (bounded) instead of as a metric label, which a client could multiply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmappedTrait {
    /// Destination name.
    pub destination: String,
    /// The trait key as the client sent it, cut to [`MAX_UNMAPPED_KEY_BYTES`].
    pub key: String,
    /// Times seen.
    pub count: u64,
    /// First seen, Unix ms.
    pub first_seen_ms: i64,
    /// Last seen, Unix ms.
    pub last_seen_ms: i64,
}

/// Most unmapped trait keys kept per destination; the least recently seen go first.
pub const MAX_UNMAPPED_TRAITS_PER_DESTINATION: usize = 1000;
/// Longest unmapped trait key kept, in bytes (longer ones are cut on a character boundary).
pub const MAX_UNMAPPED_KEY_BYTES: usize = 200;

/// `key` cut to at most [`MAX_UNMAPPED_KEY_BYTES`] on a character boundary.
#[must_use]
pub fn clip_unmapped_key(key: &str) -> &str {
    if key.len() <= MAX_UNMAPPED_KEY_BYTES {
        return key;
    }
    let mut end = MAX_UNMAPPED_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// Sightings with their keys clipped and repeats of a (destination, key) folded into one, so
/// that each backend upserts every row once.
pub(crate) fn merge_unmapped(traits: &[UnmappedTrait]) -> Vec<UnmappedTrait> {
    let mut per: std::collections::BTreeMap<(String, String), UnmappedTrait> =
        std::collections::BTreeMap::new();
    for t in traits {
        let key = clip_unmapped_key(&t.key).to_owned();
        per.entry((t.destination.clone(), key.clone()))
            .and_modify(|m| {
                m.count = m.count.saturating_add(t.count);
                m.first_seen_ms = m.first_seen_ms.min(t.first_seen_ms);
                m.last_seen_ms = m.last_seen_ms.max(t.last_seen_ms);
            })
            .or_insert_with(|| UnmappedTrait { key, ..t.clone() });
    }
    per.into_values().collect()
}

/// Queue figures per destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationStats {
    /// Destination name.
    pub destination: String,
    /// Pending deliveries.
    pub pending: u64,
    /// Outcomes "delivered" (not yet pruned): a delivery delivered, replayed and delivered
    /// again counts twice.
    pub delivered: u64,
    /// Outcomes "skipped" (not yet pruned), counted like `delivered`.
    pub skipped: u64,
    /// Dead letters now (waiting in the dead-letter queue).
    pub dead: u64,
    /// Outcomes "dead-lettered" (not yet pruned): `dead` and those replayed since.
    #[serde(default)]
    pub dead_lettered: u64,
    /// Times a finished delivery was put back to pending (replay, dead-letter replay).
    #[serde(default)]
    pub reopened: u64,
    /// Receive time of the oldest pending event, Unix ms.
    pub oldest_pending_received_ms: Option<i64>,
    /// Earliest scheduled next attempt among pending contact keys, Unix ms.
    pub next_attempt_ms: Option<i64>,
    /// Contact keys with pending work.
    pub pending_contacts: u64,
}

/// The two figures the queue gauges need, per destination: cheap to read often.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// Destination name.
    pub destination: String,
    /// Pending deliveries.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// Per-destination depths from `(destination, pending)` and `(destination, dead)` rows.
pub(crate) fn merge_depths(
    pending: Vec<(String, i64)>,
    dead: Vec<(String, i64)>,
) -> Vec<QueueDepth> {
    let mut per: std::collections::BTreeMap<String, QueueDepth> = std::collections::BTreeMap::new();
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    fn entry(
        per: &mut std::collections::BTreeMap<String, QueueDepth>,
        destination: String,
    ) -> &mut QueueDepth {
        per.entry(destination.clone())
            .or_insert_with(|| QueueDepth {
                destination,
                ..QueueDepth::default()
            })
    }
    for (destination, n) in pending {
        entry(&mut per, destination).pending = count(n);
    }
    for (destination, n) in dead {
        entry(&mut per, destination).dead = count(n);
    }
    per.into_values().collect()
}

/// The figures of destination `d` in a per-destination map, created empty if absent (both
/// backends' `stats` fill one such map from several queries).
pub(crate) fn destination_stats<'a>(
    per: &'a mut std::collections::BTreeMap<String, DestinationStats>,
    d: &str,
) -> &'a mut DestinationStats {
    per.entry(d.to_owned()).or_insert_with(|| DestinationStats {
        destination: d.to_owned(),
        ..DestinationStats::default()
    })
}

/// Fill the outcome figures of `per` from `(destination, status, count)` rows of the current
/// deliveries and of their histories (both backends' `stats`): an outcome counts whether it is
/// the latest or was reopened since.
pub(crate) fn count_outcomes(
    per: &mut std::collections::BTreeMap<String, DestinationStats>,
    current: Vec<(String, String, i64)>,
    past: Vec<(String, String, i64)>,
) -> Result<(), StoreError> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    for (destination, status, n) in current {
        let s = destination_stats(per, &destination);
        let n = count(n);
        match DeliveryStatus::parse(&status)? {
            DeliveryStatus::Pending => s.pending = n,
            DeliveryStatus::Delivered => s.delivered += n,
            DeliveryStatus::Skipped => s.skipped += n,
            DeliveryStatus::Dead => {
                s.dead = n;
                s.dead_lettered += n;
            }
        }
    }
    for (destination, status, n) in past {
        let s = destination_stats(per, &destination);
        let n = count(n);
        s.reopened += n;
        match DeliveryStatus::parse(&status)? {
            // A pending delivery is never reopened; the schema does not store one.
            DeliveryStatus::Pending => {}
            DeliveryStatus::Delivered => s.delivered += n,
            DeliveryStatus::Skipped => s.skipped += n,
            DeliveryStatus::Dead => s.dead_lettered += n,
        }
    }
    Ok(())
}

/// Queue figures for the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Events stored.
    pub events: u64,
    /// Rejected inputs stored.
    pub rejected: u64,
    /// Per destination.
    pub destinations: Vec<DestinationStats>,
}

/// Which events [`Store::list_events`] returns: every field set narrows the list; newest first,
/// a page at a time (keyset on the event id, never OFFSET).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only this contact key (`userId`, else `anonymousId`).
    pub contact_key: Option<String>,
    /// Only events of the contacts an identify gave this email (case-insensitive).
    pub email: Option<String>,
    /// Only this Segment `messageId`.
    pub message_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only events with a delivery in this state.
    pub status: Option<DeliveryStatus>,
    /// Only this source.
    pub source: Option<String>,
    /// Only events received at or after this time, Unix ms.
    pub since_ms: Option<i64>,
    /// Only events received before this time, Unix ms.
    pub until_ms: Option<i64>,
    /// Only events after this one in the listing's order (the previous page's last
    /// `event_id`): newest id first, or, with a time range, newest receive time first (then id).
    pub before_id: Option<EventId>,
    /// Page size.
    pub limit: usize,
}

/// The state of one delivery of a listed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Destination name.
    pub destination: String,
    /// Current state.
    pub status: DeliveryStatus,
    /// Reason for skip / dead letter, or last retry error.
    pub reason: Option<String>,
}

/// One row of an event listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSummary {
    /// Event row id (the keyset cursor).
    pub event_id: EventId,
    /// Source name.
    pub source: String,
    /// Segment `messageId`.
    pub message_id: String,
    /// Event type.
    pub event_type: String,
    /// Contact key.
    pub contact_key: String,
    /// Event time, Unix ms.
    pub timestamp_ms: i64,
    /// Receive time, Unix ms.
    pub received_at_ms: i64,
    /// Normalised event JSON (lossy UTF-8).
    pub raw: String,
    /// One entry per destination.
    pub deliveries: Vec<DeliveryState>,
}

/// A count in one minute (`minute_ms` is the minute's start, Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCount {
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// How many.
    pub count: u64,
}

/// The backlog of one destination, read from indexes only (cheap on a large store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Destination name.
    pub destination: String,
    /// Pending deliveries.
    pub pending: u64,
    /// Contact keys with pending work.
    pub pending_contacts: u64,
    /// Dead letters.
    pub dead: u64,
    /// Receive time of the oldest pending event, Unix ms.
    pub oldest_pending_received_ms: Option<i64>,
    /// Earliest scheduled next attempt among pending contact keys, Unix ms.
    pub next_attempt_ms: Option<i64>,
    /// The pending deliveries per kind (the event's call type), by event type.
    #[serde(default)]
    pub kinds: Vec<KindBacklog>,
}

/// The pending deliveries of one kind (the event's call type) at one destination, read from the
/// delivery counters and the pending index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindBacklog {
    /// The event's call type (`identify`, `track`, ...).
    pub event_type: String,
    /// Pending deliveries of this kind.
    pub pending: u64,
    /// Receive time of the oldest pending event of this kind, Unix ms.
    pub oldest_pending_received_ms: Option<i64>,
}

/// A destination paused because Freshworks refused its API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationPause {
    /// Destination name.
    pub destination: String,
    /// Why, in words.
    pub reason: String,
    /// When the pause began, Unix ms.
    pub since_ms: i64,
    /// When the next probe is due, Unix ms.
    pub until_ms: i64,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneOutcome {
    /// Events removed (all of their deliveries were finished and older than the retention).
    pub events: u64,
    /// Dedup entries removed (older than the dedup window and without a stored event).
    pub dedup_entries: u64,
}

/// The ledger starts of the minute and hour windows a reservation at `at_ms` is checked
/// against. Conservative on purpose: the ledger counts per second (a call at 10.9 s sits in the
/// 10 s bucket) and the API counts when a call *arrives*, up to a request's latency after we
/// recorded it; so each window reaches one more second back and starts on a bucket boundary.
#[must_use]
pub fn reservation_windows(at_ms: i64) -> (i64, i64) {
    let floor = |ms: i64| ms.div_euclid(1000) * 1000;
    (floor(at_ms - 61_000), floor(at_ms - 3_601_000))
}

/// Quota ledger buckets older than this (relative to the newest bucket) are pruned: the widest
/// quota window is one hour; the console charts calls per minute over the last day.
pub(crate) const LEDGER_KEEP_MS: i64 = 25 * 60 * 60 * 1000;

/// Errors a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The writer's queue is full: answer 503 with `Retry-After` and let the client retry.
    #[error("store is saturated, retry later")]
    Saturated,
    /// The lease was taken over (expired) or released: stop working on this key, do not settle.
    #[error("lease on {destination}/{contact_key} was lost")]
    LeaseLost {
        /// Destination.
        destination: String,
        /// Contact key.
        contact_key: String,
    },
    /// The store is shutting down or its writer died: stop.
    #[error("store is closed")]
    Closed,
    /// Anything else from the database: log, count, retry the operation later.
    #[error("database error: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}

/// Metric names the store's backends record (the binary describes and exports them).
pub mod metric {
    /// Histogram: events (roughly rows) per group commit of the SQLite writer.
    pub const GROUP_COMMIT_EVENTS: &str = "freshgate_store_group_commit_events";
    /// Histogram: seconds a group commit took, fsync included.
    pub const GROUP_COMMIT_SECONDS: &str = "freshgate_store_group_commit_seconds";
    /// Histogram: seconds the SQLite checkpointer held the writer to let the WAL restart.
    pub const CHECKPOINT_PAUSE_SECONDS: &str = "freshgate_store_checkpoint_pause_seconds";
    /// Counter: messageId dedup lookups of the SQLite writer (one per event, except a messageId
    /// repeated within its own batch, which is dropped before any lookup).
    pub const DEDUP_LOOKUPS: &str = "freshgate_store_dedup_lookups_total";
    /// Counter: day filters that answered "maybe" to a lookup (false positives and duplicates).
    pub const DEDUP_FILTER_HITS: &str = "freshgate_store_dedup_filter_hits_total";
    /// Counter: runs of the messageId index probed by lookups (a day filter and the run's own
    /// filter said "maybe").
    pub const DEDUP_RUN_PROBES: &str = "freshgate_store_dedup_run_probes_total";
    /// Gauge: events of the SQLite writer's index tail, not yet written as runs.
    pub const INDEX_TAIL_EVENTS: &str = "freshgate_store_index_tail_events";
    /// Counter: PostgreSQL appends run a second time, as an upsert, because their plain insert
    /// met a messageId already stored (client retries, messageIds sent again past the window).
    pub const APPEND_UPSERTS: &str = "freshgate_store_append_upserts_total";
}

/// An account's contact field metadata as fetched from Freshworks (opaque to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMetadata {
    /// When it was fetched (Unix ms).
    pub fetched_at_ms: i64,
    /// The serialized field list.
    pub body: Vec<u8>,
}

/// The queue of record. Implemented by `sqlite::SqliteStore` (and the PostgreSQL backend).
///
/// Every method that writes is durable when it returns `Ok` (committed with fsync).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Append a batch atomically, dropping duplicates of `(source, message_id)` seen within the
    /// dedup window (also duplicates within the batch itself: the first wins).
    ///
    /// # Errors
    /// `Saturated` when the writer's queue is full; `Closed`; `Database`.
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError>;

    /// Lease up to `max` contact keys of `destination` that have pending deliveries due at `now_ms`
    /// (next attempt reached) and no live lease; the lease lasts until `now_ms + lease_ms`.
    /// Keys due earliest come first.
    ///
    /// # Errors
    /// `Database`, `Closed`.
    async fn lease_contacts(
        &self,
        destination: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<ContactLease>, StoreError>;

    /// The pending deliveries of a leased key in FIFO order (event arrival order), at most `limit`.
    ///
    /// # Errors
    /// `LeaseLost` if the lease is no longer held; `Database`.
    async fn pending_for(
        &self,
        lease: &ContactLease,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, StoreError>;

    /// Record how deliveries ended, and their attempt (if any), in one transaction. A `Retry`
    /// settlement pushes the key's next attempt to its `at_ms` (the earliest among retries).
    ///
    /// # Errors
    /// `LeaseLost` if the lease was taken over; `Database`.
    async fn settle(
        &self,
        lease: &ContactLease,
        now_ms: i64,
        settlements: Vec<(DeliveryId, Settlement)>,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError>;

    /// Give the key back. With `not_before_ms`, the key is not leased again before then
    /// (used when a destination is paused or its quota is spent).
    ///
    /// # Errors
    /// `Database`.
    async fn release(
        &self,
        lease: &ContactLease,
        not_before_ms: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Read the shadow (opaque JSON) of what was last sent for this contact to this destination.
    ///
    /// # Errors
    /// `Database`.
    async fn shadow(
        &self,
        destination: &str,
        contact_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replace the shadow of a contact.
    ///
    /// # Errors
    /// `Database`.
    async fn put_shadow(
        &self,
        destination: &str,
        contact_key: &str,
        shadow: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// Forget shadows: every contact of `destination`, the contact `contact_key` in every
    /// destination, or that contact in that destination (at least one is given). The next
    /// identify of a forgotten contact is written, found by its `external_id`. Returns how many
    /// shadows were removed.
    ///
    /// # Errors
    /// `Database`.
    async fn forget_shadows(
        &self,
        destination: Option<&str>,
        contact_key: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// The distinct `(destination, contact key)` pairs of the deliveries `filter` matches
    /// (any status; the limit is ignored).
    ///
    /// # Errors
    /// `Database`.
    async fn contacts_matching(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// The account's contact field metadata as last stored by [`Store::put_field_metadata`].
    ///
    /// # Errors
    /// `Database`.
    async fn field_metadata(&self, account: &str) -> Result<Option<FieldMetadata>, StoreError>;

    /// Replace the account's stored field metadata (opaque bytes) fetched at `fetched_at_ms`.
    /// An older fetch never replaces a newer one (two nodes may fetch at once).
    ///
    /// # Errors
    /// `Database`.
    async fn put_field_metadata(
        &self,
        account: &str,
        metadata: FieldMetadata,
    ) -> Result<(), StoreError>;

    /// Field metadata of another entity of the account (e.g. `sales_account`), kept apart from
    /// the contact fields of [`Store::field_metadata`].
    ///
    /// # Errors
    /// `Database`.
    async fn entity_field_metadata(
        &self,
        account: &str,
        entity: &str,
    ) -> Result<Option<FieldMetadata>, StoreError>;

    /// Replace the stored field metadata of `entity`; an older fetch never replaces a newer one.
    ///
    /// # Errors
    /// `Database`.
    async fn put_entity_field_metadata(
        &self,
        account: &str,
        entity: &str,
        metadata: FieldMetadata,
    ) -> Result<(), StoreError>;

    /// Remember Freshworks contact ids by contact key (from upsert responses and bulk job
    /// results); a known key takes the new id (contacts are merged and re-created in the CRM).
    ///
    /// # Errors
    /// `Database`.
    async fn put_contact_ids(
        &self,
        destination: &str,
        ids: Vec<(String, i64)>,
    ) -> Result<(), StoreError>;

    /// The known contact ids of `keys` (keys without one are left out), in key order.
    ///
    /// # Errors
    /// `Database`.
    async fn contact_ids(
        &self,
        destination: &str,
        keys: Vec<String>,
    ) -> Result<Vec<(String, i64)>, StoreError>;

    /// The shadow (opaque JSON) of what was last written to a sales account, by account key.
    ///
    /// # Errors
    /// `Database`.
    async fn account_shadow(
        &self,
        destination: &str,
        account_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replace the shadow of a sales account.
    ///
    /// # Errors
    /// `Database`.
    async fn put_account_shadow(
        &self,
        destination: &str,
        account_key: &str,
        shadow: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// The cached id of the marketing list `name`, if known.
    ///
    /// # Errors
    /// `Database`.
    async fn list_id(&self, destination: &str, name: &str) -> Result<Option<i64>, StoreError>;

    /// Ask to be the one that finds or creates the list `name`: its id when known, else the
    /// claim for `owner` until `now_ms + claim_ms` unless another owner holds a live one.
    /// Atomic across nodes (one row per list under a unique key), so a list is created once.
    ///
    /// # Errors
    /// `Database`.
    async fn claim_list(
        &self,
        destination: &str,
        name: &str,
        owner: &str,
        now_ms: i64,
        claim_ms: i64,
    ) -> Result<ListClaim, StoreError>;

    /// Record the id of the list `name` if none is recorded yet; returns the recorded id (the
    /// first one wins).
    ///
    /// # Errors
    /// `Database`.
    async fn put_list_id(
        &self,
        destination: &str,
        name: &str,
        list_id: i64,
    ) -> Result<i64, StoreError>;

    /// Record, before the call, the intent to create the sales activity of `message_id`. Returns
    /// what was known before: `None` when the intent is new (the call may go ahead), else the
    /// earlier intent, left as it was.
    ///
    /// # Errors
    /// `Database`.
    async fn intend_activity(
        &self,
        destination: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<Option<ActivityIntent>, StoreError>;

    /// Record that the activity of `message_id` was created with `activity_id` (after
    /// [`Store::intend_activity`]; the intent's time is kept, and it is what pruning goes by).
    ///
    /// # Errors
    /// `Database`.
    async fn activity_created(
        &self,
        destination: &str,
        message_id: &str,
        activity_id: i64,
    ) -> Result<(), StoreError>;

    /// Drop an intent that is still `intended` (the call was answered with a refusal, so
    /// nothing was created and a later attempt may try again). A created one stays.
    ///
    /// # Errors
    /// `Database`.
    async fn clear_activity_intent(
        &self,
        destination: &str,
        message_id: &str,
    ) -> Result<(), StoreError>;

    /// The intents of `message_ids` (those without one are left out), in message id order.
    ///
    /// # Errors
    /// `Database`.
    async fn activity_intents(
        &self,
        destination: &str,
        message_ids: Vec<String>,
    ) -> Result<Vec<(String, ActivityIntent)>, StoreError>;

    /// Remove intents recorded before `before_ms` (their events are long settled and pruned).
    /// Returns how many were removed.
    ///
    /// # Errors
    /// `Database`.
    async fn prune_activity_intents(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Record desired list memberships (Engage audiences), handed off by contacts' deliveries to
    /// the list flusher. Per (list, contact) the newest event wins: a change older than the
    /// recorded one is ignored. A change that repeats a membership already sent stays done.
    ///
    /// # Errors
    /// `Database`.
    async fn record_memberships(
        &self,
        destination: &str,
        changes: Vec<MembershipChange>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Take up to `limit` pending memberships due at `now_ms`, oldest first, and hold them for
    /// `hold_ms` (another node's flusher skips them meanwhile; an unfinished one is due again
    /// after it).
    ///
    /// # Errors
    /// `Database`.
    async fn take_memberships(
        &self,
        destination: &str,
        now_ms: i64,
        hold_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueMembership>, StoreError>;

    /// Record how taken memberships ended (see [`MembershipResult`]), and the list calls made
    /// for them in the traces of the deliveries they name (unknown delivery ids are skipped).
    ///
    /// # Errors
    /// `Database`.
    async fn finish_memberships(
        &self,
        destination: &str,
        results: Vec<MembershipResult>,
        attempts: Vec<Attempt>,
    ) -> Result<(), StoreError>;

    /// Forget the list id `list_id` recorded for `name` (the list was deleted in the CRM), so
    /// that the next caller finds or creates it again. Another id recorded meanwhile stays.
    ///
    /// # Errors
    /// `Database`.
    async fn forget_list_id(
        &self,
        destination: &str,
        name: &str,
        list_id: i64,
    ) -> Result<(), StoreError>;

    /// The memberships of a destination by state.
    ///
    /// # Errors
    /// `Database`.
    async fn membership_counts(&self, destination: &str) -> Result<MembershipCounts, StoreError>;

    /// Add `calls` API calls spent on `account` at `at_ms` to the persisted quota ledger.
    ///
    /// # Errors
    /// `Database`.
    async fn record_calls(&self, account: &str, at_ms: i64, calls: u32) -> Result<(), StoreError>;

    /// Record `calls` spent on `account` at `at_ms` only if, counting every node's spend in the
    /// ledger, the calls since `at_ms - 60 s` stay within `minute_cap` and those since
    /// `at_ms - 1 h` within `hour_cap`. Atomic across nodes (PostgreSQL: an advisory lock per
    /// account; SQLite: the single writer). Returns whether the calls were recorded.
    ///
    /// # Errors
    /// `Database`.
    async fn reserve_calls(
        &self,
        account: &str,
        at_ms: i64,
        calls: u32,
        minute_cap: u32,
        hour_cap: u32,
    ) -> Result<bool, StoreError>;

    /// Calls spent on `account` at or after `since_ms`, from the persisted ledger.
    ///
    /// # Errors
    /// `Database`.
    async fn calls_since(&self, account: &str, since_ms: i64) -> Result<u64, StoreError>;

    /// Traces of every event with this `messageId` (one per source that sent it).
    ///
    /// # Errors
    /// `Database`.
    async fn event_traces(&self, message_id: &str) -> Result<Vec<EventTrace>, StoreError>;

    /// Dead letters matching the filter, newest first.
    ///
    /// # Errors
    /// `Database`.
    async fn dead_letters(&self, filter: &DeliveryFilter) -> Result<Vec<DeadLetter>, StoreError>;

    /// Put dead letters matching the filter back to pending (attempts reset), due at `now_ms`;
    /// each one's dead-lettering is appended to its history first
    /// ([`Reopen::DeadLetterReplay`]). Returns how many.
    ///
    /// # Errors
    /// `Database`.
    async fn requeue_dead(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64, StoreError>;

    /// Up to `limit` finished deliveries (delivered, skipped, dead) matching the filter (its
    /// limit ignored) with an id above `after_id`, in id order (page with the last id), each
    /// with its event: what `freshgate replay` may put back once routing has decided.
    ///
    /// # Errors
    /// `Database`.
    async fn finished_deliveries(
        &self,
        filter: &DeliveryFilter,
        after_id: DeliveryId,
        limit: usize,
    ) -> Result<Vec<FinishedDelivery>, StoreError>;

    /// Put these deliveries back to pending (attempts reset), their keys due at `now_ms` at the
    /// latest. Each one's outcome is appended to its history first, with `cause`; a delivery
    /// that is pending (or unknown) is left alone and not counted. Returns how many.
    ///
    /// # Errors
    /// `Database`.
    async fn reopen(
        &self,
        delivery_ids: Vec<DeliveryId>,
        cause: Reopen,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Up to `limit` events received in `[since_ms, until_ms)` with an id above `after_id` that
    /// have no delivery to `destination`, in id order (page with the last id).
    ///
    /// # Errors
    /// `Database`.
    async fn events_without_delivery(
        &self,
        destination: &str,
        since_ms: i64,
        until_ms: i64,
        after_id: EventId,
        limit: usize,
    ) -> Result<Vec<UnroutedEvent>, StoreError>;

    /// Give stored events their first delivery to a destination: a pending one joins its
    /// contact's queue due at `now_ms`, a skipped one is finished at `now_ms`. An event that has
    /// a delivery to that destination already keeps it and is not counted. Returns how many
    /// were added.
    ///
    /// # Errors
    /// `Database`.
    async fn add_deliveries(
        &self,
        deliveries: Vec<LateDelivery>,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Rejected inputs, newest first.
    ///
    /// # Errors
    /// `Database`.
    async fn rejected(&self, limit: usize) -> Result<Vec<RejectedRecord>, StoreError>;

    /// Queue figures, from the delivery and event counters and the index ranges (no count of
    /// every delivery or event; the reopened outcomes are counted in `delivery_history`).
    ///
    /// # Errors
    /// `Database`.
    async fn stats(&self) -> Result<QueueStats, StoreError>;

    /// Pending and dead deliveries per destination (the figures of [`Store::stats`] that
    /// gauges publish every few seconds), from the per-key pending counters and the delivery
    /// counters rather than a scan of every delivery and event. Destinations with neither are
    /// left out.
    ///
    /// # Errors
    /// `Database`.
    async fn depths(&self) -> Result<Vec<QueueDepth>, StoreError>;

    /// Deliveries per destination, call type and state (`queue stats`), read from the delivery
    /// counters: a row per (destination, call type, state), whatever the store holds.
    ///
    /// # Errors
    /// `Database`.
    async fn kind_counts(&self) -> Result<Vec<KindCount>, StoreError>;

    /// Events matching `query`, newest first, at most `query.limit`, each with the state of
    /// its deliveries. Every filter is served by an index range.
    ///
    /// # Errors
    /// `Database`.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError>;

    /// The messageId of the event of each delivery (for a trace: the other events a call
    /// carried). Unknown ids are left out.
    ///
    /// # Errors
    /// `Database`.
    async fn delivery_messages(
        &self,
        delivery_ids: &[DeliveryId],
    ) -> Result<Vec<(DeliveryId, String)>, StoreError>;

    /// Per destination with pending work or dead letters: the backlog, per destination and per
    /// kind (call type), from the counters, the contact keys and the front of the pending index
    /// for each kind's oldest event (no count of every delivery).
    ///
    /// # Errors
    /// `Database`.
    async fn backlog(&self) -> Result<Vec<Backlog>, StoreError>;

    /// Events received per minute since `since_ms`, oldest first; minutes with none are left out.
    ///
    /// # Errors
    /// `Database`.
    async fn events_per_minute(&self, since_ms: i64) -> Result<Vec<MinuteCount>, StoreError>;

    /// Calls spent on `account` per minute since `since_ms` (the ledger keeps a day), oldest
    /// first; minutes with none are left out.
    ///
    /// # Errors
    /// `Database`.
    async fn calls_per_minute(
        &self,
        account: &str,
        since_ms: i64,
    ) -> Result<Vec<MinuteCount>, StoreError>;

    /// Record that `destination` is paused (`Some`) or delivering again (`None`).
    ///
    /// # Errors
    /// `Database`.
    async fn set_pause(
        &self,
        destination: &str,
        pause: Option<DestinationPause>,
    ) -> Result<(), StoreError>;

    /// Destinations recorded as paused.
    ///
    /// # Errors
    /// `Database`.
    async fn pauses(&self) -> Result<Vec<DestinationPause>, StoreError>;

    /// Forget the pauses whose next probe was due before `now_ms` (their node did not renew
    /// them: it stopped, or its probe has not run yet and will record the pause again should it
    /// fail). One conditional delete, so a pause renewed meanwhile stays. Returns how many.
    ///
    /// # Errors
    /// `Database`, `Closed`.
    async fn clear_expired_pauses(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Remove events whose deliveries are all finished and that were received before
    /// `events_before_ms` (dead letters are kept), and dedup entries older than `dedup_before_ms`
    /// whose events are gone (an entry of a kept event stays so the event remains traceable by
    /// messageId, but it deduplicates only within the window either way).
    ///
    /// # Errors
    /// `Database`.
    async fn prune(
        &self,
        events_before_ms: i64,
        dedup_before_ms: i64,
    ) -> Result<PruneOutcome, StoreError>;

    /// Remove rejected inputs received before `before_ms`, then the oldest others until the
    /// rest hold at most `max_bytes` of raw bytes. Returns how many were removed.
    ///
    /// # Errors
    /// `Database`.
    async fn prune_rejected(&self, before_ms: i64, max_bytes: u64) -> Result<u64, StoreError>;

    /// Add sightings of unmapped trait keys (`count` more, seen from `first_seen_ms` to
    /// `last_seen_ms`; keys cut by [`clip_unmapped_key`]), then keep only the
    /// [`MAX_UNMAPPED_TRAITS_PER_DESTINATION`] most recently seen keys of each destination.
    ///
    /// # Errors
    /// `Database`.
    async fn record_unmapped_traits(&self, traits: Vec<UnmappedTrait>) -> Result<(), StoreError>;

    /// The unmapped trait keys of `destination`, most often seen first, at most `limit`.
    ///
    /// # Errors
    /// `Database`.
    async fn unmapped_traits(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<UnmappedTrait>, StoreError>;

    /// Run the backend's integrity check; `Ok(problems)` with an empty vec means healthy.
    ///
    /// # Errors
    /// `Database`.
    async fn integrity_check(&self) -> Result<Vec<String>, StoreError>;

    /// Wait for in-flight writes to commit and stop accepting new ones.
    async fn close(&self);
}
