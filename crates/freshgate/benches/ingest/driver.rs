//! The ingest bench's driver: the real `freshgate serve` binary in its own process, loaded by
//! `wrk` (a separate process, with `scripts/bench/ingest.lua` generating the bodies), next to the
//! physical references measured on the same disk in the same run.
//!
//! Shared by the bench (`benches/ingest/main.rs`) and its smoke test (`tests/it/bench.rs`), which
//! runs it for two seconds against the debug binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use freshgate_store::sqlite::RawWriter;
use freshgate_store::{AppendBatch, NewEvent};
use serde::Serialize;

/// The write key the bench's source accepts.
pub const WRITE_KEY: &str = "bench-write-key";
/// Events per request (the body shape).
pub const BATCH: usize = 100;
/// The store's default dedup window, as the server is configured.
const DEDUP_WINDOW_MS: i64 = 7 * 24 * 3_600_000;

/// Which store the server runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite in a fresh data dir per round.
    Sqlite,
    /// PostgreSQL at this server URL (`postgres://user@host:port`), a fresh database per round,
    /// with this many `freshgate serve` nodes sharing it.
    Postgres { server_url: String, nodes: usize },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `freshgate` binary under test.
    pub binary: PathBuf,
    /// The wrk body script.
    pub lua: PathBuf,
    /// Data dirs and scratch files go here (the disk being measured).
    pub work_dir: PathBuf,
    pub store: StoreKind,
    /// Measured seconds per round (after `warmup_secs` of unmeasured load).
    pub secs: u64,
    pub warmup_secs: u64,
    /// Rounds of ours and of the raw ceiling, alternating.
    pub rounds: usize,
    /// wrk connections and threads.
    pub connections: usize,
    pub threads: usize,
    /// Also run the raw ceiling: the store's own append path without HTTP or JSON (SQLite: one
    /// writer thread in groups; PostgreSQL: one pool, `connections` concurrent appends).
    pub raw: bool,
    /// Also count fsyncs with `strace -c` in a run of this many seconds (0: skip).
    pub fsync_secs: u64,
    /// Events put in the store through the raw path before the measured rounds (scaling runs),
    /// received before the current hour.
    pub seed: u64,
    /// Events put in the store received in the current hour (as an ingest that has run since
    /// the hour began leaves it): the part of the hour-keyed indexes that ingest inserts into.
    pub seed_current_hour: u64,
    /// Also time a retention prune of this share of the seeded events after the run.
    pub prune_share: f64,
    /// Keep the seeded database in this directory and start each round from a copy of it:
    /// seeding 10 M events takes ten minutes, copying them seconds (A/B runs of builds).
    pub seed_keep: Option<PathBuf>,
    /// With `seed_keep`: run the rounds on the kept store itself (a hard link), not a copy, for
    /// stores too large to copy on the disk at hand (50 M events are about 63 GB). Each round
    /// then adds its events (and the prune, if any, removes its share) to the kept store.
    pub seed_in_place: bool,
}

/// One measured round of the server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRound {
    pub nodes: usize,
    pub secs: f64,
    pub requests: u64,
    pub ok_200: u64,
    pub non_200: u64,
    pub socket_errors: u64,
    pub events_per_sec: f64,
    pub latency_ms: Latency,
    /// Server CPU (all nodes) per 1,000 acknowledged events, in ms.
    pub cpu_ms_per_1000_events: f64,
    /// Server CPU as % of one core.
    pub cpu_percent: f64,
    /// Of that CPU, the part spent in the kernel (system time), per 1,000 events, in ms.
    pub sys_cpu_ms_per_1000_events: f64,
    /// Bytes the server (all nodes) read from and wrote to the block device, per event
    /// (`/proc/PID/io` `read_bytes`, `write_bytes`): reads say what the page cache missed.
    pub disk_read_bytes_per_event: f64,
    pub disk_write_bytes_per_event: f64,
    /// Peak resident memory of the (first) server process, MiB.
    pub vm_hwm_mib: f64,
    /// Largest `-wal` file seen while the load ran (SQLite), MiB.
    pub wal_max_mib: Option<f64>,
    /// Group commits and their average size (SQLite, from `/metrics`).
    pub commits_per_sec: Option<f64>,
    pub events_per_commit: Option<f64>,
    /// Dedup day filters that said "maybe", and hours of the messageId index probed, per
    /// 1,000 dedup lookups (SQLite, from `/metrics`).
    pub dedup_filter_hits_per_1000: Option<f64>,
    pub dedup_run_probes_per_1000: Option<f64>,
    /// Seconds per group commit and per checkpoint pause of the writer (from `/metrics`).
    pub group_commit: Option<Durations>,
    pub checkpoint_pause: Option<Durations>,
    /// Events in the store after the round (warm-up included).
    pub stored_events: Option<u64>,
    /// What the PostgreSQL server on this machine used (all its processes), when there is one.
    pub database: Option<DatabaseUsage>,
    pub load_avg_before: String,
}

/// The local PostgreSQL server's share of a round: its backends, WAL writer, checkpointer and
/// the rest, per acknowledged event. On a 2-core machine the database and freshgate share the
/// cores, so this is the cost that decides how far PostgreSQL ingest goes, and a steadier A/B
/// figure than events/s (the checkpoints' timing moves a 15 s round's rate by ±10 %).
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseUsage {
    pub cpu_ms_per_1000_events: f64,
    pub cpu_percent: f64,
    pub disk_write_bytes_per_event: f64,
}

/// Percentiles of the acknowledgement latency (per request of `BATCH` events), ms.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// A duration histogram of the server between two scrapes.
#[derive(Debug, Clone, Serialize)]
pub struct Durations {
    pub count: f64,
    pub mean_ms: f64,
    pub over_25ms: f64,
    pub over_50ms: f64,
}

/// One round of the raw ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct RawRound {
    pub rows: u64,
    pub rows_per_commit: usize,
    pub events_per_sec: f64,
    pub ms_per_commit: f64,
    pub load_avg_before: String,
}

/// fsyncs counted with strace during a loaded run.
#[derive(Debug, Clone, Serialize)]
pub struct FsyncCount {
    pub secs: f64,
    pub fsync_calls: u64,
    pub per_sec: f64,
    pub commits: Option<f64>,
    pub events_per_sec: f64,
}

/// The physical fsync rate of a 75 KiB append on the bench's disk.
#[derive(Debug, Clone, Serialize)]
pub struct AppendFsync {
    pub bytes: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A retention prune timed on the seeded store.
#[derive(Debug, Clone, Serialize)]
pub struct PruneCost {
    pub events: u64,
    pub secs: f64,
    pub events_per_sec: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cpus: usize,
    pub store: String,
    pub seeded_events: u64,
    /// Of them, received in the hour the rounds began.
    pub seeded_current_hour: u64,
    pub seed_secs: Option<f64>,
    pub append_fsync: AppendFsync,
    pub ours: Vec<ServerRound>,
    pub raw: Vec<RawRound>,
    pub fsync: Option<FsyncCount>,
    pub prune: Option<PruneCost>,
}

/// Run the bench, printing each figure as it comes.
///
/// # Errors
/// A missing tool (wrk, strace, psql), a server that does not start, a failed measurement.
pub fn run(opts: &Options) -> Result<Report> {
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let store_name = match &opts.store {
        StoreKind::Sqlite => "sqlite".to_owned(),
        StoreKind::Postgres { nodes, server_url } => {
            format!(
                "postgres at {}, {nodes} node(s)",
                server_location(server_url)
            )
        }
    };
    println!(
        "== ingest bench: {store_name}; wrk -t{} -c{}, /v1/batch x {BATCH} events, {} s rounds (+{} s warm-up), {} round(s); {cpus} CPUs, load average {}",
        opts.threads,
        opts.connections,
        opts.secs,
        opts.warmup_secs,
        opts.rounds,
        load_avg()
    );
    let append_fsync = append_fsync_rate(&opts.work_dir, Duration::from_secs(2))?;
    println!(
        "  reference: fsync of a {} KiB append on this disk: {:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
        append_fsync.bytes / 1024,
        append_fsync.per_sec,
        append_fsync.p50_ms,
        append_fsync.p99_ms
    );

    // Templates for the raw path: real rows, as the server stored them.
    let mut templates: Vec<NewEvent> = Vec::new();
    let mut seed_secs = None;
    let mut prune = None;
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    let mut fsync = None;
    for round in 0..opts.rounds {
        let data_dir = tempfile::Builder::new()
            .prefix("fg-bench-")
            .tempdir_in(&opts.work_dir)?;
        let db_name = format!("fg_bench_{}_{round}", std::process::id());
        if let StoreKind::Postgres { server_url, .. } = &opts.store {
            recreate_database(server_url, &db_name)?;
        }
        let seeding = opts.seed + opts.seed_current_hour;
        if seeding > 0 && opts.store == StoreKind::Sqlite {
            if templates.is_empty() {
                templates = capture_templates(opts, &opts.work_dir)?;
            }
            let node0 = data_dir.path().join("node0");
            std::fs::create_dir_all(&node0)?;
            let node_db = node0.join("freshgate.db");
            match &opts.seed_keep {
                None => {
                    seed_secs = Some(seed(
                        &node_db,
                        &templates,
                        opts.seed,
                        opts.seed_current_hour,
                    )?);
                }
                Some(keep) => {
                    // The current hour's part is only the current hour's while that hour lasts.
                    let kept =
                        keep.join(format!("seed-{}-{}.db", opts.seed, opts.seed_current_hour));
                    if kept.exists() {
                        println!(
                            "  seeded store kept from an earlier run: {}",
                            kept.display()
                        );
                    } else {
                        // Seeded apart and renamed once complete, so that an interrupted
                        // seeding is never taken for a kept store.
                        std::fs::create_dir_all(keep)?;
                        let partial = tempfile::tempdir_in(keep)?;
                        let db = partial.path().join("seed.db");
                        seed_secs = Some(seed(&db, &templates, opts.seed, opts.seed_current_hour)?);
                        std::fs::rename(&db, &kept)?;
                    }
                    if opts.seed_in_place {
                        std::fs::hard_link(&kept, &node_db)
                            .with_context(|| format!("linking {}", kept.display()))?;
                        println!("  running on the kept store itself (--seed-in-place)");
                    } else {
                        let started = Instant::now();
                        std::fs::copy(&kept, &node_db)
                            .with_context(|| format!("copying {}", kept.display()))?;
                        println!(
                            "  copied the seeded store in {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            // The seeding or the copy leaves gigabytes of dirty pages in the OS cache; written
            // back during the round, they would compete with the server's own writes.
            let started = Instant::now();
            std::fs::File::open(&node_db)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", node_db.display()))?;
            println!(
                "  wrote the seeded store back to disk in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let r = server_round(opts, data_dir.path(), &db_name, round)?;
        print_round(round, &r);
        let events_per_commit = r.events_per_commit;
        ours.push(r);
        if opts.store == StoreKind::Sqlite {
            let db = data_dir.path().join("node0").join("freshgate.db");
            if templates.is_empty() {
                templates = read_templates(&db, 1000)?;
            }
            if opts.seed > 0 && opts.prune_share > 0.0 && round + 1 == opts.rounds {
                let p = prune_cost(&db, opts.seed, opts.prune_share)?;
                println!(
                    "  prune: {} events in {:.2} s ({:.0} events/s)",
                    p.events, p.secs, p.events_per_sec
                );
                prune = Some(p);
            }
        }
        drop(data_dir);
        if let StoreKind::Postgres { server_url, .. } = &opts.store {
            drop_database(server_url, &db_name)?;
        }
        if opts.raw && opts.store == StoreKind::Sqlite {
            let group = events_per_commit
                .filter(|g| g.is_finite() && *g >= 1.0)
                .map_or(opts.connections * BATCH, |g| g.round() as usize);
            let dir = tempfile::Builder::new()
                .prefix("fg-raw-")
                .tempdir_in(&opts.work_dir)?;
            let r = raw_round(
                &dir.path().join("raw.db"),
                &templates,
                group,
                Duration::from_secs(opts.secs),
            )?;
            println!(
                "  raw ceiling {}: {:.0} events/s ({} rows, {} per commit, {:.2} ms per commit)",
                round + 1,
                r.events_per_sec,
                r.rows,
                r.rows_per_commit,
                r.ms_per_commit
            );
            raw.push(r);
        }
        if let (true, StoreKind::Postgres { server_url, .. }) = (opts.raw, &opts.store) {
            if templates.is_empty() {
                let sqlite = Options {
                    store: StoreKind::Sqlite,
                    ..opts.clone()
                };
                templates = capture_templates(&sqlite, &opts.work_dir)?;
            }
            let raw_db = format!("fg_bench_{}_raw{round}", std::process::id());
            recreate_database(server_url, &raw_db)?;
            let r = pg_raw_round(
                &format!("{server_url}/{raw_db}"),
                &templates,
                opts.connections,
                Duration::from_secs(opts.secs),
            );
            drop_database(server_url, &raw_db)?;
            let r = r?;
            println!(
                "  raw ceiling {}: {:.0} events/s ({} rows, {} appenders of {} events, {:.2} ms per append)",
                round + 1,
                r.events_per_sec,
                r.rows,
                opts.connections,
                r.rows_per_commit,
                r.ms_per_commit
            );
            raw.push(r);
        }
    }
    if opts.fsync_secs > 0 {
        let f = fsync_round(opts)?;
        println!(
            "  fsyncs (strace -c, {:.1} s run at {:.0} events/s): {} calls, {:.0}/s{}",
            f.secs,
            f.events_per_sec,
            f.fsync_calls,
            f.per_sec,
            f.commits
                .map(|c| format!(", {:.2} per group commit", f.fsync_calls as f64 / c))
                .unwrap_or_default()
        );
        fsync = Some(f);
    }
    let report = Report {
        cpus,
        store: store_name,
        seeded_events: opts.seed + opts.seed_current_hour,
        seeded_current_hour: opts.seed_current_hour,
        seed_secs,
        append_fsync,
        ours,
        raw,
        fsync,
        prune,
    };
    print_summary(&report);
    Ok(report)
}

fn print_round(round: usize, r: &ServerRound) {
    println!(
        "  ours {} ({} node(s), load {}): {:.0} events/s acknowledged; p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms; CPU {:.1} ms per 1,000 events ({:.1} in the kernel; {:.0} % of a core); disk read {:.0} / written {:.0} bytes per event; VmHWM {:.0} MiB; WAL max {}; {}; {} non-200, {} socket errors",
        round + 1,
        r.nodes,
        r.load_avg_before,
        r.events_per_sec,
        r.latency_ms.p50,
        r.latency_ms.p90,
        r.latency_ms.p99,
        r.latency_ms.max,
        r.cpu_ms_per_1000_events,
        r.sys_cpu_ms_per_1000_events,
        r.cpu_percent,
        r.disk_read_bytes_per_event,
        r.disk_write_bytes_per_event,
        r.vm_hwm_mib,
        r.wal_max_mib
            .map_or_else(|| "n/a".to_owned(), |w| format!("{w:.1} MiB")),
        match (r.commits_per_sec, r.events_per_commit) {
            (Some(c), Some(e)) => format!("{c:.0} commits/s of {e:.0} events"),
            _ => "commits n/a".to_owned(),
        },
        r.non_200,
        r.socket_errors
    );
    if let Some(d) = &r.database {
        println!(
            "         PostgreSQL server: CPU {:.1} ms per 1,000 events ({:.0} % of a core); written {:.0} bytes per event",
            d.cpu_ms_per_1000_events, d.cpu_percent, d.disk_write_bytes_per_event
        );
    }
    let show = |what: &str, d: &Option<Durations>| {
        if let Some(d) = d {
            println!(
                "         {what}: {:.0}, mean {:.1} ms, {:.0} over 25 ms, {:.0} over 50 ms",
                d.count, d.mean_ms, d.over_25ms, d.over_50ms
            );
        }
    };
    if let (Some(hits), Some(probes)) = (r.dedup_filter_hits_per_1000, r.dedup_run_probes_per_1000)
    {
        println!("         dedup per 1,000 events: {hits:.1} filter hits, {probes:.1} run probes");
    }
    show("group commits     ", &r.group_commit);
    show("checkpoint pauses ", &r.checkpoint_pause);
}

fn print_summary(report: &Report) {
    let rates: Vec<f64> = report.ours.iter().map(|r| r.events_per_sec).collect();
    let p99s: Vec<f64> = report.ours.iter().map(|r| r.latency_ms.p99).collect();
    println!("  -- summary --");
    println!(
        "  ours: {} events/s, p99 {} ms",
        range(&rates, 0),
        range(&p99s, 1)
    );
    if !report.raw.is_empty() {
        let raws: Vec<f64> = report.raw.iter().map(|r| r.events_per_sec).collect();
        let ratios: Vec<f64> = report
            .ours
            .iter()
            .zip(&report.raw)
            .map(|(o, r)| o.events_per_sec / r.events_per_sec * 100.0)
            .collect();
        println!(
            "  raw ceiling: {} events/s; ours / raw (round by round): {} %",
            range(&raws, 0),
            range(&ratios, 1)
        );
    }
}

/// "min–max" of a few figures.
fn range(v: &[f64], decimals: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "n/a".to_owned()
    } else if (hi - lo).abs() < f64::EPSILON {
        format!("{lo:.decimals$}")
    } else {
        format!("{lo:.decimals$}–{hi:.decimals$}")
    }
}

/// The 1-minute load average.
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

// ---------------------------------------------------------------------------------------------
// The server.
// ---------------------------------------------------------------------------------------------

/// A running `freshgate serve`.
struct Server {
    child: Child,
    addr: String,
    /// The process whose CPU and memory are read (the server itself, also under strace).
    pid: u32,
}

impl Drop for Server {
    /// A node left running by an error (another node failing to start, say) is killed, not
    /// left behind holding the bench's output pipe.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    fn start(
        opts: &Options,
        data_dir: &Path,
        database_url: Option<&str>,
        wrapper: &[String],
    ) -> Result<Self> {
        let config = data_dir.join(format!(
            "bench-{}.toml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let kind = if database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[[sources]]\nname = \"web\"\nwrite_keys = [\"{WRITE_KEY}\"]\n\n[store]\nkind = \"{kind}\"\n",
                data_dir.display().to_string()
            ),
        )?;
        let (program, args) = match wrapper.split_first() {
            Some((p, rest)) => {
                let mut a: Vec<String> = rest.to_vec();
                a.push(opts.binary.display().to_string());
                (p.clone(), a)
            }
            None => (opts.binary.display().to_string(), Vec::new()),
        };
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            // Several nodes (and other processes) must not collide on the console's port.
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            // FG_BENCH_SERVER_LOG: the server's log filter (e.g. `freshgate_store=debug`).
            .env(
                "RUST_LOG",
                std::env::var("FG_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env("FRESHGATE_LOG_FORMAT", "json")
            .env_remove("FRESHGATE_DATA_DIR")
            .env_remove("FRESHGATE_LISTEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {program} serve"))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let status = child.wait()?;
                bail!("the server exited before listening ({status})");
            };
            if let Some(rest) = line?.strip_prefix("freshgate listening on http://") {
                break rest.trim().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let pid = if wrapper.is_empty() {
            child.id()
        } else {
            traced_child(child.id())?
        };
        let server = Self { child, addr, pid };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_get(&self.addr, "/readyz") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server at {} never became ready", self.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait (a graceful stop closes the store).
    fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                bail!("the server did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The child process strace started (the server it traces).
fn traced_child(strace_pid: u32) -> Result<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("strace has no child process")
}

/// A plain HTTP/1.0 GET on loopback (status, body): enough for `/readyz` and `/metrics`.
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The server's `/metrics` text, empty if it cannot be read.
fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics")
        .map(|(_, t)| t)
        .unwrap_or_default()
}

/// A sample's value (the first line starting with `series`), 0 when absent: histograms appear
/// at their first record.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The series of the writer's group-commit size histogram: commits, and events they held.
fn group_commit_series() -> (String, String) {
    let name = freshgate_store::metric::GROUP_COMMIT_EVENTS;
    (format!("{name}_count"), format!("{name}_sum"))
}

/// How much a series grew between two scrapes.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    sample(after, series) - sample(before, series)
}

/// What a duration histogram recorded between two scrapes.
fn durations(before: &str, after: &str, name: &str) -> Option<Durations> {
    let delta = |series: String| delta(before, after, &series);
    let count = delta(format!("{name}_count"));
    (count > 0.0).then(|| Durations {
        count,
        mean_ms: delta(format!("{name}_sum")) / count * 1000.0,
        over_25ms: count - delta(format!("{name}_bucket{{le=\"0.025\"}}")),
        over_50ms: count - delta(format!("{name}_bucket{{le=\"0.05\"}}")),
    })
}

/// What a process has used so far: CPU seconds (user, system) and block-device bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    user_secs: f64,
    sys_secs: f64,
    read_bytes: f64,
    write_bytes: f64,
}

impl Usage {
    fn of(pid: u32) -> Result<Usage> {
        Usage::read(pid, false)
    }

    /// What `pid` has used; with `reaped_children`, plus what its children that have exited and
    /// been waited for used (their CPU; `/proc/PID/io` already counts their I/O).
    fn read(pid: u32, reaped_children: bool) -> Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After `pid (comm)`: state is field 3 (index 0 here), utime 14 and stime 15, the
        // children's cutime 16 and cstime 17.
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let children = |i: usize| if reaped_children { ticks(i) } else { 0.0 };
        let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
        let io_field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(Usage {
            user_secs: (ticks(11) + children(13)) / 100.0,
            sys_secs: (ticks(12) + children(14)) / 100.0,
            read_bytes: io_field("read_bytes:"),
            write_bytes: io_field("write_bytes:"),
        })
    }

    /// The sum over several processes.
    fn of_all(pids: impl Iterator<Item = u32>) -> Result<Usage> {
        pids.map(Usage::of)
            .try_fold(Usage::default(), |sum, u| Ok(sum.combine(u?, 1.0)))
    }

    /// What was used since `earlier`.
    fn since(self, earlier: Usage) -> Usage {
        self.combine(earlier, -1.0)
    }

    /// `self + sign × other`, field by field.
    fn combine(self, other: Usage, sign: f64) -> Usage {
        Usage {
            user_secs: self.user_secs + sign * other.user_secs,
            sys_secs: self.sys_secs + sign * other.sys_secs,
            read_bytes: self.read_bytes + sign * other.read_bytes,
            write_bytes: self.write_bytes + sign * other.write_bytes,
        }
    }

    fn cpu_secs(&self) -> f64 {
        self.user_secs + self.sys_secs
    }

    /// Every `postgres` process of this machine, with the CPU of the children each has reaped
    /// (the postmaster's: connections closed during the round; the others fork none), or `None`
    /// when no PostgreSQL server runs here.
    fn of_database() -> Option<Usage> {
        let mut sum = Usage::default();
        let mut found = false;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() != "postgres" {
                continue;
            }
            let Ok(usage) = Usage::read(pid, true) else {
                continue;
            };
            sum = sum.combine(usage, 1.0);
            found = true;
        }
        found.then_some(sum)
    }
}

/// VmHWM of a process, MiB.
fn vm_hwm(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmHWM")?;
    Ok(kb / 1024.0)
}

/// What wrk's done() wrote.
#[derive(Debug, serde::Deserialize)]
struct WrkSummary {
    duration_us: f64,
    requests: u64,
    ok_200: u64,
    non_200: u64,
    errors: WrkErrors,
    latency_us: WrkLatency,
}

#[derive(Debug, serde::Deserialize)]
struct WrkErrors {
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
}

#[derive(Debug, serde::Deserialize)]
struct WrkLatency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// Run wrk against each address (connections and threads split between them) for `secs`.
fn run_wrk(opts: &Options, addrs: &[String], secs: u64, run_no: u8) -> Result<Vec<WrkSummary>> {
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "2026-01-01T00:00:00Z".to_owned());
    let n = addrs.len().max(1);
    let mut running = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let out = tempfile::NamedTempFile::new()?;
        let connections = (opts.connections / n + usize::from(i < opts.connections % n)).max(1);
        let threads = (opts.threads / n).max(1).min(connections);
        let child = Command::new("wrk")
            .arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{secs}s"))
            .arg("--timeout")
            .arg("30s")
            .arg("-s")
            .arg(&opts.lua)
            .arg(format!("http://{addr}/"))
            .env("FG_BENCH_WRITE_KEY", WRITE_KEY)
            .env("FG_BENCH_TS", &ts)
            .env(
                "FG_BENCH_RUN",
                (u32::from(run_no) * 16 + u32::try_from(i).unwrap_or(0)).to_string(),
            )
            .env("FG_BENCH_BATCH", BATCH.to_string())
            .env("FG_BENCH_OUT", out.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting wrk (Debian package `wrk`)")?;
        running.push((child, out));
    }
    let mut out = Vec::new();
    for (mut child, file) in running {
        let status = child.wait()?;
        if !status.success() {
            bail!("wrk failed ({status})");
        }
        let text = std::fs::read_to_string(file.path())?;
        out.push(
            serde_json::from_str(text.trim()).with_context(|| format!("wrk summary {text:?}"))?,
        );
    }
    Ok(out)
}

/// A `run_no` for the wrk body nonce: distinct per run of a process, so ids never repeat.
fn next_run_no() -> u8 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()) * 31;
    u8::try_from((NEXT.fetch_add(1, Ordering::Relaxed) + seed) % 16).unwrap_or(0)
}

/// Start the node(s), warm up, measure one round, stop.
fn server_round(
    opts: &Options,
    data_dir: &Path,
    db_name: &str,
    round: usize,
) -> Result<ServerRound> {
    let (nodes, url) = match &opts.store {
        StoreKind::Sqlite => (1, None),
        StoreKind::Postgres { server_url, nodes } => {
            (*nodes, Some(format!("{server_url}/{db_name}")))
        }
    };
    let mut servers = Vec::new();
    for n in 0..nodes {
        let dir = data_dir.join(format!("node{n}"));
        std::fs::create_dir_all(&dir)?;
        servers.push(Server::start(opts, &dir, url.as_deref(), &[])?);
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    if opts.warmup_secs > 0 {
        run_wrk(opts, &addrs, opts.warmup_secs, next_run_no())?;
    }
    let wal = data_dir.join("node0").join("freshgate.db-wal");
    let watching = Arc::new(AtomicBool::new(true));
    let wal_max = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (watching, wal_max, wal) = (watching.clone(), wal_max.clone(), wal.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                if let Ok(m) = std::fs::metadata(&wal) {
                    wal_max.fetch_max(m.len(), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let load_avg_before = load_avg();
    let metrics_before = scrape(&addrs[0]);
    let usage_before = Usage::of_all(servers.iter().map(|s| s.pid))?;
    let database_before = url.as_ref().and_then(|_| Usage::of_database());
    let wrk = run_wrk(opts, &addrs, opts.secs, next_run_no())?;
    let used = Usage::of_all(servers.iter().map(|s| s.pid))?.since(usage_before);
    let database_used = database_before.and_then(|b| Some(Usage::of_database()?.since(b)));
    let metrics_after = scrape(&addrs[0]);
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.join();
    let hwm = vm_hwm(servers[0].pid)?;
    for s in servers {
        s.stop()?;
    }
    let secs = wrk.iter().map(|w| w.duration_us / 1e6).fold(0.0, f64::max);
    let ok: u64 = wrk.iter().map(|w| w.ok_200).sum();
    let events = (ok * BATCH as u64) as f64;
    // With several wrk processes, the worst node's percentiles.
    let worst = |f: fn(&WrkLatency) -> f64| {
        wrk.iter()
            .map(|w| f(&w.latency_us) / 1000.0)
            .fold(0.0, f64::max)
    };
    let grew = |series: &str| delta(&metrics_before, &metrics_after, series);
    let (commit_count, commit_sum) = group_commit_series();
    let commits = grew(&commit_count);
    let (commits_per_sec, events_per_commit) = if commits > 0.0 {
        (Some(commits / secs), Some(grew(&commit_sum) / commits))
    } else {
        (None, None)
    };
    let lookups = grew(freshgate_store::metric::DEDUP_LOOKUPS);
    let per_1000_lookups = |series: &str| (lookups > 0.0).then(|| grew(series) / lookups * 1000.0);
    let stored_events = if opts.store == StoreKind::Sqlite {
        Some(count_events(&data_dir.join("node0").join("freshgate.db"))?)
    } else {
        None
    };
    let _ = round;
    Ok(ServerRound {
        nodes,
        secs,
        requests: wrk.iter().map(|w| w.requests).sum(),
        ok_200: ok,
        non_200: wrk.iter().map(|w| w.non_200).sum(),
        socket_errors: wrk
            .iter()
            .map(|w| w.errors.connect + w.errors.read + w.errors.write + w.errors.timeout)
            .sum(),
        events_per_sec: events / secs,
        latency_ms: Latency {
            p50: worst(|l| l.p50),
            p90: worst(|l| l.p90),
            p99: worst(|l| l.p99),
            p999: worst(|l| l.p999),
            max: worst(|l| l.max),
        },
        cpu_ms_per_1000_events: used.cpu_secs() * 1000.0 / events * 1000.0,
        cpu_percent: used.cpu_secs() / secs * 100.0,
        sys_cpu_ms_per_1000_events: used.sys_secs * 1000.0 / events * 1000.0,
        disk_read_bytes_per_event: used.read_bytes / events,
        disk_write_bytes_per_event: used.write_bytes / events,
        vm_hwm_mib: hwm,
        wal_max_mib: (opts.store == StoreKind::Sqlite)
            .then(|| wal_max.load(Ordering::Relaxed) as f64 / 1_048_576.0),
        commits_per_sec,
        events_per_commit,
        dedup_filter_hits_per_1000: per_1000_lookups(freshgate_store::metric::DEDUP_FILTER_HITS),
        dedup_run_probes_per_1000: per_1000_lookups(freshgate_store::metric::DEDUP_RUN_PROBES),
        group_commit: durations(
            &metrics_before,
            &metrics_after,
            "freshgate_store_group_commit_seconds",
        ),
        checkpoint_pause: durations(
            &metrics_before,
            &metrics_after,
            "freshgate_store_checkpoint_pause_seconds",
        ),
        stored_events,
        database: database_used.map(|d| DatabaseUsage {
            cpu_ms_per_1000_events: d.cpu_secs() * 1000.0 / events * 1000.0,
            cpu_percent: d.cpu_secs() / secs * 100.0,
            disk_write_bytes_per_event: d.write_bytes / events,
        }),
        load_avg_before,
    })
}

/// A loaded run counting fsyncs: on SQLite the server's own, with `strace -c` stopping on fsync
/// and fdatasync only; on PostgreSQL the database server's WAL syncs (`pg_stat_wal.wal_sync`,
/// server-wide: other clients of that server count too).
fn fsync_round(opts: &Options) -> Result<FsyncCount> {
    let dir = tempfile::Builder::new()
        .prefix("fg-fsync-")
        .tempdir_in(&opts.work_dir)?;
    let db_name = format!("fg_bench_{}_fsync", std::process::id());
    let summary = dir.path().join("strace.txt");
    let (url, wrapper): (Option<String>, Vec<String>) = match &opts.store {
        StoreKind::Sqlite => (
            None,
            [
                "strace",
                "-f",
                "--seccomp-bpf",
                "-c",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([summary.display().to_string()])
            .collect(),
        ),
        StoreKind::Postgres { server_url, .. } => {
            recreate_database(server_url, &db_name)?;
            (Some(format!("{server_url}/{db_name}")), Vec::new())
        }
    };
    let server = Server::start(opts, dir.path(), url.as_deref(), &wrapper)?;
    let addr = server.addr.clone();
    let wal_syncs = || match &opts.store {
        StoreKind::Sqlite => Ok(0),
        StoreKind::Postgres { server_url, .. } => pg_wal_syncs(server_url),
    };
    let commits = group_commit_series().0;
    let before = sample(&scrape(&addr), &commits);
    let syncs_before = wal_syncs()?;
    let wrk = run_wrk(
        opts,
        std::slice::from_ref(&addr),
        opts.fsync_secs,
        next_run_no(),
    )?;
    let syncs_after = wal_syncs()?;
    let after = sample(&scrape(&addr), &commits);
    server.stop()?;
    let calls = match &opts.store {
        StoreKind::Sqlite => {
            let text = std::fs::read_to_string(&summary)?;
            // Rows: `% time seconds usecs/call calls [errors] syscall`.
            text.lines()
                .filter(|l| {
                    let name = l.split_whitespace().last();
                    name == Some("fsync") || name == Some("fdatasync")
                })
                .filter_map(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|c| c.parse::<u64>().ok())
                })
                .sum()
        }
        StoreKind::Postgres { server_url, .. } => {
            drop_database(server_url, &db_name)?;
            syncs_after.saturating_sub(syncs_before)
        }
    };
    let secs = wrk.iter().map(|w| w.duration_us / 1e6).fold(0.0, f64::max);
    let ok: u64 = wrk.iter().map(|w| w.ok_200).sum();
    Ok(FsyncCount {
        secs,
        fsync_calls: calls,
        // On SQLite the whole process life is counted: start-up and shutdown add a handful.
        per_sec: calls as f64 / secs,
        commits: (after > before).then_some(after - before),
        events_per_sec: (ok * BATCH as u64) as f64 / secs,
    })
}

/// `pg_stat_wal.wal_sync` of the server.
fn pg_wal_syncs(server_url: &str) -> Result<u64> {
    let out = Command::new("psql")
        .arg(format!("{server_url}/postgres"))
        .args(["-Atc", "SELECT wal_sync FROM pg_stat_wal"])
        .output()
        .context("running psql")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("pg_stat_wal.wal_sync")
}

// ---------------------------------------------------------------------------------------------
// References and the raw path.
// ---------------------------------------------------------------------------------------------

/// Append 75 KiB and fsync, over and over, for `dur`.
fn append_fsync_rate(dir: &Path, dur: Duration) -> Result<AppendFsync> {
    let bytes = 75 * 1024;
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let chunk = vec![0x5a_u8; bytes];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        f.write_all(&chunk)?;
        f.sync_all()?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    Ok(AppendFsync {
        bytes,
        per_sec: lat.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// Events as the server stored them (no deliveries: the bench configures no destination).
fn read_templates(db: &Path, n: usize) -> Result<Vec<NewEvent>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT source, message_id, event_type, contact_key, timestamp_ms, received_at_ms, raw
         FROM events ORDER BY id LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([i64::try_from(n)?], |r| {
            Ok(NewEvent {
                source: r.get(0)?,
                message_id: r.get(1)?,
                event_type: r.get(2)?,
                contact_key: r.get(3)?,
                timestamp_ms: r.get(4)?,
                received_at_ms: r.get(5)?,
                raw: r.get(6)?,
                email: None,
                deliveries: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // The same rows as the server appended: an identify's email is recorded with it.
    let rows = rows
        .into_iter()
        .map(|mut ev| {
            if ev.event_type == "identify" {
                ev.email = serde_json::from_slice::<serde_json::Value>(&ev.raw)
                    .ok()
                    .and_then(|v| v["traits"]["email"].as_str().map(str::to_owned));
            }
            ev
        })
        .collect::<Vec<_>>();
    if rows.is_empty() {
        bail!("no events stored in {} to use as templates", db.display());
    }
    Ok(rows)
}

/// Templates when none exist yet: a short warm-up of a throwaway server.
fn capture_templates(opts: &Options, work_dir: &Path) -> Result<Vec<NewEvent>> {
    let dir = tempfile::Builder::new()
        .prefix("fg-templates-")
        .tempdir_in(work_dir)?;
    let server = Server::start(opts, dir.path(), None, &[])?;
    run_wrk(opts, std::slice::from_ref(&server.addr), 1, next_run_no())?;
    server.stop()?;
    read_templates(&dir.path().join("freshgate.db"), 1000)
}

fn count_events(db: &Path) -> Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // The store's own counter (schema 12): count(*) would read every page of a 60 GB table.
    Ok(
        conn.query_row("SELECT count FROM event_counts WHERE id = 1", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `n` copies of the templates, round robin, each with a fresh random messageId (as clients
/// send them), received one per ms from `at_ms`.
fn batch_of(templates: &[NewEvent], start: u64, n: usize, at_ms: i64) -> AppendBatch {
    batch_with_ids(templates, start, n, at_ms, 1, random_message_id)
}

/// `n` copies of the templates, round robin, received `step_ms` apart from `at_ms`, the i-th
/// (counting from `start`) with messageId `id(i)`.
fn batch_with_ids(
    templates: &[NewEvent],
    start: u64,
    n: usize,
    at_ms: i64,
    step_ms: i64,
    id: impl Fn(u64) -> String,
) -> AppendBatch {
    let events = (0..n)
        .map(|i| {
            let t = &templates[(start as usize + i) % templates.len()];
            NewEvent {
                message_id: id(start + i as u64),
                received_at_ms: at_ms + i64::try_from(i).unwrap_or(0) * step_ms,
                ..t.clone()
            }
        })
        .collect();
    AppendBatch {
        events,
        rejected: Vec::new(),
        dedup_window_ms: DEDUP_WINDOW_MS,
    }
}

/// A messageId as clients make them (UUID v4); the index is ignored.
fn random_message_id(_: u64) -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A messageId shaped like a UUID (36 characters) that sorts in seeding order.
fn ordered_message_id(i: u64) -> String {
    format!(
        "{:08x}-5eed-4000-8000-{:012x}",
        i >> 48,
        i & 0xffff_ffff_ffff
    )
}

/// The raw ceiling: the same rows, appended by one thread through the store's own append path
/// (same pragmas, statements and checkpoint thread) in groups of `group`, for `dur`. Only the
/// group commits are timed; building the rows is not.
fn raw_round(db: &Path, templates: &[NewEvent], group: usize, dur: Duration) -> Result<RawRound> {
    let load_avg_before = load_avg();
    let mut w = RawWriter::open(db)?;
    let mut busy = Duration::ZERO;
    let mut rows: u64 = 0;
    let mut commits = 0_u64;
    let started = Instant::now();
    while started.elapsed() < dur {
        // The server appends requests of BATCH events; a group is several of them.
        let batches: Vec<AppendBatch> = (0..group.div_ceil(BATCH))
            .map(|b| batch_of(templates, rows + (b * BATCH) as u64, BATCH, now_ms()))
            .collect();
        let t = Instant::now();
        let outcome = w.append_group(&batches)?;
        busy += t.elapsed();
        if outcome.accepted != batches.len() * BATCH {
            bail!(
                "raw ceiling: {} of {} rows accepted",
                outcome.accepted,
                batches.len() * BATCH
            );
        }
        rows += outcome.accepted as u64;
        commits += 1;
    }
    drop(w);
    Ok(RawRound {
        rows,
        rows_per_commit: group.div_ceil(BATCH) * BATCH,
        events_per_sec: rows as f64 / busy.as_secs_f64(),
        ms_per_commit: busy.as_secs_f64() * 1000.0 / commits as f64,
        load_avg_before,
    })
}

/// The raw ceiling on PostgreSQL: the same rows appended through the store's own append path
/// (`PostgresStore::append`, one transaction per batch of `BATCH` events, as a request handler
/// makes) by `appenders` concurrent tasks on one node's pool, with no HTTP or JSON, for `dur`.
/// Building the rows runs beside the appends (they are concurrent), unlike the SQLite ceiling.
fn pg_raw_round(
    database_url: &str,
    templates: &[NewEvent],
    appenders: usize,
    dur: Duration,
) -> Result<RawRound> {
    use freshgate_store::Store;
    use freshgate_store::postgres::{PostgresOptions, PostgresStore};
    let load_avg_before = load_avg();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store =
            Arc::new(PostgresStore::connect(database_url, PostgresOptions::default()).await?);
        let templates: Arc<[NewEvent]> = templates.into();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..appenders {
            let (store, templates) = (Arc::clone(&store), Arc::clone(&templates));
            tasks.spawn(async move {
                let (mut rows, mut commits) = (0_u64, 0_u64);
                while started.elapsed() < dur {
                    let batch = batch_of(&templates, rows, BATCH, now_ms());
                    let outcome = store.append(batch).await?;
                    if outcome.accepted != BATCH {
                        bail!("raw ceiling: {} of {BATCH} rows accepted", outcome.accepted);
                    }
                    rows += BATCH as u64;
                    commits += 1;
                }
                Ok((rows, commits))
            });
        }
        let (mut rows, mut commits) = (0_u64, 0_u64);
        while let Some(done) = tasks.join_next().await {
            let (r, c) = done??;
            rows += r;
            commits += c;
        }
        let secs = started.elapsed().as_secs_f64();
        store.close().await;
        Ok(RawRound {
            rows,
            rows_per_commit: BATCH,
            events_per_sec: rows as f64 / secs,
            // Each appender waits for its own commits: the time of one, as its caller sees it.
            ms_per_commit: secs * 1000.0 * appenders as f64 / commits.max(1) as f64,
            load_avg_before,
        })
    })
}

/// Put `history` events into a fresh store through the raw path, received one per ms up to the
/// start of the current UTC hour (so they are inside the dedup window and the retention
/// period), then `current_hour` events received since that hour began. Returns the seconds it
/// took; the store is closed (its WAL checkpointed away) on return.
///
/// The history's messageIds sort in the order they are appended. Its index pages are laid out
/// as they would be after any arrival order, and ingest only reads them, but appending random
/// ids into one hour's part of the messageId index dirties a leaf per event: seeding 50 M that
/// way ran at 11,000 events/s with the disk writing 155 MB/s. The current hour's events carry
/// random ids, as live traffic does: ingest inserts among them, so their layout is what the
/// rounds measure.
fn seed(db: &Path, templates: &[NewEvent], history: u64, current_hour: u64) -> Result<f64> {
    use freshgate_store::sqlite::HOUR_MS;
    let started = Instant::now();
    let mut w = RawWriter::open(db)?;
    let now = now_ms();
    let hour_start_ms = now - now.rem_euclid(HOUR_MS);
    let history_start_ms = hour_start_ms - i64::try_from(history)?;
    // Spread evenly over the part of the hour gone by (several per ms if need be).
    let per_ms = (current_hour as f64 / (now - hour_start_ms).max(1) as f64).max(1.0);
    let total = history + current_hour;
    let bar = indicatif::ProgressBar::new(total);
    let group = 5_000_u64;
    let mut done = 0;
    while done < total {
        // History first, then the current hour: a group never spans both.
        let part_end = if done < history { history } else { total };
        let k = group.min(part_end - done);
        let n = usize::try_from(k)?;
        let batch = if done < history {
            let at_ms = history_start_ms + i64::try_from(done)?;
            batch_with_ids(templates, done, n, at_ms, 1, ordered_message_id)
        } else {
            let at_ms = hour_start_ms + ((done - history) as f64 / per_ms) as i64;
            batch_with_ids(templates, done, n, at_ms.min(now), 0, random_message_id)
        };
        w.append_group(std::slice::from_ref(&batch))?;
        done += k;
        bar.set_position(done);
    }
    bar.finish_and_clear();
    drop(w);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  seeded {history} events received before this hour and {current_hour} in it, in {secs:.1} s ({:.0}/s, raw path)",
        total as f64 / secs
    );
    Ok(secs)
}

/// Time the store's retention prune of the oldest `share` of `seeded` events (received one per
/// ms up to the seeding), on the database the rounds left.
fn prune_cost(db: &Path, seeded: u64, share: f64) -> Result<PruneCost> {
    use freshgate_store::Store;
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let first: i64 = conn.query_row("SELECT min(received_at_ms) FROM events", [], |r| r.get(0))?;
    drop(conn);
    let cutoff = first + (seeded as f64 * share) as i64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Opened as `serve` opens it: the dedup filters are built at open, not inside the first
    // write (at 50 M that build is a read of every messageId, which the prune would be charged).
    let store = freshgate_store::sqlite::SqliteStore::open(
        db,
        freshgate_store::sqlite::SqliteOptions {
            build_dedup_on_open: true,
            ..Default::default()
        },
    )?;
    let started = Instant::now();
    let out = runtime.block_on(store.prune(cutoff, cutoff))?;
    let secs = started.elapsed().as_secs_f64();
    runtime.block_on(store.close());
    Ok(PruneCost {
        events: out.events,
        secs,
        events_per_sec: out.events as f64 / secs,
    })
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL databases.
// ---------------------------------------------------------------------------------------------

fn psql(server_url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .arg(format!("{server_url}/postgres"))
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-q")
        .arg("-c")
        .arg(sql)
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn recreate_database(server_url: &str, name: &str) -> Result<()> {
    drop_database(server_url, name)?;
    psql(server_url, &format!("CREATE DATABASE {name}"))
}

fn drop_database(server_url: &str, name: &str) -> Result<()> {
    psql(
        server_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
}

/// Debian's socket directory for the local server.
const LOCAL_SOCKET_DIR: &str = "/var/run/postgresql";

/// The local server as `psql` reaches it by default: through its Unix socket when there is one
/// (no TCP, no TLS: what a node beside its database uses), else TCP on 127.0.0.1:5432.
fn local_postgres_url() -> String {
    if Path::new(LOCAL_SOCKET_DIR).join(".s.PGSQL.5432").exists() {
        format!(
            "postgres://postgres@{}",
            LOCAL_SOCKET_DIR.replace('/', "%2F")
        )
    } else {
        "postgres://postgres@127.0.0.1:5432".to_owned()
    }
}

/// Where a server URL points, without its user or password, for the report's header (the
/// store's reading of the URL; its error when it has none).
pub fn server_location(url: &str) -> String {
    freshgate_store::postgres::server_location(url).unwrap_or_else(|e| e.to_string())
}

/// Parse the driver's command-line flags (shared with the smoke test's defaults).
pub fn parse_args(args: &[String], defaults: Options) -> Result<Options> {
    let mut o = defaults;
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            flags.insert(k.to_owned(), v.to_owned());
        } else {
            flags.insert(a.clone(), String::new());
        }
    }
    for (k, v) in &flags {
        match k.as_str() {
            "--secs" => o.secs = v.parse().context("--secs=N")?,
            "--warmup" => o.warmup_secs = v.parse().context("--warmup=N")?,
            "--rounds" => o.rounds = v.parse().context("--rounds=N")?,
            "--connections" => o.connections = v.parse().context("--connections=N")?,
            "--threads" => o.threads = v.parse().context("--threads=N")?,
            "--fsync-secs" => o.fsync_secs = v.parse().context("--fsync-secs=N")?,
            "--seed" => o.seed = v.parse().context("--seed=N")?,
            "--prune-share" => o.prune_share = v.parse().context("--prune-share=F")?,
            "--no-raw" => o.raw = false,
            "--work-dir" => o.work_dir = PathBuf::from(v),
            "--seed-keep" => o.seed_keep = Some(PathBuf::from(v)),
            "--seed-in-place" => o.seed_in_place = true,
            "--seed-current-hour" => {
                o.seed_current_hour = v.parse().context("--seed-current-hour=N")?;
            }
            "--binary" => o.binary = PathBuf::from(v),
            "--postgres" => {
                let url = if v.is_empty() {
                    local_postgres_url()
                } else {
                    v.clone()
                };
                let nodes = flags
                    .get("--nodes")
                    .map(|n| n.parse())
                    .transpose()
                    .context("--nodes=N")?
                    .unwrap_or(1);
                o.store = StoreKind::Postgres {
                    server_url: url,
                    nodes,
                };
            }
            "--nodes" | "--smoke" | "--bench" | "--json" => {}
            other if other.starts_with("--") => bail!("unknown flag {other}"),
            _ => {}
        }
    }
    Ok(o)
}
