//! Delivery across nodes: contact-key leases, per-key FIFO reads, settlement, and putting finished
//! deliveries back to pending (requeue, replay) with their outcome kept in their history.
//!
//! A node leases keys in one statement (`SELECT … FOR UPDATE SKIP LOCKED` + `UPDATE`, its own
//! short transaction): keys another node is leasing at that instant are skipped, not waited for,
//! and a key whose lease is live is never picked, so two nodes never hold one key at once while
//! leases are valid (every node passes its clock as `now_ms`). The deliveries are read outside any
//! transaction. Settlement runs in a second transaction that locks the key row and checks the
//! token first: if the lease expired and was taken over meanwhile, nothing is written
//! (`LeaseLost`).

use std::collections::BTreeMap;

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_postgres::{PgConnection, PgPool, PgRow};

use super::filter::{filter_sql, limit_value};
use crate::{
    Attempt, ContactLease, DeliveryFilter, DeliveryId, DeliveryStatus, LateDelivery,
    PendingDelivery, Reopen, Settlement, StoreError,
};

/// Advisory lock key (transaction scoped) that serialises `reopen` and `prune`: prune decides
/// which events have no pending delivery left, and a concurrent reopen could make one pending
/// again between that decision and the delete.
pub(crate) const MAINTENANCE_LOCK: i64 = 0x6672_6573_6867_6174; // "freshgat"

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn lease_lost(lease: &ContactLease) -> StoreError {
    StoreError::LeaseLost {
        destination: lease.destination.clone(),
        contact_key: lease.contact_key.clone(),
    }
}

pub(crate) async fn lease_contacts(
    pool: &PgPool,
    destination: &str,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
    max: usize,
) -> Result<Vec<ContactLease>, StoreError> {
    let until_ms = now_ms.saturating_add(lease_ms);
    // Tokens come from the server (`gen_random_uuid`, PostgreSQL 13+): unique across nodes and
    // restarts without any coordination between them.
    let rows: Vec<PgRow> = query(
        "WITH due AS (
             SELECT destination, contact_key FROM contact_keys
             WHERE destination = $1 AND pending > 0 AND next_attempt_ms <= $2
               AND (lease_token IS NULL OR lease_until_ms < $2)
             ORDER BY next_attempt_ms, contact_key
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE contact_keys k
            SET lease_owner = $4, lease_token = gen_random_uuid()::text, lease_until_ms = $5
           FROM due
          WHERE k.destination = due.destination AND k.contact_key = due.contact_key
         RETURNING k.contact_key, k.lease_token, k.next_attempt_ms",
    )
    .bind(destination)
    .bind(now_ms)
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .bind(owner)
    .bind(until_ms)
    .fetch_all(pool)
    .await?;
    let mut picked: Vec<(i64, ContactLease)> = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get(2)?,
                ContactLease {
                    destination: destination.to_owned(),
                    contact_key: r.try_get(0)?,
                    token: r.try_get(1)?,
                    until_ms,
                },
            ))
        })
        .collect::<Result<_, sqlx_core::Error>>()?;
    // RETURNING has no defined order: restore "due earliest first".
    picked.sort_by(|(a_due, a), (b_due, b)| (a_due, &a.contact_key).cmp(&(b_due, &b.contact_key)));
    Ok(picked.into_iter().map(|(_, l)| l).collect())
}

/// `Ok` if `lease` is the live lease of its key. With `lock`, the key row stays locked until the
/// transaction ends, so the lease cannot be taken over before the caller commits.
async fn check_lease(
    conn: &mut PgConnection,
    lease: &ContactLease,
    lock: bool,
) -> Result<(), StoreError> {
    let sql = if lock {
        "SELECT lease_token FROM contact_keys WHERE destination = $1 AND contact_key = $2
         FOR UPDATE"
    } else {
        "SELECT lease_token FROM contact_keys WHERE destination = $1 AND contact_key = $2"
    };
    let token: Option<Option<String>> = sqlx_core::query_scalar::query_scalar(sql)
        .bind(&lease.destination)
        .bind(&lease.contact_key)
        .fetch_optional(&mut *conn)
        .await?;
    if token.flatten().as_deref() == Some(lease.token.as_str()) {
        Ok(())
    } else {
        Err(lease_lost(lease))
    }
}

pub(crate) async fn pending_for(
    pool: &PgPool,
    lease: &ContactLease,
    limit: usize,
) -> Result<Vec<PendingDelivery>, StoreError> {
    let mut conn = pool.acquire().await?;
    check_lease(&mut conn, lease, false).await?;
    let rows: Vec<PgRow> = query(
        "SELECT d.id, d.event_id, e.source, e.message_id, e.event_type, e.timestamp_ms,
                e.received_at_ms, d.attempts, d.first_attempt_ms, e.raw
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.destination = $1 AND d.contact_key = $2 AND d.status = 'pending'
         ORDER BY d.event_id, d.id
         LIMIT $3",
    )
    .bind(&lease.destination)
    .bind(&lease.contact_key)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingDelivery {
                delivery_id: r.try_get(0)?,
                event_id: r.try_get(1)?,
                source: r.try_get(2)?,
                message_id: r.try_get(3)?,
                event_type: r.try_get(4)?,
                timestamp_ms: r.try_get(5)?,
                received_at_ms: r.try_get(6)?,
                attempts: to_u32(r.try_get(7)?),
                first_attempt_ms: r.try_get(8)?,
                raw: r.try_get(9)?,
            })
        })
        .collect::<Result<_, sqlx_core::Error>>()
        .map_err(StoreError::from)
}

pub(crate) async fn settle(
    pool: &PgPool,
    lease: &ContactLease,
    now_ms: i64,
    settlements: &[(DeliveryId, Settlement)],
    attempt: Option<&Attempt>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    check_lease(&mut tx, lease, true).await?;
    // An attempt that names no delivery is taken to cover every delivery settled with it.
    let covered: Vec<DeliveryId> = match attempt {
        Some(a) if a.delivery_ids.is_empty() => settlements.iter().map(|(id, _)| *id).collect(),
        Some(a) => a.delivery_ids.clone(),
        None => Vec::new(),
    };
    if let Some(a) = attempt {
        let attempt_id: i64 = sqlx_core::query_scalar::query_scalar(
            "INSERT INTO attempts (at_ms, request_line, request_body, status, response_body, outcome)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(a.at_ms)
        .bind(&a.request_line)
        .bind(&a.request_body)
        .bind(a.status.map(i64::from))
        .bind(&a.response_body)
        .bind(&a.outcome)
        .fetch_one(&mut *tx)
        .await?;
        // Through a SELECT so that an unknown delivery id is skipped, not a foreign-key error.
        query(
            "INSERT INTO attempt_deliveries (attempt_id, delivery_id)
             SELECT $1, id FROM deliveries WHERE id = ANY($2::bigint[])
             ON CONFLICT DO NOTHING",
        )
        .bind(attempt_id)
        .bind(&covered)
        .execute(&mut *tx)
        .await?;
    }
    let attempt_at = attempt.map_or(now_ms, |a| a.at_ms);
    let mut finished: i64 = 0;
    let mut retry_at: Option<i64> = None;
    // One statement per settlement, exactly as the SQLite backend applies them: a settlement
    // list is one coalesced exchange, a handful of rows.
    for (id, settlement) in settlements {
        let counted = i64::from(attempt.is_some() && covered.contains(id));
        let changed = match settlement {
            Settlement::Retry { at_ms, error } => {
                let n = query(
                    "UPDATE deliveries SET attempts = attempts + 1,
                         first_attempt_ms = coalesce(first_attempt_ms, $1), reason = $2
                     WHERE id = $3 AND destination = $4 AND contact_key = $5
                       AND status = 'pending'",
                )
                .bind(attempt_at)
                .bind(error)
                .bind(id)
                .bind(&lease.destination)
                .bind(&lease.contact_key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
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
                let n = query(
                    "UPDATE deliveries SET status = $1, reason = $2, finished_ms = $3,
                         attempts = attempts + $4,
                         first_attempt_ms = CASE WHEN $4 > 0
                             THEN coalesce(first_attempt_ms, $5) ELSE first_attempt_ms END,
                         reason_code = $9
                     WHERE id = $6 AND destination = $7 AND contact_key = $8
                       AND status = 'pending'",
                )
                .bind(status.as_str())
                .bind(reason)
                .bind(now_ms)
                .bind(counted)
                .bind(attempt_at)
                .bind(id)
                .bind(&lease.destination)
                .bind(&lease.contact_key)
                .bind(code)
                .execute(&mut *tx)
                .await?
                .rows_affected();
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
    query(
        "UPDATE contact_keys SET pending = pending - $1,
             next_attempt_ms = coalesce($2::bigint, next_attempt_ms)
         WHERE destination = $3 AND contact_key = $4",
    )
    .bind(finished)
    .bind(retry_at)
    .bind(&lease.destination)
    .bind(&lease.contact_key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn release(
    pool: &PgPool,
    lease: &ContactLease,
    not_before_ms: Option<i64>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // A stale token releases nothing: the key belongs to whoever took it over.
    query(
        "UPDATE contact_keys SET lease_owner = NULL, lease_token = NULL, lease_until_ms = NULL,
             next_attempt_ms = greatest(next_attempt_ms, coalesce($1::bigint, next_attempt_ms))
         WHERE destination = $2 AND contact_key = $3 AND lease_token = $4",
    )
    .bind(not_before_ms)
    .bind(&lease.destination)
    .bind(&lease.contact_key)
    .bind(&lease.token)
    .execute(&mut *tx)
    .await?;
    // A concurrent append that adds work to this key either commits first (pending > 0: kept) or
    // waits for this delete and then inserts the key afresh (ON CONFLICT sees no row).
    query(
        "DELETE FROM contact_keys
         WHERE destination = $1 AND contact_key = $2 AND pending <= 0 AND lease_token IS NULL",
    )
    .bind(&lease.destination)
    .bind(&lease.contact_key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The statement that reopens the finished deliveries among the ids `targets` selects: each
/// one's outcome is appended to its history, then it is made pending (attempts reset); returns
/// `(destination, contact_key)` per delivery reopened. `now` and `cause` are placeholders.
fn reopen_sql(targets: &str, now: &str, cause: &str) -> String {
    format!(
        "WITH target AS ({targets}),
              old AS (
                  SELECT d.id, d.destination, d.status, d.reason, d.attempts, d.finished_ms
                  FROM deliveries d JOIN target t ON t.id = d.id
                  WHERE d.status IN ('delivered', 'skipped', 'dead')
                  ORDER BY d.id
                  FOR UPDATE OF d),
              archived AS (
                  INSERT INTO delivery_history (delivery_id, destination, status, reason,
                                                attempts, finished_ms, reopened_ms, reopened_by)
                  SELECT id, destination, status, reason, attempts, finished_ms, {now}, {cause}
                  FROM old)
         UPDATE deliveries d SET status = 'pending', attempts = 0, reason = NULL,
             reason_code = NULL, first_attempt_ms = NULL, finished_ms = NULL
         FROM old WHERE d.id = old.id
         RETURNING d.destination, d.contact_key"
    )
}

/// Put the dead letters matching `filter` back to pending (see [`reopen_sql`]), their keys due
/// at `now_ms` at the latest.
pub(crate) async fn requeue_dead(
    pool: &PgPool,
    filter: &DeliveryFilter,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let f = filter_sql(filter);
    let n = f.params.len();
    let targets = format!(
        "SELECT d.id FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.status = 'dead'{clause} ORDER BY d.id LIMIT ${limit}",
        clause = f.clause,
        limit = n + 1,
    );
    let sql = reopen_sql(&targets, &format!("${}", n + 2), &format!("${}", n + 3));
    let mut tx = pool.begin().await?;
    query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *tx)
        .await?;
    let rows: Vec<PgRow> = f
        .bind(query(AssertSqlSafe(sql)))
        .bind(limit_value(filter))
        .bind(now_ms)
        .bind(Reopen::DeadLetterReplay.as_str())
        .fetch_all(&mut *tx)
        .await?;
    add_pending_keys(&mut tx, &rows, now_ms).await?;
    tx.commit().await?;
    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
}

/// See [`crate::Store::reopen`].
pub(crate) async fn reopen(
    pool: &PgPool,
    delivery_ids: &[DeliveryId],
    cause: Reopen,
    now_ms: i64,
) -> Result<u64, StoreError> {
    if delivery_ids.is_empty() {
        return Ok(0);
    }
    let sql = reopen_sql("SELECT unnest($1::bigint[]) AS id", "$2", "$3");
    let mut tx = pool.begin().await?;
    query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *tx)
        .await?;
    let rows: Vec<PgRow> = query(AssertSqlSafe(sql))
        .bind(delivery_ids)
        .bind(now_ms)
        .bind(cause.as_str())
        .fetch_all(&mut *tx)
        .await?;
    add_pending_keys(&mut tx, &rows, now_ms).await?;
    tx.commit().await?;
    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
}

/// Count the pending deliveries of `rows` (destination, contact_key) on their keys, creating
/// each key due at `now_ms` or moving it to `now_ms` if that is earlier.
async fn add_pending_keys(
    tx: &mut PgConnection,
    rows: impl IntoIterator<Item = &PgRow>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut keys: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in rows {
        *keys.entry((r.try_get(0)?, r.try_get(1)?)).or_insert(0) += 1;
    }
    if !keys.is_empty() {
        // Sorted, like ingest, so that concurrent writers lock key rows in one order.
        query(
            "INSERT INTO contact_keys (destination, contact_key, next_attempt_ms, pending)
             SELECT destination, contact_key, $3, n
             FROM UNNEST($1::text[], $2::text[], $4::bigint[]) AS u(destination, contact_key, n)
             ORDER BY destination, contact_key
             ON CONFLICT (destination, contact_key) DO UPDATE
                 SET pending = contact_keys.pending + excluded.pending,
                     next_attempt_ms = least(contact_keys.next_attempt_ms,
                                             excluded.next_attempt_ms)",
        )
        .bind(keys.keys().map(|(d, _)| d.clone()).collect::<Vec<_>>())
        .bind(keys.keys().map(|(_, k)| k.clone()).collect::<Vec<_>>())
        .bind(now_ms)
        .bind(keys.values().copied().collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// See [`crate::Store::add_deliveries`].
pub(crate) async fn add_deliveries(
    pool: &PgPool,
    deliveries: &[LateDelivery],
    now_ms: i64,
) -> Result<u64, StoreError> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *tx)
        .await?;
    // Counted in the same statement (migration 15), as the append counts its own.
    let rows: Vec<PgRow> = query(concat!(
        "WITH added AS (
             INSERT INTO deliveries (event_id, destination, contact_key, status, reason,
                                     finished_ms, reason_code, event_type)
             SELECT u.event_id, u.destination, u.contact_key,
                    CASE WHEN u.reason IS NULL THEN 'pending' ELSE 'skipped' END, u.reason,
                    CASE WHEN u.reason IS NULL THEN NULL ELSE $5::bigint END, u.reason_code,
                    coalesce((SELECT e.event_type FROM events e WHERE e.id = u.event_id), '')
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $6::text[])
                  WITH ORDINALITY AS u(event_id, destination, contact_key, reason, reason_code,
                                       ord)
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.event_id = u.event_id AND d.destination = u.destination)
             ORDER BY ord
             RETURNING destination, contact_key, status, event_type
         ),
         counted AS (",
        count_new_deliveries!("added"),
        ")
         SELECT destination, contact_key, status FROM added",
    ))
    .bind(deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>())
    .bind(
        deliveries
            .iter()
            .map(|d| d.delivery.destination.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        deliveries
            .iter()
            .map(|d| d.contact_key.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        deliveries
            .iter()
            .map(|d| d.delivery.skip_reason.clone())
            .collect::<Vec<_>>(),
    )
    .bind(now_ms)
    .bind(
        deliveries
            .iter()
            .map(|d| d.delivery.skip_code.clone())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut pending = Vec::with_capacity(rows.len());
    for r in &rows {
        if r.try_get::<String, _>(2)? == "pending" {
            pending.push(r);
        }
    }
    add_pending_keys(&mut tx, pending, now_ms).await?;
    tx.commit().await?;
    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
}
