//! SQLite side of the list memberships (see [`crate::memberships`]): the writes run on the
//! writer thread as one [`MembershipOp`] each (one savepoint, so each is atomic), the counts on
//! the reader pool.

use rusqlite::{Connection, params};

use crate::memberships::state_of;
use crate::{
    Attempt, DueMembership, ListAction, MembershipChange, MembershipCounts, MembershipEnd,
    MembershipResult, StoreError,
};

/// One write of the list memberships.
#[derive(Debug)]
pub(crate) enum MembershipOp {
    Record {
        destination: String,
        changes: Vec<MembershipChange>,
        now_ms: i64,
    },
    Take {
        destination: String,
        now_ms: i64,
        hold_ms: i64,
        limit: usize,
    },
    Finish {
        destination: String,
        results: Vec<MembershipResult>,
        attempts: Vec<Attempt>,
    },
    ForgetList {
        destination: String,
        name: String,
        list_id: i64,
    },
}

/// What a [`MembershipOp`] answers.
#[derive(Debug)]
pub(crate) enum MembershipReply {
    Done,
    Due(Vec<DueMembership>),
}

pub(crate) fn apply(conn: &Connection, op: &MembershipOp) -> Result<MembershipReply, StoreError> {
    match op {
        MembershipOp::ForgetList {
            destination,
            name,
            list_id,
        } => {
            conn.prepare_cached(
                "DELETE FROM marketing_lists WHERE destination = ?1 AND name = ?2 AND list_id = ?3",
            )?
            .execute(params![destination, name, list_id])?;
            Ok(MembershipReply::Done)
        }
        MembershipOp::Record {
            destination,
            changes,
            now_ms,
        } => {
            // Newest event wins; a repeat of what was already sent stays done.
            let mut stmt = conn.prepare_cached(
                "INSERT INTO list_memberships (destination, list_name, contact_key, action, ts_ms,
                     contact_id, state, next_at_ms, attempts, first_at_ms, delivery_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, 0, ?7, ?8)
                 ON CONFLICT (destination, list_name, contact_key) DO UPDATE
                 SET state = CASE WHEN list_memberships.state = 'done'
                                   AND list_memberships.action = excluded.action
                                  THEN 'done' ELSE 'pending' END,
                     action = excluded.action, ts_ms = excluded.ts_ms,
                     contact_id = coalesce(excluded.contact_id, list_memberships.contact_id),
                     next_at_ms = excluded.next_at_ms, attempts = 0,
                     first_at_ms = excluded.first_at_ms, error = NULL,
                     delivery_id = excluded.delivery_id
                 WHERE excluded.ts_ms >= list_memberships.ts_ms",
            )?;
            for c in changes {
                stmt.execute(params![
                    destination,
                    c.list,
                    c.contact_key,
                    c.action.as_str(),
                    c.ts_ms,
                    c.contact_id,
                    now_ms,
                    c.delivery_id
                ])?;
            }
            Ok(MembershipReply::Done)
        }
        MembershipOp::Take {
            destination,
            now_ms,
            hold_ms,
            limit,
        } => {
            let due: Vec<DueMembership> = conn
                .prepare_cached(
                    "SELECT list_name, contact_key, action, ts_ms, contact_id, attempts, first_at_ms,
                         delivery_id
                     FROM list_memberships
                     WHERE destination = ?1 AND state = 'pending' AND next_at_ms <= ?2
                     ORDER BY next_at_ms LIMIT ?3",
                )?
                .query_map(
                    params![
                        destination,
                        now_ms,
                        i64::try_from(*limit).unwrap_or(i64::MAX)
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                        ))
                    },
                )?
                .filter_map(|row| {
                    let (
                        list,
                        contact_key,
                        action,
                        ts_ms,
                        contact_id,
                        attempts,
                        first_at_ms,
                        delivery_id,
                    ) = match row {
                            Ok(r) => r,
                            Err(e) => return Some(Err(e)),
                        };
                    Some(Ok(DueMembership {
                        list,
                        contact_key,
                        action: ListAction::parse(&action)?,
                        ts_ms,
                        contact_id,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        first_at_ms,
                        delivery_id,
                    }))
                })
                .collect::<Result<_, _>>()?;
            let mut hold = conn.prepare_cached(
                "UPDATE list_memberships SET next_at_ms = ?4
                 WHERE destination = ?1 AND list_name = ?2 AND contact_key = ?3",
            )?;
            for d in &due {
                hold.execute(params![
                    destination,
                    d.list,
                    d.contact_key,
                    now_ms.saturating_add(*hold_ms)
                ])?;
            }
            Ok(MembershipReply::Due(due))
        }
        MembershipOp::Finish {
            destination,
            results,
            attempts,
        } => {
            for a in attempts {
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
                for id in &a.delivery_ids {
                    // Through a SELECT: a pruned delivery is skipped, not a foreign-key error.
                    conn.prepare_cached(
                        "INSERT OR IGNORE INTO attempt_deliveries (attempt_id, delivery_id)
                         SELECT ?1, id FROM deliveries WHERE id = ?2",
                    )?
                    .execute(params![attempt_id, id])?;
                }
            }
            let mut stmt = conn.prepare_cached(
                "UPDATE list_memberships
                 SET state = ?6, error = ?7, next_at_ms = coalesce(?8, next_at_ms),
                     attempts = attempts + ?9, contact_id = coalesce(?10, contact_id)
                 WHERE destination = ?1 AND list_name = ?2 AND contact_key = ?3
                   AND action = ?4 AND ts_ms = ?5 AND state = 'pending'",
            )?;
            // The resolved id is kept even when a newer version replaced the one taken.
            let mut keep_id = conn.prepare_cached(
                "UPDATE list_memberships SET contact_id = ?4
                 WHERE destination = ?1 AND list_name = ?2 AND contact_key = ?3",
            )?;
            for r in results {
                if let Some(id) = r.contact_id {
                    keep_id.execute(params![destination, r.list, r.contact_key, id])?;
                }
                let (state, error) = state_of(&r.end);
                let (retry_at, failed) = match &r.end {
                    MembershipEnd::Retry { at_ms, .. } => (Some(*at_ms), 1),
                    MembershipEnd::Dead { .. } => (None, 1),
                    MembershipEnd::Done => (None, 0),
                };
                stmt.execute(params![
                    destination,
                    r.list,
                    r.contact_key,
                    r.action.as_str(),
                    r.ts_ms,
                    state,
                    error,
                    retry_at,
                    failed,
                    r.contact_id
                ])?;
            }
            Ok(MembershipReply::Done)
        }
    }
}

pub(crate) fn counts(conn: &Connection, destination: &str) -> Result<MembershipCounts, StoreError> {
    let mut out = MembershipCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT state, count(*) FROM list_memberships WHERE destination = ?1 GROUP BY state",
    )?;
    let rows = stmt.query_map(params![destination], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (state, n) = row?;
        out.add(&state, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}
