//! PostgreSQL side of the list memberships (see [`crate::memberships`]). Taking due rows skips
//! rows another node is taking (`FOR UPDATE SKIP LOCKED`) and holds them for a while, so two
//! nodes' flushers do not send the same membership at once.

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::PgPool;

use crate::memberships::state_of;
use crate::{
    Attempt, DueMembership, ListAction, MembershipChange, MembershipCounts, MembershipEnd,
    MembershipResult, StoreError,
};

pub(crate) async fn record(
    pool: &PgPool,
    destination: &str,
    changes: Vec<MembershipChange>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for c in changes {
        // Newest event wins; a repeat of what was already sent stays done.
        query(
            "INSERT INTO list_memberships (destination, list_name, contact_key, action, ts_ms,
                 contact_id, state, next_at_ms, attempts, first_at_ms, delivery_id)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, 0, $7, $8)
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
        )
        .bind(destination)
        .bind(&c.list)
        .bind(&c.contact_key)
        .bind(c.action.as_str())
        .bind(c.ts_ms)
        .bind(c.contact_id)
        .bind(now_ms)
        .bind(c.delivery_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn take(
    pool: &PgPool,
    destination: &str,
    now_ms: i64,
    hold_ms: i64,
    limit: usize,
) -> Result<Vec<DueMembership>, StoreError> {
    let rows = query(
        "UPDATE list_memberships m SET next_at_ms = $3
         FROM (SELECT destination, list_name, contact_key FROM list_memberships
               WHERE destination = $1 AND state = 'pending' AND next_at_ms <= $2
               ORDER BY next_at_ms LIMIT $4
               FOR UPDATE SKIP LOCKED) due
         WHERE m.destination = due.destination AND m.list_name = due.list_name
           AND m.contact_key = due.contact_key
         RETURNING m.list_name, m.contact_key, m.action, m.ts_ms, m.contact_id, m.attempts,
                   m.first_at_ms, m.delivery_id",
    )
    .bind(destination)
    .bind(now_ms)
    .bind(now_ms.saturating_add(hold_ms))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let action: String = r.try_get(2)?;
        let Some(action) = ListAction::parse(&action) else {
            continue;
        };
        let attempts: i64 = r.try_get(5)?;
        out.push(DueMembership {
            list: r.try_get(0)?,
            contact_key: r.try_get(1)?,
            action,
            ts_ms: r.try_get(3)?,
            contact_id: r.try_get(4)?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            first_at_ms: r.try_get(6)?,
            delivery_id: r.try_get(7)?,
        });
    }
    // Oldest first, as taken (RETURNING keeps no order).
    out.sort_by_key(|d| (d.first_at_ms, d.list.clone(), d.contact_key.clone()));
    Ok(out)
}

pub(crate) async fn finish(
    pool: &PgPool,
    destination: &str,
    results: Vec<MembershipResult>,
    attempts: Vec<Attempt>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for a in attempts {
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
        // Through a SELECT: a pruned delivery is skipped, not a foreign-key error.
        query(
            "INSERT INTO attempt_deliveries (attempt_id, delivery_id)
             SELECT $1, id FROM deliveries WHERE id = ANY($2::bigint[])
             ON CONFLICT DO NOTHING",
        )
        .bind(attempt_id)
        .bind(&a.delivery_ids)
        .execute(&mut *tx)
        .await?;
    }
    for r in results {
        // The resolved id is kept even when a newer version replaced the one taken.
        if let Some(id) = r.contact_id {
            query(
                "UPDATE list_memberships SET contact_id = $4
                 WHERE destination = $1 AND list_name = $2 AND contact_key = $3",
            )
            .bind(destination)
            .bind(&r.list)
            .bind(&r.contact_key)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let (state, error) = state_of(&r.end);
        let (retry_at, failed): (Option<i64>, i64) = match &r.end {
            MembershipEnd::Retry { at_ms, .. } => (Some(*at_ms), 1),
            MembershipEnd::Dead { .. } => (None, 1),
            MembershipEnd::Done => (None, 0),
        };
        query(
            "UPDATE list_memberships
             SET state = $6, error = $7, next_at_ms = coalesce($8, next_at_ms),
                 attempts = attempts + $9, contact_id = coalesce($10, contact_id)
             WHERE destination = $1 AND list_name = $2 AND contact_key = $3
               AND action = $4 AND ts_ms = $5 AND state = 'pending'",
        )
        .bind(destination)
        .bind(&r.list)
        .bind(&r.contact_key)
        .bind(r.action.as_str())
        .bind(r.ts_ms)
        .bind(state)
        .bind(error)
        .bind(retry_at)
        .bind(failed)
        .bind(r.contact_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn counts(
    pool: &PgPool,
    destination: &str,
) -> Result<MembershipCounts, StoreError> {
    let rows =
        query("SELECT state, count(*) FROM list_memberships WHERE destination = $1 GROUP BY state")
            .bind(destination)
            .fetch_all(pool)
            .await?;
    let mut out = MembershipCounts::default();
    for r in rows {
        let state: String = r.try_get(0)?;
        let n: i64 = r.try_get(1)?;
        out.add(&state, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}

pub(crate) async fn forget_list(
    pool: &PgPool,
    destination: &str,
    name: &str,
    list_id: i64,
) -> Result<(), StoreError> {
    query("DELETE FROM marketing_lists WHERE destination = $1 AND name = $2 AND list_id = $3")
        .bind(destination)
        .bind(name)
        .bind(list_id)
        .execute(pool)
        .await?;
    Ok(())
}
