//! The two tables that client input could grow without limit, kept bounded: rejected inputs
//! (pruned by age and by total bytes) and unmapped trait keys (the most recently seen few per
//! destination). Writes run on the writer thread, reads on the reader pool.

use rusqlite::{Connection, params};

use crate::{MAX_UNMAPPED_TRAITS_PER_DESTINATION, StoreError, UnmappedTrait, merge_unmapped};

/// Remove rejected inputs received before `before_ms`, then the oldest until the rest hold at
/// most `max_bytes` raw bytes.
pub(crate) fn prune_rejected(
    conn: &Connection,
    before_ms: i64,
    max_bytes: u64,
) -> Result<u64, StoreError> {
    let aged = conn.execute(
        "DELETE FROM rejected WHERE received_at_ms < ?1",
        params![before_ms],
    )?;
    // The newest rows are kept while their running total fits; everything older goes.
    let oversize = conn.execute(
        "DELETE FROM rejected WHERE id <= (
             SELECT id FROM (
                 SELECT id, sum(length(raw)) OVER (ORDER BY id DESC) AS kept FROM rejected
             ) WHERE kept > ?1 ORDER BY id DESC LIMIT 1)",
        params![i64::try_from(max_bytes).unwrap_or(i64::MAX)],
    )?;
    Ok(u64::try_from(aged + oversize).unwrap_or(u64::MAX))
}

/// Upsert sightings, then keep the most recently seen keys of each destination touched.
pub(crate) fn record_unmapped(
    conn: &Connection,
    traits: &[UnmappedTrait],
) -> Result<(), StoreError> {
    let merged = merge_unmapped(traits);
    for t in &merged {
        conn.prepare_cached(
            "INSERT INTO unmapped_traits (destination, trait_key, count, first_seen_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (destination, trait_key) DO UPDATE SET
                 count = count + excluded.count,
                 first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                 last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
        )?
        .execute(params![
            t.destination,
            t.key,
            i64::try_from(t.count).unwrap_or(i64::MAX),
            t.first_seen_ms,
            t.last_seen_ms
        ])?;
    }
    let mut destinations: Vec<&str> = merged.iter().map(|t| t.destination.as_str()).collect();
    destinations.dedup();
    let keep = i64::try_from(MAX_UNMAPPED_TRAITS_PER_DESTINATION).unwrap_or(i64::MAX);
    for d in destinations {
        conn.prepare_cached(
            "DELETE FROM unmapped_traits WHERE destination = ?1 AND trait_key IN (
                 SELECT trait_key FROM unmapped_traits WHERE destination = ?1
                 ORDER BY last_seen_ms DESC, count DESC, trait_key LIMIT -1 OFFSET ?2)",
        )?
        .execute(params![d, keep])?;
    }
    Ok(())
}

/// The unmapped keys of a destination, most often seen first.
pub(crate) fn unmapped_traits(
    conn: &Connection,
    destination: &str,
    limit: usize,
) -> Result<Vec<UnmappedTrait>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT trait_key, count, first_seen_ms, last_seen_ms FROM unmapped_traits
             WHERE destination = ?1 ORDER BY count DESC, last_seen_ms DESC, trait_key LIMIT ?2",
        )?
        .query_map(
            params![destination, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(UnmappedTrait {
                    destination: destination.to_owned(),
                    key: r.get(0)?,
                    count: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    first_seen_ms: r.get(2)?,
                    last_seen_ms: r.get(3)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
