//! The single writer thread: owns the read-write connection and applies every write.
//!
//! Commands arrive on a bounded channel. The writer takes one, drains whatever else is already
//! queued, picks a group from it (appends first, delivery work within its own limit: see
//! [`super::group`]), runs the whole group in ONE transaction with a savepoint per command,
//! commits once (one fsync for the group, `synchronous=FULL`), and only then answers every
//! command. A command that fails rolls back its own savepoint and gets its
//! error; the rest of the group still commits.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::WriterGate;
use super::dedup::MessageKey;
use super::filter::{filter_sql, limit_value};
use super::group::{GroupLimits, GroupQueue, Lane, Queued};
use super::hour_of;
use super::index::EventIndex;
use super::runs::{FlushStep, TailEntry};
use crate::{
    AppendBatch, AppendOutcome, Attempt, ContactLease, DeliveryFilter, DeliveryId, DeliveryStatus,
    LateDelivery, PruneOutcome, Reopen, Settlement, StoreError,
};

/// Quota ledger buckets older than this (relative to the newest bucket) are pruned: the widest
/// quota window is one hour; the console charts calls per minute over a day.
const LEDGER_KEEP_MS: i64 = crate::LEDGER_KEEP_MS;

/// One write, as sent to the writer thread.
pub(crate) enum WriteOp {
    Append(AppendBatch),
    Lease {
        destination: String,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    },
    Settle {
        lease: ContactLease,
        now_ms: i64,
        settlements: Vec<(DeliveryId, Settlement)>,
        attempt: Option<Attempt>,
    },
    Release {
        lease: ContactLease,
        not_before_ms: Option<i64>,
    },
    PutShadow {
        destination: String,
        contact_key: String,
        body: Vec<u8>,
    },
    ForgetShadows {
        destination: Option<String>,
        contact_key: Option<String>,
    },
    SetPause {
        destination: String,
        pause: Option<crate::DestinationPause>,
    },
    ClearExpiredPauses {
        now_ms: i64,
    },
    PutFieldMetadata {
        account: String,
        metadata: crate::FieldMetadata,
    },
    RecordCalls {
        account: String,
        at_ms: i64,
        calls: u32,
    },
    ReserveCalls {
        account: String,
        at_ms: i64,
        calls: u32,
        minute_cap: u32,
        hour_cap: u32,
    },
    RequeueDead {
        filter: DeliveryFilter,
        now_ms: i64,
    },
    Reopen {
        delivery_ids: Vec<DeliveryId>,
        cause: Reopen,
        now_ms: i64,
    },
    AddDeliveries {
        deliveries: Vec<LateDelivery>,
        now_ms: i64,
    },
    /// One chunk of a prune: at most `limit` events and `limit` dedup entries.
    Prune {
        events_before_ms: i64,
        dedup_before_ms: i64,
        limit: usize,
    },
    PruneRejected {
        before_ms: i64,
        max_bytes: u64,
    },
    RecordUnmapped(Vec<crate::UnmappedTrait>),
    /// Delivery records (contact ids, account shadows, lists, activity intents, entity fields).
    Record(super::records::RecordOp),
    /// List memberships handed to the list flusher.
    Membership(super::memberships::MembershipOp),
}

impl WriteOp {
    /// How much this command counts towards the group-commit limit (events, roughly rows).
    fn weight(&self) -> usize {
        let w = match self {
            Self::Append(b) => b.events.len() + b.rejected.len(),
            Self::Settle { settlements, .. } => settlements.len(),
            Self::RecordUnmapped(traits) => traits.len(),
            Self::AddDeliveries { deliveries, .. } => deliveries.len(),
            Self::Reopen { delivery_ids, .. } => delivery_ids.len(),
            _ => 1,
        };
        w.max(1)
    }
}

impl Queued for Command {
    fn lane(&self) -> Lane {
        match self.op {
            WriteOp::Append(_) => Lane::Ingest,
            _ => Lane::Background,
        }
    }

    fn weight(&self) -> usize {
        self.op.weight()
    }
}

/// What a write produced.
#[derive(Debug)]
pub(crate) enum WriteReply {
    Appended(AppendOutcome),
    Leased(Vec<ContactLease>),
    Count(u64),
    /// A prune chunk, and whether it stopped at its limit (more is left to prune).
    Pruned(PruneOutcome, bool),
    Done,
    Record(super::records::RecordReply),
    Membership(super::memberships::MembershipReply),
}

/// A write and where to send its result once committed.
pub(crate) struct Command {
    pub(crate) op: WriteOp,
    pub(crate) reply: oneshot::Sender<Result<WriteReply, StoreError>>,
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    /// Held around each group commit so the checkpointer can pause between groups.
    gate: Arc<WriterGate>,
    /// Dropped with the writer: tells the checkpointer thread to stop.
    _alive: std::sync::mpsc::Sender<()>,
    /// Commands taken off the channel and not yet committed.
    queue: GroupQueue<Command>,
    /// Most commands held in `queue`: beyond it they wait in the bounded channel.
    max_held: usize,
    token_prefix: String,
    token_counter: u64,
    /// Dedup, and the index tail written as runs (see `index.rs`).
    index: EventIndex,
}

impl Writer {
    /// A writer over an already migrated connection.
    pub(crate) fn new(
        conn: Connection,
        rx: mpsc::Receiver<Command>,
        limits: GroupLimits,
        max_held: usize,
        gate: Arc<WriterGate>,
        alive: std::sync::mpsc::Sender<()>,
        index: EventIndex,
    ) -> Self {
        // Tokens must be unique across restarts too (a lease can outlive the process that took
        // it), hence the start time and pid in the prefix.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            conn,
            rx,
            gate,
            _alive: alive,
            queue: GroupQueue::new(limits),
            max_held: max_held.max(1),
            token_prefix: format!("{nanos:x}-{:x}", std::process::id()),
            token_counter: 0,
            index,
        }
    }

    /// Run until every sender is gone and the queue is empty.
    pub(crate) fn run(mut self) {
        while let Some((group, weight)) = self.next_group() {
            self.gate.enter();
            let started = std::time::Instant::now();
            self.run_group(group);
            self.gate.leave();
            #[allow(clippy::cast_precision_loss)] // a group is at most a few thousand events
            metrics::histogram!(crate::metric::GROUP_COMMIT_EVENTS).record(weight as f64);
            metrics::histogram!(crate::metric::GROUP_COMMIT_SECONDS)
                .record(started.elapsed().as_secs_f64());
            let lookups = self.index.take_lookup_counts();
            if lookups.lookups > 0 {
                metrics::counter!(crate::metric::DEDUP_LOOKUPS).increment(lookups.lookups);
                metrics::counter!(crate::metric::DEDUP_FILTER_HITS).increment(lookups.filter_hits);
                metrics::counter!(crate::metric::DEDUP_RUN_PROBES).increment(lookups.run_probes);
            }
            #[allow(clippy::cast_precision_loss)] // a tail is far below 2^52 events
            metrics::gauge!(crate::metric::INDEX_TAIL_EVENTS).set(self.index.tail_len() as f64);
        }
        tracing::debug!("SQLite writer stopped");
    }

    /// The next group to commit and its weight: waits for a command if none is held, takes
    /// whatever else is already queued, and lets [`GroupQueue`] pick. `None` once every sender
    /// is gone and nothing is held.
    fn next_group(&mut self) -> Option<(Vec<Command>, usize)> {
        while self.queue.is_empty() {
            // Idle time goes to the run being flushed, a transaction per chunk.
            if self.index.has_flush_work() {
                match self.rx.try_recv() {
                    Ok(cmd) => self.queue.push(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => self.flush_while_idle(),
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                }
            } else {
                let first = self.rx.blocking_recv()?;
                self.queue.push(first);
            }
        }
        // Past a full group of appends, the rest stay in the channel, whose bound is the
        // ingest back-pressure; delivery work is held here so appends behind it can be seen.
        while !self.queue.has_full_ingest_group() && self.queue.len() < self.max_held {
            match self.rx.try_recv() {
                Ok(cmd) => self.queue.push(cmd),
                Err(_) => break,
            }
        }
        Some(self.queue.next_group())
    }

    /// One chunk of the run being flushed, in a transaction of its own.
    fn flush_while_idle(&mut self) {
        self.gate.enter();
        let written = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StoreError::from);
        let result = written
            .and_then(|()| self.index.sync(&self.conn))
            .and_then(|()| self.index.flush_step(&self.conn, 0));
        match result.and_then(|step| {
            self.conn.execute_batch("COMMIT")?;
            Ok(step)
        }) {
            Ok(step) => {
                if let Err(err) = self.index.committed(&self.conn, step) {
                    tracing::error!(error = %err, "SQLite writer could not re-read the index runs");
                }
            }
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.index.aborted();
                tracing::error!(error = %err, "SQLite writer could not flush the index tail");
                // Not in a tight loop: the next attempt waits for the next command or a second.
                if let Ok(cmd) = self.rx.try_recv() {
                    self.queue.push(cmd);
                } else {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
        self.gate.leave();
    }

    /// Apply a group in one transaction and answer every command after the commit.
    fn run_group(&mut self, group: Vec<Command>) {
        // With the write lock held, the index takes in what other connections appended.
        let begun = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StoreError::from)
            .and_then(|()| self.index.sync(&self.conn));
        if let Err(err) = begun {
            // Harmless when BEGIN itself failed: there is nothing to roll back.
            let _ = self.conn.execute_batch("ROLLBACK");
            tracing::error!(error = %err, "SQLite writer could not begin a transaction");
            answer_all_with(group, &err);
            return;
        }
        let first_mark = self.index.mark();
        let mut results = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for cmd in group {
            let result = self.apply_in_savepoint(&cmd.op);
            match result {
                Ok(r) => results.push(r),
                Err(fatal) => {
                    // The savepoint machinery itself failed: the transaction state is unknown.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.index.aborted();
                    tracing::error!(error = %fatal, "SQLite writer lost its transaction");
                    replies.push(cmd.reply);
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Database(fatal.to_string())));
                    }
                    return;
                }
            }
            replies.push(cmd.reply);
        }
        let appended = self.index.mark().saturating_sub(first_mark);
        let step = self.flush_step_in_group(appended);
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.index.aborted();
            let msg = e.to_string();
            tracing::error!(error = %msg, "SQLite group commit failed");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Database(msg.clone())));
            }
            return;
        }
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away (request cancelled); the write is committed anyway.
            let _ = reply.send(result);
        }
        // After the answers: a run going live costs the index some milliseconds.
        if let Err(err) = self.index.committed(&self.conn, step) {
            tracing::error!(error = %err, "SQLite writer could not re-read the index runs");
        }
    }

    /// Before a group commits, the next chunk of the run being flushed, at least twice what the
    /// group appended so that flushing keeps pace. In a savepoint: a failed chunk is logged and
    /// redone later, and never costs the group its commit.
    fn flush_step_in_group(&mut self, appended: usize) -> FlushStep {
        if !self.index.has_flush_work() {
            return FlushStep::default();
        }
        let stepped = self
            .conn
            .execute_batch("SAVEPOINT flush")
            .map_err(StoreError::from)
            .and_then(|()| {
                self.index
                    .flush_step(&self.conn, appended.saturating_mul(2))
            });
        match stepped {
            Ok(step) => match self.conn.execute_batch("RELEASE flush") {
                Ok(()) => step,
                Err(err) => {
                    tracing::error!(error = %err, "SQLite writer could not keep an index chunk");
                    let _ = self.conn.execute_batch("ROLLBACK TO flush; RELEASE flush");
                    FlushStep::default()
                }
            },
            Err(err) => {
                tracing::error!(error = %err, "SQLite writer could not write an index chunk");
                let _ = self.conn.execute_batch("ROLLBACK TO flush; RELEASE flush");
                FlushStep::default()
            }
        }
    }

    /// Apply one command inside its own savepoint. The outer `Result` is a failure of the
    /// savepoint statements themselves; the inner one is the command's own outcome.
    fn apply_in_savepoint(
        &mut self,
        op: &WriteOp,
    ) -> Result<Result<WriteReply, StoreError>, rusqlite::Error> {
        self.conn.execute_batch("SAVEPOINT cmd")?;
        let mark = self.index.mark();
        let result = self.apply(op);
        if result.is_ok() {
            self.conn.execute_batch("RELEASE cmd")?;
        } else {
            self.index.rollback_to(mark);
            self.conn.execute_batch("ROLLBACK TO cmd; RELEASE cmd")?;
        }
        Ok(result)
    }

    fn apply(&mut self, op: &WriteOp) -> Result<WriteReply, StoreError> {
        match op {
            WriteOp::Append(batch) => {
                append(&self.conn, &mut self.index, batch).map(WriteReply::Appended)
            }
            WriteOp::Lease {
                destination,
                owner,
                now_ms,
                lease_ms,
                max,
            } => self
                .lease(destination, owner, *now_ms, *lease_ms, *max)
                .map(WriteReply::Leased),
            WriteOp::Settle {
                lease,
                now_ms,
                settlements,
                attempt,
            } => settle(&self.conn, lease, *now_ms, settlements, attempt.as_ref())
                .map(|()| WriteReply::Done),
            WriteOp::Release {
                lease,
                not_before_ms,
            } => release(&self.conn, lease, *not_before_ms).map(|()| WriteReply::Done),
            WriteOp::Record(op) => super::records::apply(&self.conn, op).map(WriteReply::Record),
            WriteOp::Membership(op) => {
                super::memberships::apply(&self.conn, op).map(WriteReply::Membership)
            }
            WriteOp::PutShadow {
                destination,
                contact_key,
                body,
            } => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO shadows (destination, contact_key, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (destination, contact_key) DO UPDATE SET body = excluded.body",
                    )?
                    .execute(params![destination, contact_key, body])?;
                Ok(WriteReply::Done)
            }
            WriteOp::ForgetShadows {
                destination,
                contact_key,
            } => {
                let n = self
                    .conn
                    .prepare_cached(
                        "DELETE FROM shadows
                         WHERE (?1 IS NOT NULL OR ?2 IS NOT NULL)
                           AND (?1 IS NULL OR destination = ?1)
                           AND (?2 IS NULL OR contact_key = ?2)",
                    )?
                    .execute(params![destination, contact_key])?;
                Ok(WriteReply::Count(u64::try_from(n).unwrap_or(u64::MAX)))
            }
            WriteOp::SetPause { destination, pause } => {
                match pause {
                    Some(p) => self
                        .conn
                        .prepare_cached(
                            "INSERT INTO destination_pauses (destination, reason, since_ms, until_ms)
                             VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (destination) DO UPDATE
                             SET reason = excluded.reason, until_ms = excluded.until_ms",
                        )?
                        .execute(params![destination, p.reason, p.since_ms, p.until_ms])?,
                    None => self
                        .conn
                        .prepare_cached("DELETE FROM destination_pauses WHERE destination = ?1")?
                        .execute(params![destination])?,
                };
                Ok(WriteReply::Done)
            }
            WriteOp::ClearExpiredPauses { now_ms } => {
                let n = self
                    .conn
                    .prepare_cached("DELETE FROM destination_pauses WHERE until_ms < ?1")?
                    .execute(params![now_ms])?;
                Ok(WriteReply::Count(u64::try_from(n).unwrap_or(u64::MAX)))
            }
            WriteOp::PutFieldMetadata { account, metadata } => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO field_metadata (account, fetched_at_ms, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (account) DO UPDATE
                         SET fetched_at_ms = excluded.fetched_at_ms, body = excluded.body
                         WHERE excluded.fetched_at_ms >= field_metadata.fetched_at_ms",
                    )?
                    .execute(params![account, metadata.fetched_at_ms, metadata.body])?;
                Ok(WriteReply::Done)
            }
            WriteOp::RecordCalls {
                account,
                at_ms,
                calls,
            } => {
                let bucket = at_ms.div_euclid(1000) * 1000;
                self.conn
                    .prepare_cached(
                        "INSERT INTO quota_ledger (account, bucket_ms, calls) VALUES (?1, ?2, ?3)
                         ON CONFLICT (account, bucket_ms) DO UPDATE SET calls = calls + excluded.calls",
                    )?
                    .execute(params![account, bucket, calls])?;
                Ok(WriteReply::Done)
            }
            WriteOp::ReserveCalls {
                account,
                at_ms,
                calls,
                minute_cap,
                hour_cap,
            } => {
                // The single writer serialises reservations: check and record cannot interleave.
                let (minute_since, hour_since) = crate::reservation_windows(*at_ms);
                let minute = super::queries::calls_since(&self.conn, account, minute_since)?;
                let hour = super::queries::calls_since(&self.conn, account, hour_since)?;
                let calls64 = u64::from(*calls);
                if minute + calls64 > u64::from(*minute_cap)
                    || hour + calls64 > u64::from(*hour_cap)
                {
                    return Ok(WriteReply::Count(0));
                }
                let bucket = at_ms.div_euclid(1000) * 1000;
                self.conn
                    .prepare_cached(
                        "INSERT INTO quota_ledger (account, bucket_ms, calls) VALUES (?1, ?2, ?3)
                         ON CONFLICT (account, bucket_ms) DO UPDATE SET calls = calls + excluded.calls",
                    )?
                    .execute(params![account, bucket, calls])?;
                Ok(WriteReply::Count(1))
            }
            WriteOp::RequeueDead { filter, now_ms } => {
                requeue_dead(&self.conn, filter, *now_ms).map(WriteReply::Count)
            }
            WriteOp::Reopen {
                delivery_ids,
                cause,
                now_ms,
            } => reopen(&self.conn, delivery_ids, *cause, *now_ms).map(WriteReply::Count),
            WriteOp::AddDeliveries { deliveries, now_ms } => {
                add_deliveries(&self.conn, deliveries, *now_ms).map(WriteReply::Count)
            }
            WriteOp::Prune {
                events_before_ms,
                dedup_before_ms,
                limit,
            } => {
                // Events in the index tail wait until they are written as runs: their entries
                // must reach `messages` before them, or their dedup would end with them.
                let waiting = self
                    .index
                    .flush_before(&self.conn, (*events_before_ms).max(*dedup_before_ms))?;
                prune(&self.conn, *events_before_ms, *dedup_before_ms, *limit)
                    .map(|(outcome, more)| WriteReply::Pruned(outcome, more || waiting))
            }
            WriteOp::PruneRejected {
                before_ms,
                max_bytes,
            } => super::bounded::prune_rejected(&self.conn, *before_ms, *max_bytes)
                .map(WriteReply::Count),
            WriteOp::RecordUnmapped(traits) => {
                super::bounded::record_unmapped(&self.conn, traits).map(|()| WriteReply::Done)
            }
        }
    }

    fn next_token(&mut self) -> String {
        self.token_counter += 1;
        format!("{}-{:x}", self.token_prefix, self.token_counter)
    }

    fn lease(
        &mut self,
        destination: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<ContactLease>, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let keys: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT contact_key FROM contact_keys
                 WHERE destination = ?1 AND next_attempt_ms <= ?2 AND pending > 0
                   AND (lease_token IS NULL OR lease_until_ms < ?2)
                 ORDER BY next_attempt_ms, contact_key
                 LIMIT ?3",
            )?
            .query_map(params![destination, now_ms, max], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let until_ms = now_ms.saturating_add(lease_ms);
        let mut leases = Vec::with_capacity(keys.len());
        for contact_key in keys {
            let token = self.next_token();
            self.conn
                .prepare_cached(
                    "UPDATE contact_keys SET lease_owner = ?1, lease_token = ?2, lease_until_ms = ?3
                     WHERE destination = ?4 AND contact_key = ?5",
                )?
                .execute(params![owner, token, until_ms, destination, contact_key])?;
            leases.push(ContactLease {
                destination: destination.to_owned(),
                contact_key,
                token,
                until_ms,
            });
        }
        Ok(leases)
    }
}

/// Answer every command of a group that could not run with the same error.
fn answer_all_with(group: Vec<Command>, err: &StoreError) {
    for cmd in group {
        let _ = cmd.reply.send(Err(StoreError::Database(err.to_string())));
    }
}

/// What one append adds to the counters the console and `queue stats` read (`ingest_minutes`,
/// `event_counts`, `delivery_counts`: migrations 0006 and 0012), summed in memory and written
/// once per append. A row trigger per inserted row did the same at about 8 µs a row, a sixth of
/// the writer's time per event; settles, reopens and prunes still move the counters by trigger.
#[derive(Default)]
struct CounterMoves<'a> {
    events: i64,
    events_per_minute: BTreeMap<i64, i64>,
    deliveries: BTreeMap<(&'a str, &'a str, DeliveryStatus), i64>,
}

impl<'a> CounterMoves<'a> {
    fn event(&mut self, received_at_ms: i64) {
        self.events += 1;
        *self
            .events_per_minute
            .entry(received_at_ms.div_euclid(60_000) * 60_000)
            .or_default() += 1;
    }

    fn delivery(&mut self, destination: &'a str, event_type: &'a str, status: DeliveryStatus) {
        *self
            .deliveries
            .entry((destination, event_type, status))
            .or_default() += 1;
    }

    fn write(&self, conn: &Connection) -> Result<(), StoreError> {
        if self.events != 0 {
            conn.prepare_cached("UPDATE event_counts SET count = count + ?1 WHERE id = 1")?
                .execute(params![self.events])?;
        }
        for (minute_ms, n) in &self.events_per_minute {
            conn.prepare_cached(
                "INSERT INTO ingest_minutes (minute_ms, events) VALUES (?1, ?2)
                 ON CONFLICT (minute_ms) DO UPDATE SET events = events + excluded.events",
            )?
            .execute(params![minute_ms, n])?;
        }
        for ((destination, event_type, status), n) in &self.deliveries {
            conn.prepare_cached(
                "INSERT INTO delivery_counts (destination, event_type, status, count)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (destination, event_type, status)
                 DO UPDATE SET count = count + excluded.count",
            )?
            .execute(params![destination, event_type, status.as_str(), n])?;
        }
        Ok(())
    }
}

pub(crate) fn append(
    conn: &Connection,
    index: &mut EventIndex,
    batch: &AppendBatch,
) -> Result<AppendOutcome, StoreError> {
    let mut outcome = AppendOutcome::default();
    let mut counters = CounterMoves::default();
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for ev in &batch.events {
        if !seen.insert((ev.source.as_str(), ev.message_id.as_str())) {
            outcome.duplicates += 1;
            continue;
        }
        // A messageId is a duplicate when this source stored it within the window; older
        // rows only keep the event traceable.
        let key = MessageKey::new(&ev.source, &ev.message_id);
        if index.seen_within(conn, &key, ev.received_at_ms, batch.dedup_window_ms)? {
            outcome.duplicates += 1;
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                                 received_at_ms, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            ev.source,
            ev.message_id,
            ev.event_type,
            ev.contact_key,
            ev.timestamp_ms,
            ev.received_at_ms,
            ev.raw
        ])?;
        let event_id = conn.last_insert_rowid();
        counters.event(ev.received_at_ms);
        // Its `messages` and `contact_events` entries are written with the tail's next run.
        index.inserted(TailEntry::new(
            event_id,
            ev.received_at_ms,
            ev.source.clone(),
            ev.message_id.clone(),
            ev.contact_key.clone(),
        ));
        if let Some(email) = ev.email.as_deref().filter(|e| !e.is_empty()) {
            // Usually already there: a known pair is a lookup that dirties no page.
            conn.prepare_cached(
                "INSERT OR IGNORE INTO contact_emails (email, contact_key) VALUES (?1, ?2)",
            )?
            .execute(params![crate::email_key(email), ev.contact_key])?;
        }
        for d in &ev.deliveries {
            match &d.skip_reason {
                Some(reason) => {
                    conn.prepare_cached(
                        "INSERT INTO deliveries (event_id, destination, contact_key, status, reason,
                                                 finished_ms, reason_code, event_type)
                         VALUES (?1, ?2, ?3, 'skipped', ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        event_id,
                        d.destination,
                        ev.contact_key,
                        reason,
                        ev.received_at_ms,
                        d.skip_code,
                        ev.event_type
                    ])?;
                    counters.delivery(&d.destination, &ev.event_type, DeliveryStatus::Skipped);
                }
                None => {
                    conn.prepare_cached(
                        "INSERT INTO deliveries (event_id, destination, contact_key, status,
                                                 event_type)
                         VALUES (?1, ?2, ?3, 'pending', ?4)",
                    )?
                    .execute(params![
                        event_id,
                        d.destination,
                        ev.contact_key,
                        ev.event_type
                    ])?;
                    counters.delivery(&d.destination, &ev.event_type, DeliveryStatus::Pending);
                    // An existing key keeps its schedule: a key waiting for a retry must not
                    // become due earlier because a new event arrived.
                    add_pending(
                        conn,
                        &d.destination,
                        &ev.contact_key,
                        ev.received_at_ms,
                        false,
                    )?;
                }
            }
        }
        outcome.accepted += 1;
    }
    for r in &batch.rejected {
        conn.prepare_cached(
            "INSERT INTO rejected (source, raw, reason, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![r.source, r.raw, r.reason, r.received_at_ms])?;
        outcome.rejected += 1;
    }
    counters.write(conn)?;
    Ok(outcome)
}

/// Count one more pending delivery on a key, creating the key due at `due_ms` if absent.
/// With `pull_forward`, an existing key's schedule moves to `due_ms` if that is earlier.
fn add_pending(
    conn: &Connection,
    destination: &str,
    contact_key: &str,
    due_ms: i64,
    pull_forward: bool,
) -> Result<(), StoreError> {
    let sql = if pull_forward {
        "INSERT INTO contact_keys (destination, contact_key, next_attempt_ms, pending)
         VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (destination, contact_key) DO UPDATE SET pending = pending + 1,
             next_attempt_ms = min(next_attempt_ms, excluded.next_attempt_ms)"
    } else {
        "INSERT INTO contact_keys (destination, contact_key, next_attempt_ms, pending)
         VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (destination, contact_key) DO UPDATE SET pending = pending + 1"
    };
    conn.prepare_cached(sql)?
        .execute(params![destination, contact_key, due_ms])?;
    Ok(())
}

/// `Ok` if `lease` is still the live lease of its key.
pub(crate) fn check_lease(conn: &Connection, lease: &ContactLease) -> Result<(), StoreError> {
    let token: Option<Option<String>> = conn
        .prepare_cached(
            "SELECT lease_token FROM contact_keys WHERE destination = ?1 AND contact_key = ?2",
        )?
        .query_row(params![lease.destination, lease.contact_key], |r| r.get(0))
        .optional()?;
    if token.flatten().as_deref() == Some(lease.token.as_str()) {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            destination: lease.destination.clone(),
            contact_key: lease.contact_key.clone(),
        })
    }
}

fn settle(
    conn: &Connection,
    lease: &ContactLease,
    now_ms: i64,
    settlements: &[(DeliveryId, Settlement)],
    attempt: Option<&Attempt>,
) -> Result<(), StoreError> {
    check_lease(conn, lease)?;
    // An attempt that names no delivery is taken to cover every delivery settled with it.
    let covered: HashSet<DeliveryId> = match attempt {
        Some(a) if a.delivery_ids.is_empty() => settlements.iter().map(|(id, _)| *id).collect(),
        Some(a) => a.delivery_ids.iter().copied().collect(),
        None => HashSet::new(),
    };
    if let Some(a) = attempt {
        conn.prepare_cached(
            "INSERT INTO attempts (at_ms, request_line, request_body, status, response_body, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            a.at_ms,
            a.request_line,
            a.request_body,
            a.status,
            a.response_body,
            a.outcome
        ])?;
        let attempt_id = conn.last_insert_rowid();
        for id in &covered {
            // Through a SELECT so that an unknown delivery id is skipped, not a foreign-key error.
            conn.prepare_cached(
                "INSERT OR IGNORE INTO attempt_deliveries (attempt_id, delivery_id)
                 SELECT ?1, id FROM deliveries WHERE id = ?2",
            )?
            .execute(params![attempt_id, id])?;
        }
    }
    let attempt_at = attempt.map_or(now_ms, |a| a.at_ms);
    let mut finished: i64 = 0;
    let mut retry_at: Option<i64> = None;
    for (id, settlement) in settlements {
        let counted = i64::from(attempt.is_some() && covered.contains(id));
        let changed = match settlement {
            Settlement::Retry { at_ms, error } => {
                let n = conn
                    .prepare_cached(
                        "UPDATE deliveries SET attempts = attempts + 1,
                             first_attempt_ms = coalesce(first_attempt_ms, ?1), reason = ?2
                         WHERE id = ?3 AND destination = ?4 AND contact_key = ?5
                           AND status = 'pending'",
                    )?
                    .execute(params![
                        attempt_at,
                        error,
                        id,
                        lease.destination,
                        lease.contact_key
                    ])?;
                if n == 1 {
                    retry_at = Some(retry_at.map_or(*at_ms, |r| r.min(*at_ms)));
                }
                n
            }
            Settlement::Delivered
            | Settlement::Skipped { .. }
            | Settlement::DeadLettered { .. } => {
                let (status, code, reason) = match settlement {
                    Settlement::Skipped { code, reason } => {
                        (DeliveryStatus::Skipped, Some(code), Some(reason))
                    }
                    Settlement::DeadLettered { code, reason } => {
                        (DeliveryStatus::Dead, Some(code), Some(reason))
                    }
                    _ => (DeliveryStatus::Delivered, None, None),
                };
                let n = conn
                    .prepare_cached(
                        "UPDATE deliveries SET status = ?1, reason = ?2, finished_ms = ?3,
                             attempts = attempts + ?4,
                             first_attempt_ms = CASE WHEN ?4 > 0
                                 THEN coalesce(first_attempt_ms, ?5) ELSE first_attempt_ms END,
                             reason_code = ?9
                         WHERE id = ?6 AND destination = ?7 AND contact_key = ?8
                           AND status = 'pending'",
                    )?
                    .execute(params![
                        status.as_str(),
                        reason,
                        now_ms,
                        counted,
                        attempt_at,
                        id,
                        lease.destination,
                        lease.contact_key,
                        code
                    ])?;
                if n == 1 {
                    finished += 1;
                }
                n
            }
        };
        if changed == 0 {
            // Already settled (a repeated settle) or not a pending delivery of this key.
            tracing::warn!(
                delivery_id = id,
                destination = %lease.destination,
                contact_key = %lease.contact_key,
                "settlement ignored: not a pending delivery of the leased key"
            );
        }
    }
    conn.prepare_cached(
        "UPDATE contact_keys SET pending = pending - ?1,
             next_attempt_ms = coalesce(?2, next_attempt_ms)
         WHERE destination = ?3 AND contact_key = ?4",
    )?
    .execute(params![
        finished,
        retry_at,
        lease.destination,
        lease.contact_key
    ])?;
    Ok(())
}

fn release(
    conn: &Connection,
    lease: &ContactLease,
    not_before_ms: Option<i64>,
) -> Result<(), StoreError> {
    // A stale token releases nothing: the key belongs to whoever took it over.
    conn.prepare_cached(
        "UPDATE contact_keys SET lease_owner = NULL, lease_token = NULL, lease_until_ms = NULL,
             next_attempt_ms = max(next_attempt_ms, coalesce(?1, next_attempt_ms))
         WHERE destination = ?2 AND contact_key = ?3 AND lease_token = ?4",
    )?
    .execute(params![
        not_before_ms,
        lease.destination,
        lease.contact_key,
        lease.token
    ])?;
    conn.prepare_cached(
        "DELETE FROM contact_keys
         WHERE destination = ?1 AND contact_key = ?2 AND pending <= 0 AND lease_token IS NULL",
    )?
    .execute(params![lease.destination, lease.contact_key])?;
    Ok(())
}

/// Put the dead letters matching `filter` back to pending, due at `now_ms`.
fn requeue_dead(
    conn: &Connection,
    filter: &DeliveryFilter,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let f = filter_sql(filter);
    let sql = format!(
        "SELECT d.id FROM deliveries d
         JOIN events e ON e.id = d.event_id
         WHERE d.status = 'dead'{} ORDER BY d.id LIMIT {}",
        f.clause,
        limit_value(filter)
    );
    let ids: Vec<DeliveryId> = conn
        .prepare(&sql)?
        .query_map(params_from_iter(f.params.iter()), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    reopen(conn, &ids, Reopen::DeadLetterReplay, now_ms)
}

/// Put finished deliveries back to pending, due at `now_ms`, each one's outcome appended to its
/// history first. Pending or unknown ids are skipped.
fn reopen(
    conn: &Connection,
    delivery_ids: &[DeliveryId],
    cause: Reopen,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut reopened = 0_u64;
    for id in delivery_ids {
        let archived = conn
            .prepare_cached(
                "INSERT INTO delivery_history (delivery_id, destination, status, reason, attempts,
                                               finished_ms, reopened_ms, reopened_by)
                 SELECT id, destination, status, reason, attempts, finished_ms, ?2, ?3
                 FROM deliveries WHERE id = ?1 AND status IN ('delivered', 'skipped', 'dead')",
            )?
            .execute(params![id, now_ms, cause.as_str()])?;
        if archived == 0 {
            continue;
        }
        let (destination, contact_key): (String, String) = conn
            .prepare_cached(
                "UPDATE deliveries SET status = 'pending', attempts = 0, reason = NULL,
                     reason_code = NULL, first_attempt_ms = NULL, finished_ms = NULL
                 WHERE id = ?1
                 RETURNING destination, contact_key",
            )?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        add_pending(conn, &destination, &contact_key, now_ms, true)?;
        reopened += 1;
    }
    Ok(reopened)
}

fn add_deliveries(
    conn: &Connection,
    deliveries: &[LateDelivery],
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut added = 0_u64;
    for late in deliveries {
        let d = &late.delivery;
        let has_one: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1 AND destination = ?2)",
            )?
            .query_row(params![late.event_id, d.destination], |r| r.get(0))?;
        if has_one {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO deliveries (event_id, destination, contact_key, status, reason,
                                     finished_ms, reason_code, event_type)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                     (SELECT e.event_type FROM events e WHERE e.id = ?1))",
        )?
        .execute(params![
            late.event_id,
            d.destination,
            late.contact_key,
            if d.skip_reason.is_some() {
                "skipped"
            } else {
                "pending"
            },
            d.skip_reason,
            d.skip_reason.as_ref().map(|_| now_ms),
            d.skip_code
        ])?;
        // Rare (a destination added later): one counter write per row, as `append` sums them.
        conn.prepare_cached(
            "INSERT INTO delivery_counts (destination, event_type, status, count)
             SELECT destination, event_type, status, 1 FROM deliveries WHERE id = ?1
             ON CONFLICT (destination, event_type, status) DO UPDATE SET count = count + 1",
        )?
        .execute(params![conn.last_insert_rowid()])?;
        if d.skip_reason.is_none() {
            add_pending(conn, &d.destination, &late.contact_key, now_ms, true)?;
        }
        added += 1;
    }
    Ok(added)
}

/// The events a prune may delete, received before `?1`, oldest first: below the watermark
/// (those in the tail wait, see `WriteOp::Prune`) and not kept for a delivery. A macro, so
/// that both statements that use it are built with `concat!`.
macro_rules! prunable_events {
    () => {
        "SELECT id, received_at_ms FROM events e WHERE received_at_ms < ?1
           AND id <= (SELECT event_id FROM index_watermark) AND NOT EXISTS (
             SELECT 1 FROM deliveries d
             WHERE d.event_id = e.id AND d.status IN ('pending', 'dead'))
         ORDER BY received_at_ms"
    };
}

/// Where a prune stands: the oldest event it may still delete (not kept for a delivery), or
/// else the first event received at or after `before_ms`; its id and receive time. Every event
/// the prune has deleted is older, so a run whose events all come before it has nothing left
/// to wait for. `i64::MAX` for both when there is no such event.
fn prune_frontier(conn: &Connection, before_ms: i64) -> Result<(i64, i64), StoreError> {
    let oldest_prunable: Option<(i64, i64)> = conn
        .prepare_cached(concat!(prunable_events!(), " LIMIT 1"))?
        .query_row(params![before_ms], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some(frontier) = oldest_prunable {
        return Ok(frontier);
    }
    let first_after: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT id, received_at_ms FROM events WHERE received_at_ms >= ?1
             ORDER BY received_at_ms LIMIT 1",
        )?
        .query_row(params![before_ms], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(first_after.unwrap_or((i64::MAX, i64::MAX)))
}

/// Which runs a prune chunk takes: those of hours up to `through_ms`'s whose events all come
/// before the frontier, and with `straddling` (the events' part of the prune is done) the one
/// the frontier falls in too.
struct RunsPassed {
    through_ms: i64,
    frontier_id: i64,
    straddling: bool,
}

/// Delete up to `limit` entries of the runs `passed` names, oldest run first, with
/// `delete(run, rows left)`.
fn prune_runs(
    conn: &Connection,
    passed: RunsPassed,
    limit: i64,
    mut delete: impl FnMut(i64, i64) -> rusqlite::Result<usize>,
) -> Result<usize, StoreError> {
    let runs: Vec<i64> = conn
        .prepare_cached(
            "SELECT run FROM index_runs WHERE state = 'live' AND hour <= ?1
               AND (last_event_id < ?2 OR (?3 AND first_event_id < ?2))
             ORDER BY run",
        )?
        .query_map(
            params![
                hour_of(passed.through_ms),
                passed.frontier_id,
                passed.straddling
            ],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    let mut deleted = 0;
    for run in runs {
        let left = limit - i64::try_from(deleted).unwrap_or(i64::MAX);
        if left <= 0 {
            break;
        }
        deleted += delete(run, left)?;
    }
    Ok(deleted)
}

/// One chunk of a prune: the oldest `limit` prunable events and `limit` closed dedup entries,
/// so that a prune of millions of rows never holds the writer for more than one chunk; the
/// small tables are cleaned with the last chunk. `true` if a limit was reached.
fn prune(
    conn: &Connection,
    events_before_ms: i64,
    dedup_before_ms: i64,
    limit: usize,
) -> Result<(PruneOutcome, bool), StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Deliveries and their attempt links go with the event (ON DELETE CASCADE).
    let events = conn
        .prepare_cached(concat!(
            "DELETE FROM events WHERE id IN (SELECT id FROM (",
            prunable_events!(),
            " LIMIT ?2))"
        ))?
        .execute(params![events_before_ms, limit])?;
    // A message entry goes once its window has closed and its event is gone (a kept event stays
    // traceable by messageId; it no longer deduplicates, see `append`); a contact entry once its
    // event is gone. Run by run, in key order: deleting in receive order would dirty a page of
    // a run per entry, as inserting per event did; and a run is taken only once the prune has
    // passed its events (see `prune_frontier`), so that one pass
    // over it finds all it can delete; the run the prune ends in, when it is done.
    let (frontier_id, frontier_ms) = prune_frontier(conn, events_before_ms)?;
    let events_done = i64::try_from(events).unwrap_or(i64::MAX) < limit;
    let dedup_entries = prune_runs(
        conn,
        RunsPassed {
            through_ms: frontier_ms.min(dedup_before_ms),
            frontier_id,
            straddling: events_done,
        },
        limit,
        |run, left| {
            conn.prepare_cached(
                "DELETE FROM messages WHERE (run, message_id, source, event_id) IN (
                     SELECT run, message_id, source, event_id FROM messages m
                     WHERE m.run = ?1 AND m.received_at_ms < ?2
                       AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = m.event_id)
                     LIMIT ?3)",
            )?
            .execute(params![run, dedup_before_ms, left])
        },
    )?;
    let contact_entries = prune_runs(
        conn,
        RunsPassed {
            through_ms: frontier_ms,
            frontier_id,
            straddling: events_done,
        },
        limit,
        |run, left| {
            conn.prepare_cached(
                "DELETE FROM contact_events WHERE (run, contact_key, event_id) IN (
                     SELECT run, contact_key, event_id FROM contact_events c
                     WHERE c.run = ?1
                       AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = c.event_id)
                     LIMIT ?2)",
            )?
            .execute(params![run, left])
        },
    )?;
    let outcome = PruneOutcome {
        events: u64::try_from(events).unwrap_or(u64::MAX),
        dedup_entries: u64::try_from(dedup_entries).unwrap_or(u64::MAX),
    };
    let more = [events, dedup_entries, contact_entries]
        .iter()
        .any(|n| i64::try_from(*n).unwrap_or(i64::MAX) >= limit);
    if more {
        return Ok((outcome, true));
    }
    // Runs whose entries have all gone (a live run with none is only probed in vain).
    conn.prepare_cached(
        "DELETE FROM index_runs WHERE state = 'live' AND hour <= ?1
           AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.run = index_runs.run)
           AND NOT EXISTS (SELECT 1 FROM contact_events c WHERE c.run = index_runs.run)",
    )?
    .execute(params![hour_of(events_before_ms.min(dedup_before_ms))])?;
    conn.execute(
        "DELETE FROM attempts WHERE NOT EXISTS (
             SELECT 1 FROM attempt_deliveries ad WHERE ad.attempt_id = attempts.id)",
        [],
    )?;
    conn.execute(
        "DELETE FROM quota_ledger
         WHERE bucket_ms < (SELECT max(bucket_ms) FROM quota_ledger) - ?1",
        params![LEDGER_KEEP_MS],
    )?;
    // Keys left behind by a worker that died after settling everything but before releasing.
    conn.execute(
        "DELETE FROM contact_keys WHERE pending <= 0
           AND (lease_token IS NULL OR lease_until_ms < ?1)",
        params![events_before_ms],
    )?;
    Ok((outcome, false))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A writer whose channel the test fills before asking for groups; the connection is never
    /// used by `next_group`.
    fn writer(max_group_events: usize) -> (Writer, mpsc::Sender<Command>) {
        let (tx, rx) = mpsc::channel(4096);
        let (alive, _stop) = std::sync::mpsc::channel();
        let conn = Connection::open_in_memory().unwrap();
        let limits = GroupLimits {
            ingest: max_group_events,
            background: 1_000,
        };
        let writer = Writer::new(
            conn,
            rx,
            limits,
            4096,
            Arc::new(WriterGate::default()),
            alive,
            EventIndex::new(super::super::runs::RunLimits::default()),
        );
        (writer, tx)
    }

    fn send(tx: &mpsc::Sender<Command>, op: WriteOp) {
        let (reply, _answer) = oneshot::channel();
        tx.try_send(Command { op, reply }).ok().unwrap();
    }

    /// A settle of `rows` deliveries of one contact (as a bulk job's contact settles).
    fn settle_of(rows: usize) -> WriteOp {
        WriteOp::Settle {
            lease: ContactLease {
                destination: "crm".to_owned(),
                contact_key: "u".to_owned(),
                token: "t".to_owned(),
                until_ms: 0,
            },
            now_ms: 0,
            settlements: (0..rows)
                .map(|i| (i64::try_from(i).unwrap(), Settlement::Delivered))
                .collect(),
            attempt: None,
        }
    }

    /// An append of `items` rejected inputs (weighs like as many events).
    fn append_of(items: usize) -> WriteOp {
        WriteOp::Append(AppendBatch {
            events: Vec::new(),
            rejected: (0..items)
                .map(|_| crate::RejectedInput {
                    source: None,
                    raw: b"{}".to_vec(),
                    reason: "test".to_owned(),
                    received_at_ms: 0,
                })
                .collect(),
            dedup_window_ms: 0,
        })
    }

    fn weights(group: &[Command]) -> (usize, usize) {
        group.iter().fold((0, 0), |(appends, other), c| match c.op {
            WriteOp::Append(_) => (appends + c.op.weight(), other),
            _ => (appends, other + c.op.weight()),
        })
    }

    /// When the hourly quota window slides past an hour of backlog, bulk jobs settle thousands
    /// of deliveries at once. A request's append queued behind them must not wait for them all:
    /// it goes into the next group, beside at most one group's share of delivery rows.
    #[test]
    fn an_append_queued_behind_thousands_of_settled_rows_is_in_the_next_group() {
        let (mut writer, tx) = writer(5_000);
        for _ in 0..100 {
            send(&tx, settle_of(100));
        }
        send(&tx, append_of(100));
        let (group, _) = writer.next_group().unwrap();
        let (appends, other) = weights(&group);
        assert_eq!(
            appends, 100,
            "the append waited behind {other} settled rows"
        );
        assert!(other <= 1_000, "{other} settled rows beside the append");
    }

    /// The other way round: appends queued after delivery work never overtake it, however
    /// many keep coming. (Appends beyond a full group stay in the bounded channel, so work
    /// behind them is reached as they are taken, in arrival order.)
    #[test]
    fn appends_queued_later_never_overtake_delivery_work() {
        let (mut writer, tx) = writer(5_000);
        for _ in 0..200 {
            send(&tx, append_of(100));
        }
        send(&tx, settle_of(100));
        for _ in 0..200 {
            send(&tx, append_of(10));
        }
        drop(tx);
        let mut groups = Vec::new();
        while let Some((group, weight)) = writer.next_group() {
            let (appends, other) = weights(&group);
            assert_eq!(weight, appends + other);
            assert!(appends <= 5_000, "{appends} appended rows in one group");
            groups.push(group);
        }
        let settled_in = groups
            .iter()
            .position(|g| g.iter().any(|c| !matches!(c.op, WriteOp::Append(_))))
            .unwrap();
        let first_later_append = groups
            .iter()
            .position(|g| g.iter().any(|c| c.op.weight() == 10))
            .unwrap();
        assert!(
            settled_in <= first_later_append,
            "the settle went in group {settled_in}, a later append in group {first_later_append}"
        );
        let served: usize = groups.iter().map(Vec::len).sum();
        assert_eq!(served, 401);
    }
}
