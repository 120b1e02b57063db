//! The ingest bench (`benches/ingest`): its wrk body generator, and the whole bench end to end in
//! its two-second `--smoke` mode against the debug binary. No timings are asserted: only that
//! every figure was produced and that the load was what the bench says it is.

#[path = "../../benches/ingest/driver.rs"]
#[allow(dead_code)]
mod driver;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use freshgate_core::segment::{self, Endpoint, ItemOutcome, Limits};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// A tool from Debian's package of the same name, installed when missing (CI runs as root).
fn ensure_tool(name: &str) {
    let present = || Command::new(name).arg("--version").output().is_ok();
    if present() {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed =
        apt(&["install", "-y", name]) || (apt(&["update"]) && apt(&["install", "-y", name]));
    assert!(
        installed && present(),
        "the ingest bench needs {name} (Debian package `{name}`): apt-get install {name}"
    );
}

/// Bodies and authorization headers as wrk sent them.
type Captured = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// Every body the Lua generator produces is a valid Segment batch of 100 events of the
/// advertised size, authorised with the bench's write key, and no messageId repeats, neither
/// within a body nor across bodies and wrk threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_body_generator_sends_valid_unique_events() {
    ensure_tool("wrk");
    let captured: Captured = Arc::default();
    let app = Router::new().route(
        "/v1/batch",
        post({
            let captured = Arc::clone(&captured);
            move |headers: HeaderMap, body: Bytes| async move {
                let mut c = captured.lock().unwrap();
                if c.len() < 40 {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    c.push((auth, body));
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let lua = repo_file("scripts/bench/ingest.lua");
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = tokio::process::Command::new("wrk")
        .args(["-t2", "-c4", "-d1s", "-s"])
        .arg(&lua)
        .arg(format!("http://{addr}/"))
        .env("FG_BENCH_WRITE_KEY", driver::WRITE_KEY)
        .env("FG_BENCH_RUN", "3")
        .env("FG_BENCH_OUT", out.path())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    server.abort();
    // The summary the bench reads is there and counts the 200s.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap();
    assert!(summary["ok_200"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["non_200"], 0);

    let captured = captured.lock().unwrap();
    assert!(captured.len() >= 4, "only {} bodies", captured.len());
    use base64::Engine;
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", driver::WRITE_KEY))
    );
    let mut ids = HashSet::new();
    let mut types = HashSet::new();
    let mut sizes = Vec::new();
    for (auth, body) in captured.iter() {
        sizes.push(body.len() / driver::BATCH);
        assert_eq!(auth.as_deref(), Some(expected_auth.as_str()));
        let mut server_assigned = || panic!("an event came without a messageId");
        let parsed = segment::parse_tracking_request(
            Endpoint::Batch,
            body,
            time::OffsetDateTime::now_utc(),
            &Limits::default(),
            &mut server_assigned,
        )
        .unwrap();
        assert_eq!(parsed.items.len(), driver::BATCH);
        for item in parsed.items {
            let ItemOutcome::Accepted(ev) = item else {
                panic!("the generator produced an invalid event: {item:?}");
            };
            assert!(
                uuid::Uuid::parse_str(&ev.message_id).is_ok(),
                "not UUID-shaped: {}",
                ev.message_id
            );
            assert!(
                ids.insert(ev.message_id.clone()),
                "repeated messageId {}",
                ev.message_id
            );
            types.insert(ev.event_type);
        }
    }
    assert_eq!(types.len(), 2, "identify and track alternate");
    let avg = sizes.iter().sum::<usize>() / sizes.len();
    assert!(
        (700..800).contains(&avg),
        "events of ~745 bytes as sent, got {avg}"
    );
}

/// One 2-second round against the debug binary with the raw ceiling, nothing seeded, no fsync
/// count: what both smoke tests start from.
fn smoke_options(work: &std::path::Path, store: driver::StoreKind) -> driver::Options {
    driver::Options {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_freshgate")),
        lua: repo_file("scripts/bench/ingest.lua"),
        work_dir: work.to_path_buf(),
        store,
        secs: 2,
        warmup_secs: 0,
        rounds: 1,
        connections: 4,
        threads: 2,
        raw: true,
        fsync_secs: 0,
        seed: 0,
        prune_share: 0.0,
        seed_keep: None,
        seed_in_place: false,
        seed_current_hour: 0,
    }
}

/// `cargo bench --bench ingest -- --smoke` end to end (here against the debug binary): the
/// server is started, loaded by wrk for two seconds, every acknowledged event is in the store
/// (nothing rejected, nothing deduplicated away), and each reference and figure is produced.
#[test]
fn ingest_bench_smoke_runs_end_to_end() {
    ensure_tool("wrk");
    ensure_tool("strace");
    let work = tempfile::tempdir().unwrap();
    let opts = driver::Options {
        fsync_secs: 1,
        seed: 2_000,
        prune_share: 0.5,
        seed_current_hour: 500,
        ..smoke_options(work.path(), driver::StoreKind::Sqlite)
    };
    let report = driver::run(&opts).unwrap();
    assert_eq!(report.ours.len(), 1);
    let ours = &report.ours[0];
    assert!(ours.ok_200 > 0, "{ours:?}");
    assert_eq!(ours.non_200, 0);
    // The store holds the seeded events and every acknowledged one, plus at most the requests
    // still in flight when wrk stopped (stored, but their 200 was not counted).
    let stored = ours.stored_events.unwrap() - opts.seed - opts.seed_current_hour;
    let acked = ours.ok_200 * driver::BATCH as u64;
    let in_flight = (opts.connections * driver::BATCH) as u64;
    assert!(
        (acked..=acked + in_flight).contains(&stored),
        "{stored} events stored for {acked} acknowledged"
    );
    assert!(ours.events_per_sec > 0.0 && ours.latency_ms.p99 > 0.0);
    assert!(ours.cpu_ms_per_1000_events > 0.0 && ours.vm_hwm_mib > 0.0);
    assert!(ours.sys_cpu_ms_per_1000_events <= ours.cpu_ms_per_1000_events);
    assert!(ours.disk_write_bytes_per_event > 0.0, "{ours:?}");
    // Every appended event was one dedup lookup; the counters came through /metrics.
    assert!(ours.dedup_filter_hits_per_1000.is_some() && ours.dedup_run_probes_per_1000.is_some());
    assert!(ours.events_per_commit.is_some_and(|e| e >= 1.0));
    assert!(ours.wal_max_mib.is_some());
    assert!(ours.database.is_none(), "no database server on SQLite");
    assert_eq!(report.raw.len(), 1);
    assert!(report.raw[0].rows > 0 && report.raw[0].events_per_sec > 0.0);
    assert!(report.append_fsync.per_sec > 0.0);
    let fsync = report.fsync.as_ref().unwrap();
    assert!(
        fsync.fsync_calls > 0 && fsync.commits.is_some_and(|c| c > 0.0),
        "{fsync:?}"
    );
    let prune = report.prune.as_ref().unwrap();
    assert_eq!(
        prune.events,
        opts.seed / 2,
        "half the seeded events are older than the cut"
    );
}

/// The report's header says where the PostgreSQL server is (socket or TCP), never who logs in.
#[test]
fn bench_header_names_the_server_without_credentials() {
    assert_eq!(
        driver::server_location("postgres://postgres@%2Fvar%2Frun%2Fpostgresql"),
        "/var/run/postgresql (Unix socket)"
    );
    assert_eq!(
        driver::server_location("postgres://fg:secret@db.internal:5433/fg?sslmode=require"),
        "db.internal:5433 (TCP)"
    );
}

/// The same on PostgreSQL, one node: the server's round, then the raw ceiling through the
/// store's own append path (`PostgresStore::append` by concurrent appenders), each in a fresh
/// database that is dropped after.
#[test]
fn ingest_bench_smoke_runs_on_postgres() {
    ensure_tool("wrk");
    let work = tempfile::tempdir().unwrap();
    let root = crate::multinode::server_root();
    assert!(!root.contains('?'), "{root}");
    let opts = smoke_options(
        work.path(),
        driver::StoreKind::Postgres {
            server_url: root,
            nodes: 1,
        },
    );
    let report = driver::run(&opts).unwrap();
    assert_eq!(report.ours.len(), 1);
    let ours = &report.ours[0];
    assert!(ours.ok_200 > 0 && ours.non_200 == 0, "{ours:?}");
    assert!(ours.events_per_sec > 0.0 && ours.cpu_ms_per_1000_events > 0.0);
    // The test server runs on this machine (the local one, or a throwaway one of initdb).
    let database = ours.database.as_ref().expect("the local server's usage");
    assert!(database.cpu_ms_per_1000_events > 0.0, "{database:?}");
    assert_eq!(report.raw.len(), 1);
    let raw = &report.raw[0];
    assert!(
        raw.rows > 0 && raw.rows.is_multiple_of(driver::BATCH as u64) && raw.events_per_sec > 0.0,
        "{raw:?}"
    );
}
