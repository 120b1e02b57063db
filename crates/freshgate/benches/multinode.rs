//! Multi-node benchmark (issue 7): `cargo bench -p freshgate --bench multinode`.
//!
//! Owns the throughput figures of several `freshgate serve` processes (the release binary) on one
//! PostgreSQL database, next to one node on SQLite:
//!
//! * ingest: events/s acknowledged over `/v1/batch` (100 track events per request) by
//!   `CLIENTS` keep-alive clients spread over the nodes, with no destination configured, so only
//!   the durable append is measured;
//! * delivery: identifies/s delivered to a standalone emulator whose limits are raised out of
//!   the way, from the first post until every contact is in the emulator; once with one upsert
//!   per contact (`bulk_min_contacts = 0`) and once with the default bulk path for backlogs.
//!
//! PostgreSQL: `TEST_DATABASE_URL`, else `DATABASE_URL`, else a throwaway server from
//! `scripts/pg-start.sh --watch-pid <this process>`. Each scenario uses a fresh database.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_freshgate");
const WRITE_KEY: &str = "bench-write-key";
const API_KEY: &str = "bench-key";
/// Events per `/v1/batch` request.
const BATCH: usize = 100;
/// Concurrent ingest clients, spread round-robin over the nodes.
const CLIENTS: usize = 8;
/// Requests each ingest client sends.
const REQUESTS_PER_CLIENT: usize = 40;
/// Distinct users (one identify each) in a delivery run.
const DELIVERY_USERS: usize = 2_000;
/// Longest any phase may take before the run gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// A child process killed when dropped.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    /// Spawn `cmd` and take the URL from its first stdout line; stdout is drained afterwards.
    fn spawn(cmd: &mut Command) -> Result<Self> {
        let mut child = cmd.stdout(Stdio::piped()).spawn().context("spawn")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let Some(Ok(first)) = lines.next() else {
            let _ = child.kill();
            bail!("{cmd:?} printed nothing");
        };
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .with_context(|| format!("no URL in {first:?}"))?
            .to_owned();
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Ok(Self { child, url })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the nodes keep their queue.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Postgres,
    Sqlite,
}

/// The PostgreSQL server's URL (its maintenance database).
fn server_url() -> Result<String> {
    for var in ["TEST_DATABASE_URL", "DATABASE_URL"] {
        if let Ok(url) = std::env::var(var)
            && !url.trim().is_empty()
        {
            return Ok(url.trim().to_owned());
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-start.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("export DATABASE_URL="))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{script} printed no DATABASE_URL: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, params) = url
        .split_once('?')
        .map_or((url, None), |(b, p)| (b, Some(p)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let root = base[start..].find('/').map_or(base, |i| &base[..start + i]);
    params.map_or_else(|| format!("{root}/{db}"), |p| format!("{root}/{db}?{p}"))
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .context("psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A fresh database, dropped with the guard.
struct Db {
    server: String,
    name: String,
    url: String,
}

impl Db {
    fn create(server: &str, tag: &str) -> Result<Self> {
        let name = format!("fg_bench_{}_{tag}", std::process::id());
        psql(
            server,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(
            server,
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        )?;
        Ok(Self {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
        })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop {}: {e}", self.name);
        }
    }
}

/// One scenario's running processes.
struct Cluster {
    nodes: Vec<Proc>,
    emulator: Option<Proc>,
    // Dropped after the nodes (fields drop in order).
    _db: Option<Db>,
    _dir: tempfile::TempDir,
}

/// Start the emulator (for delivery runs) and `nodes` gateways; `destination` is appended to the
/// config when there is an emulator.
fn start_cluster(
    backend: Backend,
    server: Option<&str>,
    nodes: usize,
    destination: Option<&str>,
    tag: &str,
) -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let db = match backend {
        Backend::Postgres => Some(Db::create(server.context("a PostgreSQL server")?, tag)?),
        Backend::Sqlite => None,
    };
    let mut toml = String::new();
    if backend == Backend::Postgres {
        toml.push_str("[store]\nkind = \"postgres\"\n\n");
    }
    writeln!(
        toml,
        "[[sources]]\nname = \"web\"\nwrite_keys = [\"{WRITE_KEY}\"]\n"
    )?;
    let emulator = match destination {
        Some(extra) => {
            let emu = Proc::spawn(
                Command::new(BIN)
                    .args(["emulator", "--listen", "127.0.0.1:0", "--api-key", API_KEY])
                    .args(["--minute-limit", "1000000", "--hourly-limit", "100000000"])
                    .stderr(Stdio::null()),
            )?;
            writeln!(
                toml,
                "[[destinations]]\nname = \"crm\"\nbase_url = \"{}\"\napi_key_env = \"FRESHWORKS_API_KEY\"\nhourly_limit = 100000000\nminute_limit = 1000000\nheadroom = 1.0\nconcurrency = 8\n{extra}",
                emu.url
            )?;
            Some(emu)
        }
        None => None,
    };
    let config = dir.path().join("freshgate.toml");
    std::fs::write(&config, toml)?;
    let mut procs = Vec::new();
    // One after the other: the first node runs the migrations.
    for n in 0..nodes {
        let data = dir.path().join(format!("node{n}"));
        std::fs::create_dir_all(&data)?;
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("FRESHWORKS_API_KEY", API_KEY)
        .env("RUST_LOG", "error")
        .stderr(File::create(dir.path().join(format!("node{n}.log")))?);
        if let Some(db) = &db {
            cmd.env("DATABASE_URL", &db.url);
        }
        procs.push(Proc::spawn(&mut cmd)?);
    }
    Ok(Cluster {
        nodes: procs,
        emulator,
        _db: db,
        _dir: dir,
    })
}

/// POST until some node answers 200 (503 `saturated` is retried, as clients do).
async fn post(client: &reqwest::Client, urls: &[String], first: usize, body: &Value) -> Result<()> {
    let start = Instant::now();
    for attempt in 0.. {
        let url = &urls[(first + attempt) % urls.len()];
        let r = client
            .post(format!("{url}/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(body)
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 200) {
            return Ok(());
        }
        if start.elapsed() > PHASE_LIMIT {
            bail!("no node acknowledged a batch: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Events/s acknowledged by `CLIENTS` clients, each sending to one node (round-robin).
async fn ingest(cluster: &Cluster) -> Result<f64> {
    let urls: Arc<Vec<String>> = Arc::new(cluster.nodes.iter().map(|n| n.url.clone()).collect());
    let client = reqwest::Client::new();
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, urls, acked) = (client.clone(), Arc::clone(&urls), Arc::clone(&acked));
        tasks.push(tokio::spawn(async move {
            for r in 0..REQUESTS_PER_CLIENT {
                let batch: Vec<Value> = (0..BATCH)
                    .map(|i| {
                        json!({
                            "type": "track", "event": "Order Completed",
                            "userId": format!("user-{}", (c * 7919 + r * 101 + i) % 5000),
                            "messageId": format!("c{c}-r{r}-i{i}"),
                            "timestamp": "2026-11-20T10:00:00Z",
                            "properties": {"order_id": format!("o-{c}-{r}-{i}"), "total": 42.5, "currency": "EUR",
                                           "products": [{"sku": "sku-1", "price": 21.25, "quantity": 2}]}
                        })
                    })
                    .collect();
                post(&client, &urls, c, &json!({ "batch": batch })).await?;
                acked.fetch_add(BATCH as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(acked.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Identifies/s from the first post until the emulator holds every contact.
async fn delivery(cluster: &Cluster) -> Result<f64> {
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let emulator = cluster
        .emulator
        .as_ref()
        .context("delivery needs the emulator")?;
    let state_url = format!(
        "{}/__emulator/state",
        emulator.url.trim_end_matches("/crm/sales/api")
    );
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, chunk) in (0..DELIVERY_USERS)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .enumerate()
    {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|u| {
                json!({
                    "type": "identify", "userId": format!("u{u}"), "messageId": format!("id-{u}"),
                    "timestamp": "2026-11-20T10:00:00Z",
                    "traits": {"email": format!("u{u}@example.com"), "firstName": "Bench", "cf_employees": u}
                })
            })
            .collect();
        let (client, urls) = (client.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            post(&client, &urls, n, &json!({ "batch": batch })).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    loop {
        let state: Value = client.get(&state_url).send().await?.json().await?;
        let n = state["contacts"].as_array().map_or(0, Vec::len);
        if n >= DELIVERY_USERS {
            return Ok(DELIVERY_USERS as f64 / start.elapsed().as_secs_f64());
        }
        if start.elapsed() > PHASE_LIMIT {
            bail!("only {n} of {DELIVERY_USERS} contacts delivered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Row {
    backend: &'static str,
    nodes: usize,
    ingest: f64,
    single: f64,
    bulk: f64,
}

async fn scenario(backend: Backend, server: Option<&str>, nodes: usize) -> Result<Row> {
    let name = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let ingest = {
        let c = start_cluster(backend, server, nodes, None, &format!("i{nodes}"))?;
        ingest(&c).await?
    };
    let single = {
        let c = start_cluster(
            backend,
            server,
            nodes,
            Some("bulk_min_contacts = 0"),
            &format!("s{nodes}"),
        )?;
        delivery(&c).await?
    };
    let bulk = {
        let c = start_cluster(backend, server, nodes, Some(""), &format!("b{nodes}"))?;
        delivery(&c).await?
    };
    let row = Row {
        backend: name,
        nodes,
        ingest,
        single,
        bulk,
    };
    eprintln!(
        "{name} x{nodes}: ingest {ingest:.0} ev/s, delivery {single:.0} id/s (single), {bulk:.0} id/s (bulk)"
    );
    Ok(row)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = server_url()?;
        let mut rows = Vec::new();
        rows.push(scenario(Backend::Sqlite, None, 1).await?);
        for nodes in 1..=3 {
            rows.push(scenario(Backend::Postgres, Some(&server), nodes).await?);
        }
        println!();
        println!(
            "multinode: {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests x {BATCH} events; delivery of {DELIVERY_USERS} identifies (distinct users)"
        );
        println!(
            "| backend  | nodes | ingest events/s | delivery identifies/s (single upserts) | delivery identifies/s (bulk path) |"
        );
        println!("|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {:<8} | {} | {:.0} | {:.0} | {:.0} |",
                r.backend, r.nodes, r.ingest, r.single, r.bulk
            );
        }
        Ok(())
    })
}
