//! Everything else of the store on PostgreSQL: shadows, the shared quota ledger, traces, dead
//! letters, rejected inputs, queue figures and pruning.

use std::collections::{BTreeMap, HashMap};

use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use sqlx_core::row::Row;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_postgres::{PgConnection, PgPool, PgRow};

use super::delivery::MAINTENANCE_LOCK;
use super::filter::{filter_sql, limit_value};
use crate::counters;
use crate::listing::{
    BackendSql, EventHead, KeyFigures, KindFigures, Param, event_list_sql, merge_backlog,
    minute_counts, oldest_pending,
};
use crate::{
    Attempt, Backlog, DeadLetter, DeliveryFilter, DeliveryState, DeliveryStatus, DeliveryTrace,
    DestinationPause, DestinationStats, EventQuery, EventSummary, EventTrace, FieldMetadata,
    FinishedDelivery, KindCount, MinuteCount, PastOutcome, PruneOutcome, QueueDepth, QueueStats,
    RejectedRecord, Reopen, StoreError, UnroutedEvent, count_outcomes, destination_stats,
    merge_depths,
};

use crate::LEDGER_KEEP_MS;

type SqlResult<T> = Result<T, sqlx_core::Error>;

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn parse_status(s: &str) -> Result<DeliveryStatus, StoreError> {
    DeliveryStatus::parse(s)
}

pub(crate) async fn shadow(
    pool: &PgPool,
    destination: &str,
    contact_key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        query_scalar("SELECT body FROM shadows WHERE destination = $1 AND contact_key = $2")
            .bind(destination)
            .bind(contact_key)
            .fetch_optional(pool)
            .await?,
    )
}

pub(crate) async fn put_shadow(
    pool: &PgPool,
    destination: &str,
    contact_key: &str,
    body: Vec<u8>,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO shadows (destination, contact_key, body) VALUES ($1, $2, $3)
         ON CONFLICT (destination, contact_key) DO UPDATE SET body = excluded.body",
    )
    .bind(destination)
    .bind(contact_key)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn field_metadata(
    pool: &PgPool,
    account: &str,
) -> Result<Option<FieldMetadata>, StoreError> {
    let row = query("SELECT fetched_at_ms, body FROM field_metadata WHERE account = $1")
        .bind(account)
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(FieldMetadata {
            fetched_at_ms: r.try_get(0)?,
            body: r.try_get(1)?,
        })
    })
    .transpose()
}

pub(crate) async fn put_field_metadata(
    pool: &PgPool,
    account: &str,
    metadata: FieldMetadata,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO field_metadata (account, fetched_at_ms, body) VALUES ($1, $2, $3)
         ON CONFLICT (account) DO UPDATE
         SET fetched_at_ms = excluded.fetched_at_ms, body = excluded.body
         WHERE excluded.fetched_at_ms >= field_metadata.fetched_at_ms",
    )
    .bind(account)
    .bind(metadata.fetched_at_ms)
    .bind(metadata.body)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn record_calls(
    pool: &PgPool,
    account: &str,
    at_ms: i64,
    calls: u32,
) -> Result<(), StoreError> {
    let bucket = at_ms.div_euclid(1000) * 1000;
    // One row per account and second, added to atomically: every node spends the same budget.
    query(
        "INSERT INTO quota_ledger (account, bucket_ms, calls) VALUES ($1, $2, $3)
         ON CONFLICT (account, bucket_ms) DO UPDATE SET calls = quota_ledger.calls + excluded.calls",
    )
    .bind(account)
    .bind(bucket)
    .bind(i64::from(calls))
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn reserve_calls(
    pool: &PgPool,
    account: &str,
    at_ms: i64,
    calls: u32,
    minute_cap: u32,
    hour_cap: u32,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // One reservation per account at a time across every node: check-then-insert cannot
    // interleave, so N nodes together never pass the caps.
    query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(account)
        .execute(&mut *tx)
        .await?;
    let (minute, hour): (i64, i64) = sqlx_core::query_as::query_as(
        "SELECT coalesce(sum(calls) FILTER (WHERE bucket_ms >= $2), 0)::bigint,
                coalesce(sum(calls), 0)::bigint
         FROM quota_ledger WHERE account = $1 AND bucket_ms >= $3",
    )
    .bind(account)
    .bind(crate::reservation_windows(at_ms).0)
    .bind(crate::reservation_windows(at_ms).1)
    .fetch_one(&mut *tx)
    .await?;
    let calls64 = i64::from(calls);
    if minute + calls64 > i64::from(minute_cap) || hour + calls64 > i64::from(hour_cap) {
        tx.rollback().await?;
        return Ok(false);
    }
    let bucket = at_ms.div_euclid(1000) * 1000;
    query(
        "INSERT INTO quota_ledger (account, bucket_ms, calls) VALUES ($1, $2, $3)
         ON CONFLICT (account, bucket_ms) DO UPDATE SET calls = quota_ledger.calls + excluded.calls",
    )
    .bind(account)
    .bind(bucket)
    .bind(calls64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn calls_since(
    pool: &PgPool,
    account: &str,
    since_ms: i64,
) -> Result<u64, StoreError> {
    let total: i64 = query_scalar(
        "SELECT coalesce(sum(calls), 0)::bigint FROM quota_ledger
         WHERE account = $1 AND bucket_ms >= $2",
    )
    .bind(account)
    .bind(since_ms)
    .fetch_one(pool)
    .await?;
    Ok(to_u64(total))
}

/// Event `e` is stored under the messageId bound as `$param`: at one of the receive times its
/// dedup entries hold (`message_times`, migration 14), found on the events' receive-time index.
/// A macro, so that the statements that use it are built with `concat!`.
macro_rules! events_of_message {
    ($param:literal) => {
        concat!(
            "(e.received_at_ms, e.source, e.message_id) IN (
                 SELECT t.received_at_ms, t.source, t.message_id FROM message_times t
                 WHERE t.message_id = ",
            $param,
            ")"
        )
    };
}

pub(crate) async fn event_traces(
    pool: &PgPool,
    message_id: &str,
) -> Result<Vec<EventTrace>, StoreError> {
    // Four queries whatever the number of events, deliveries and attempts, all in one snapshot.
    let mut tx = pool.begin().await?;
    query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<PgRow> = query(concat!(
        "SELECT id, source, message_id, event_type, contact_key, timestamp_ms, received_at_ms, raw
         FROM events e WHERE ",
        events_of_message!("$1"),
        " ORDER BY id"
    ))
    .bind(message_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut events: Vec<EventTrace> = rows
        .iter()
        .map(|r| event_head(r).map(EventHead::into_trace))
        .collect::<SqlResult<_>>()?;
    if events.is_empty() {
        tx.commit().await?;
        return Ok(events);
    }
    let event_ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
    let rows: Vec<PgRow> = query(
        "SELECT d.id, d.event_id, d.destination, d.status, d.reason,
                CASE WHEN d.status = 'pending' THEN k.next_attempt_ms END
         FROM deliveries d
         LEFT JOIN contact_keys k
                ON k.destination = d.destination AND k.contact_key = d.contact_key
         WHERE d.event_id = ANY($1::bigint[]) ORDER BY d.id",
    )
    .bind(&event_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut deliveries: Vec<(i64, DeliveryTrace)> = Vec::with_capacity(rows.len());
    for r in &rows {
        let status: String = r.try_get(3)?;
        deliveries.push((
            r.try_get(1)?,
            DeliveryTrace {
                delivery_id: r.try_get(0)?,
                destination: r.try_get(2)?,
                status: parse_status(&status)?,
                reason: r.try_get(4)?,
                next_attempt_ms: r.try_get(5)?,
                attempts: Vec::new(),
                history: Vec::new(),
            },
        ));
    }
    let delivery_ids: Vec<i64> = deliveries.iter().map(|(_, d)| d.delivery_id).collect();
    let rows: Vec<PgRow> = query(
        "SELECT ad.delivery_id, a.at_ms, a.request_line, a.request_body, a.status,
                a.response_body, a.outcome,
                ARRAY(SELECT x.delivery_id FROM attempt_deliveries x
                      WHERE x.attempt_id = a.id ORDER BY x.delivery_id)
         FROM attempt_deliveries ad JOIN attempts a ON a.id = ad.attempt_id
         WHERE ad.delivery_id = ANY($1::bigint[])
         ORDER BY a.at_ms, a.id",
    )
    .bind(&delivery_ids)
    .fetch_all(&mut *tx)
    .await?;
    let past: Vec<PgRow> = query(
        "SELECT delivery_id, status, reason, attempts, finished_ms, reopened_ms, reopened_by
         FROM delivery_history WHERE delivery_id = ANY($1::bigint[]) ORDER BY id",
    )
    .bind(&delivery_ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut history: HashMap<i64, Vec<PastOutcome>> = HashMap::new();
    for r in &past {
        let status: String = r.try_get(1)?;
        let cause: String = r.try_get(6)?;
        history.entry(r.try_get(0)?).or_default().push(PastOutcome {
            status: parse_status(&status)?,
            reason: r.try_get(2)?,
            attempts: to_u32(r.try_get(3)?),
            finished_ms: r.try_get(4)?,
            reopened_ms: r.try_get(5)?,
            reopened_by: Reopen::parse(&cause)?,
        });
    }
    let mut attempts: HashMap<i64, Vec<Attempt>> = HashMap::new();
    for r in &rows {
        let status: Option<i64> = r.try_get(4)?;
        attempts.entry(r.try_get(0)?).or_default().push(Attempt {
            delivery_ids: r.try_get(7)?,
            at_ms: r.try_get(1)?,
            request_line: r.try_get(2)?,
            request_body: r.try_get(3)?,
            status: status.and_then(|s| u16::try_from(s).ok()),
            response_body: r.try_get(5)?,
            outcome: r.try_get(6)?,
        });
    }
    let mut by_event: HashMap<i64, Vec<DeliveryTrace>> = HashMap::new();
    for (event_id, mut d) in deliveries {
        d.attempts = attempts.remove(&d.delivery_id).unwrap_or_default();
        d.history = history.remove(&d.delivery_id).unwrap_or_default();
        by_event.entry(event_id).or_default().push(d);
    }
    for ev in &mut events {
        ev.deliveries = by_event.remove(&ev.event_id).unwrap_or_default();
    }
    Ok(events)
}

pub(crate) async fn finished_deliveries(
    pool: &PgPool,
    filter: &DeliveryFilter,
    after_id: i64,
    limit: usize,
) -> Result<Vec<FinishedDelivery>, StoreError> {
    let f = filter_sql(filter);
    let n = f.params.len();
    let sql = format!(
        "SELECT d.id, d.destination, e.source, d.status, e.raw
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.status IN ('delivered', 'skipped', 'dead'){} AND d.id > ${}
         ORDER BY d.id LIMIT ${}",
        f.clause,
        n + 1,
        n + 2
    );
    let rows: Vec<PgRow> = f
        .bind(query(AssertSqlSafe(sql)))
        .bind(after_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get(3)?;
            Ok(FinishedDelivery {
                delivery_id: r.try_get(0)?,
                destination: r.try_get(1)?,
                source: r.try_get(2)?,
                status: parse_status(&status)?,
                raw: r.try_get(4)?,
            })
        })
        .collect()
}

pub(crate) async fn dead_letters(
    pool: &PgPool,
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
        f.next_placeholder()
    );
    let rows: Vec<PgRow> = f
        .bind(query(AssertSqlSafe(sql)))
        .bind(limit_value(filter))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DeadLetter {
                delivery_id: r.try_get(0)?,
                destination: r.try_get(1)?,
                source: r.try_get(2)?,
                message_id: r.try_get(3)?,
                event_type: r.try_get(4)?,
                contact_key: r.try_get(5)?,
                reason: r.try_get(6)?,
                dead_at_ms: r.try_get(7)?,
                attempts: to_u32(r.try_get(8)?),
                reason_code: r.try_get(9)?,
            })
        })
        .collect::<SqlResult<_>>()
        .map_err(StoreError::from)
}

pub(crate) async fn forget_shadows(
    pool: &PgPool,
    destination: Option<&str>,
    contact_key: Option<&str>,
) -> Result<u64, StoreError> {
    let done = query(
        "DELETE FROM shadows
         WHERE ($1::text IS NOT NULL OR $2::text IS NOT NULL)
           AND ($1::text IS NULL OR destination = $1)
           AND ($2::text IS NULL OR contact_key = $2)",
    )
    .bind(destination)
    .bind(contact_key)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn contacts_matching(
    pool: &PgPool,
    filter: &DeliveryFilter,
) -> Result<Vec<(String, String)>, StoreError> {
    let f = filter_sql(filter);
    let sql = format!(
        "SELECT DISTINCT d.destination, d.contact_key
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE TRUE{}
         ORDER BY d.destination, d.contact_key",
        f.clause
    );
    let rows: Vec<PgRow> = f.bind(query(AssertSqlSafe(sql))).fetch_all(pool).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<SqlResult<_>>()
        .map_err(StoreError::from)
}

pub(crate) async fn events_without_delivery(
    pool: &PgPool,
    destination: &str,
    since_ms: i64,
    until_ms: i64,
    after_id: i64,
    limit: usize,
) -> Result<Vec<UnroutedEvent>, StoreError> {
    let rows: Vec<PgRow> = query(
        "SELECT e.id, e.source, e.contact_key, e.raw FROM events e
         WHERE e.received_at_ms >= $1 AND e.received_at_ms < $2 AND e.id > $3
           AND NOT EXISTS (SELECT 1 FROM deliveries d
                           WHERE d.event_id = e.id AND d.destination = $4)
         ORDER BY e.id LIMIT $5",
    )
    .bind(since_ms)
    .bind(until_ms)
    .bind(after_id)
    .bind(destination)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UnroutedEvent {
                event_id: r.try_get(0)?,
                source: r.try_get(1)?,
                contact_key: r.try_get(2)?,
                raw: r.try_get(3)?,
            })
        })
        .collect::<SqlResult<_>>()
        .map_err(StoreError::from)
}

pub(crate) async fn rejected(
    pool: &PgPool,
    limit: usize,
) -> Result<Vec<RejectedRecord>, StoreError> {
    let rows: Vec<PgRow> = query(
        "SELECT id, source, reason, received_at_ms, raw FROM rejected
         ORDER BY received_at_ms DESC, id DESC LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let raw: Vec<u8> = r.try_get(4)?;
            Ok(RejectedRecord {
                id: r.try_get(0)?,
                source: r.try_get(1)?,
                reason: r.try_get(2)?,
                received_at_ms: r.try_get(3)?,
                raw: String::from_utf8_lossy(&raw).into_owned(),
            })
        })
        .collect::<SqlResult<_>>()
        .map_err(StoreError::from)
}

pub(crate) async fn depths(pool: &PgPool) -> Result<Vec<QueueDepth>, StoreError> {
    let pending: Vec<(String, i64)> = sqlx_core::query_as::query_as(
        "SELECT destination, sum(pending)::BIGINT FROM contact_keys
         WHERE pending > 0 GROUP BY destination",
    )
    .fetch_all(pool)
    .await?;
    let dead: Vec<(String, i64)> = sqlx_core::query_as::query_as(counters::DEAD_PER_DESTINATION)
        .fetch_all(pool)
        .await?;
    Ok(merge_depths(pending, dead))
}

pub(crate) async fn kind_counts(pool: &PgPool) -> Result<Vec<KindCount>, StoreError> {
    let rows: Vec<(String, String, String, i64)> =
        sqlx_core::query_as::query_as(counters::KIND_COUNTS)
            .fetch_all(pool)
            .await?;
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
async fn pending_kinds(conn: &mut PgConnection) -> Result<Vec<KindFigures>, StoreError> {
    let kinds: Vec<(String, String, i64)> = sqlx_core::query_as::query_as(counters::PENDING_KINDS)
        .fetch_all(&mut *conn)
        .await?;
    let mut figures = Vec::with_capacity(kinds.len());
    for (destination, event_type, n) in kinds {
        let at: Option<i64> = query_scalar(counters::OLDEST_PENDING_OF_KIND)
            .bind(&destination)
            .bind(&event_type)
            .fetch_optional(&mut *conn)
            .await?;
        figures.push((destination, event_type, n, at));
    }
    Ok(figures)
}

pub(crate) async fn stats(pool: &PgPool) -> Result<QueueStats, StoreError> {
    // One snapshot for all figures, so that they add up.
    let mut tx = pool.begin().await?;
    query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // Counters and index ranges only: the cost follows the number of destinations, kinds and
    // reopened deliveries, not the number of deliveries stored.
    let events: i64 = query_scalar(counters::EVENTS_STORED)
        .fetch_one(&mut *tx)
        .await?;
    let rejected: i64 = query_scalar("SELECT count(*) FROM rejected")
        .fetch_one(&mut *tx)
        .await?;
    let counts: Vec<(String, String, i64)> = sqlx_core::query_as::query_as(counters::STATUS_COUNTS)
        .fetch_all(&mut *tx)
        .await?;
    let past: Vec<(String, String, i64)> = sqlx_core::query_as::query_as(
        "SELECT destination, status, count(*) FROM delivery_history GROUP BY destination, status",
    )
    .fetch_all(&mut *tx)
    .await?;
    let kinds = pending_kinds(&mut tx).await?;
    let keys: Vec<(String, i64, i64)> = sqlx_core::query_as::query_as(
        "SELECT destination, min(next_attempt_ms), count(*) FROM contact_keys
         WHERE pending > 0 GROUP BY destination",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut per: BTreeMap<String, DestinationStats> = BTreeMap::new();
    count_outcomes(&mut per, counts, past)?;
    for (destination, at) in oldest_pending(&kinds) {
        destination_stats(&mut per, &destination).oldest_pending_received_ms = Some(at);
    }
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

pub(crate) async fn prune(
    pool: &PgPool,
    events_before_ms: i64,
    dedup_before_ms: i64,
) -> Result<PruneOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *tx)
        .await?;
    // Deliveries and their attempt links go with the event (ON DELETE CASCADE).
    let events = query(
        "DELETE FROM events WHERE received_at_ms < $1 AND NOT EXISTS (
             SELECT 1 FROM deliveries d
             WHERE d.event_id = events.id AND d.status IN ('pending', 'dead'))",
    )
    .bind(events_before_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    query(
        "DELETE FROM attempts WHERE NOT EXISTS (
             SELECT 1 FROM attempt_deliveries ad WHERE ad.attempt_id = attempts.id)",
    )
    .execute(&mut *tx)
    .await?;
    // Same rule as the SQLite backend: an entry goes once its window has closed and no stored
    // event carries its messageId (past the window it no longer deduplicates either way). Events
    // are found under their receive times (`message_times`): a renewed time goes with its event,
    // and an entry stays while its messageId has one.
    query(
        "DELETE FROM dedup_renewed r WHERE NOT EXISTS (
             SELECT 1 FROM events e
             WHERE e.received_at_ms = r.received_at_ms AND e.source = r.source
               AND e.message_id = r.message_id)",
    )
    .execute(&mut *tx)
    .await?;
    let dedup_entries = query(
        "DELETE FROM dedup WHERE received_at_ms < $1
           AND NOT EXISTS (
             SELECT 1 FROM events e
             WHERE e.received_at_ms = dedup.received_at_ms AND e.source = dedup.source
               AND e.message_id = dedup.message_id)
           AND NOT EXISTS (
             SELECT 1 FROM dedup_renewed r
             WHERE r.message_id = dedup.message_id AND r.source = dedup.source)",
    )
    .bind(dedup_before_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    query(
        "DELETE FROM quota_ledger
         WHERE bucket_ms < (SELECT max(bucket_ms) FROM quota_ledger) - $1",
    )
    .bind(LEDGER_KEEP_MS)
    .execute(&mut *tx)
    .await?;
    // Keys left behind by a worker that died after settling everything but before releasing.
    query(
        "DELETE FROM contact_keys WHERE pending <= 0
           AND (lease_token IS NULL OR lease_until_ms < $1)",
    )
    .bind(events_before_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(PruneOutcome {
        events,
        dedup_entries,
    })
}

/// The listing's messageId condition: the traces' (`events_of_message!`).
const LISTING: BackendSql = BackendSql {
    message_match: events_of_message!("?"),
    least: "LEAST",
    scope: " WHERE e.received_at_ms / 3600000 = ?",
};

pub(crate) async fn list_events(
    pool: &PgPool,
    event_query: &EventQuery,
) -> Result<Vec<EventSummary>, StoreError> {
    let built = event_list_sql(event_query, &LISTING, None);
    let mut n = 0;
    let sql: String = built
        .sql
        .chars()
        .flat_map(|c| {
            if c == '?' {
                n += 1;
                format!("${n}").chars().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let mut q = query(AssertSqlSafe(sql));
    for p in built.params {
        q = match p {
            Param::Text(s) => q.bind(s),
            Param::Int(i) => q.bind(i),
        };
    }
    let mut tx = pool.begin().await?;
    query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<PgRow> = q.fetch_all(&mut *tx).await?;
    let mut events: Vec<EventSummary> = rows
        .iter()
        .map(|r| event_head(r).map(EventHead::into_summary))
        .collect::<SqlResult<_>>()?;
    let ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
    let rows: Vec<PgRow> = query(
        "SELECT event_id, destination, status, reason FROM deliveries
         WHERE event_id = ANY($1::bigint[]) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut by_event: HashMap<i64, Vec<DeliveryState>> = HashMap::new();
    for r in &rows {
        let status: String = r.try_get(2)?;
        by_event
            .entry(r.try_get(0)?)
            .or_default()
            .push(DeliveryState {
                destination: r.try_get(1)?,
                status: parse_status(&status)?,
                reason: r.try_get(3)?,
            });
    }
    for ev in &mut events {
        ev.deliveries = by_event.remove(&ev.event_id).unwrap_or_default();
    }
    Ok(events)
}

pub(crate) async fn backlog(pool: &PgPool) -> Result<Vec<Backlog>, StoreError> {
    let keys: Vec<KeyFigures> = query(
        "SELECT destination, sum(pending)::bigint, count(*), min(next_attempt_ms)
         FROM contact_keys WHERE pending > 0 GROUP BY destination",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
    .collect::<SqlResult<_>>()?;
    let dead: Vec<(String, i64)> = query(counters::DEAD_PER_DESTINATION)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<SqlResult<_>>()?;
    let mut conn = pool.acquire().await?;
    Ok(merge_backlog(keys, dead, pending_kinds(&mut conn).await?))
}

pub(crate) async fn events_per_minute(
    pool: &PgPool,
    since_ms: i64,
) -> Result<Vec<MinuteCount>, StoreError> {
    let rows: Vec<(i64, i64)> = query(
        "SELECT minute_ms, events FROM ingest_minutes WHERE minute_ms >= $1 ORDER BY minute_ms",
    )
    .bind(since_ms.div_euclid(60_000) * 60_000)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<SqlResult<_>>()?;
    Ok(minute_counts(rows))
}

pub(crate) async fn calls_per_minute(
    pool: &PgPool,
    account: &str,
    since_ms: i64,
) -> Result<Vec<MinuteCount>, StoreError> {
    let rows: Vec<(i64, i64)> = query(
        "SELECT bucket_ms, calls FROM quota_ledger WHERE account = $1 AND bucket_ms >= $2
         ORDER BY bucket_ms",
    )
    .bind(account)
    .bind(since_ms)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<SqlResult<_>>()?;
    Ok(minute_counts(rows))
}

pub(crate) async fn set_pause(
    pool: &PgPool,
    destination: &str,
    pause: Option<DestinationPause>,
) -> Result<(), StoreError> {
    match pause {
        Some(p) => {
            query(
                "INSERT INTO destination_pauses (destination, reason, since_ms, until_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (destination) DO UPDATE
                 SET reason = excluded.reason, until_ms = excluded.until_ms",
            )
            .bind(destination)
            .bind(p.reason)
            .bind(p.since_ms)
            .bind(p.until_ms)
            .execute(pool)
            .await?;
        }
        None => {
            query("DELETE FROM destination_pauses WHERE destination = $1")
                .bind(destination)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

pub(crate) async fn clear_expired_pauses(pool: &PgPool, now_ms: i64) -> Result<u64, StoreError> {
    // One statement: a pause renewed by its node since it was read is not removed.
    let done = query("DELETE FROM destination_pauses WHERE until_ms < $1")
        .bind(now_ms)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn pauses(pool: &PgPool) -> Result<Vec<DestinationPause>, StoreError> {
    query(
        "SELECT destination, reason, since_ms, until_ms FROM destination_pauses
         ORDER BY destination",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(DestinationPause {
            destination: r.try_get(0)?,
            reason: r.try_get(1)?,
            since_ms: r.try_get(2)?,
            until_ms: r.try_get(3)?,
        })
    })
    .collect::<SqlResult<_>>()
    .map_err(StoreError::from)
}

pub(crate) async fn delivery_messages(
    pool: &PgPool,
    delivery_ids: &[i64],
) -> Result<Vec<(i64, String)>, StoreError> {
    query(
        "SELECT d.id, e.message_id FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.id = ANY($1::bigint[]) ORDER BY d.id",
    )
    .bind(delivery_ids)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<SqlResult<_>>()
    .map_err(StoreError::from)
}

/// One event row in the shared column order (see [`EventHead`]).
fn event_head(r: &PgRow) -> SqlResult<EventHead> {
    Ok(EventHead {
        event_id: r.try_get(0)?,
        source: r.try_get(1)?,
        message_id: r.try_get(2)?,
        event_type: r.try_get(3)?,
        contact_key: r.try_get(4)?,
        timestamp_ms: r.try_get(5)?,
        received_at_ms: r.try_get(6)?,
        raw: r.try_get(7)?,
    })
}
