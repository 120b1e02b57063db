//! The suite run against the SQLite backend, plus what only SQLite has: the bounded writer queue
//! (back-pressure), group commit with per-command savepoints, the file on disk.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;

use async_trait::async_trait;
use freshgate_store::sqlite::{DB_FILE_NAME, RunLimits, SqliteOptions, SqliteStore, open_in};
use freshgate_store::{AppendOutcome, Settlement, Store, StoreError};
use tempfile::TempDir;

use crate::harness::{Backend, Fixture, append_all, append_counted, batch, ev, lease_key, pending};

/// Creates SQLite stores in fresh temp dirs, with the index runs given.
pub struct Sqlite {
    runs: RunLimits,
}

impl Sqlite {
    /// As `serve` opens it.
    pub fn as_shipped() -> Self {
        Self {
            runs: RunLimits::default(),
        }
    }

    /// Runs of two events written an entry or two per commit, merged from segments of one:
    /// every case then reads events from live runs, from the tail and from runs half-written,
    /// and prunes all three.
    pub fn tiny_runs() -> Self {
        Self {
            runs: RunLimits {
                run_events: 2,
                chunk_entries: 1,
                segment_entries: 1,
            },
        }
    }

    fn open(&self, dir: &TempDir) -> SqliteStore {
        let options = SqliteOptions {
            index_runs: self.runs,
            ..SqliteOptions::default()
        };
        SqliteStore::open(&dir.path().join(DB_FILE_NAME), options).unwrap()
    }
}

struct SqliteFixture {
    dir: TempDir,
    runs: RunLimits,
    store: SqliteStore,
}

#[async_trait]
impl Fixture for SqliteFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Sqlite { runs: self.runs }.open(&self.dir);
    }
}

#[async_trait]
impl Backend for Sqlite {
    async fn fresh(&self) -> Box<dyn Fixture> {
        let dir = tempfile::tempdir().unwrap();
        let store = self.open(&dir);
        Box::new(SqliteFixture {
            dir,
            runs: self.runs,
            store,
        })
    }
}

crate::every_case!(Sqlite::as_shipped());

/// The suite again with runs so small that every case crosses runs, the tail and flushes in
/// progress (see `freshgate_store::sqlite::RunLimits`).
mod tiny_runs {
    crate::every_case!(super::Sqlite::tiny_runs());
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("q.db")
}

type Pending<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// Poll a future once: `Ready` with its output, or the future back to be awaited later.
async fn poll_once<'a, T>(
    mut fut: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
) -> Result<T, Pin<Box<dyn Future<Output = T> + Send + 'a>>> {
    let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match polled {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(fut),
    }
}

/// Hold SQLite's write lock from another connection so the writer thread blocks in `BEGIN`.
fn block_writer(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_writer_queue_answers_saturated() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        writer_queue: 1,
        max_group_commit_events: 1,
        max_group_background_rows: 1,
        readers: 1,
        release_leases_on_open: false,
        build_dedup_on_open: false,
        index_runs: RunLimits::default(),
    };
    let store = std::sync::Arc::new(SqliteStore::open(&db_path(&dir), options).unwrap());
    let blocker = block_writer(&db_path(&dir));
    // The writer takes at most one command and then waits for the lock; the queue holds one
    // more: of twenty appends at most two get in, the others must be shed at once.
    let mut waiting: Vec<(String, Pending<AppendOutcome>)> = Vec::new();
    let mut saturated = 0;
    for i in 0..20 {
        let mid = format!("m{i}");
        let s = std::sync::Arc::clone(&store);
        let ev = ev(&mid, "k1", 1000);
        let fut: Pending<AppendOutcome> = Box::pin(async move { s.append(batch(vec![ev])).await });
        match poll_once(fut).await {
            Ok(Err(StoreError::Saturated)) => saturated += 1,
            Ok(other) => panic!("writer is blocked, yet append answered {other:?}"),
            Err(fut) => waiting.push((mid, fut)),
        }
    }
    assert!(saturated >= 18, "saturated {saturated} of 20");
    blocker.execute_batch("COMMIT").unwrap();
    for (mid, fut) in waiting {
        assert_eq!(fut.await.unwrap().accepted, 1);
        assert_eq!(store.event_traces(&mid).await.unwrap().len(), 1);
    }
    // Once drained, appends are accepted again.
    append_all(&*store, vec![ev("after", "k1", 1000)]).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_appends_is_stored_or_shed() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        writer_queue: 2,
        max_group_commit_events: 8,
        max_group_background_rows: 8,
        readers: 2,
        release_leases_on_open: false,
        build_dedup_on_open: false,
        index_runs: RunLimits::default(),
    };
    let store = std::sync::Arc::new(SqliteStore::open(&db_path(&dir), options).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let mid = format!("m{i}");
                let r = s
                    .append(batch(vec![ev(&mid, &format!("k{}", i % 7), 1000)]))
                    .await;
                (mid, r)
            })
        })
        .collect();
    let mut stored = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (mid, Ok(out)) => {
                assert_eq!(out.accepted, 1);
                stored.push(mid);
            }
            (_, Err(StoreError::Saturated)) => {}
            (mid, Err(e)) => panic!("{mid}: unexpected {e}"),
        }
    }
    assert_eq!(store.stats().await.unwrap().events, stored.len() as u64);
    for mid in &stored {
        assert_eq!(
            store.event_traces(mid).await.unwrap().len(),
            1,
            "{mid} stored"
        );
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_does_not_fail_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        std::sync::Arc::new(SqliteStore::open(&db_path(&dir), SqliteOptions::default()).unwrap());
    append_all(&*store, vec![ev("a1", "k1", 1000)]).await;
    let lease = lease_key(&*store, "k1", 1000).await;
    let id = pending(&*store, &lease).await[0].delivery_id;
    let stale = freshgate_store::ContactLease {
        token: "not-the-token".to_owned(),
        ..lease.clone()
    };
    // Queue a stale settle between two appends while the writer is blocked, so that they are
    // committed together (or at least in order) once it resumes.
    let blocker = block_writer(&db_path(&dir));
    let mut futs: Vec<Pending<()>> = Vec::new();
    for (i, mid) in ["b1", "b2"].into_iter().enumerate() {
        let s = std::sync::Arc::clone(&store);
        futs.push(Box::pin(async move {
            s.append(batch(vec![ev(mid, "k2", 1000)])).await.map(|_| ())
        }));
        if i == 0 {
            let s = std::sync::Arc::clone(&store);
            let stale = stale.clone();
            futs.push(Box::pin(async move {
                s.settle(&stale, 1001, vec![(id, Settlement::Delivered)], None)
                    .await
            }));
        }
    }
    let mut waiting = Vec::new();
    for f in futs {
        match poll_once(f).await {
            Ok(r) => panic!("writer is blocked, yet answered {r:?}"),
            Err(f) => waiting.push(f),
        }
    }
    blocker.execute_batch("COMMIT").unwrap();
    let results: Vec<_> = futures_all(waiting).await;
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::LeaseLost { .. })));
    assert!(results[2].is_ok());
    assert_eq!(store.stats().await.unwrap().events, 3);
    assert_eq!(
        pending(&*store, &lease).await.len(),
        1,
        "the stale settle was rolled back"
    );
    store.close().await;
}

async fn futures_all<T>(futs: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut out = Vec::with_capacity(futs.len());
    for f in futs {
        out.push(f.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_in_creates_the_directory_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let store = open_in(&nested).unwrap();
    append_all(&store, vec![ev("a1", "k1", 1000)]).await;
    store.close().await;
    assert!(nested.join(freshgate_store::sqlite::DB_FILE_NAME).is_file());
    let store = open_in(&nested).unwrap();
    assert_eq!(store.stats().await.unwrap().events, 1);
    assert!(store.integrity_check().await.unwrap().is_empty());
    store.close().await;
}

/// The doctor recounts: a key's pending counter or a delivery counter that disagrees with the
/// deliveries is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integrity_check_names_drifted_counters() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_path(&dir), SqliteOptions::default()).unwrap();
    append_all(&store, vec![ev("a1", "k1", 1000)]).await;
    assert_eq!(store.integrity_check().await.unwrap(), Vec::<String>::new());
    store.close().await;
    let conn = rusqlite::Connection::open(db_path(&dir)).unwrap();
    conn.execute_batch(
        "UPDATE contact_keys SET pending = 5; UPDATE delivery_counts SET count = count + 2;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&db_path(&dir), SqliteOptions::default()).unwrap();
    assert_eq!(
        store.integrity_check().await.unwrap(),
        [
            "contact key crm/k1 counts 5 pending deliveries, 1 exist",
            "delivery counter crm/identify/pending says 3, 1 deliveries exist"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn the_delivering_process_drops_leases_left_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_path(&dir), SqliteOptions::default()).unwrap();
    append_all(&store, vec![ev("a1", "k1", 1000)]).await;
    let _held = lease_key(&store, "k1", 1000).await;
    store.close().await;
    // An operator command opening the file beside a server leaves leases alone.
    let store = SqliteStore::open(&db_path(&dir), SqliteOptions::default()).unwrap();
    let leased = store
        .lease_contacts("dest", "n2", 2000, 60_000, 10)
        .await
        .unwrap();
    assert!(leased.is_empty(), "the lease is still held: {leased:?}");
    store.close().await;
    // The delivering process after a crash takes the contact back at once.
    let options = SqliteOptions {
        release_leases_on_open: true,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&db_path(&dir), options).unwrap();
    lease_key(&store, "k1", 2000).await;
    store.close().await;
}

/// A prune larger than one chunk (the writer prunes in chunks so that appends commit between
/// them) goes on until everything due is gone, and leaves what is not due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_larger_than_a_chunk_removes_everything_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).unwrap();
    let finished = |id: &str, at: i64| {
        let mut e = ev(id, "k", at);
        e.deliveries.clear();
        e
    };
    let old: Vec<_> = (0..12_000)
        .map(|i| finished(&format!("old{i}"), 1000))
        .collect();
    for chunk in old.chunks(1000) {
        append_all(&store, chunk.to_vec()).await;
    }
    append_all(&store, vec![finished("young", 50_000)]).await;
    let out = store.prune(2000, 2000).await.unwrap();
    assert_eq!((out.events, out.dedup_entries), (12_000, 12_000));
    assert_eq!(store.stats().await.unwrap().events, 1);
    // The index entries of the pruned events are gone from both indexes (the events were in
    // the index tail: the prune had them written as runs first, then pruned the runs).
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!((count("messages"), count("contact_events")), (1, 1));
    // Their dedup entries went too: the same ids are new again; the young one is still known.
    let again = store
        .append(batch(vec![
            finished("old7", 60_000),
            finished("young", 60_000),
        ]))
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (1, 1));
    store.close().await;
}

/// The writer keeps its dedup filters in memory: a messageId another process stored in the same
/// file (a second store open on it) is still a duplicate, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_stored_by_another_process_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    // Ours builds its filters at open (as `serve` does), so it learns of theirs by syncing;
    // theirs builds them at its first append.
    let ours = SqliteStore::open(
        &dir.path().join(freshgate_store::sqlite::DB_FILE_NAME),
        SqliteOptions {
            build_dedup_on_open: true,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    append_all(&ours, vec![ev("ours-1", "k1", 1000)]).await;
    let theirs = open_in(dir.path()).unwrap();
    append_all(&theirs, vec![ev("theirs-1", "k2", 2000)]).await;
    let again = batch(vec![
        ev("theirs-1", "k2", 3000),
        ev("ours-1", "k1", 3000),
        ev("new-1", "k1", 3000),
    ]);
    assert_eq!(append_counted(&ours, again).await, (1, 2));
    let again = batch(vec![ev("new-1", "k1", 4000)]);
    assert_eq!(append_counted(&theirs, again).await, (0, 1));
    theirs.close().await;
    ours.close().await;
    let reopened = open_in(dir.path()).unwrap();
    let again = batch(vec![
        ev("ours-1", "k1", 5000),
        ev("theirs-1", "k2", 5000),
        ev("new-1", "k1", 5000),
    ]);
    assert_eq!(append_counted(&reopened, again).await, (0, 3));
    assert_eq!(reopened.event_traces("theirs-1").await.unwrap().len(), 1);
    reopened.close().await;
}

/// Rows received over many hours and days are all found by messageId (the table is keyed by the
/// hour of receipt first), and dedup reaches back across days within the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_are_found_across_hours_and_days() {
    const HOUR_MS: i64 = 3_600_000;
    let week = |events| freshgate_store::AppendBatch {
        events,
        rejected: Vec::new(),
        dedup_window_ms: 7 * 24 * HOUR_MS,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).unwrap();
    let base = 1_764_547_200_000; // 2025-12-01T00:00:00Z
    for h in 0..60 {
        let out = store
            .append(week(vec![ev(
                &format!("m{h}"),
                "k1",
                base + h * HOUR_MS + 17,
            )]))
            .await
            .unwrap();
        assert_eq!(out.accepted, 1);
    }
    for h in [0, 23, 24, 59] {
        let traces = store.event_traces(&format!("m{h}")).await.unwrap();
        assert_eq!(traces.len(), 1, "m{h}");
    }
    let listed = store
        .list_events(&freshgate_store::EventQuery {
            message_id: Some("m30".to_owned()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let now = base + 60 * HOUR_MS;
    let out = store
        .append(week(
            (0..60).map(|h| ev(&format!("m{h}"), "k1", now)).collect(),
        ))
        .await
        .unwrap();
    assert_eq!(out.duplicates, 60, "every hour is within the window");
    // After a restart too (the filters are built from the table).
    store.close().await;
    let store = open_in(dir.path()).unwrap();
    let out = store
        .append(week(
            (0..60)
                .map(|h| ev(&format!("m{h}"), "k1", now + 1))
                .collect(),
        ))
        .await
        .unwrap();
    assert_eq!(
        out.duplicates, 60,
        "every hour is within the window after a restart"
    );
    store.close().await;
}

/// A contact's events are listed newest first across the hours the hour-keyed contact index
/// walks, a page at a time, each exactly once; an email's contacts likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_events_page_through_many_hours() {
    const HOUR_MS: i64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).unwrap();
    let base = 1_764_547_200_000;
    // 40 hours, 3 events an hour, alternating between two contacts; hours 10-19 are empty.
    let mut mine = Vec::new();
    for h in (0..40).filter(|h| !(10..20).contains(h)) {
        for i in 0..3 {
            let key = if i == 1 { "other" } else { "me" };
            let mid = format!("h{h}-{i}");
            append_all(&store, vec![ev(&mid, key, base + h * HOUR_MS + i * 1000)]).await;
            if key == "me" {
                mine.push(mid);
            }
        }
    }
    mine.reverse();
    let mut listed = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_events(&freshgate_store::EventQuery {
                contact_key: Some("me".to_owned()),
                before_id,
                limit: 7,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before_id = page.last().map(|e| e.event_id);
        listed.extend(page.into_iter().map(|e| e.message_id));
    }
    assert_eq!(listed, mine);
    // A time range inside the walk: hours 30 to 31 only.
    let ranged = store
        .list_events(&freshgate_store::EventQuery {
            contact_key: Some("me".to_owned()),
            since_ms: Some(base + 30 * HOUR_MS),
            until_ms: Some(base + 32 * HOUR_MS),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let ranged: Vec<_> = ranged.into_iter().map(|e| e.message_id).collect();
    assert_eq!(ranged, ["h31-2", "h31-0", "h30-2", "h30-0"]);
    store.close().await;
}
