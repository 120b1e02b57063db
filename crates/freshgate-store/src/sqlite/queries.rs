//! Read-only queries, run on the reader threads' connections (see [`super::readers`]).
//!
//! WAL mode lets these run while the writer commits; each sees the last committed state.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::filter::{filter_sql, limit_value};
use super::tail_view::{Snapshot, TailView};
use super::writer::check_lease;
use super::{HOUR_MS, hour_of};
use crate::counters::{self, CounterDrift, PendingDrift};
use crate::listing::{
    BackendSql, EventHead, EventListSql, KeyFigures, KindFigures, MAX_PAGE, Param, event_list_sql,
    merge_backlog, minute_counts, oldest_pending,
};
use crate::{
    Attempt, Backlog, ContactLease, DeadLetter, DeliveryFilter, DeliveryState, DeliveryStatus,
    DeliveryTrace, DestinationPause, DestinationStats, EventQuery, EventSummary, EventTrace,
    FieldMetadata, FinishedDelivery, KindCount, MinuteCount, PastOutcome, PendingDelivery,
    QueueDepth, QueueStats, RejectedRecord, Reopen, StoreError, UnroutedEvent, count_outcomes,
    destination_stats, merge_depths,
};

/// The events of a messageId in the live runs: one index seek per run (see `runs.rs`).
const MESSAGE_IDS_IN_RUNS: &str = "SELECT m.event_id FROM index_runs r CROSS JOIN messages m
     WHERE r.state = 'live' AND m.run = r.run AND m.message_id = ?1";

/// The events of a messageId in the tail (ids above the watermark, ?1), read when the writer's
/// view of its tail does not hold the reader's snapshot. `NOT INDEXED`: the planner would rather
/// build an automatic index over every event than walk the tail's id range.
const MESSAGE_IDS_IN_TAIL: &str =
    "SELECT id FROM events NOT INDEXED WHERE id > ?1 AND message_id = ?2";

/// The (id, receive time) of a contact's events in the tail, read like [`MESSAGE_IDS_IN_TAIL`].
const CONTACT_EVENTS_IN_TAIL: &str =
    "SELECT id, received_at_ms FROM events NOT INDEXED WHERE id > ?1 AND contact_key = ?2";

/// The reader's snapshot as the tail view needs it: the watermark and the newest event id.
/// Read before anything else the lookup reads, so that runs that go live meanwhile are found
/// twice (harmless: the ids are a set to the queries that use them) rather than not at all.
pub(crate) fn tail_snapshot(conn: &Connection) -> Result<Snapshot, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT (SELECT event_id FROM index_watermark WHERE id = 1),
                    (SELECT max(id) FROM events)",
        )?
        .query_row([], |r| {
            Ok(Snapshot {
                watermark: r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                newest: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
            })
        })?)
}

/// A key's rows in the tail: the writer's view's `answer` when it holds the snapshot `at`, else
/// `sql` (`?1` the watermark, `?2` the key) read from the tail's events.
fn in_tail<T>(
    conn: &Connection,
    answer: Option<Vec<T>>,
    sql: &str,
    at: Snapshot,
    key: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    match answer {
        Some(rows) => Ok(rows),
        None => Ok(conn
            .prepare_cached(sql)?
            .query_map(params![at.watermark, key], row)?
            .collect::<Result<_, _>>()?),
    }
}

/// The ids of the events stored under a messageId (candidates: the tail view's are by hash):
/// the tail's from the writer's view when it holds this snapshot, else read; then the runs'.
fn message_event_ids(
    conn: &Connection,
    view: &TailView,
    message_id: &str,
) -> Result<Vec<i64>, StoreError> {
    let at = tail_snapshot(conn)?;
    let mut ids = in_tail(
        conn,
        view.message_ids(message_id, at),
        MESSAGE_IDS_IN_TAIL,
        at,
        message_id,
        |r| r.get(0),
    )?;
    let in_runs = conn
        .prepare_cached(MESSAGE_IDS_IN_RUNS)?
        .query_map(params![message_id], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    ids.extend(in_runs);
    Ok(ids)
}

/// (id, destination, status, reason, next attempt) of one delivery, as read for a trace.
type DeliveryRow = (i64, String, String, Option<String>, Option<i64>);

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn parse_status(s: &str) -> Result<DeliveryStatus, StoreError> {
    DeliveryStatus::parse(s)
}

pub(crate) fn pending_for(
    conn: &Connection,
    lease: &ContactLease,
    limit: usize,
) -> Result<Vec<PendingDelivery>, StoreError> {
    check_lease(conn, lease)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(
            "SELECT d.id, d.event_id, e.source, e.message_id, e.event_type, e.timestamp_ms,
                    e.received_at_ms, d.attempts, d.first_attempt_ms, e.raw
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.destination = ?1 AND d.contact_key = ?2 AND d.status = 'pending'
             ORDER BY d.event_id, d.id
             LIMIT ?3",
        )?
        .query_map(params![lease.destination, lease.contact_key, limit], |r| {
            Ok(PendingDelivery {
                delivery_id: r.get(0)?,
                event_id: r.get(1)?,
                source: r.get(2)?,
                message_id: r.get(3)?,
                event_type: r.get(4)?,
                timestamp_ms: r.get(5)?,
                received_at_ms: r.get(6)?,
                attempts: to_u32(r.get(7)?),
                first_attempt_ms: r.get(8)?,
                raw: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn shadow(
    conn: &Connection,
    destination: &str,
    contact_key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT body FROM shadows WHERE destination = ?1 AND contact_key = ?2")?
        .query_row(params![destination, contact_key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn field_metadata(
    conn: &Connection,
    account: &str,
) -> Result<Option<FieldMetadata>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT fetched_at_ms, body FROM field_metadata WHERE account = ?1")?
        .query_row(params![account], |r| {
            Ok(FieldMetadata {
                fetched_at_ms: r.get(0)?,
                body: r.get(1)?,
            })
        })
        .optional()?)
}

pub(crate) fn calls_since(
    conn: &Connection,
    account: &str,
    since_ms: i64,
) -> Result<u64, StoreError> {
    let total: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(calls), 0) FROM quota_ledger WHERE account = ?1 AND bucket_ms >= ?2",
        )?
        .query_row(params![account, since_ms], |r| r.get(0))?;
    Ok(to_u64(total))
}

fn attempts_of(conn: &Connection, delivery_id: i64) -> Result<Vec<Attempt>, StoreError> {
    let heads: Vec<(i64, Attempt)> = conn
        .prepare_cached(
            "SELECT a.id, a.at_ms, a.request_line, a.request_body, a.status, a.response_body,
                    a.outcome
             FROM attempt_deliveries ad JOIN attempts a ON a.id = ad.attempt_id
             WHERE ad.delivery_id = ?1
             ORDER BY a.at_ms, a.id",
        )?
        .query_map(params![delivery_id], |r| {
            let status: Option<i64> = r.get(4)?;
            Ok((
                r.get(0)?,
                Attempt {
                    delivery_ids: Vec::new(),
                    at_ms: r.get(1)?,
                    request_line: r.get(2)?,
                    request_body: r.get(3)?,
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    response_body: r.get(5)?,
                    outcome: r.get(6)?,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(heads.len());
    for (attempt_id, mut attempt) in heads {
        attempt.delivery_ids = conn
            .prepare_cached(
                "SELECT delivery_id FROM attempt_deliveries WHERE attempt_id = ?1 ORDER BY delivery_id",
            )?
            .query_map(params![attempt_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        out.push(attempt);
    }
    Ok(out)
}

/// (status, reason, attempts, finished, reopened, cause) of one past outcome.
type HistoryRow = (String, Option<String>, i64, Option<i64>, i64, String);

fn history_of(conn: &Connection, delivery_id: i64) -> Result<Vec<PastOutcome>, StoreError> {
    let rows: Vec<HistoryRow> = conn
        .prepare_cached(
            "SELECT status, reason, attempts, finished_ms, reopened_ms, reopened_by
             FROM delivery_history WHERE delivery_id = ?1 ORDER BY id",
        )?
        .query_map(params![delivery_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(
            |(status, reason, attempts, finished_ms, reopened_ms, cause)| {
                Ok(PastOutcome {
                    status: parse_status(&status)?,
                    reason,
                    attempts: to_u32(attempts),
                    finished_ms,
                    reopened_ms,
                    reopened_by: Reopen::parse(&cause)?,
                })
            },
        )
        .collect()
}

pub(crate) fn finished_deliveries(
    conn: &Connection,
    filter: &DeliveryFilter,
    after_id: i64,
    limit: usize,
) -> Result<Vec<FinishedDelivery>, StoreError> {
    let f = filter_sql(filter);
    let sql = format!(
        "SELECT d.id, d.destination, e.source, d.status, e.raw
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.status IN ('delivered', 'skipped', 'dead') AND d.id > ?{}
         ORDER BY d.id LIMIT {}",
        f.clause,
        i64::try_from(limit).unwrap_or(i64::MAX)
    );
    let params = std::iter::once(rusqlite::types::Value::Integer(after_id)).chain(f.params);
    let rows: Vec<(i64, String, String, String, Vec<u8>)> = conn
        .prepare(&sql)?
        .query_map(params_from_iter(params), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(delivery_id, destination, source, status, raw)| {
            Ok(FinishedDelivery {
                delivery_id,
                destination,
                source,
                status: parse_status(&status)?,
                raw,
            })
        })
        .collect()
}

pub(crate) fn event_traces(
    conn: &Connection,
    view: &TailView,
    message_id: &str,
) -> Result<Vec<EventTrace>, StoreError> {
    let ids = message_event_ids(conn, view, message_id)?;
    let mut events: Vec<EventTrace> = conn
        .prepare_cached(
            "SELECT e.id, e.source, e.message_id, e.event_type, e.contact_key,
                    e.timestamp_ms, e.received_at_ms, e.raw
             FROM events e WHERE e.id IN (SELECT value FROM json_each(?1))
               AND e.message_id = ?2 ORDER BY e.id",
        )?
        .query_map(params![id_list(&ids), message_id], |r| {
            event_head(r).map(EventHead::into_trace)
        })?
        .collect::<Result<_, _>>()?;
    for ev in &mut events {
        let rows: Vec<DeliveryRow> = conn
            .prepare_cached(
                "SELECT d.id, d.destination, d.status, d.reason,
                        CASE WHEN d.status = 'pending' THEN k.next_attempt_ms END
                 FROM deliveries d
                 LEFT JOIN contact_keys k
                        ON k.destination = d.destination AND k.contact_key = d.contact_key
                 WHERE d.event_id = ?1 ORDER BY d.id",
            )?
            .query_map(params![ev.event_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        for (delivery_id, destination, status, reason, next_attempt_ms) in rows {
            ev.deliveries.push(DeliveryTrace {
                delivery_id,
                destination,
                status: parse_status(&status)?,
                reason,
                next_attempt_ms,
                attempts: attempts_of(conn, delivery_id)?,
                history: history_of(conn, delivery_id)?,
            });
        }
    }
    Ok(events)
}

pub(crate) fn dead_letters(
    conn: &Connection,
    filter: &DeliveryFilter,
) -> Result<Vec<DeadLetter>, StoreError> {
    let f = filter_sql(filter);
    let sql = format!(
        "SELECT d.id, d.destination, e.source, e.message_id, e.event_type, d.contact_key,
                coalesce(d.reason, ''), coalesce(d.finished_ms, 0),
                (SELECT count(*) FROM attempt_deliveries ad WHERE ad.delivery_id = d.id),
                d.reason_code
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.status = 'dead'{}
         ORDER BY d.finished_ms DESC, d.id DESC
         LIMIT {}",
        f.clause,
        limit_value(filter)
    );
    let rows = conn
        .prepare(&sql)?
        .query_map(params_from_iter(f.params.iter()), |r| {
            Ok(DeadLetter {
                delivery_id: r.get(0)?,
                destination: r.get(1)?,
                source: r.get(2)?,
                message_id: r.get(3)?,
                event_type: r.get(4)?,
                contact_key: r.get(5)?,
                reason: r.get(6)?,
                dead_at_ms: r.get(7)?,
                attempts: to_u32(r.get(8)?),
                reason_code: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn contacts_matching(
    conn: &Connection,
    filter: &DeliveryFilter,
) -> Result<Vec<(String, String)>, StoreError> {
    let f = filter_sql(filter);
    let sql = format!(
        "SELECT DISTINCT d.destination, d.contact_key
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE 1 = 1{}
         ORDER BY d.destination, d.contact_key",
        f.clause
    );
    let rows = conn
        .prepare(&sql)?
        .query_map(params_from_iter(f.params.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn events_without_delivery(
    conn: &Connection,
    destination: &str,
    since_ms: i64,
    until_ms: i64,
    after_id: i64,
    limit: usize,
) -> Result<Vec<UnroutedEvent>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(
            "SELECT e.id, e.source, e.contact_key, e.raw FROM events e
             WHERE e.received_at_ms >= ?1 AND e.received_at_ms < ?2 AND e.id > ?3
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.event_id = e.id AND d.destination = ?4)
             ORDER BY e.id LIMIT ?5",
        )?
        .query_map(
            params![since_ms, until_ms, after_id, destination, limit],
            |r| {
                Ok(UnroutedEvent {
                    event_id: r.get(0)?,
                    source: r.get(1)?,
                    contact_key: r.get(2)?,
                    raw: r.get(3)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn rejected(conn: &Connection, limit: usize) -> Result<Vec<RejectedRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(
            "SELECT id, source, reason, received_at_ms, raw FROM rejected
             ORDER BY received_at_ms DESC, id DESC LIMIT ?1",
        )?
        .query_map(params![limit], |r| {
            let raw: Vec<u8> = r.get(4)?;
            Ok(RejectedRecord {
                id: r.get(0)?,
                source: r.get(1)?,
                reason: r.get(2)?,
                received_at_ms: r.get(3)?,
                raw: String::from_utf8_lossy(&raw).into_owned(),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn kind_counts(conn: &Connection) -> Result<Vec<KindCount>, StoreError> {
    let rows: Vec<(String, String, String, i64)> = conn
        .prepare_cached(counters::KIND_COUNTS)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(destination, event_type, status, n)| {
            Ok(KindCount {
                destination,
                event_type,
                status: parse_status(&status)?,
                count: to_u64(n),
            })
        })
        .collect()
}

/// Pending deliveries per (destination, kind) from the counters, each with its oldest event
/// from the front of its range in the pending index.
fn pending_kinds(conn: &Connection) -> Result<Vec<KindFigures>, StoreError> {
    let kinds: Vec<(String, String, i64)> = conn
        .prepare_cached(counters::PENDING_KINDS)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut oldest = conn.prepare_cached(counters::OLDEST_PENDING_OF_KIND)?;
    kinds
        .into_iter()
        .map(|(destination, event_type, n)| {
            let at: Option<i64> = oldest
                .query_row(params![destination, event_type], |r| r.get(0))
                .optional()?;
            Ok((destination, event_type, n, at))
        })
        .collect()
}

pub(crate) fn stats(conn: &Connection) -> Result<QueueStats, StoreError> {
    // Counters and index ranges only: the cost follows the number of destinations, kinds and
    // reopened deliveries, not the number of deliveries stored.
    let events: i64 = conn.query_row(counters::EVENTS_STORED, [], |r| r.get(0))?;
    let rejected: i64 = conn.query_row("SELECT count(*) FROM rejected", [], |r| r.get(0))?;
    let mut per: BTreeMap<String, DestinationStats> = BTreeMap::new();
    let counts = |sql: &str| -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(conn
            .prepare(sql)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?)
    };
    let current = counts(counters::STATUS_COUNTS)?;
    let past = counts(
        "SELECT destination, status, count(*) FROM delivery_history GROUP BY destination, status",
    )?;
    count_outcomes(&mut per, current, past)?;
    for (destination, at) in oldest_pending(&pending_kinds(conn)?) {
        destination_stats(&mut per, &destination).oldest_pending_received_ms = Some(at);
    }
    let keys: Vec<(String, i64, i64)> = conn
        .prepare(
            "SELECT destination, min(next_attempt_ms), count(*) FROM contact_keys
             WHERE pending > 0 GROUP BY destination",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (destination, next, n) in keys {
        let s = destination_stats(&mut per, &destination);
        s.next_attempt_ms = Some(next);
        s.pending_contacts = to_u64(n);
    }
    Ok(QueueStats {
        events: to_u64(events),
        rejected: to_u64(rejected),
        destinations: per.into_values().collect(),
    })
}

pub(crate) fn depths(conn: &Connection) -> Result<Vec<QueueDepth>, StoreError> {
    let pending: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT destination, sum(pending) FROM contact_keys
             WHERE pending > 0 GROUP BY destination",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let dead: Vec<(String, i64)> = conn
        .prepare_cached(counters::DEAD_PER_DESTINATION)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(merge_depths(pending, dead))
}

pub(crate) fn integrity_check(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let lines: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if lines.len() != 1 || lines[0] != "ok" {
        return Ok(lines);
    }
    let pending: Vec<PendingDrift> = conn
        .prepare(counters::PENDING_DRIFT)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let counted: Vec<CounterDrift> = conn
        .prepare(counters::COUNTER_DRIFT)?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(counters::drift_problems(pending, counted))
}

/// The listing's statements. A search by messageId or contact is scoped to the candidate ids
/// found in the runs and the tail; the messageId condition then checks the candidates.
const LISTING: BackendSql = BackendSql {
    message_match: "e.message_id = ?",
    least: "min",
    // The candidates (a messageId's, or a contact's of one hour), as a JSON array of event ids.
    scope: " WHERE e.id IN (SELECT value FROM json_each(?))",
};

pub(crate) fn list_events(
    conn: &Connection,
    view: &TailView,
    query: &EventQuery,
) -> Result<Vec<EventSummary>, StoreError> {
    let mut events = if query.contact_key.is_some() || query.email.is_some() {
        list_by_contact(conn, view, query)?
    } else if let Some(message_id) = &query.message_id {
        let ids = message_event_ids(conn, view, message_id)?;
        run_listing(conn, &event_list_sql(query, &LISTING, Some(id_list(&ids))))?
    } else {
        run_listing(conn, &event_list_sql(query, &LISTING, None))?
    };
    let mut statement = conn.prepare_cached(
        "SELECT destination, status, reason FROM deliveries WHERE event_id = ?1 ORDER BY id",
    )?;
    for ev in &mut events {
        let rows: Vec<(String, String, Option<String>)> = statement
            .query_map(params![ev.event_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        for (destination, status, reason) in rows {
            ev.deliveries.push(DeliveryState {
                destination,
                status: parse_status(&status)?,
                reason,
            });
        }
    }
    Ok(events)
}

/// The events of a contact, or of the contacts an email was identified with, newest receive
/// time first (then id). `contact_events` holds a run per hour (see `runs.rs`), so this walks
/// the stored hours newest first: each hour's candidates are the contact's entries in that
/// hour's live runs (one index seek per run and contact) and its events in the tail (from the
/// writer's view of its tail when it holds this snapshot); the listing's other conditions then
/// apply to them, until the page is full. The cursor is the previous page's last event, as for
/// a time range (the listing's order is the same: receive time, then id).
fn list_by_contact(
    conn: &Connection,
    view: &TailView,
    query: &EventQuery,
) -> Result<Vec<EventSummary>, StoreError> {
    let snapshot = tail_snapshot(conn)?;
    let (oldest, newest): (Option<i64>, Option<i64>) = conn
        // Two subqueries: SQLite reads one end of an index for a lone min() or max() only.
        .prepare_cached(
            "SELECT (SELECT min(received_at_ms) FROM events),
                    (SELECT max(received_at_ms) FROM events)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(Vec::new());
    };
    let mut last_hour = hour_of(newest);
    if let Some(until) = query.until_ms {
        last_hour = last_hour.min(hour_of(until.saturating_sub(1)));
    }
    if let Some(before) = query.before_id {
        let cursor_at: Option<i64> = conn
            .prepare_cached("SELECT received_at_ms FROM events WHERE id = ?1")?
            .query_row(params![before], |r| r.get(0))
            .optional()?;
        match cursor_at {
            Some(at) => last_hour = last_hour.min(hour_of(at)),
            // The cursor's event was pruned: nothing older is listed (as for a time range).
            None => return Ok(Vec::new()),
        }
    }
    let first_hour = hour_of(query.since_ms.map_or(oldest, |s| s.max(oldest)));
    let contact_keys = listed_contact_keys(conn, query)?;
    let mut tail: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for key in &contact_keys {
        let rows: Vec<(i64, i64)> = in_tail(
            conn,
            view.contact_events(key, snapshot),
            CONTACT_EVENTS_IN_TAIL,
            snapshot,
            key,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (id, at) in rows {
            tail.entry(hour_of(at)).or_default().push(id);
        }
    }
    // Only hours that hold a live run or a tail event: a store's hours can be sparse.
    let mut hours: Vec<i64> = conn
        .prepare_cached(
            "SELECT DISTINCT hour FROM index_runs
             WHERE state = 'live' AND hour BETWEEN ?1 AND ?2",
        )?
        .query_map(params![first_hour, last_hour], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    hours.extend(tail.range(first_hour..=last_hour).map(|(h, _)| *h));
    hours.sort_unstable_by(|a, b| b.cmp(a));
    hours.dedup();
    let limit = query.limit.clamp(1, MAX_PAGE);
    let mut events = Vec::new();
    for hour in hours {
        if events.len() >= limit {
            break;
        }
        let mut candidates = tail.remove(&hour).unwrap_or_default();
        for key in &contact_keys {
            let ids: Vec<i64> = conn
                .prepare_cached(
                    "SELECT c.event_id FROM index_runs r CROSS JOIN contact_events c
                     WHERE r.hour = ?1 AND r.state = 'live' AND c.run = r.run
                       AND c.contact_key = ?2",
                )?
                .query_map(params![hour, key], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            candidates.extend(ids);
        }
        if candidates.is_empty() {
            continue;
        }
        let (start, end) = (hour * HOUR_MS, (hour + 1) * HOUR_MS);
        let in_hour = EventQuery {
            since_ms: Some(query.since_ms.map_or(start, |s| s.max(start))),
            until_ms: Some(query.until_ms.map_or(end, |u| u.min(end))),
            limit: limit - events.len(),
            ..query.clone()
        };
        events.extend(run_listing(
            conn,
            &event_list_sql(&in_hour, &LISTING, Some(id_list(&candidates))),
        )?);
    }
    Ok(events)
}

/// The contact keys a contact listing asks for: the contact's own, or those its email was
/// identified with (the listing's conditions check both when both are given).
fn listed_contact_keys(conn: &Connection, query: &EventQuery) -> Result<Vec<String>, StoreError> {
    if let Some(key) = &query.contact_key {
        return Ok(vec![key.clone()]);
    }
    let Some(email) = &query.email else {
        return Ok(Vec::new());
    };
    let keys = conn
        .prepare_cached("SELECT contact_key FROM contact_emails WHERE email = ?1")?
        .query_map(params![crate::email_key(email)], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(keys)
}

/// Event ids as the JSON array the listing's scope reads with `json_each`.
fn id_list(ids: &[i64]) -> Param {
    let mut json = String::with_capacity(ids.len() * 8 + 2);
    json.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&id.to_string());
    }
    json.push(']');
    Param::Text(json)
}

fn run_listing(conn: &Connection, built: &EventListSql) -> Result<Vec<EventSummary>, StoreError> {
    conn.prepare_cached(&built.sql)?
        .query_map(params_from_iter(&built.params), |r| {
            event_head(r).map(EventHead::into_summary)
        })?
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

/// A listing's parameters bind as they are, without a copy into SQLite values.
impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(s) => s.to_sql(),
            Param::Int(i) => i.to_sql(),
        }
    }
}

pub(crate) fn backlog(conn: &Connection) -> Result<Vec<Backlog>, StoreError> {
    let keys: Vec<KeyFigures> = conn
        .prepare_cached(
            "SELECT destination, sum(pending), count(*), min(next_attempt_ms) FROM contact_keys
             WHERE pending > 0 GROUP BY destination",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let dead: Vec<(String, i64)> = conn
        .prepare_cached(counters::DEAD_PER_DESTINATION)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(merge_backlog(keys, dead, pending_kinds(conn)?))
}

pub(crate) fn events_per_minute(
    conn: &Connection,
    since_ms: i64,
) -> Result<Vec<MinuteCount>, StoreError> {
    let rows: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT minute_ms, events FROM ingest_minutes WHERE minute_ms >= ?1 ORDER BY minute_ms",
        )?
        .query_map(params![since_ms.div_euclid(60_000) * 60_000], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(minute_counts(rows))
}

pub(crate) fn calls_per_minute(
    conn: &Connection,
    account: &str,
    since_ms: i64,
) -> Result<Vec<MinuteCount>, StoreError> {
    let rows: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT bucket_ms, calls FROM quota_ledger WHERE account = ?1 AND bucket_ms >= ?2
             ORDER BY bucket_ms",
        )?
        .query_map(params![account, since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(minute_counts(rows))
}

pub(crate) fn pauses(conn: &Connection) -> Result<Vec<DestinationPause>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT destination, reason, since_ms, until_ms FROM destination_pauses
             ORDER BY destination",
        )?
        .query_map([], |r| {
            Ok(DestinationPause {
                destination: r.get(0)?,
                reason: r.get(1)?,
                since_ms: r.get(2)?,
                until_ms: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn delivery_messages(
    conn: &Connection,
    delivery_ids: &[i64],
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT d.id, e.message_id FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.id = ?1",
    )?;
    let mut out = Vec::with_capacity(delivery_ids.len());
    for id in delivery_ids {
        if let Some(row) = statement
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        {
            out.push(row);
        }
    }
    Ok(out)
}

/// One event row in the shared column order (see [`EventHead`]).
fn event_head(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventHead> {
    Ok(EventHead {
        event_id: r.get(0)?,
        source: r.get(1)?,
        message_id: r.get(2)?,
        event_type: r.get(3)?,
        contact_key: r.get(4)?,
        timestamp_ms: r.get(5)?,
        received_at_ms: r.get(6)?,
        raw: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The plan SQLite chooses for the listing statement of `query`, one line per step.
    fn plan(conn: &Connection, query: &EventQuery) -> String {
        plan_in_hour(conn, query, None)
    }

    fn plan_in_hour(conn: &Connection, query: &EventQuery, scope: Option<Param>) -> String {
        let built = event_list_sql(query, &LISTING, scope);
        conn.prepare(&format!("EXPLAIN QUERY PLAN {}", built.sql))
            .unwrap()
            .query_map(params_from_iter(&built.params), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("\n")
    }

    /// A store of `events` identifies over `contacts` keys, event i received at i × `spacing_ms`,
    /// with the planner's statistics gathered.
    fn analyzed_store(
        dir: &tempfile::TempDir,
        events: i64,
        contacts: i64,
        spacing_ms: i64,
    ) -> Connection {
        let conn = super::super::schema::open_writer(&dir.path().join("plan.db")).unwrap();
        for i in 1..=events {
            conn.execute(
                "INSERT INTO events (id, source, message_id, event_type, contact_key,
                                     timestamp_ms, received_at_ms, raw)
                 VALUES (?1, 'web', 'm' || ?1, 'identify', 'k' || (?1 % ?2), ?1, ?1 * ?3,
                         x'7b7d')",
                params![i, contacts, spacing_ms],
            )
            .unwrap();
        }
        conn.execute_batch("ANALYZE").unwrap();
        conn
    }

    /// A contact's (or an email's) events in one hour, as `list_by_contact` asks for them, are
    /// the candidates it found in the contact index, read by id: no walk of the hour.
    #[test]
    fn a_contact_listing_reads_its_candidates_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let conn = analyzed_store(&dir, 5000, 500, 1000);
        let hour = 1;
        let in_hour = |before_id, contact: bool| EventQuery {
            contact_key: contact.then(|| "k7".to_owned()),
            email: (!contact).then(|| "a@example.com".to_owned()),
            since_ms: Some(hour * HOUR_MS),
            until_ms: Some((hour + 1) * HOUR_MS),
            before_id,
            limit: 50,
            ..EventQuery::default()
        };
        for q in [
            in_hour(None, true),
            in_hour(Some(4000), true),
            in_hour(None, false),
        ] {
            let plan = plan_in_hour(&conn, &q, Some(id_list(&[3607, 4107])));
            assert!(
                plan.contains("SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"),
                "{q:?}:\n{plan}"
            );
            assert!(!plan.contains("SCAN e"), "{q:?}:\n{plan}");
        }
    }

    fn statement_plan(conn: &Connection, sql: &str) -> String {
        let params = sql.matches('?').count();
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params_from_iter((0..params).map(|_| 1)), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("\n")
    }

    /// A search by messageId seeks each live run's key range, reads the tail by id range when
    /// the tail view cannot answer, and reads its candidates by id: no scan of `messages` or of
    /// `events`.
    #[test]
    fn a_message_id_search_seeks_each_run_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let conn = analyzed_store(&dir, 2000, 10, 10);
        let runs = statement_plan(&conn, MESSAGE_IDS_IN_RUNS);
        assert!(
            runs.contains("SEARCH m USING PRIMARY KEY (run=? AND message_id=?)"),
            "{runs}"
        );
        assert!(!runs.contains("SCAN m"), "{runs}");
        for tail in [MESSAGE_IDS_IN_TAIL, CONTACT_EVENTS_IN_TAIL] {
            let plan = statement_plan(&conn, tail);
            assert!(
                plan.contains("SEARCH events USING INTEGER PRIMARY KEY (rowid>?)"),
                "{plan}"
            );
        }
        let q = EventQuery {
            message_id: Some("m7".to_owned()),
            limit: 50,
            ..EventQuery::default()
        };
        let plan = plan_in_hour(&conn, &q, Some(id_list(&[7, 1007])));
        assert!(
            plan.contains("SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN e"), "{plan}");
    }

    #[test]
    fn candidate_ids_are_a_json_array() {
        assert_eq!(id_list(&[]), Param::Text("[]".to_owned()));
        assert_eq!(id_list(&[3, -1, 42]), Param::Text("[3,-1,42]".to_owned()));
    }

    /// A time-range search (with or without a cursor, alone or with a common condition) is a
    /// range of the receive-time index walked in the listing's order: no sort of the range, no
    /// walk of the primary key past every later event.
    #[test]
    fn time_range_search_walks_the_receive_time_index() {
        let dir = tempfile::tempdir().unwrap();
        let conn = analyzed_store(&dir, 2000, 10, 10);
        let range = |before_id, until_ms| EventQuery {
            since_ms: Some(5_000),
            until_ms,
            before_id,
            limit: 50,
            ..EventQuery::default()
        };
        let cases = [
            range(None, Some(9_000)),
            range(Some(800), Some(9_000)),
            range(Some(800), None),
            EventQuery {
                status: Some(DeliveryStatus::Pending),
                ..range(Some(800), Some(9_000))
            },
        ];
        for q in &cases {
            let plan = plan(&conn, q);
            assert!(
                plan.contains("SEARCH e USING COVERING INDEX events_received_at")
                    || plan.contains("SEARCH e USING INDEX events_received_at"),
                "{q:?}:\n{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{q:?}:\n{plan}");
        }
    }
}
