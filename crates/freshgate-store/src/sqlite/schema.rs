//! Connection setup and embedded migrations for the SQLite backend.
//!
//! Migrations are numbered `.sql` files compiled into the binary; `PRAGMA user_version` records
//! how many have been applied, so opening an older database upgrades it in place.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// Migrations in order; entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/sqlite/0001_initial.sql")];

/// How long a connection waits for a lock held by another connection before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Open the read-write connection used by the writer thread, apply pragmas and migrations.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run while the writer commits; FULL fsyncs the WAL on every commit, which
    // is what makes an acknowledged event survive power loss (group commit pays for it).
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "could not switch {} to WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoint every 10,000 WAL pages (~40 MiB) instead of SQLite's 1,000: the commit that
    // crosses the threshold copies the WAL back and fsyncs the database file, and doing that
    // ten times less often took ingest from ~16k to ~21k events/s over a 15 s run on the 2-core
    // CI machine (`cargo bench -p freshgate --bench gateway -- ingest`). A checkpoint thread
    // beside the writer measured worse (17k/s: it fell behind and the WAL grew).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Open a read-only connection for the reader pool.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Apply every migration newer than the database's `user_version`, each in its own transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).expect("a handful of migrations fits in i64");
    if !(0..=known).contains(&current) {
        return Err(StoreError::Database(format!(
            "database schema version {current} is unknown to this freshgate (latest {known})"
        )));
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).expect("checked non-negative and at most MIGRATIONS.len()"))
    {
        let version = index + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
        ))
        .inspect_err(|_| {
            // Leave the database at the previous version rather than half-migrated.
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        tracing::info!(version, "applied SQLite migration");
    }
    Ok(())
}
