//! The two tables that client input could grow without limit, kept bounded (same rules as the
//! SQLite backend's `bounded`): rejected inputs pruned by age and total bytes, and the most
//! recently seen unmapped trait keys per destination.

use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgPool, PgRow};

use crate::{MAX_UNMAPPED_TRAITS_PER_DESTINATION, StoreError, UnmappedTrait, merge_unmapped};

pub(crate) async fn prune_rejected(
    pool: &PgPool,
    before_ms: i64,
    max_bytes: u64,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let aged = query("DELETE FROM rejected WHERE received_at_ms < $1")
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // The newest rows are kept while their running total fits; everything older goes.
    let oversize = query(
        "DELETE FROM rejected WHERE id <= (
             SELECT id FROM (
                 SELECT id, sum(octet_length(raw)) OVER (ORDER BY id DESC) AS kept FROM rejected
             ) running WHERE kept > $1 ORDER BY id DESC LIMIT 1)",
    )
    .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(aged + oversize)
}

pub(crate) async fn record_unmapped(
    pool: &PgPool,
    traits: &[UnmappedTrait],
) -> Result<(), StoreError> {
    let merged = merge_unmapped(traits);
    if merged.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    query(
        "INSERT INTO unmapped_traits (destination, trait_key, count, first_seen_ms, last_seen_ms)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
         ON CONFLICT (destination, trait_key) DO UPDATE SET
             count = unmapped_traits.count + excluded.count,
             first_seen_ms = LEAST(unmapped_traits.first_seen_ms, excluded.first_seen_ms),
             last_seen_ms = GREATEST(unmapped_traits.last_seen_ms, excluded.last_seen_ms)",
    )
    .bind(
        merged
            .iter()
            .map(|t| t.destination.clone())
            .collect::<Vec<_>>(),
    )
    .bind(merged.iter().map(|t| t.key.clone()).collect::<Vec<_>>())
    .bind(
        merged
            .iter()
            .map(|t| i64::try_from(t.count).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(merged.iter().map(|t| t.first_seen_ms).collect::<Vec<_>>())
    .bind(merged.iter().map(|t| t.last_seen_ms).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let mut destinations: Vec<&str> = merged.iter().map(|t| t.destination.as_str()).collect();
    destinations.dedup();
    let keep = i64::try_from(MAX_UNMAPPED_TRAITS_PER_DESTINATION).unwrap_or(i64::MAX);
    for d in destinations {
        query(
            "DELETE FROM unmapped_traits WHERE destination = $1 AND trait_key IN (
                 SELECT trait_key FROM unmapped_traits WHERE destination = $1
                 ORDER BY last_seen_ms DESC, count DESC, trait_key OFFSET $2)",
        )
        .bind(d)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn unmapped_traits(
    pool: &PgPool,
    destination: &str,
    limit: usize,
) -> Result<Vec<UnmappedTrait>, StoreError> {
    let rows: Vec<PgRow> = query(
        "SELECT trait_key, count, first_seen_ms, last_seen_ms FROM unmapped_traits
         WHERE destination = $1 ORDER BY count DESC, last_seen_ms DESC, trait_key LIMIT $2",
    )
    .bind(destination)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UnmappedTrait {
                destination: destination.to_owned(),
                key: r.try_get(0)?,
                count: u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
                first_seen_ms: r.try_get(2)?,
                last_seen_ms: r.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx_core::Error>>()
        .map_err(StoreError::from)
}
