//! Ingest: one append is one statement (dedup, events, deliveries, emails, rejected inputs and
//! the counters of what it inserted), preceded by the contact keys' upsert when the batch has
//! pending deliveries.
//!
//! Order, and why:
//! 1. duplicates within the batch are dropped in memory (the first copy wins);
//! 2. when any event has a pending delivery, the contact keys of every candidate's pending
//!    deliveries are upserted first, in one statement of their own: that row lock serialises
//!    appends of one key, so event ids (the FIFO order) of a key are allocated in commit order
//!    and a worker never sees a later event before an earlier one commits;
//! 3. one statement then inserts the `dedup` entries (atomically against every other node; a
//!    plain insert first, which fails as a whole on a messageId already stored, and then, for
//!    such a batch only, an upsert: a row is inserted, or replaced when the stored one is older
//!    than the window; the rows it returns are the accepted events, the others are duplicates;
//!    see [`DedupInsert`]) and, from the rows it returned, inserts the
//!    events, their deliveries and the identifies' emails, and the rejected inputs, and adds the
//!    events and deliveries to their counters (statement triggers did, copying every row into a
//!    transition table; migration 15);
//! 4. the keys are given back the pending counts of candidates that turned out to be duplicates
//!    (rare: a client's retry of a batch already stored).
//!
//! A batch with no pending delivery has no order to keep: its one statement is the whole
//! transaction, one round trip. The keys are upserted before dedup decides (rather than after,
//! for the accepted events only) so that the rest needs no round trip in between: step 3 used to
//! be five statements, each waiting for the one before (one statement: +5 % events/s on the
//! ingest bench, a quarter less of freshgate's CPU per event; README, Benchmarks).
//!
//! The (email, contact) pairs are written once: `contact_emails` rows are never deleted, so a pair
//! this process has seen committed is not sent again ([`KnownEmails`]). Half the bench's events are
//! identifies of known contacts, and each one's `ON CONFLICT DO NOTHING` was a B-tree descent.
//!
//! Every transaction takes its rows in the same order (keys sorted, then dedup entries sorted,
//! then emails sorted), so concurrent appends do not deadlock.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgConnection, PgPool, PgRow};

use crate::{AppendBatch, AppendOutcome, DeliveryStatus, NewEvent, StoreError};

/// A contact key's share of one append: due at the receive time of its first event (for a new
/// key), and how many pending deliveries it gains.
struct KeyAdd {
    due_ms: i64,
    pending: i64,
}

/// The keys of the candidates' pending deliveries, sorted (the lock order).
type KeyAdds<'a> = BTreeMap<(&'a str, &'a str), KeyAdd>;

/// The (email, contact) pairs known to be in `contact_emails`, so that an append does not send
/// them again. Bounded: when full it starts over (a forgotten pair is only sent once more).
#[derive(Debug, Default)]
pub(crate) struct KnownEmails {
    pairs: Mutex<HashSet<(String, String)>>,
}

/// Pairs kept before [`KnownEmails`] starts over: ~100 bytes each, so ~20 MiB at most.
const KNOWN_EMAILS_CAP: usize = 200_000;

impl KnownEmails {
    /// Drop the emails whose pair is known (one lock for the whole append).
    fn keep_unknown(&self, emails: &mut Vec<EmailOf>) {
        let pairs = self.pairs.lock().unwrap_or_else(PoisonError::into_inner);
        emails.retain(|e| !pairs.contains(&e.pair));
    }

    /// Called after the commit that recorded `pairs` (a rolled-back pair must be sent again).
    fn remember(&self, recorded: Vec<(String, String)>) {
        if recorded.is_empty() {
            return;
        }
        let mut pairs = self.pairs.lock().unwrap_or_else(PoisonError::into_inner);
        if pairs.len() + recorded.len() > KNOWN_EMAILS_CAP {
            pairs.clear();
        }
        pairs.extend(recorded);
    }
}

pub(crate) async fn append(
    pool: &PgPool,
    known_emails: &KnownEmails,
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
    let emails = new_emails(known_emails, &candidates);
    let keys = pending_keys(candidates.iter().copied());
    let mut dedup = DedupInsert::New;
    let accepted_ords = loop {
        let written = if keys.is_empty() {
            let mut conn = pool.acquire().await?;
            write_batch(&mut conn, dedup, &candidates, &emails, batch).await?
        } else {
            let mut tx = pool.begin().await?;
            upsert_keys(&mut tx, &keys).await?;
            match write_batch(&mut tx, dedup, &candidates, &emails, batch).await? {
                Written::Accepted(accepted_ords) => {
                    let refused = candidates
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !accepted_ords.contains(&ord(*i)))
                        .map(|(_, ev)| *ev);
                    give_back(&mut tx, &pending_keys(refused)).await?;
                    tx.commit().await?;
                    Written::Accepted(accepted_ords)
                }
                Written::StoredMessageId => {
                    tx.rollback().await?;
                    Written::StoredMessageId
                }
            }
        };
        match written {
            Written::Accepted(accepted_ords) => break accepted_ords,
            // Only the plain insert ends so; the upsert cannot (its conflicts are its answer).
            Written::StoredMessageId => {
                metrics::counter!(crate::metric::APPEND_UPSERTS).increment(1);
                dedup = DedupInsert::Upsert;
            }
        }
    };
    known_emails.remember(
        emails
            .into_iter()
            .filter(|e| accepted_ords.contains(&e.event_ord))
            .map(|e| e.pair)
            .collect(),
    );
    Ok(AppendOutcome {
        accepted: accepted_ords.len(),
        // In-batch copies and events the dedup index refused.
        duplicates: batch.events.len() - accepted_ords.len(),
        rejected: batch.rejected.len(),
    })
}

/// An identify's (email, contact) pair to record, with its event's number.
struct EmailOf {
    pair: (String, String),
    event_ord: i64,
}

/// The candidates' emails not known to be recorded with their contact already.
fn new_emails(known: &KnownEmails, candidates: &[&NewEvent]) -> Vec<EmailOf> {
    let mut emails: Vec<EmailOf> = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, ev)| {
            let email = crate::email_key(ev.email.as_deref().filter(|e| !e.is_empty())?);
            Some(EmailOf {
                pair: (email, ev.contact_key.clone()),
                event_ord: ord(i),
            })
        })
        .collect();
    known.keep_unknown(&mut emails);
    emails
}

/// A candidate's 1-based position, as `WITH ORDINALITY` numbers it.
fn ord(index: usize) -> i64 {
    i64::try_from(index).map_or(i64::MAX, |i| i + 1)
}

/// Pending deliveries per (destination, key) of `events`, with the first one's receive time.
fn pending_keys<'a>(events: impl Iterator<Item = &'a NewEvent>) -> KeyAdds<'a> {
    let mut keys = KeyAdds::new();
    for ev in events {
        for d in ev.deliveries.iter().filter(|d| d.skip_reason.is_none()) {
            keys.entry((d.destination.as_str(), ev.contact_key.as_str()))
                .or_insert(KeyAdd {
                    due_ms: ev.received_at_ms,
                    pending: 0,
                })
                .pending += 1;
        }
    }
    keys
}

/// Upsert the keys: a new key is due at its first event's receive time; an existing key keeps its
/// schedule (a key waiting for a retry must not become due earlier because a new event arrived).
async fn upsert_keys(tx: &mut PgConnection, keys: &KeyAdds<'_>) -> Result<(), StoreError> {
    query(
        "INSERT INTO contact_keys (destination, contact_key, next_attempt_ms, pending)
         SELECT destination, contact_key, due, n
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
              AS u(destination, contact_key, due, n)
         ORDER BY destination, contact_key
         ON CONFLICT (destination, contact_key)
             DO UPDATE SET pending = contact_keys.pending + excluded.pending",
    )
    .bind(column(keys, |((destination, _), _)| {
        (*destination).to_owned()
    }))
    .bind(column(keys, |((_, key), _)| (*key).to_owned()))
    .bind(column(keys, |(_, add)| add.due_ms))
    .bind(column(keys, |(_, add)| add.pending))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Take back the pending counts that [`upsert_keys`] added for duplicates. The rows are already
/// locked by this transaction; a key that only duplicates created stays with nothing pending, as
/// a key does once its work is done, until the prune removes it.
async fn give_back(tx: &mut PgConnection, keys: &KeyAdds<'_>) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    query(
        "UPDATE contact_keys c SET pending = c.pending - u.n
         FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS u(destination, contact_key, n)
         WHERE c.destination = u.destination AND c.contact_key = u.contact_key",
    )
    .bind(column(keys, |((destination, _), _)| {
        (*destination).to_owned()
    }))
    .bind(column(keys, |((_, key), _)| (*key).to_owned()))
    .bind(column(keys, |(_, add)| add.pending))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The append's one statement. `batch` is the candidates in batch order (numbered from 1);
/// `fresh` the dedup entries inserted or renewed (sorted, the lock order); `accepted` the
/// candidates they name; events are inserted in batch order so that ids ascend with it. The
/// deliveries and emails name their event by its number and are kept only for accepted events.
/// The statement also adds what it inserted to the counters (events per minute, events stored,
/// deliveries per destination, kind and status; migration 15), each connection to its own shard.
/// Returns the accepted candidates' numbers.
macro_rules! append_statement {
    ($on_conflict:literal) => {
        concat!(
            "
WITH batch AS MATERIALIZED (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::bigint[], $7::bytea[])
        WITH ORDINALITY AS b(source, message_id, event_type, contact_key, timestamp_ms,
                             received_at_ms, raw, ord)
),
fresh AS (
    INSERT INTO dedup (source, message_id, received_at_ms)
    SELECT source, message_id, received_at_ms FROM batch ORDER BY source, message_id
    ",
            $on_conflict,
            "
    RETURNING source, message_id
),
accepted AS MATERIALIZED (
    SELECT b.* FROM batch b JOIN fresh f ON f.source = b.source AND f.message_id = b.message_id
),
stored AS (
    INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                        received_at_ms, raw)
    SELECT source, message_id, event_type, contact_key, timestamp_ms, received_at_ms, raw
    FROM accepted ORDER BY ord
    RETURNING id, source, message_id, received_at_ms
),
per_minute AS (
    INSERT INTO ingest_minutes AS m (minute_ms, shard, events)
    SELECT (received_at_ms / 60000) * 60000, pg_backend_pid() % 16, count(*)
    FROM stored GROUP BY 1 ORDER BY 1
    ON CONFLICT (minute_ms, shard) DO UPDATE SET events = m.events + excluded.events
),
stored_count AS (
    INSERT INTO event_counts AS c (shard, count)
    SELECT pg_backend_pid() % 16, count(*) FROM stored HAVING count(*) > 0
    ON CONFLICT (shard) DO UPDATE SET count = c.count + excluded.count
),
routed AS (
    INSERT INTO deliveries (event_id, destination, contact_key, status, reason, finished_ms,
                            reason_code, event_type)
    SELECT s.id, d.destination, a.contact_key, d.status, d.reason, d.finished_ms,
           d.reason_code, a.event_type
    FROM UNNEST($9::bigint[], $10::text[], $11::text[], $12::text[], $13::bigint[],
                $14::text[])
             WITH ORDINALITY AS d(event_ord, destination, status, reason, finished_ms,
                                  reason_code, ord)
    JOIN accepted a ON a.ord = d.event_ord
    JOIN stored s ON s.source = a.source AND s.message_id = a.message_id
    ORDER BY d.ord
    RETURNING destination, event_type, status
),
routed_count AS (",
            count_new_deliveries!("routed"),
            "
),
emails AS (
    INSERT INTO contact_emails (email, contact_key)
    SELECT DISTINCT m.email, a.contact_key
    FROM UNNEST($15::text[], $16::bigint[]) AS m(email, event_ord)
    JOIN accepted a ON a.ord = m.event_ord
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
),
kept AS (
    INSERT INTO rejected (source, raw, reason, received_at_ms)
    SELECT source, raw, reason, received_at_ms
    FROM UNNEST($17::text[], $18::bytea[], $19::text[], $20::bigint[])
         WITH ORDINALITY AS r(source, raw, reason, received_at_ms, ord)
    ORDER BY ord
)
SELECT ord FROM accepted"
        )
    };
}

/// [`append_statement!`] for a batch of new messageIds: a stored one fails the statement.
const APPEND_NEW: &str = append_statement!("");

/// [`append_statement!`] that renews or refuses stored messageIds ($8: the dedup window).
const APPEND_UPSERT: &str = append_statement!(
    "ON CONFLICT (source, message_id) DO UPDATE
        SET received_at_ms = excluded.received_at_ms
        WHERE dedup.received_at_ms < excluded.received_at_ms - $8"
);

/// How the append's dedup insert meets a messageId already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DedupInsert {
    /// A plain insert, tried first: a stored messageId fails the statement on `dedup_pkey`, and
    /// the append runs again as [`DedupInsert::Upsert`]. Stored messageIds are rare (a client's
    /// retry of a batch already stored, a messageId sent again past the window), and the upsert's
    /// conflict check, one more B-tree descent per event before the insert's own, was 11 % of the
    /// machine's CPU on the ingest bench (a sixth of PostgreSQL's).
    New,
    /// `ON CONFLICT … DO UPDATE … WHERE` the entry is older than the window: the rows it returns
    /// are the accepted events (inserted or renewed), the others are duplicates.
    Upsert,
}

/// What [`write_batch`] did.
enum Written {
    /// The numbers of the accepted candidates.
    Accepted(HashSet<i64>),
    /// The plain insert met a stored messageId: nothing was written (the statement failed).
    StoredMessageId,
}

/// The unique constraint that [`DedupInsert::New`] runs into.
const DEDUP_KEY: &str = "dedup_pkey";

/// Run the append's statement for the candidates and the batch's rejected inputs.
async fn write_batch(
    conn: &mut PgConnection,
    dedup: DedupInsert,
    candidates: &[&NewEvent],
    emails: &[EmailOf],
    batch: &AppendBatch,
) -> Result<Written, StoreError> {
    let routes = Routes::of(candidates);
    let rejected = &batch.rejected;
    let statement = match dedup {
        DedupInsert::New => APPEND_NEW,
        DedupInsert::Upsert => APPEND_UPSERT,
    };
    let rows: Result<Vec<PgRow>, _> = query(statement)
        .bind(column(candidates, |e| e.source.clone()))
        .bind(column(candidates, |e| e.message_id.clone()))
        .bind(column(candidates, |e| e.event_type.clone()))
        .bind(column(candidates, |e| e.contact_key.clone()))
        .bind(column(candidates, |e| e.timestamp_ms))
        .bind(column(candidates, |e| e.received_at_ms))
        .bind(column(candidates, |e| e.raw.clone()))
        .bind(batch.dedup_window_ms)
        .bind(routes.event_ords)
        .bind(routes.destinations)
        .bind(routes.statuses)
        .bind(routes.reasons)
        .bind(routes.finished)
        .bind(routes.codes)
        .bind(column(emails, |e| e.pair.0.clone()))
        .bind(column(emails, |e| e.event_ord))
        .bind(column(rejected, |r| r.source.clone()))
        .bind(column(rejected, |r| r.raw.clone()))
        .bind(column(rejected, |r| r.reason.clone()))
        .bind(column(rejected, |r| r.received_at_ms))
        .fetch_all(&mut *conn)
        .await;
    let rows = match rows {
        Err(sqlx_core::Error::Database(e))
            if dedup == DedupInsert::New && e.constraint() == Some(DEDUP_KEY) =>
        {
            return Ok(Written::StoredMessageId);
        }
        other => other?,
    };
    let accepted = rows
        .iter()
        .map(|r| r.try_get::<i64, _>(0).map_err(StoreError::from))
        .collect::<Result<_, _>>()?;
    Ok(Written::Accepted(accepted))
}

/// One field of every row, as the array a statement binds.
fn column<T, U>(rows: impl IntoIterator<Item = T>, field: impl FnMut(T) -> U) -> Vec<U> {
    rows.into_iter().map(field).collect()
}

/// The delivery rows of the candidates, as columns; each names its event by number.
#[derive(Default)]
struct Routes {
    event_ords: Vec<i64>,
    destinations: Vec<String>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<String>>,
    finished: Vec<Option<i64>>,
    codes: Vec<Option<String>>,
}

impl Routes {
    fn of(candidates: &[&NewEvent]) -> Self {
        let mut r = Routes::default();
        for (i, ev) in candidates.iter().enumerate() {
            for d in &ev.deliveries {
                r.event_ords.push(ord(i));
                r.destinations.push(d.destination.clone());
                match &d.skip_reason {
                    Some(reason) => {
                        r.statuses.push(DeliveryStatus::Skipped.as_str());
                        r.reasons.push(Some(reason.clone()));
                        r.codes.push(d.skip_code.clone());
                        r.finished.push(Some(ev.received_at_ms));
                    }
                    None => {
                        r.statuses.push(DeliveryStatus::Pending.as_str());
                        r.reasons.push(None);
                        r.codes.push(None);
                        r.finished.push(None);
                    }
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(i: usize) -> (String, String) {
        (format!("u{i}@example.com"), format!("user-{i}"))
    }

    impl KnownEmails {
        fn contains(&self, email: &str, contact_key: &str) -> bool {
            let mut one = vec![EmailOf {
                pair: (email.to_owned(), contact_key.to_owned()),
                event_ord: 1,
            }];
            self.keep_unknown(&mut one);
            one.is_empty()
        }
    }

    #[test]
    fn known_emails_remember_recorded_pairs_and_start_over_when_full() {
        let known = KnownEmails::default();
        assert!(!known.contains("u1@example.com", "user-1"));
        known.remember(vec![pair(1), pair(2)]);
        assert!(known.contains("u1@example.com", "user-1"));
        assert!(
            !known.contains("u1@example.com", "user-2"),
            "a pair, not an email alone"
        );
        known.remember((3..KNOWN_EMAILS_CAP).map(pair).collect());
        assert!(known.contains("u2@example.com", "user-2"));
        known.remember(vec![pair(KNOWN_EMAILS_CAP), pair(KNOWN_EMAILS_CAP + 1)]);
        assert!(!known.contains("u2@example.com", "user-2"), "started over");
        let last = pair(KNOWN_EMAILS_CAP + 1);
        assert!(known.contains(&last.0, &last.1));
    }

    #[test]
    fn ords_number_candidates_from_one() {
        assert_eq!(ord(0), 1);
        assert_eq!(ord(99), 100);
    }
}
