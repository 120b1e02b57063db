//! The suite run against the PostgreSQL backend (feature `postgres`), plus what only it has:
//! several nodes on one database (exclusive key leases, one dedup, one quota ledger), batches in
//! one transaction, separate migration, the integrity check.
//!
//! Which server: `TEST_DATABASE_URL`, else `DATABASE_URL`; with neither set, the first test starts
//! a throwaway server with `scripts/pg-start.sh --watch-pid <this process>` (initdb + pg_ctl in a
//! temp dir on a free port), which stops and deletes itself once this test binary exits.
//! Each test gets its own database (`CREATE DATABASE fg_test_…` on that server), dropped when
//! its fixture is dropped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use freshgate_store::postgres::{PostgresOptions, PostgresStore, migrate, migrate_through};
use freshgate_store::{AppendBatch, DeliveryFilter, Settlement, Store, StoreError};
use sqlx_core::connection::Connection;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_postgres::PgConnection;

use crate::harness::{Backend, DEST, Fixture, LEASE_MS, append_all, batch, ev, lease_key, pending};

/// The server's URL (its maintenance database), found or started once per test binary.
fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        for var in ["TEST_DATABASE_URL", "DATABASE_URL"] {
            if let Ok(url) = std::env::var(var)
                && !url.trim().is_empty()
            {
                return url.trim().to_owned();
            }
        }
        start_throwaway_server()
    })
}

/// Run `scripts/pg-start.sh` and return the URL it prints. The script's watcher stops the server
/// and removes its directory once this process is gone, so nothing outlives the test run.
fn start_throwaway_server() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-start.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed (set DATABASE_URL to use an existing server):\n{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("export DATABASE_URL="))
        .unwrap_or_else(|| panic!("{script} printed no DATABASE_URL:\n{stdout}"))
        .to_owned()
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, params) = match url.split_once('?') {
        Some((b, p)) => (b, Some(p)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match params {
        Some(p) => format!("{root}/{db}?{p}"),
        None => format!("{root}/{db}"),
    }
}

/// A fresh database on the server; the returned guard drops it.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "fg_test_{}_{}_{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(server_url())
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {}: {e}", server_url()));
        sqlx_core::query::query(AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE template0"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        let url = with_database(server_url(), &name);
        Self { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is not async and may run inside a runtime: use a thread with its own. FORCE ends
        // the connections a test left open.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(async move {
                let mut admin = PgConnection::connect(server_url()).await?;
                sqlx_core::query::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// Creates PostgreSQL stores, each on its own fresh database.
pub struct Postgres;

struct PostgresFixture {
    store: PostgresStore,
    // Dropped after the store (fields drop in order).
    db: TestDb,
}

#[async_trait]
impl Fixture for PostgresFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = PostgresStore::connect(&self.db.url, PostgresOptions::default())
            .await
            .unwrap();
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn fresh(&self) -> Box<dyn Fixture> {
        let db = TestDb::create().await;
        let store = PostgresStore::connect(&db.url, PostgresOptions::default())
            .await
            .unwrap();
        Box::new(PostgresFixture { store, db })
    }
}

crate::every_case!(Postgres);

#[test]
fn postgres_fifo_and_settled_never_return() {
    crate::prop::check(&Postgres);
}

/// Two stores on one database: two nodes, each with its own pool.
async fn two_nodes(db: &TestDb) -> (Arc<PostgresStore>, Arc<PostgresStore>) {
    let a = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let b = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    (Arc::new(a), Arc::new(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_hold_one_key() {
    let db = TestDb::create().await;
    let (a, b) = two_nodes(&db).await;
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    let events = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ev(&format!("m{i}"), k, 1000))
        .collect();
    append_all(&*a, events).await;
    // Both nodes lease small slices at the same time until nothing is left; every key must be
    // handed to exactly one of them.
    let grab = |store: Arc<PostgresStore>, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let leases = store
                    .lease_contacts(DEST, owner, 2000, LEASE_MS, 3)
                    .await
                    .unwrap();
                if leases.is_empty() {
                    return got;
                }
                got.extend(leases.into_iter().map(|l| l.contact_key));
            }
        })
    };
    let (ga, gb) = (
        grab(Arc::clone(&a), "node-a"),
        grab(Arc::clone(&b), "node-b"),
    );
    let (ga, gb) = (ga.await.unwrap(), gb.await.unwrap());
    let sa: BTreeSet<_> = ga.iter().cloned().collect();
    let sb: BTreeSet<_> = gb.iter().cloned().collect();
    assert_eq!(sa.len(), ga.len(), "node a got a key twice");
    assert_eq!(sb.len(), gb.len(), "node b got a key twice");
    assert!(sa.is_disjoint(&sb), "a key was held by both nodes");
    assert_eq!(sa.len() + sb.len(), keys.len(), "every key was leased");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_moves_to_another_node() {
    let db = TestDb::create().await;
    let (a, b) = two_nodes(&db).await;
    append_all(&*a, vec![ev("a1", "k1", 1000), ev("a2", "k1", 1001)]).await;
    let old = a
        .lease_contacts(DEST, "node-a", 1000, 100, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        b.lease_contacts(DEST, "node-b", 1100, 100, 10)
            .await
            .unwrap()
            .is_empty(),
        "live lease"
    );
    let new = b
        .lease_contacts(DEST, "node-b", 1101, 100, 10)
        .await
        .unwrap()
        .remove(0);
    let p = pending(&*b, &new).await;
    let err = a
        .settle(
            &old,
            1102,
            vec![(p[0].delivery_id, Settlement::Delivered)],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }));
    b.settle(
        &new,
        1102,
        vec![(p[0].delivery_id, Settlement::Delivered)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        pending(&*b, &new).await.len(),
        1,
        "only node b's settle counted"
    );
    assert!(a.integrity_check().await.unwrap().is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_dedup_and_quota() {
    let db = TestDb::create().await;
    let (a, b) = two_nodes(&db).await;
    // The same messageId sent to both nodes at once, many times: stored exactly once.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            tokio::spawn(async move { s.append(batch(vec![ev("same", "k1", 1000)])).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        accepted += out.accepted;
        assert_eq!(out.accepted + out.duplicates, 1);
    }
    assert_eq!(accepted, 1);
    assert_eq!(b.event_traces("same").await.unwrap().len(), 1);
    // Overlapping batches at once on both nodes (most meet a messageId another one stored, and
    // run again as an upsert): each messageId stored once, no deadlock, the counters agree.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let s = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let events = (i..i + 5)
                .map(|n| ev(&format!("o{n}"), &format!("k{}", n % 3), 2000))
                .collect();
            tokio::spawn(async move { s.append(batch(events)).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().unwrap().accepted;
    }
    assert_eq!(accepted, 16, "o0 to o15, once each");
    assert!(a.integrity_check().await.unwrap().is_empty());
    // Calls recorded on either node count against one budget.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            tokio::spawn(async move { s.record_calls("acct", 10_000 + i, 2).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(a.calls_since("acct", 0).await.unwrap(), 80);
    assert_eq!(b.calls_since("acct", 0).await.unwrap(), 80);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_append_stores_nothing() {
    let db = TestDb::create().await;
    let store = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let mut events: Vec<_> = (0..500).map(|i| ev(&format!("m{i}"), "k1", 1000)).collect();
    // PostgreSQL text cannot hold NUL: the last row of the batch fails, so must the whole batch.
    events.push(ev("bad\0id", "k2", 1000));
    let err = store.append(batch(events)).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.events, 0);
    assert!(stats.destinations.is_empty());
    // No dedup entry survived either: the same ids are new.
    let events: Vec<_> = (0..500).map(|i| ev(&format!("m{i}"), "k1", 1000)).collect();
    let out = store.append(batch(events)).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (500, 0));
    let lease = lease_key(&store, "k1", 1000).await;
    let p = store.pending_for(&lease, 1000).await.unwrap();
    assert_eq!(p.len(), 500);
    assert!(p.windows(2).all(|w| w[0].event_id < w[1].event_id));
    assert_eq!(p[0].message_id, "m0");
    assert_eq!(p[499].message_id, "m499");
    store.close().await;
}

/// The console's time-range search, first page and next, is served by the
/// `(received_at_ms, id)` index (migration 6): the index's scan count grows by the two
/// listings. One connection, so the statistics read are the listings' own backend's, flushed
/// on request (`pg_stat_force_next_flush`, PostgreSQL 15+).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_range_search_uses_the_receive_time_index() {
    let db = TestDb::create().await;
    let one = PostgresOptions {
        max_connections: 1,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect(&db.url, one).await.unwrap();
    for chunk in 0..10_i64 {
        append_all(
            &store,
            (0..500_i64)
                .map(|i| {
                    let n = chunk * 500 + i;
                    ev(&format!("m{n}"), &format!("k{}", n % 50), 1_000 + n)
                })
                .collect(),
        )
        .await;
    }
    sqlx_core::query::query("ANALYZE events")
        .execute(store.pool())
        .await
        .unwrap();
    let scans = || async {
        sqlx_core::query::query("SELECT pg_stat_force_next_flush()")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx_core::query::query("SELECT pg_stat_clear_snapshot()")
            .execute(store.pool())
            .await
            .unwrap();
        let (n,): (i64,) = sqlx_core::query_as::query_as(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'events_received_id'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        n
    };
    let before = scans().await;
    let query = freshgate_store::EventQuery {
        since_ms: Some(2_000),
        until_ms: Some(4_000),
        limit: 50,
        ..freshgate_store::EventQuery::default()
    };
    let first = store.list_events(&query).await.unwrap();
    assert_eq!(first.len(), 50);
    assert_eq!(first[0].received_at_ms, 3_999, "newest first");
    let next = store
        .list_events(&freshgate_store::EventQuery {
            before_id: first.last().map(|e| e.event_id),
            ..query
        })
        .await
        .unwrap();
    assert_eq!(next[0].received_at_ms, 3_949);
    let mut after = scans().await;
    for _ in 0..50 {
        if after >= before + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = scans().await;
    }
    assert!(
        after >= before + 2,
        "events_received_id scanned {before} -> {after} times"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_migration_and_integrity_check() {
    let db = TestDb::create().await;
    let no_migrations = PostgresOptions {
        run_migrations: false,
        ..PostgresOptions::default()
    };
    // Not migrated yet: the store opens, the check says what is wrong, writes fail.
    let store = PostgresStore::connect(&db.url, no_migrations)
        .await
        .unwrap();
    let problems = store.integrity_check().await.unwrap();
    assert!(
        problems.iter().any(|p| p.contains("not migrated")),
        "{problems:?}"
    );
    assert!(matches!(
        store.append(batch(vec![ev("a1", "k1", 1000)])).await,
        Err(StoreError::Database(_))
    ));
    store.close().await;

    migrate(&db.url).await.unwrap();
    migrate(&db.url).await.unwrap();
    let store = PostgresStore::connect(&db.url, no_migrations)
        .await
        .unwrap();
    assert!(store.integrity_check().await.unwrap().is_empty());
    append_all(&store, vec![ev("a1", "k1", 1000)]).await;
    // A broken pending counter is reported.
    sqlx_core::query::query("UPDATE contact_keys SET pending = 5")
        .execute(store.pool())
        .await
        .unwrap();
    let problems = store.integrity_check().await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("crm/k1"), "{problems:?}");
    // So is a delivery counter that drifted from the deliveries.
    sqlx_core::query::query("UPDATE contact_keys SET pending = 1")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx_core::query::query("UPDATE delivery_counts SET count = count + 2")
        .execute(store.pool())
        .await
        .unwrap();
    let problems = store.integrity_check().await.unwrap();
    assert_eq!(
        problems,
        ["delivery counter crm/identify/pending says 3, 1 deliveries exist"]
    );
    store.close().await;
    assert!(matches!(
        store.stats().await.unwrap_err(),
        StoreError::Closed
    ));
}

/// A new database migrated through `version`, with `statements` run on it (what an older build
/// left), for the upgrade tests.
async fn database_at_version(version: i64, statements: &[&'static str]) -> TestDb {
    let db = TestDb::create().await;
    migrate_through(&db.url, version).await.unwrap();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    for sql in statements {
        sqlx_core::query::query(*sql)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    db
}

/// Version 14 finds events by messageId through the dedup table: a database written before it,
/// with a messageId accepted again after the window (its entry renewed), keeps both events
/// findable, and the events' own messageId index is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_messages_through_dedup() {
    let db = database_at_version(
        13,
        &[
            "INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                             received_at_ms, raw)
         VALUES ('web', 'm1', 'track', 'k1', 1000, 1000, '{}'),
                ('web', 'm1', 'track', 'k1', 70000, 70000, '{}'),
                ('web', 'm2', 'track', 'k2', 2000, 2000, '{}')",
            "INSERT INTO dedup (source, message_id, received_at_ms)
         VALUES ('web', 'm1', 70000), ('web', 'm2', 2000)",
        ],
    )
    .await;
    let store = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let times = |mid: &'static str| {
        let store = &store;
        async move {
            let traces = store.event_traces(mid).await.unwrap();
            traces.iter().map(|t| t.received_at_ms).collect::<Vec<_>>()
        }
    };
    assert_eq!(times("m1").await, [1000, 70000]);
    assert_eq!(times("m2").await, [2000]);
    let index: Option<String> =
        sqlx_core::query_scalar::query_scalar("SELECT to_regclass('events_message_id')::text")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(index, None);
    assert!(store.integrity_check().await.unwrap().is_empty());
    store.close().await;
}

/// The append's plain dedup insert fails on a messageId already stored and the append runs again
/// as an upsert, with and without deliveries to make (one transaction, or the statement alone):
/// the new events are stored once, the stored ones are duplicates, and nothing of the failed try
/// remains (counters, keys' pending counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_message_id_runs_the_append_again_as_an_upsert() {
    let db = TestDb::create().await;
    let store = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let undelivered = |mid: &str, at: i64| {
        let mut e = ev(mid, "k1", at);
        e.deliveries.clear();
        e
    };
    append_all(&store, vec![undelivered("a", 1000), ev("b", "k2", 1000)]).await;
    let out = store
        .append(batch(vec![undelivered("a", 2000), undelivered("c", 2000)]))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 1), "no deliveries");
    let out = store
        .append(batch(vec![ev("d", "k2", 2000), ev("b", "k2", 2000)]))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 1), "with deliveries");
    assert_eq!(store.stats().await.unwrap().events, 4);
    for mid in ["a", "b", "c", "d"] {
        assert_eq!(store.event_traces(mid).await.unwrap().len(), 1, "{mid}");
    }
    let lease = lease_key(&store, "k2", 3000).await;
    let pending: Vec<String> = pending(&store, &lease)
        .await
        .into_iter()
        .map(|p| p.message_id)
        .collect();
    assert_eq!(pending, ["b", "d"]);
    assert!(store.integrity_check().await.unwrap().is_empty());
    store.close().await;
}

/// Version 15 drops the insert triggers: the counts that they kept up to then carry on, moved by
/// the statements that insert (the append, late deliveries) and by the delete triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_counts_in_the_append() {
    let db = database_at_version(
        14,
        &[
            "INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                             received_at_ms, raw)
         VALUES ('web', 'old1', 'identify', 'k1', 1000, 1000, '{}'),
                ('web', 'old2', 'identify', 'k2', 61000, 61000, '{}')",
            "INSERT INTO dedup (source, message_id, received_at_ms)
         VALUES ('web', 'old1', 1000), ('web', 'old2', 61000)",
            "INSERT INTO deliveries (event_id, destination, contact_key, status, event_type)
         SELECT id, 'crm', contact_key, 'pending', event_type FROM events",
            "INSERT INTO contact_keys (destination, contact_key, next_attempt_ms, pending)
         VALUES ('crm', 'k1', 1000, 1), ('crm', 'k2', 61000, 1)",
        ],
    )
    .await;
    let store = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let triggers: Vec<String> = sqlx_core::query_scalar::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal
           AND tgrelid IN ('events'::regclass, 'deliveries'::regclass) ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        triggers,
        [
            "deliveries_count_delete",
            "deliveries_count_update",
            "events_count_delete"
        ]
    );
    let out = store
        .append(batch(vec![
            ev("old1", "k1", 1500),
            ev("new1", "k1", 1500),
            ev("new2", "k3", 62000),
        ]))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (2, 1));
    let per_minute: Vec<(i64, u64)> = store
        .events_per_minute(0)
        .await
        .unwrap()
        .iter()
        .map(|m| (m.minute_ms, m.count))
        .collect();
    assert_eq!(per_minute, [(0, 2), (60_000, 2)]);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.events, 4);
    assert!(store.integrity_check().await.unwrap().is_empty());
    let pruned = store.prune(2000, 2000).await;
    assert!(pruned.is_ok());
    assert!(store.integrity_check().await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_database_errors() {
    assert!(matches!(
        PostgresStore::connect("not a url", PostgresOptions::default()).await,
        Err(StoreError::Database(_))
    ));
    assert!(matches!(
        migrate("postgres://h:notaport/x").await,
        Err(StoreError::Database(_))
    ));
    // Requeue/replay of nothing touches nothing.
    let db = TestDb::create().await;
    let store = PostgresStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store
            .requeue_dead(&DeliveryFilter::default(), 1000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.append(AppendBatch::default()).await.unwrap().accepted,
        0
    );
    store.close().await;
}

#[test]
fn database_is_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/postgres?sslmode=require", "x"),
        "postgres://u:p@h/x?sslmode=require"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}
