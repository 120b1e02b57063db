//! Connection setup and embedded migrations for the SQLite backend.
//!
//! Migrations are numbered `.sql` files compiled into the binary; `PRAGMA user_version` records
//! how many have been applied, so opening an older database upgrades it in place.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// Migrations in order; entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_message_index.sql"),
    include_str!("../../migrations/sqlite/0003_field_metadata.sql"),
    include_str!("../../migrations/sqlite/0005_unmapped_traits.sql"),
    include_str!("../../migrations/sqlite/0006_console_indexes.sql"),
    include_str!("../../migrations/sqlite/0007_reason_codes.sql"),
    include_str!("../../migrations/sqlite/0008_delivery_records.sql"),
    include_str!("../../migrations/sqlite/0009_contact_emails.sql"),
    include_str!("../../migrations/sqlite/0010_delivery_history.sql"),
    include_str!("../../migrations/sqlite/0011_list_memberships.sql"),
    include_str!("../../migrations/sqlite/0012_delivery_counts.sql"),
    include_str!("../../migrations/sqlite/0013_hour_keyed_indexes.sql"),
    include_str!("../../migrations/sqlite/0014_index_runs.sql"),
];

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
    // Checkpoints normally run on their own thread (see `checkpoint`), which keeps the WAL
    // near `PAUSE_AFTER_FRAMES` pages. This automatic one, inside the commit that crosses it, is
    // only the backstop should that thread stop or fall far behind. (Inline checkpoints every
    // 10,000 pages had taken ingest from ~16k to ~21k events/s over SQLite's 1,000.)
    conn.pragma_update(None, "wal_autocheckpoint", 40_000)?;
    // The WAL file keeps its largest size unless told otherwise; after a long read has held
    // checkpoints back and it grew, truncate it back to 64 MiB when it next restarts.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // A group commit dirties about one page per event in the message index alone; with
    // SQLite's default 2 MiB cache a large group spills pages to the WAL mid-transaction
    // (`pagerStress`, 11 % in the same profile). 32 MiB holds the hot index pages and a group.
    conn.pragma_update(None, "cache_size", -32_768)?;
    // Migrations sort in temporary files: building an index over 10 M events in memory took
    // 755 MB.
    migrate(&conn)?;
    // The writer runs every command in a savepoint, and SQLite copies each page a savepoint
    // touches into a statement journal, by default a temp file: that was 19 % of the writer's
    // time in a profile of the ingest bench. In memory it is a memcpy, bounded by a group.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A version-1 database keeps its dedup decisions and its traces through migration 2:
    /// stored events get an entry each, and a dedup entry whose event was already pruned is
    /// carried over with event id 0.
    #[test]
    fn version_1_database_migrates_to_message_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = 1; COMMIT;",
                MIGRATIONS[0]
            ))
            .unwrap();
            conn.execute_batch(
                "INSERT INTO events (id, source, message_id, event_type, contact_key, timestamp_ms,
                                     received_at_ms, raw)
                 VALUES (7, 'web', 'kept', 'identify', 'u1', 1, 1000, x'7b7d');
                 INSERT INTO dedup VALUES ('web', 'kept', 1000), ('web', 'pruned', 900);",
            )
            .unwrap();
        }
        let conn = open_writer(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, i64::try_from(MIGRATIONS.len()).unwrap());
        let minutes: i64 = conn
            .query_row("SELECT sum(events) FROM ingest_minutes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            minutes, 1,
            "the per-minute counts start from the stored events"
        );
        let rows: Vec<(String, String, i64, i64)> = conn
            .prepare("SELECT message_id, source, event_id, received_at_ms FROM messages ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("kept".to_owned(), "web".to_owned(), 7, 1000),
                ("pruned".to_owned(), "web".to_owned(), 0, 900),
            ]
        );
        let old_tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('dedup', 'events_message_id')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_tables, 0);
    }

    /// A database at the schema just before the migration that contains `marker`.
    fn migrated_before(path: &Path, marker: &str) -> Connection {
        let conn = Connection::open(path).unwrap();
        let at = MIGRATIONS.iter().position(|m| m.contains(marker)).unwrap();
        let before = &MIGRATIONS[..at];
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = {}; COMMIT;",
            before.join("\n"),
            before.len()
        ))
        .unwrap();
        conn
    }

    /// A store from before the `contact_emails` table gets the emails of its stored identifies
    /// (lower-cased; non-strings, empty emails and non-identifies skipped), and loses the
    /// expression index the table replaces.
    #[test]
    fn stored_identifies_give_their_emails_to_contact_emails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("before.db");
        {
            let conn = migrated_before(&path, "CREATE TABLE contact_emails");
            conn.execute_batch(
                r#"INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                                      received_at_ms, raw) VALUES
                   ('web', 'a', 'identify', 'u1', 1, 1, '{"traits":{"email":"Ann@Example.com"}}'),
                   ('web', 'b', 'identify', 'u1', 2, 2, '{"traits":{"email":"ann@example.com"}}'),
                   ('web', 'c', 'identify', 'u2', 3, 3, '{"traits":{"email":42}}'),
                   ('web', 'd', 'identify', 'u3', 4, 4, '{"traits":{"email":""}}'),
                   ('web', 'e', 'track', 'u4', 5, 5, '{"traits":{"email":"t@example.com"}}'),
                   ('web', 'f', 'identify', 'u5', 6, 6, x'00ff');"#,
            )
            .unwrap();
        }
        let conn = open_writer(&path).unwrap();
        let pairs: Vec<(String, String)> = conn
            .prepare("SELECT email, contact_key FROM contact_emails ORDER BY 1, 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pairs, [("ann@example.com".to_owned(), "u1".to_owned())]);
        let old_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'events_identify_email'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_index, 0);
    }

    /// A store of schema 13 (indexes keyed by the hour of receipt) becomes one live run per
    /// stored hour in both indexes, with the watermark past every stored event; a dedup entry
    /// whose event is gone keeps its run.
    #[test]
    fn hour_keyed_indexes_become_one_live_run_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v13.db");
        {
            let conn = migrated_before(&path, "CREATE TABLE index_runs");
            conn.execute_batch(
                "INSERT INTO events (id, source, message_id, event_type, contact_key,
                                     timestamp_ms, received_at_ms, raw) VALUES
                     (1, 'web', 'a', 'identify', 'u1', 1, 3600000, x'7b7d'),
                     (2, 'web', 'b', 'identify', 'u2', 1, 3600001, x'7b7d'),
                     (3, 'web', 'c', 'identify', 'u1', 1, 7200000, x'7b7d');
                 INSERT INTO messages VALUES (1, 'a', 'web', 1, 3600000), (1, 'b', 'web', 2, 3600001),
                     (2, 'c', 'web', 3, 7200000), (0, 'pruned', 'web', 0, 5);",
            )
            .unwrap();
        }
        let conn = open_writer(&path).unwrap();
        let rows = |sql: &str| -> Vec<(i64, String, i64)> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let runs = rows("SELECT hour, state, last_event_id FROM index_runs ORDER BY hour");
        assert_eq!(
            runs,
            [
                (0, "live".to_owned(), 0),
                (1, "live".to_owned(), 2),
                (2, "live".to_owned(), 3)
            ]
        );
        let messages = rows(
            "SELECT r.hour, m.message_id, m.event_id FROM messages m JOIN index_runs r USING (run)
             ORDER BY 1, 2",
        );
        assert_eq!(
            messages,
            [
                (0, "pruned".to_owned(), 0),
                (1, "a".to_owned(), 1),
                (1, "b".to_owned(), 2),
                (2, "c".to_owned(), 3)
            ]
        );
        let contacts = rows(
            "SELECT r.hour, c.contact_key, c.event_id FROM contact_events c
             JOIN index_runs r USING (run) ORDER BY 1, 3",
        );
        assert_eq!(
            contacts,
            [
                (1, "u1".to_owned(), 1),
                (1, "u2".to_owned(), 2),
                (2, "u1".to_owned(), 3)
            ]
        );
        let watermark: i64 = conn
            .query_row("SELECT event_id FROM index_watermark", [], |r| r.get(0))
            .unwrap();
        assert_eq!(watermark, 3);
    }
}
