//! Ingest: appends are committed in groups, a few statements per group whatever its size.
//!
//! Every `append` goes on a queue; a few writer tasks each take what is queued (up to a group
//! size counted in events), commit it in ONE transaction and only then answer every append of
//! the group. Under load a group holds the requests of every client at once, so the node pays
//! one transaction and a handful of round trips for all of them (issue 15: one node's inserts,
//! not the database, were the limit at one transaction per request).
//!
//! Inside the transaction, in this order, and why:
//! 1. duplicates within the group are dropped in memory (the first copy wins);
//! 2. the contact keys that will get pending deliveries are created or row-locked, in sorted
//!    order, *before* any event id is allocated: that lock serialises appends of one key across
//!    nodes, so a key's event ids (its FIFO order) follow commit order and a worker never sees a
//!    later event before an earlier one commits;
//! 3. ONE statement decides dedup and writes: the `dedup` upsert (sorted, so concurrent groups
//!    lock its rows in the same order) returns the new events, and the same statement inserts
//!    those events (in arrival order), their deliveries, and adds the pending counts to the keys;
//! 4. rejected inputs are inserted.
//!
//! A group that fails is retried append by append, so one bad append cannot fail the others.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{AppendBatch, AppendOutcome, NewEvent, StoreError};

/// An append waiting for its group.
struct Pending {
    batch: AppendBatch,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

impl Pending {
    fn weight(&self) -> usize {
        (self.batch.events.len() + self.batch.rejected.len()).max(1)
    }
}

/// The append queue and its writer tasks.
pub(crate) struct IngestQueue {
    /// `None` once closed: later appends get `Closed`.
    sender: RwLock<Option<mpsc::Sender<Pending>>>,
}

impl IngestQueue {
    /// Start `writers` tasks committing groups of up to `max_group_events` from a queue of
    /// `capacity` appends.
    pub(crate) fn start(
        pool: &PgPool,
        writers: usize,
        capacity: usize,
        max_group_events: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_groups(
                pool.clone(),
                Arc::clone(&rx),
                max_group_events.max(1),
            ));
        }
        Self {
            sender: RwLock::new(Some(tx)),
        }
    }

    /// Queue an append and wait for the commit of its group.
    pub(crate) async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        let sender = self
            .sender
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Pending { batch, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        drop(sender);
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Take no more appends; the writers finish what is queued and stop.
    pub(crate) fn close(&self) {
        self.sender
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

/// One writer task: take a group off the queue, commit it, answer it; until the queue closes.
async fn write_groups(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>, max_events: usize) {
    loop {
        let group = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut weight = first.weight();
            let mut group = vec![first];
            while weight < max_events {
                match rx.try_recv() {
                    Ok(p) => {
                        weight += p.weight();
                        group.push(p);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        let started = std::time::Instant::now();
        let weight: usize = group.iter().map(Pending::weight).sum();
        let batches: Vec<&AppendBatch> = group.iter().map(|p| &p.batch).collect();
        let result = append_group(&pool, &batches).await;
        #[allow(clippy::cast_precision_loss)] // a group is at most a few thousand events
        metrics::histogram!(crate::metric::GROUP_COMMIT_EVENTS).record(weight as f64);
        metrics::histogram!(crate::metric::GROUP_COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                for (p, outcome) in group.into_iter().zip(outcomes) {
                    // The caller may have gone away; the append is committed anyway.
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(p) = group.into_iter().next() {
                    let _ = p.reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, appends = group.len(), "group append failed; retrying its appends one by one");
                for p in group {
                    let one = append_group(&pool, &[&p.batch])
                        .await
                        .map(|o| o.into_iter().next().unwrap_or_default());
                    let _ = p.reply.send(one);
                }
            }
        }
    }
}

/// An event of the group that is not a copy of an earlier one: its append and its place.
struct Candidate<'a> {
    append: usize,
    event: &'a NewEvent,
}

/// Append a group in one transaction; one outcome per batch, in order.
async fn append_group(
    pool: &PgPool,
    batches: &[&AppendBatch],
) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut candidates = Vec::new();
    for (append, batch) in batches.iter().enumerate() {
        for event in &batch.events {
            if seen.insert((event.source.as_str(), event.message_id.as_str())) {
                candidates.push(Candidate { append, event });
            }
        }
    }
    let mut outcomes: Vec<AppendOutcome> = batches
        .iter()
        .map(|b| AppendOutcome {
            accepted: 0,
            duplicates: b.events.len(),
            rejected: b.rejected.len(),
        })
        .collect();
    let any_rejected = batches.iter().any(|b| !b.rejected.is_empty());
    if candidates.is_empty() && !any_rejected {
        return Ok(outcomes);
    }

    let mut tx = pool.begin().await?;
    lock_keys(&mut tx, &candidates).await?;
    // Appends of one node share a dedup window; should they not, each window gets its statement.
    let mut windows: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        windows
            .entry(batches[c.append].dedup_window_ms)
            .or_default()
            .push(i);
    }
    for (window, members) in windows {
        for i in insert_new_events(&mut tx, &candidates, &members, window).await? {
            let o = &mut outcomes[candidates[i].append];
            o.accepted += 1;
            o.duplicates -= 1;
        }
    }
    if any_rejected {
        insert_rejected(&mut tx, batches).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Create (due at their first event's receive time) or row-lock, in sorted order, the keys
/// that the candidates' pending deliveries will count on. A key whose every event turns out a
/// duplicate is left with no pending work, which `prune` removes.
async fn lock_keys(tx: &mut PgConnection, candidates: &[Candidate<'_>]) -> Result<(), StoreError> {
    let mut keys: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for c in candidates {
        for d in c
            .event
            .deliveries
            .iter()
            .filter(|d| d.skip_reason.is_none())
        {
            keys.entry((d.destination.as_str(), c.event.contact_key.as_str()))
                .or_insert(c.event.received_at_ms);
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

/// The one statement of step 3 for the candidates `members` (indexes into `candidates`, in
/// arrival order): which of them were new, as indexes.
async fn insert_new_events(
    tx: &mut PgConnection,
    candidates: &[Candidate<'_>],
    members: &[usize],
    window_ms: i64,
) -> Result<Vec<usize>, StoreError> {
    // Dedup rows are upserted in (source, messageId) order so that concurrent groups lock them
    // in the same order; `ord` keeps the arrival order for event ids.
    let mut sorted: Vec<usize> = members.to_vec();
    sorted.sort_by(|&a, &b| {
        let (a, b) = (candidates[a].event, candidates[b].event);
        (&a.source, &a.message_id).cmp(&(&b.source, &b.message_id))
    });
    let ev = |i: &usize| candidates[*i].event;
    let mut d_ord = Vec::new();
    let mut d_seq = Vec::new();
    let mut d_destination = Vec::new();
    let mut d_reason: Vec<Option<&str>> = Vec::new();
    for &i in members {
        for (seq, d) in candidates[i].event.deliveries.iter().enumerate() {
            d_ord.push(i64::try_from(i).unwrap_or(i64::MAX));
            d_seq.push(i64::try_from(seq).unwrap_or(i64::MAX));
            d_destination.push(d.destination.as_str());
            d_reason.push(d.skip_reason.as_deref());
        }
    }
    let rows = query(
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
         )
         SELECT ord FROM ids",
    )
    .bind(
        sorted
            .iter()
            .map(|&i| i64::try_from(i).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|i| ev(i).source.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|i| ev(i).message_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|i| ev(i).event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|i| ev(i).contact_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|i| ev(i).timestamp_ms)
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|i| ev(i).received_at_ms)
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|i| ev(i).raw.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(window_ms)
    .bind(d_ord)
    .bind(d_seq)
    .bind(d_destination)
    .bind(d_reason)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| {
            let ord: i64 = r.try_get(0)?;
            usize::try_from(ord)
                .map_err(|_| StoreError::Database(format!("unexpected event ordinal {ord}")))
        })
        .collect()
}

async fn insert_rejected(
    tx: &mut PgConnection,
    batches: &[&AppendBatch],
) -> Result<(), StoreError> {
    let r: Vec<&crate::RejectedInput> = batches.iter().flat_map(|b| &b.rejected).collect();
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
