//! Ingest: one append = one transaction of a few multi-row statements, whatever its size.
//!
//! Order inside the transaction, and why:
//! 1. duplicates within the batch are dropped in memory (the first copy wins);
//! 2. the contact keys that will get pending deliveries are created or row-locked, in sorted
//!    order, *before* any event id is allocated: that lock serialises appends of one key across
//!    nodes, so a key's event ids (its FIFO order) follow commit order and a worker never sees a
//!    later event before an earlier one commits;
//! 3. ONE statement decides messageId dedup and inserts the new events: the `dedup` upsert (rows
//!    in sorted order, so concurrent appends lock them in the same order and do not deadlock)
//!    returns the new events, and the same statement inserts them in batch order (their ids
//!    ascend with it);
//! 4. ONE statement inserts their deliveries and adds the pending counts to the keys;
//! 5. rejected inputs are inserted.
//!
//! The commit is the acknowledgement: `append` returns after it. Concurrent appends of one node
//! share the server's WAL flushes, as PostgreSQL groups the commits that arrive together.
//! (Grouping several appends into one transaction in the node, with writer tasks and a queue,
//! was measured slower on this machine: issue 15's notes.)

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgConnection, PgPool, PgRow};

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
    let mut accepted = 0;
    if !candidates.is_empty() {
        lock_keys(&mut tx, &candidates).await?;
        let ids = insert_new_events(&mut tx, &candidates, batch.dedup_window_ms).await?;
        accepted = ids.len();
        insert_deliveries(&mut tx, &candidates, &ids).await?;
    }
    if !batch.rejected.is_empty() {
        insert_rejected(&mut tx, batch).await?;
    }
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

/// Step 3: the ids of the new events, by their index in `candidates`.
async fn insert_new_events(
    tx: &mut PgConnection,
    candidates: &[&NewEvent],
    window_ms: i64,
) -> Result<HashMap<usize, i64>, StoreError> {
    // Sorted by (source, messageId) for the dedup upsert's lock order; `ord` (the place in the
    // batch) gives the events their ids in batch order.
    let mut sorted: Vec<usize> = (0..candidates.len()).collect();
    sorted.sort_by(|&a, &b| {
        let (a, b) = (candidates[a], candidates[b]);
        (&a.source, &a.message_id).cmp(&(&b.source, &b.message_id))
    });
    let field = |f: fn(&NewEvent) -> &str| {
        sorted
            .iter()
            .map(|&i| f(candidates[i]))
            .collect::<Vec<&str>>()
    };
    let rows: Vec<PgRow> = query(
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
         )
         INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                             received_at_ms, raw)
         SELECT i.source, i.message_id, i.event_type, i.contact_key, i.timestamp_ms,
                i.received_at_ms, i.raw
         FROM input i JOIN fresh f USING (source, message_id)
         ORDER BY i.ord
         RETURNING id, source, message_id",
    )
    .bind(
        sorted
            .iter()
            .map(|&i| i64::try_from(i).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(field(|e| e.source.as_str()))
    .bind(field(|e| e.message_id.as_str()))
    .bind(field(|e| e.event_type.as_str()))
    .bind(field(|e| e.contact_key.as_str()))
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
    .bind(window_ms)
    .fetch_all(&mut *tx)
    .await?;
    // (source, messageId) is unique among the candidates: map the returned ids back by it
    // rather than trusting RETURNING's row order.
    let place: HashMap<(&str, &str), usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.source.as_str(), e.message_id.as_str()), i))
        .collect();
    let mut ids = HashMap::with_capacity(rows.len());
    for r in &rows {
        let (id, source, message_id): (i64, &str, &str) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let i = place.get(&(source, message_id)).ok_or_else(|| {
            StoreError::Database(format!(
                "event {source}/{message_id} came back from an insert it was not in"
            ))
        })?;
        ids.insert(*i, id);
    }
    Ok(ids)
}

/// Step 4: one delivery row per destination of each new event (in event order), and the
/// pending counts added to the keys locked in step 2.
async fn insert_deliveries(
    tx: &mut PgConnection,
    candidates: &[&NewEvent],
    ids: &HashMap<usize, i64>,
) -> Result<(), StoreError> {
    let mut event_ids = Vec::new();
    let mut destinations = Vec::new();
    let mut contact_keys = Vec::new();
    let mut statuses = Vec::new();
    let mut reasons: Vec<Option<&str>> = Vec::new();
    let mut finished: Vec<Option<i64>> = Vec::new();
    let mut pending: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (i, ev) in candidates.iter().enumerate() {
        let Some(&id) = ids.get(&i) else { continue };
        for d in &ev.deliveries {
            event_ids.push(id);
            destinations.push(d.destination.as_str());
            contact_keys.push(ev.contact_key.as_str());
            match &d.skip_reason {
                Some(reason) => {
                    statuses.push("skipped");
                    reasons.push(Some(reason.as_str()));
                    finished.push(Some(ev.received_at_ms));
                }
                None => {
                    statuses.push("pending");
                    reasons.push(None);
                    finished.push(None);
                    *pending
                        .entry((d.destination.as_str(), ev.contact_key.as_str()))
                        .or_default() += 1;
                }
            }
        }
    }
    if event_ids.is_empty() {
        return Ok(());
    }
    query(
        "WITH delivered AS (
             INSERT INTO deliveries (event_id, destination, contact_key, status, reason,
                                     finished_ms)
             SELECT event_id, destination, contact_key, status, reason, finished_ms
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[])
                  WITH ORDINALITY
                  AS u(event_id, destination, contact_key, status, reason, finished_ms, ord)
             ORDER BY ord
         )
         UPDATE contact_keys k SET pending = k.pending + c.n
         FROM UNNEST($7::text[], $8::text[], $9::bigint[]) AS c(destination, contact_key, n)
         WHERE k.destination = c.destination AND k.contact_key = c.contact_key",
    )
    .bind(event_ids)
    .bind(destinations)
    .bind(contact_keys)
    .bind(statuses)
    .bind(reasons)
    .bind(finished)
    .bind(pending.keys().map(|(d, _)| *d).collect::<Vec<_>>())
    .bind(pending.keys().map(|(_, k)| *k).collect::<Vec<_>>())
    .bind(pending.values().copied().collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_rejected(tx: &mut PgConnection, batch: &AppendBatch) -> Result<(), StoreError> {
    let r = &batch.rejected;
    query(
        "INSERT INTO rejected (source, raw, reason, received_at_ms)
         SELECT source, raw, reason, received_at_ms
         FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::bigint[])
              WITH ORDINALITY AS u(source, raw, reason, received_at_ms, ord)
         ORDER BY ord",
    )
    .bind(r.iter().map(|x| x.source.as_deref()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.raw.as_slice()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.reason.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.received_at_ms).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
