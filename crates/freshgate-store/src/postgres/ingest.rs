//! Ingest: one append = one transaction of a few `UNNEST` array statements, whatever its size.
//!
//! Order inside the transaction, and why:
//! 1. duplicates within the batch are dropped in memory (the first copy wins);
//! 2. the `dedup` upsert decides, atomically against every other node, which events are new:
//!    a row is inserted, or replaced when the stored one is older than the window; the rows it
//!    returns are the accepted events, the others are duplicates;
//! 3. the contact keys of the accepted pending deliveries are upserted *before* the events are
//!    inserted: that row lock serialises appends of one key, so event ids (the FIFO order) of a
//!    key are allocated in commit order and a worker never sees a later event before an earlier
//!    one commits;
//! 4. events, deliveries and rejected inputs are inserted.
//!
//! Keys and dedup entries are written in sorted order so that concurrent appends lock rows in the
//! same order and do not deadlock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgPool, PgRow};

use crate::{AppendBatch, AppendOutcome, NewEvent, StoreError};

/// What a new contact key row starts with: due at the receive time of its first event.
struct KeyAdd {
    due_ms: i64,
    pending: i64,
}

pub(crate) async fn append(
    pool: &PgPool,
    batch: &AppendBatch,
) -> Result<AppendOutcome, StoreError> {
    let mut outcome = AppendOutcome::default();
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut candidates: Vec<&NewEvent> = Vec::with_capacity(batch.events.len());
    for ev in &batch.events {
        if seen.insert((ev.source.as_str(), ev.message_id.as_str())) {
            candidates.push(ev);
        } else {
            outcome.duplicates += 1;
        }
    }
    if candidates.is_empty() && batch.rejected.is_empty() {
        return Ok(outcome);
    }

    let mut tx = pool.begin().await?;

    let accepted: Vec<&NewEvent> = if candidates.is_empty() {
        Vec::new()
    } else {
        let mut sorted = candidates.clone();
        sorted.sort_by(|a, b| (&a.source, &a.message_id).cmp(&(&b.source, &b.message_id)));
        let rows: Vec<PgRow> = query(
            "INSERT INTO dedup (source, message_id, received_at_ms)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (source, message_id) DO UPDATE
                 SET received_at_ms = excluded.received_at_ms
                 WHERE dedup.received_at_ms < excluded.received_at_ms - $4
             RETURNING source, message_id",
        )
        .bind(sorted.iter().map(|e| e.source.clone()).collect::<Vec<_>>())
        .bind(
            sorted
                .iter()
                .map(|e| e.message_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(sorted.iter().map(|e| e.received_at_ms).collect::<Vec<_>>())
        .bind(batch.dedup_window_ms)
        .fetch_all(&mut *tx)
        .await?;
        let fresh: HashSet<(String, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx_core::Error>>()?;
        candidates
            .into_iter()
            .filter(|e| fresh.contains(&(e.source.clone(), e.message_id.clone())))
            .collect()
    };
    // In-batch copies and events the dedup index refused.
    outcome.duplicates = batch.events.len() - accepted.len();
    outcome.accepted = accepted.len();

    if !accepted.is_empty() {
        upsert_keys(&mut tx, &accepted).await?;
        insert_events(&mut tx, &accepted).await?;
        record_emails(&mut tx, &accepted).await?;
    }

    if !batch.rejected.is_empty() {
        let r = &batch.rejected;
        query(
            "INSERT INTO rejected (source, raw, reason, received_at_ms)
             SELECT source, raw, reason, received_at_ms
             FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::bigint[])
                  WITH ORDINALITY AS u(source, raw, reason, received_at_ms, ord)
             ORDER BY ord",
        )
        .bind(r.iter().map(|x| x.source.clone()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.raw.clone()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.reason.clone()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.received_at_ms).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        outcome.rejected = r.len();
    }

    tx.commit().await?;
    Ok(outcome)
}

/// Count the accepted pending deliveries per (destination, key) and upsert the keys: a new key is
/// due at its first event's receive time; an existing key keeps its schedule (a key waiting for a
/// retry must not become due earlier because a new event arrived).
async fn upsert_keys(
    tx: &mut sqlx_postgres::PgConnection,
    accepted: &[&NewEvent],
) -> Result<(), StoreError> {
    let mut keys: BTreeMap<(&str, &str), KeyAdd> = BTreeMap::new();
    for ev in accepted {
        for d in ev.deliveries.iter().filter(|d| d.skip_reason.is_none()) {
            keys.entry((d.destination.as_str(), ev.contact_key.as_str()))
                .or_insert(KeyAdd {
                    due_ms: ev.received_at_ms,
                    pending: 0,
                })
                .pending += 1;
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    query(
        "INSERT INTO contact_keys (destination, contact_key, next_attempt_ms, pending)
         SELECT destination, contact_key, due, n
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
              AS u(destination, contact_key, due, n)
         ORDER BY destination, contact_key
         ON CONFLICT (destination, contact_key)
             DO UPDATE SET pending = contact_keys.pending + excluded.pending",
    )
    .bind(
        keys.keys()
            .map(|(d, _)| (*d).to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(
        keys.keys()
            .map(|(_, k)| (*k).to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(keys.values().map(|k| k.due_ms).collect::<Vec<_>>())
    .bind(keys.values().map(|k| k.pending).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Record the (email, contact) pairs of the accepted identifies for the listing's email search.
/// Sorted, like the keys, so that concurrent appends take the same rows in the same order; a
/// known pair is skipped without writing a row version.
async fn record_emails(
    tx: &mut sqlx_postgres::PgConnection,
    accepted: &[&NewEvent],
) -> Result<(), StoreError> {
    let pairs: BTreeSet<(String, &str)> = accepted
        .iter()
        .filter_map(|ev| {
            ev.email
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(|e| (crate::email_key(e), ev.contact_key.as_str()))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    query(
        "INSERT INTO contact_emails (email, contact_key)
         SELECT email, contact_key FROM UNNEST($1::text[], $2::text[]) AS u(email, contact_key)
         ORDER BY email, contact_key
         ON CONFLICT DO NOTHING",
    )
    .bind(pairs.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>())
    .bind(
        pairs
            .iter()
            .map(|(_, k)| (*k).to_owned())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Insert the events in batch order (ids ascend with it) and one delivery row per destination.
async fn insert_events(
    tx: &mut sqlx_postgres::PgConnection,
    accepted: &[&NewEvent],
) -> Result<(), StoreError> {
    let rows: Vec<PgRow> = query(
        "INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                             received_at_ms, raw)
         SELECT source, message_id, event_type, contact_key, timestamp_ms, received_at_ms, raw
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                     $7::bytea[])
              WITH ORDINALITY
              AS u(source, message_id, event_type, contact_key, timestamp_ms, received_at_ms,
                   raw, ord)
         ORDER BY ord
         RETURNING id, source, message_id",
    )
    .bind(
        accepted
            .iter()
            .map(|e| e.source.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        accepted
            .iter()
            .map(|e| e.message_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        accepted
            .iter()
            .map(|e| e.event_type.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        accepted
            .iter()
            .map(|e| e.contact_key.clone())
            .collect::<Vec<_>>(),
    )
    .bind(accepted.iter().map(|e| e.timestamp_ms).collect::<Vec<_>>())
    .bind(
        accepted
            .iter()
            .map(|e| e.received_at_ms)
            .collect::<Vec<_>>(),
    )
    .bind(accepted.iter().map(|e| e.raw.clone()).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    // (source, message_id) is unique among accepted events: map the returned ids back by it
    // rather than trusting RETURNING's row order.
    let mut ids: HashMap<(String, String), i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        ids.insert((r.try_get(1)?, r.try_get(2)?), r.try_get(0)?);
    }
    let mut event_ids = Vec::new();
    let mut destinations = Vec::new();
    let mut contact_keys = Vec::new();
    let mut event_types = Vec::new();
    let mut statuses = Vec::new();
    let mut reasons: Vec<Option<String>> = Vec::new();
    let mut codes: Vec<Option<String>> = Vec::new();
    let mut finished: Vec<Option<i64>> = Vec::new();
    for ev in accepted {
        let id = *ids
            .get(&(ev.source.clone(), ev.message_id.clone()))
            .ok_or_else(|| {
                StoreError::Database(format!(
                    "event {}/{} was inserted but its id did not come back",
                    ev.source, ev.message_id
                ))
            })?;
        for d in &ev.deliveries {
            event_ids.push(id);
            destinations.push(d.destination.clone());
            contact_keys.push(ev.contact_key.clone());
            event_types.push(ev.event_type.clone());
            match &d.skip_reason {
                Some(reason) => {
                    statuses.push("skipped");
                    reasons.push(Some(reason.clone()));
                    codes.push(d.skip_code.clone());
                    finished.push(Some(ev.received_at_ms));
                }
                None => {
                    statuses.push("pending");
                    reasons.push(None);
                    codes.push(None);
                    finished.push(None);
                }
            }
        }
    }
    if event_ids.is_empty() {
        return Ok(());
    }
    query(
        "INSERT INTO deliveries (event_id, destination, contact_key, status, reason, finished_ms,
                                 reason_code, event_type)
         SELECT event_id, destination, contact_key, status, reason, finished_ms, reason_code,
                event_type
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                     $7::text[], $8::text[])
              WITH ORDINALITY
              AS u(event_id, destination, contact_key, status, reason, finished_ms, reason_code,
                   event_type, ord)
         ORDER BY ord",
    )
    .bind(event_ids)
    .bind(destinations)
    .bind(contact_keys)
    .bind(statuses)
    .bind(reasons)
    .bind(finished)
    .bind(codes)
    .bind(event_types)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
