//! Ingest: one append = one transaction of two statements, whatever its size.
//!
//! Order inside the transaction, and why:
//! 1. duplicates within the batch are dropped in memory (the first copy wins);
//! 2. the contact keys that will get pending deliveries are created or row-locked, in sorted
//!    order, *before* any event id is allocated: that lock serialises appends of one key across
//!    nodes, so a key's event ids (its FIFO order) follow commit order and a worker never sees a
//!    later event before an earlier one commits;
//! 3. ONE multi-row statement decides dedup and writes everything else: the `dedup` upsert
//!    (rows in sorted order, so concurrent appends lock them in the same order and do not
//!    deadlock) returns the new events, and the same statement inserts those events in batch
//!    order (their ids ascend with it), their deliveries, the batch's rejected inputs, and adds
//!    the pending counts to the keys.
//!
//! The commit is the acknowledgement: `append` returns after it. Two round trips besides BEGIN
//! and COMMIT, against one per table before (dedup, keys, events, deliveries, rejected);
//! concurrent appends of one node still share the server's WAL flushes, as PostgreSQL groups the
//! commits that arrive together. (Grouping several appends into one transaction in the node,
//! with writer tasks and a queue, was measured slower on this machine: issue 15's notes.)

use std::collections::{BTreeMap, HashSet};

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgConnection, PgPool};

use crate::{AppendBatch, AppendOutcome, NewEvent, StoreError};

pub(crate) async fn append(
    pool: &PgPool,
    batch: &AppendBatch,
) -> Result<AppendOutcome, StoreError> {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let candidates: Vec<&NewEvent> = batch
        .events
        .iter()
        .filter(|ev| seen.insert((ev.source.as_str(), ev.message_id.as_str())))
        .collect();
    if candidates.is_empty() && batch.rejected.is_empty() {
        return Ok(AppendOutcome {
            duplicates: batch.events.len(),
            ..AppendOutcome::default()
        });
    }
    let mut tx = pool.begin().await?;
    lock_keys(&mut tx, &candidates).await?;
    let accepted = write_batch(&mut tx, &candidates, batch).await?;
    tx.commit().await?;
    Ok(AppendOutcome {
        accepted,
        // In-batch copies and events the dedup index refused.
        duplicates: batch.events.len() - accepted,
        rejected: batch.rejected.len(),
    })
}

/// Create (due at their first event's receive time) or row-lock, in sorted order, the keys that
/// the candidates' pending deliveries will count on. A new key starts with no pending work and a
/// key's schedule is left alone (a key waiting for a retry must not become due earlier because a
/// new event arrived); a key whose every event turns out a duplicate is left with nothing
/// pending, which `prune` removes.
async fn lock_keys(tx: &mut PgConnection, candidates: &[&NewEvent]) -> Result<(), StoreError> {
    let mut keys: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for ev in candidates {
        for d in ev.deliveries.iter().filter(|d| d.skip_reason.is_none()) {
            keys.entry((d.destination.as_str(), ev.contact_key.as_str()))
                .or_insert(ev.received_at_ms);
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    query(
        "INSERT INTO contact_keys (destination, contact_key, next_attempt_ms, pending)
         SELECT destination, contact_key, due, 0
         FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS u(destination, contact_key, due)
         ORDER BY destination, contact_key
         ON CONFLICT (destination, contact_key) DO UPDATE SET pending = contact_keys.pending",
    )
    .bind(keys.keys().map(|(d, _)| *d).collect::<Vec<_>>())
    .bind(keys.keys().map(|(_, k)| *k).collect::<Vec<_>>())
    .bind(keys.values().copied().collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Step 3: the one statement. Returns how many candidates were new.
async fn write_batch(
    tx: &mut PgConnection,
    candidates: &[&NewEvent],
    batch: &AppendBatch,
) -> Result<usize, StoreError> {
    // Candidates go in sorted by (source, messageId) for the dedup upsert's lock order; `ord`
    // (the place in the batch) gives the events their ids in batch order.
    let mut sorted: Vec<usize> = (0..candidates.len()).collect();
    sorted.sort_by(|&a, &b| {
        let (a, b) = (candidates[a], candidates[b]);
        (&a.source, &a.message_id).cmp(&(&b.source, &b.message_id))
    });
    let ord = |i: usize| i64::try_from(i).unwrap_or(i64::MAX);
    let mut d_ord = Vec::new();
    let mut d_seq = Vec::new();
    let mut d_destination = Vec::new();
    let mut d_reason: Vec<Option<&str>> = Vec::new();
    for (i, ev) in candidates.iter().enumerate() {
        for (seq, d) in ev.deliveries.iter().enumerate() {
            d_ord.push(ord(i));
            d_seq.push(ord(seq));
            d_destination.push(d.destination.as_str());
            d_reason.push(d.skip_reason.as_deref());
        }
    }
    let rejected = &batch.rejected;
    let row = query(
        "WITH input AS (
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::bigint[], $7::bigint[], $8::bytea[])
                 AS u(ord, source, message_id, event_type, contact_key, timestamp_ms,
                      received_at_ms, raw)
         ),
         fresh AS (
             INSERT INTO dedup (source, message_id, received_at_ms)
             SELECT source, message_id, received_at_ms FROM input
             ON CONFLICT (source, message_id) DO UPDATE
                 SET received_at_ms = excluded.received_at_ms
                 WHERE dedup.received_at_ms < excluded.received_at_ms - $9
             RETURNING source, message_id
         ),
         accepted AS (
             SELECT i.* FROM input i JOIN fresh f USING (source, message_id)
         ),
         inserted AS (
             INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                                 received_at_ms, raw)
             SELECT source, message_id, event_type, contact_key, timestamp_ms, received_at_ms, raw
             FROM accepted ORDER BY ord
             RETURNING id, source, message_id
         ),
         ids AS (
             SELECT a.ord, n.id, a.contact_key, a.received_at_ms
             FROM inserted n JOIN accepted a USING (source, message_id)
         ),
         delivery AS (
             SELECT ids.id AS event_id, ids.contact_key, ids.received_at_ms, d.seq,
                    d.destination, d.reason
             FROM UNNEST($10::bigint[], $11::bigint[], $12::text[], $13::text[])
                  AS d(ord, seq, destination, reason)
             JOIN ids USING (ord)
         ),
         delivered AS (
             INSERT INTO deliveries (event_id, destination, contact_key, status, reason,
                                     finished_ms)
             SELECT event_id, destination, contact_key,
                    CASE WHEN reason IS NULL THEN 'pending' ELSE 'skipped' END, reason,
                    CASE WHEN reason IS NULL THEN NULL ELSE received_at_ms END
             FROM delivery ORDER BY event_id, seq
         ),
         counted AS (
             UPDATE contact_keys k SET pending = k.pending + c.n
             FROM (SELECT destination, contact_key, count(*) AS n FROM delivery
                   WHERE reason IS NULL GROUP BY destination, contact_key) c
             WHERE k.destination = c.destination AND k.contact_key = c.contact_key
         ),
         refused AS (
             INSERT INTO rejected (source, raw, reason, received_at_ms)
             SELECT source, raw, reason, received_at_ms
             FROM UNNEST($14::text[], $15::bytea[], $16::text[], $17::bigint[])
                  WITH ORDINALITY AS r(source, raw, reason, received_at_ms, n)
             ORDER BY n
         )
         SELECT count(*) FROM ids",
    )
    .bind(sorted.iter().map(|&i| ord(i)).collect::<Vec<_>>())
    .bind(
        sorted
            .iter()
            .map(|&i| candidates[i].source.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|&i| candidates[i].message_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|&i| candidates[i].event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|&i| candidates[i].contact_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|&i| candidates[i].timestamp_ms)
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|&i| candidates[i].received_at_ms)
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|&i| candidates[i].raw.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(batch.dedup_window_ms)
    .bind(d_ord)
    .bind(d_seq)
    .bind(d_destination)
    .bind(d_reason)
    .bind(
        rejected
            .iter()
            .map(|r| r.source.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        rejected
            .iter()
            .map(|r| r.raw.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(
        rejected
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rejected
            .iter()
            .map(|r| r.received_at_ms)
            .collect::<Vec<_>>(),
    )
    .fetch_one(&mut *tx)
    .await?;
    let accepted: i64 = row.try_get(0)?;
    usize::try_from(accepted)
        .map_err(|_| StoreError::Database(format!("unexpected accepted count {accepted}")))
}
