//! Embedded migrations and the integrity check of the PostgreSQL backend.
//!
//! The `.sql` files of `migrations/postgres` are compiled into the binary and applied by sqlx's
//! migrator, which records them (with a checksum) in `_sqlx_migrations` and holds an advisory lock
//! while it runs, so nodes starting together do not race.

use crate::counters::{self, CounterDrift, PendingDrift};
use sqlx_core::migrate::{Migration, MigrationType, Migrator};
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_core::sql_str::SqlSafeStr;
use sqlx_postgres::PgPool;

use crate::StoreError;

/// Where sqlx's migrator records applied migrations (its default).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Migrations in order: (version, description, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "field metadata",
        include_str!("../../migrations/postgres/0002_field_metadata.sql"),
    ),
    (
        4,
        "unmapped traits",
        include_str!("../../migrations/postgres/0004_unmapped_traits.sql"),
    ),
    (
        5,
        "console indexes",
        include_str!("../../migrations/postgres/0005_console_indexes.sql"),
    ),
    (
        6,
        "reason codes",
        include_str!("../../migrations/postgres/0006_reason_codes.sql"),
    ),
    (
        7,
        "delivery records",
        include_str!("../../migrations/postgres/0007_delivery_records.sql"),
    ),
    (
        8,
        "contact emails",
        include_str!("../../migrations/postgres/0008_contact_emails.sql"),
    ),
    (
        9,
        "delivery history",
        include_str!("../../migrations/postgres/0009_delivery_history.sql"),
    ),
    (
        10,
        "events by receive time and id",
        include_str!("../../migrations/postgres/0010_events_received_id.sql"),
    ),
    (
        11,
        "list memberships",
        include_str!("../../migrations/postgres/0011_list_memberships.sql"),
    ),
    (
        12,
        "delivery counts",
        include_str!("../../migrations/postgres/0012_delivery_counts.sql"),
    ),
    (
        13,
        "messageId hash index",
        include_str!("../../migrations/postgres/0013_message_id_hash.sql"),
    ),
    (
        14,
        "messages through dedup",
        include_str!("../../migrations/postgres/0014_messages_through_dedup.sql"),
    ),
    (
        15,
        "counts in the append",
        include_str!("../../migrations/postgres/0015_counts_in_the_append.sql"),
    ),
];

/// The migrator over the embedded migrations.
pub(crate) fn migrator() -> Migrator {
    migrator_through(i64::MAX)
}

/// The migrator over the embedded migrations up to and including `version`.
pub(crate) fn migrator_through(version: i64) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .filter(|(v, _, _)| *v <= version)
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Cheap sanity checks: the server answers, every embedded migration is applied successfully
/// with the same checksum, and each key's pending counter matches its pending deliveries (the
/// counter is what leasing trusts). Problems come back as sentences; empty means healthy.
pub(crate) async fn integrity_check(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let one: i32 = sqlx_core::query_scalar::query_scalar("SELECT 1")
        .fetch_one(pool)
        .await?;
    if one != 1 {
        problems.push(format!("SELECT 1 answered {one}"));
    }
    let migrated: bool =
        sqlx_core::query_scalar::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(MIGRATIONS_TABLE)
            .fetch_one(pool)
            .await?;
    if !migrated {
        problems.push(format!(
            "schema is not migrated ({MIGRATIONS_TABLE} is missing): run the migrations"
        ));
        return Ok(problems);
    }
    let applied: Vec<(i64, bool, Vec<u8>)> = sqlx_core::query_as::query_as(AssertSqlSafe(format!(
        "SELECT version, success, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
    )))
    .fetch_all(pool)
    .await?;
    let migrator = migrator();
    for m in migrator.iter() {
        match applied.iter().find(|(v, _, _)| *v == m.version) {
            None => problems.push(format!("migration {} is not applied", m.version)),
            Some((_, false, _)) => problems.push(format!(
                "migration {} failed part-way (dirty schema)",
                m.version
            )),
            Some((_, true, sum)) if sum.as_slice() != &*m.checksum => problems.push(format!(
                "migration {} was applied from different SQL (checksum mismatch)",
                m.version
            )),
            Some(_) => {}
        }
    }
    for (version, _, _) in &applied {
        if !migrator.version_exists(*version) {
            problems.push(format!(
                "migration {version} is unknown to this freshgate (database is newer)"
            ));
        }
    }
    let pending: Vec<PendingDrift> = sqlx_core::query_as::query_as(counters::PENDING_DRIFT)
        .fetch_all(pool)
        .await?;
    let counted: Vec<CounterDrift> = sqlx_core::query_as::query_as(counters::COUNTER_DRIFT)
        .fetch_all(pool)
        .await?;
    problems.extend(counters::drift_problems(pending, counted));
    Ok(problems)
}
