//! Several `freshgate serve` processes on one PostgreSQL database, delivering to one standalone
//! emulator (issue 7). A node `kill -9`ed mid-delivery loses nothing that was acknowledged, per-contact
//! order holds across nodes, and all nodes together stay inside the account's per-minute quota; a
//! node drained with SIGTERM gives its leases back at once, and the other nodes finish its work.
//!
//! Which PostgreSQL server: `TEST_DATABASE_URL`, else `DATABASE_URL`; with neither, a throwaway
//! server from `scripts/pg-start.sh --watch-pid <this process>`. Each test creates its own
//! database (`fg_it_…`, with `psql`) and drops it at the end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{WRITE_KEY, identify};

const BIN: &str = env!("CARGO_BIN_EXE_freshgate");
const API_KEY: &str = "multinode-key";
/// The account's per-minute limit in the kill test: low enough that the nodes run into it.
const MINUTE_LIMIT: usize = 120;

// ---------------------------------------------------------------------------------------------
// PostgreSQL: the server and one fresh database per test.

/// The server's URL (its maintenance database), found or started once per test binary.
pub(crate) fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        for var in ["TEST_DATABASE_URL", "DATABASE_URL"] {
            if let Ok(url) = std::env::var(var)
                && !url.trim().is_empty()
            {
                return url.trim().to_owned();
            }
        }
        // The script's watcher stops the server once this process is gone.
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-start.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script} failed (set DATABASE_URL to use an existing server):\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("export DATABASE_URL="))
            .unwrap_or_else(|| panic!("{script} printed no DATABASE_URL:\n{stdout}"))
            .to_owned()
    })
}

/// The server's URL without a database or parameters (`postgres://user@host:port`), as the
/// ingest bench takes it.
pub(crate) fn server_root() -> String {
    with_database(server_url(), "")
        .trim_end_matches('/')
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

/// Run one SQL command with `psql` and return its unaligned output.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A fresh database on the server; dropping the guard drops the database.
pub(crate) struct TestDb {
    name: String,
    pub(crate) url: String,
}

impl TestDb {
    pub(crate) fn create() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "fg_it_{}_{}_{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        psql(
            server_url(),
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        )
        .unwrap_or_else(|e| panic!("cannot create a database on {}: {e}", server_url()));
        let url = with_database(server_url(), &name);
        Self { name, url }
    }

    fn query(&self, sql: &str) -> String {
        psql(&self.url, sql).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // FORCE ends the connections of nodes that were killed and not yet noticed by the server.
        if let Err(e) = psql(
            server_url(),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: the emulator and the nodes.

/// A child process killed when dropped.
struct Proc {
    child: Child,
    /// The `http://…` URL its first stdout line announced.
    url: String,
}

impl Proc {
    /// Spawn `cmd` and read the URL from its first stdout line; stdout is drained afterwards so
    /// the child never blocks on a full pipe.
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = match lines.next() {
            Some(Ok(l)) => l,
            other => {
                let _ = child.kill();
                panic!("{cmd:?} printed no first line ({other:?})");
            }
        };
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .to_owned();
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self { child, url }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal with `kill(1)` (the crate has no libc binding).
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// Wait for the process to end, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "process {} did not exit within {limit:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The standalone emulator and its admin API.
struct Emulator {
    proc: Proc,
    http: reqwest::Client,
}

impl Emulator {
    fn start(minute_limit: usize, dir: &Path) -> Self {
        Self::start_with(minute_limit, dir, &[])
    }

    /// With more emulator flags (`--bulk-job-delay-ms 600000` …).
    fn start_with(minute_limit: usize, dir: &Path, extra: &[&str]) -> Self {
        let proc = Proc::spawn(
            Command::new(BIN)
                .args(["emulator", "--listen", "127.0.0.1:0", "--api-key", API_KEY])
                .args(["--minute-limit", &minute_limit.to_string()])
                .args(["--hourly-limit", "100000"])
                .args(extra)
                .stderr(File::create(dir.join("emulator.log")).unwrap()),
        );
        Self {
            proc,
            http: reqwest::Client::new(),
        }
    }

    /// `http://ADDR/crm/sales/api`
    fn base_url(&self) -> &str {
        &self.proc.url
    }

    fn admin(&self, path: &str) -> String {
        format!(
            "{}/__emulator{path}",
            self.proc.url.trim_end_matches("/crm/sales/api")
        )
    }

    async fn fault(&self, fault: Value) {
        let r = self
            .http
            .post(self.admin("/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.admin(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `cf_employees` of every contact, by email.
    async fn values(&self) -> BTreeMap<String, i64> {
        let state = self.get("/state").await;
        state["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                Some((
                    c["email"].as_str()?.to_owned(),
                    c["custom_field"]["cf_employees"].as_i64()?,
                ))
            })
            .collect()
    }

    async fn requests(&self) -> Vec<Value> {
        self.get("/requests").await.as_array().unwrap().clone()
    }
}

/// Configuration shared by every node of a test; `extra` is appended to the destination.
fn write_config(
    dir: &Path,
    emulator: &Emulator,
    minute_limit: usize,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join("freshgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"[store]
kind = "postgres"

[[sources]]
name = "web"
write_keys = ["{WRITE_KEY}"]

[[destinations]]
name = "crm"
base_url = "{}"
api_key_env = "FRESHWORKS_API_KEY"
hourly_limit = 100000
minute_limit = {minute_limit}
headroom = 1.0
concurrency = 4
{extra}
"#,
            emulator.base_url()
        ),
    )
    .unwrap();
    path
}

/// Start one `freshgate serve` on the database, with its own data dir and log file.
fn start_node(config: &Path, db: &TestDb, dir: &Path, n: usize) -> Proc {
    let data = dir.join(format!("node{n}"));
    std::fs::create_dir_all(&data).unwrap();
    Proc::spawn(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&data)
            .env("DATABASE_URL", &db.url)
            .env("FRESHWORKS_API_KEY", API_KEY)
            .env(
                "RUST_LOG",
                std::env::var("MN_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(File::create(dir.join(format!("node{n}.log"))).unwrap()),
    )
}

/// `freshgate queue stats --json` against the shared database.
fn queue_stats(config: &Path, db: &TestDb) -> Value {
    let out = Command::new(BIN)
        .args(["queue", "stats", "--json", "--config"])
        .arg(config)
        .env("DATABASE_URL", &db.url)
        .env("FRESHWORKS_API_KEY", API_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "queue stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[key].as_u64().unwrap())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Traffic and checks.

fn email(user: usize) -> String {
    format!("mn-u{user}@example.com")
}

/// Identify number `seq` of `user`: timestamps increase with `seq`, `cf_employees` carries it.
fn event(user: usize, seq: usize) -> Value {
    identify(
        &format!("mn-u{user}"),
        &email(user),
        json!({ "cf_employees": seq }),
        &format!("2026-11-20T10:00:{:02}.{:03}Z", seq * 2, user % 1000),
        &format!("mn-{user}-{seq}"),
    )
}

/// POST a batch to the node at `preferred`, or, when it does not answer 200, to the next ones
/// (what a load balancer in front of the nodes does). Returns once some node acknowledged it.
async fn post_batch(client: &reqwest::Client, nodes: &[String], preferred: usize, batch: &[Value]) {
    let body = json!({ "batch": batch });
    let start = Instant::now();
    for attempt in 0.. {
        let url = &nodes[(preferred + attempt) % nodes.len()];
        let r = client
            .post(format!("{url}/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&body)
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 200) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no node acknowledged a batch: {r:?}"
        );
        if attempt % nodes.len() == nodes.len() - 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Post identify `seq` of every user, split over the nodes (user `u` to node `(u + seq) % n`, so
/// each user's events move between nodes), one batch per node, all at once.
async fn post_round(client: &reqwest::Client, nodes: &[String], users: usize, seq: usize) {
    let mut tasks = Vec::new();
    for n in 0..nodes.len() {
        let batch: Vec<Value> = (0..users)
            .filter(|u| (u + seq) % nodes.len() == n)
            .map(|u| event(u, seq))
            .collect();
        let (client, nodes) = (client.clone(), nodes.to_vec());
        tasks.push(tokio::spawn(async move {
            post_batch(&client, &nodes, n, &batch).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every user's contact holds `last`, and there is exactly one contact per user.
async fn wait_all_final(emulator: &Emulator, users: usize, last: usize, limit: Duration) {
    wait_until("every contact's last value", limit, || async {
        let values = emulator.values().await;
        let behind: Vec<_> = (0..users)
            .filter(|&u| values.get(&email(u)).copied() != i64::try_from(last).ok())
            .collect();
        if behind.is_empty() && values.len() == users {
            Ok(())
        } else {
            Err(format!(
                "{} contacts, {} not yet at {last}: {:?}",
                values.len(),
                behind.len(),
                &behind[..behind.len().min(8)]
            ))
        }
    })
    .await;
}

async fn wait_nothing_pending(config: &Path, db: &TestDb) {
    wait_until("an empty queue", Duration::from_secs(60), || async {
        let stats = queue_stats(config, db);
        if stat(&stats, "pending") == 0 {
            Ok(())
        } else {
            Err(stats.to_string())
        }
    })
    .await;
}

/// The upserts of each contact, in the order the emulator received them, as `cf_employees`:
/// single upserts and the items of bulk upserts (the nodes use the bulk path for backlogs).
fn upserts_per_contact(log: &[Value]) -> BTreeMap<String, Vec<i64>> {
    let mut per: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in log {
        let path = r["path"].as_str().unwrap();
        let items: Vec<(Value, Value)> = if path.ends_with("/contacts/upsert") {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            // By the email the write carries (the identifier may be the `external_id`).
            vec![(body["contact"]["emails"].clone(), body["contact"].clone())]
        } else if path.ends_with("/contacts/bulk_upsert") {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| (item["data"]["emails"].clone(), item["data"].clone()))
                .collect()
        } else {
            continue;
        };
        for (email, contact) in items {
            if let (Some(email), Some(seq)) = (
                email.as_str(),
                contact["custom_field"]["cf_employees"].as_i64(),
            ) {
                per.entry(email.to_owned()).or_default().push(seq);
            }
        }
    }
    per
}

/// The most counted calls the emulator saw in any sliding 60 s window.
fn busiest_minute(log: &[Value]) -> usize {
    let mut at: Vec<i128> = log
        .iter()
        .filter(|r| r["counted"].as_bool() == Some(true))
        .map(|r| {
            OffsetDateTime::parse(r["at"].as_str().unwrap(), &Rfc3339)
                .unwrap()
                .unix_timestamp_nanos()
        })
        .collect();
    at.sort_unstable();
    let minute = 60_000_000_000_i128;
    let mut first = 0;
    let mut most = 0;
    for last in 0..at.len() {
        while at[last] - at[first] >= minute {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// Assertions shared by both tests on the emulator's request log.
fn check_log(log: &[Value], minute_limit: usize) {
    let failed: Vec<_> = log
        .iter()
        .filter(|r| !(200..300).contains(&r["status"].as_u64().unwrap()))
        .map(|r| {
            format!(
                "{} {} at {} -> {}",
                r["method"], r["path"], r["at"], r["status"]
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "the emulator refused calls (a 429 means the nodes together overspent the quota): {failed:?}"
    );
    for (contact, seqs) in upserts_per_contact(log) {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "upserts of {contact} went backwards: {seqs:?}"
        );
    }
    let busiest = busiest_minute(log);
    assert!(
        busiest <= minute_limit,
        "{busiest} calls in one sliding minute, limit {minute_limit}"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_kill_9_keep_order_and_share_the_quota() {
    const USERS: usize = 60;
    const EVENTS: usize = 5;
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(MINUTE_LIMIT, dir.path());
    // Every call takes a while, so deliveries are in flight when the node dies.
    emulator.fault(json!({"kind": "latency", "ms": 30})).await;
    // One upsert per contact (no bulk jobs): hundreds of calls, so the quota binds and each
    // contact's order shows call by call.
    let config = write_config(dir.path(), &emulator, MINUTE_LIMIT, "bulk_min_contacts = 0");
    // One after the other: the first runs the migrations.
    let mut nodes: Vec<Proc> = (0..3)
        .map(|n| start_node(&config, &db, dir.path(), n))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    for seq in 0..3 {
        post_round(&client, &urls, USERS, seq).await;
    }
    wait_until("deliveries under way", Duration::from_secs(60), || async {
        let n = upserts_per_contact(&emulator.requests().await)
            .values()
            .map(Vec::len)
            .sum::<usize>();
        if n >= 15 {
            Ok(())
        } else {
            Err(format!("{n} contacts upserted"))
        }
    })
    .await;
    let leased = db.query("SELECT count(*) FROM contact_keys WHERE lease_owner IS NOT NULL");
    nodes[0].signal("KILL");
    nodes[0].wait_exit(Duration::from_secs(10));
    // The rest of the traffic: batches meant for the dead node go to the next one.
    for seq in 3..EVENTS {
        post_round(&client, &urls, USERS, seq).await;
    }

    // The dead node's leases run out after a minute; the quota, spent in the first seconds,
    // frees up about then too.
    wait_all_final(&emulator, USERS, EVENTS - 1, Duration::from_secs(240)).await;
    wait_nothing_pending(&config, &db).await;
    let log = emulator.requests().await;
    check_log(&log, MINUTE_LIMIT);
    let stats = queue_stats(&config, &db);
    assert_eq!(stat(&stats, "dead"), 0, "{stats}");
    // `queue stats` reads indexes only and no longer counts every event: ask the database.
    assert_eq!(
        db.query("SELECT count(*) FROM events").trim(),
        (USERS * EVENTS).to_string(),
        "{stats}"
    );
    let quota = emulator.get("/quota").await;
    eprintln!(
        "kill -9 test: {} calls ({} in the busiest minute, limit {MINUTE_LIMIT}), {leased} contacts leased at the kill; emulator quota {quota}",
        log.len(),
        busiest_minute(&log)
    );
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_node_and_the_others_finish_its_work() {
    const USERS: usize = 40;
    const EVENTS: usize = 3;
    let minute_limit = 10_000;
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(minute_limit, dir.path());
    // Slow calls: the node holds leases for a whole second per contact.
    emulator.fault(json!({"kind": "latency", "ms": 1000})).await;
    // The default settings: a backlog this size goes out through bulk jobs.
    let config = write_config(dir.path(), &emulator, minute_limit, "");

    // The first node takes all the traffic and starts delivering alone.
    let mut first = start_node(&config, &db, dir.path(), 0);
    let client = reqwest::Client::new();
    let only_first = [first.url.clone()];
    for seq in 0..EVENTS {
        post_round(&client, &only_first, USERS, seq).await;
    }
    let mut owner = String::new();
    wait_until("the first node to lease", Duration::from_secs(30), || {
        let found = db.query(
            "SELECT coalesce(min(lease_owner), '') FROM contact_keys WHERE lease_owner IS NOT NULL",
        );
        owner.clone_from(&found);
        async move {
            if found.is_empty() {
                Err("no lease yet".to_owned())
            } else {
                Ok(())
            }
        }
    })
    .await;
    let held_sql = format!("SELECT count(*) FROM contact_keys WHERE lease_owner = '{owner}'");
    let held: u64 = db.query(&held_sql).parse().unwrap();
    assert!(held > 0, "the node holds leases when it is told to stop");

    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "a drained node exits cleanly: {status:?}");
    assert_eq!(
        db.query(&held_sql),
        "0",
        "the drained node gave its leases back instead of letting them expire"
    );
    // Usually the drained node leaves work behind; on a loaded machine its in-flight calls can
    // cover every pending event. Either way nothing may be lost or dead below.
    let stats = queue_stats(&config, &db);
    if stat(&stats, "pending") == 0 {
        eprintln!("the drained node finished every pending event before it exited: {stats}");
    }

    // Two other nodes finish it.
    let others: Vec<Proc> = (1..3)
        .map(|n| start_node(&config, &db, dir.path(), n))
        .collect();
    wait_all_final(&emulator, USERS, EVENTS - 1, Duration::from_secs(120)).await;
    wait_nothing_pending(&config, &db).await;
    check_log(&emulator.requests().await, minute_limit);
    let stats = queue_stats(&config, &db);
    assert_eq!(stat(&stats, "dead"), 0, "{stats}");
    // `queue stats` reads indexes only and no longer counts every event: ask the database.
    assert_eq!(
        db.query("SELECT count(*) FROM events").trim(),
        (USERS * EVENTS).to_string(),
        "{stats}"
    );
    drop(others);
}

/// A node told to stop while its bulk job is still being processed by Freshworks stops polling
/// it: the job's records are retried later (upserts are idempotent), and the node exits at
/// once instead of polling the job on its backoff (12 polls, over four minutes), past what
/// systemd or Kubernetes give a stopping process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_bulk_job_still_processing() {
    const USERS: usize = 40;
    const EVENTS: usize = 3;
    let minute_limit = 10_000;
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    // Jobs stay IN_PROGRESS for ten minutes.
    let emulator =
        Emulator::start_with(minute_limit, dir.path(), &["--bulk-job-delay-ms", "600000"]);
    let config = write_config(dir.path(), &emulator, minute_limit, "bulk_min_contacts = 2");
    let mut node = start_node(&config, &db, dir.path(), 0);
    let client = reqwest::Client::new();
    let nodes = [node.url.clone()];
    for seq in 0..EVENTS {
        post_round(&client, &nodes, USERS, seq).await;
    }
    wait_until("a bulk job to be posted", Duration::from_secs(60), || {
        let emulator = &emulator;
        async move {
            let posted = emulator
                .requests()
                .await
                .iter()
                .any(|r| r.to_string().contains("bulk_upsert"));
            if posted {
                Ok(())
            } else {
                Err("no bulk_upsert yet".to_owned())
            }
        }
    })
    .await;

    node.signal("TERM");
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "a stopped node exits cleanly: {status:?}");
    assert_eq!(
        db.query("SELECT count(*) FROM contact_keys WHERE lease_owner IS NOT NULL"),
        "0",
        "the stopped node gave its leases back"
    );
    // Nothing was lost or given up: the job's events wait to be sent again.
    let stats = queue_stats(&config, &db);
    assert_eq!(stat(&stats, "dead"), 0, "{stats}");
    assert!(stat(&stats, "pending") > 0, "{stats}");
    assert_eq!(
        db.query("SELECT count(*) FROM events").trim(),
        (USERS * EVENTS).to_string(),
        "{stats}"
    );
}
