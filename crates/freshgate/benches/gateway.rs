//! Gateway benchmarks (`cargo bench -p freshgate --bench gateway [-- ingest|delivery]`).
//!
//! Owns two measurements of the real server, started in-process on `127.0.0.1:0` over a temp
//! data dir exactly as the integration tests do:
//!
//! * `ingest` (issue 3): `/v1/batch` of 100 ~700-byte events from N keep-alive clients with no
//!   destination configured, so only the durable append is measured; next to it, in the same run,
//!   the raw SQLite ceiling (same rows, same pragmas, one thread, 100 and 1000 rows per commit).
//! * `delivery` (issue 5): Freshworks calls per delivered identify against the emulator, for
//!   distinct users and for bursts of identifies per user (coalescing), and the end-to-end
//!   latency from the ingest 200 to the upsert reaching the emulator.
//!
//! The report is printed, and written as JSON to `<target>/bench-report.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use freshgate::app::{App, AppOptions};
use freshgate::config::{self, Config, DestinationConfig, SourceConfig};
use freshgate_store::Store;
use freshworks_emulator::{EmulatorConfig, RunningEmulator};
use futures::StreamExt;
use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;

const WRITE_KEY: &str = "bench-write-key";
const API_KEY_ENV: &str = "BENCH_FRESHWORKS_KEY";
const SOURCE: &str = "web";
/// Events per `/v1/batch` request.
const BATCH: usize = 100;
/// Distinct users the ingest load is spread over.
const INGEST_USERS: usize = 5_000;
/// Targets the figures are reported against.
const TARGET_RATIO: f64 = 0.5;
const TARGET_EVENTS_PER_SEC: f64 = 30_000.0;
const TARGET_CALLS_DISTINCT: f64 = 1.0;
const TARGET_CALLS_BURST: f64 = 0.3;

/// What to run, from the command line (`cargo bench` adds `--bench`, which is ignored).
struct Args {
    ingest: bool,
    delivery: bool,
    clients: usize,
    secs: u64,
}

fn parse_args() -> Result<Args> {
    let mut parts = Vec::new();
    let mut clients = 8;
    let mut secs = 15;
    for a in std::env::args().skip(1) {
        if let Some(v) = a.strip_prefix("--clients=") {
            clients = v.parse().context("--clients=N")?;
        } else if let Some(v) = a.strip_prefix("--secs=") {
            secs = v.parse().context("--secs=N")?;
        } else if a.starts_with('-') {
            // --bench and other harness flags cargo passes along.
        } else {
            parts.push(a);
        }
    }
    for p in &parts {
        if p != "ingest" && p != "delivery" {
            bail!("unknown part {p:?}: expected `ingest` and/or `delivery`");
        }
    }
    let all = parts.is_empty();
    Ok(Args {
        ingest: all || parts.iter().any(|p| p == "ingest"),
        delivery: all || parts.iter().any(|p| p == "delivery"),
        clients: clients.max(1),
        secs: secs.max(1),
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut report = serde_json::Map::new();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    // Other work on the machine skews every figure here: say how busy it was.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("freshgate gateway bench: {cpus} CPUs, 1-min load average before the run {loadavg}");
    report.insert(
        "machine".into(),
        json!({ "cpus": cpus, "loadavg_1min_before": loadavg }),
    );
    if args.ingest {
        let r = runtime.block_on(ingest_bench(args.clients, args.secs))?;
        report.insert("ingest".into(), r);
    }
    if args.delivery {
        let r = runtime.block_on(delivery_bench())?;
        report.insert("delivery".into(), r);
    }
    let path = target_dir().join("bench-report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&Value::Object(report))?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nJSON report: {}", path.display());
    Ok(())
}

/// The cargo target directory: the bench binary lives in `<target>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

// ---------------------------------------------------------------------------------------------
// The gateway, in-process.
// ---------------------------------------------------------------------------------------------

/// A running gateway over a temp data dir.
struct Gateway {
    url: String,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    // Dropped last: the store's files live here.
    data_dir: tempfile::TempDir,
}

/// Start the gateway; with `emulator`, one destination pointing at it whose own budget is
/// raised so that only the emulator's (also raised) limits could throttle, and whose
/// `bulk_min_contacts` is `bulk_min` (`None`: the default).
async fn start_gateway(
    emulator: Option<&RunningEmulator>,
    bulk_min: Option<usize>,
) -> Result<Gateway> {
    let data_dir = tempfile::tempdir().context("temp data dir")?;
    let mut cfg = Config::default();
    cfg.server.data_dir = data_dir.path().to_path_buf();
    cfg.sources.push(SourceConfig {
        name: SOURCE.into(),
        write_keys: vec![WRITE_KEY.into()],
        ..SourceConfig::default()
    });
    let mut env = BTreeMap::new();
    if let Some(emu) = emulator {
        cfg.destinations.push(DestinationConfig {
            base_url: Some(emu.base_url.clone()),
            api_key_env: API_KEY_ENV.into(),
            hourly_limit: Some(1_000_000),
            minute_limit: 1_000_000,
            bulk_min_contacts: bulk_min.unwrap_or(DestinationConfig::default().bulk_min_contacts),
            ..DestinationConfig::default()
        });
        env.insert(API_KEY_ENV.to_owned(), EmulatorConfig::default().api_key);
    }
    let writer_queue = cfg.store.writer_queue;
    let resolved = config::resolve(cfg, "bench", &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = freshgate::cli::open_store(data_dir.path(), writer_queue)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = App::build(resolved, Arc::clone(&store), AppOptions::default()).await?;
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(listener, async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    Ok(Gateway {
        url: format!("http://{addr}"),
        client,
        store,
        shutdown: Some(tx),
        handle,
        data_dir,
    })
}

impl Gateway {
    /// POST a JSON body; the status code.
    async fn post(&self, path: &str, body: String) -> Result<u16> {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        // Read the body so the connection goes back to the pool.
        let _ = r.bytes().await?;
        Ok(status)
    }

    /// Wait until no delivery is pending.
    async fn drain(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let s = self.store.stats().await?;
            if s.destinations.iter().all(|d| d.pending == 0) {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("queue not drained after {limit:?}: {:?}", s.destinations);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.await??;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Event bodies.
// ---------------------------------------------------------------------------------------------

fn user_id(n: usize) -> String {
    format!("user-{n:06}")
}

fn email(n: usize) -> String {
    format!("user-{n:06}@bench.example.com")
}

/// A realistic analytics-node identify (~700 bytes). `logins` also goes into the job title, a
/// mapped free-text field, so identifies with different `logins` always change the contact.
fn identify_json(user: usize, message_id: &str, ts: &str, plan: &str, logins: usize) -> String {
    format!(
        r#"{{"type":"identify","messageId":"{message_id}","userId":"{uid}","anonymousId":"3f9c1a2e-5b7d-4e8f-9a01-{user:012}","timestamp":"{ts}","traits":{{"email":"{email}","firstName":"Jane","lastName":"Doe-{user}","title":"Head of Platform L{logins}","phone":"+1 555 010 {last4:04}","plan":"{plan}","logins":{logins},"company":{{"name":"Acme Corporation","industry":"Software","employee_count":250}},"address":{{"street":"1 Main St","city":"Austin","state":"TX","postalCode":"78701","country":"US"}}}},"context":{{"library":{{"name":"analytics-node","version":"2.1.0"}},"ip":"203.0.113.42","locale":"en-US","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/126.0"}}}}"#,
        uid = user_id(user),
        email = email(user),
        last4 = user % 10_000,
    )
}

/// A realistic track (~700 bytes).
fn track_json(user: usize, message_id: &str, ts: &str, order: usize) -> String {
    format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}","userId":"{uid}","anonymousId":"3f9c1a2e-5b7d-4e8f-9a01-{user:012}","timestamp":"{ts}","properties":{{"order_id":"ord-{order:09}","total":129.95,"revenue":119.95,"shipping":10.0,"currency":"USD","products":[{{"product_id":"p-1001","sku":"SKU-1001","name":"Wireless Keyboard","price":59.95,"quantity":1}},{{"product_id":"p-2002","sku":"SKU-2002","name":"USB-C Hub","price":60.0,"quantity":1}}]}},"context":{{"library":{{"name":"analytics-node","version":"2.1.0"}},"ip":"203.0.113.42","locale":"en-US","page":{{"path":"/checkout/complete","url":"https://shop.example.com/checkout/complete"}},"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/126.0"}}}}"#,
        uid = user_id(user),
    )
}

/// Event `i` of the ingest load: alternating identify and track, spread over the user pool.
fn ingest_event(seq: usize, ts: &str) -> (String, &'static str, String, String) {
    let user = seq.wrapping_mul(7_919) % INGEST_USERS;
    let mid = uuid::Uuid::new_v4().to_string();
    if seq.is_multiple_of(2) {
        let body = identify_json(user, &mid, ts, "pro", seq % 50);
        (body, "identify", user_id(user), mid)
    } else {
        (track_json(user, &mid, ts, seq), "track", user_id(user), mid)
    }
}

fn batch_body(events: &[String]) -> String {
    let mut s = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 16);
    s.push_str(r#"{"batch":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(e);
    }
    s.push_str("]}");
    s
}

fn now_ts() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "2026-01-01T00:00:00Z".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Statistics.
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// `VmHWM` / `VmRSS` from /proc/self/status, in MiB.
fn proc_mem(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds used so far by this process's threads, summed per thread name (Linux truncates
/// names to 15 bytes: `tokio-runtime-w`, `fg-sqlite-write`, `fg-sqlite-ckpt` …). Clock ticks are 100 Hz on Linux.
fn thread_cpu() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After comm: state(3) ... utime is field 14, stime field 15 (1-based over the line).
        let ticks = |i: usize| {
            rest.get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *out.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    out
}

/// Per-name CPU use between two [`thread_cpu`] readings, as % of one core, busiest first.
fn cpu_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    secs: f64,
) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or(0.0);
            (k.clone(), (a - b) / secs * 100.0)
        })
        .filter(|(_, pct)| *pct >= 0.5)
        .collect();
    v.sort_by(|x, y| y.1.total_cmp(&x.1));
    v
}

/// Reset the peak-RSS mark so `VmHWM` covers only what follows (Linux ≥ 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------------
// Ingest (issue 3).
// ---------------------------------------------------------------------------------------------

/// One finished request.
struct Sample {
    end: Instant,
    latency: Duration,
    events: usize,
    ok: bool,
}

async fn ingest_client(
    gw: Arc<Gateway>,
    client_no: usize,
    stop_at: Instant,
    ts: String,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut seq = client_no * 10_000_000;
    while Instant::now() < stop_at {
        let events: Vec<String> = (0..BATCH)
            .map(|_| {
                seq += 1;
                ingest_event(seq, &ts).0
            })
            .collect();
        let body = batch_body(&events);
        let start = Instant::now();
        let status = gw.post("/v1/batch", body).await?;
        let end = Instant::now();
        samples.push(Sample {
            end,
            latency: end - start,
            events: BATCH,
            ok: status == 200,
        });
    }
    Ok(samples)
}

async fn ingest_bench(clients: usize, secs: u64) -> Result<Value> {
    println!(
        "== ingest (issue 3): /v1/batch x {BATCH} events, {clients} keep-alive clients, no destination =="
    );
    let ts = now_ts();
    let sizes: Vec<usize> = (0..1000).map(|i| ingest_event(i, &ts).0.len()).collect();
    let avg_event = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    let body_bytes = batch_body(
        &(0..BATCH)
            .map(|i| ingest_event(i, &ts).0)
            .collect::<Vec<_>>(),
    )
    .len();

    let rss_before = proc_mem("VmRSS:").unwrap_or(f64::NAN);
    let peak_reset = reset_peak_rss();
    let gw = Arc::new(start_gateway(None, None).await?);
    let warmup = Duration::from_secs(2);
    let measure = Duration::from_secs(secs);
    let t0 = Instant::now();
    let warm_end = t0 + warmup;
    let stop_at = warm_end + measure;
    let commits = tokio::task::spawn_blocking({
        let db = gw.data_dir.path().join("freshgate.db");
        move || count_commits(&db, warm_end, stop_at)
    });
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(ingest_client(Arc::clone(&gw), c, stop_at, ts.clone()));
    }
    // Sample RSS while the load runs (VmHWM is the authoritative peak; this is a cross-check).
    let mut rss_samples = Vec::new();
    let mut cpu_start = None;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if cpu_start.is_none() && Instant::now() >= warm_end {
            cpu_start = Some((Instant::now(), thread_cpu()));
        }
        if let Some(r) = proc_mem("VmRSS:") {
            rss_samples.push(r);
        }
    }
    let cpu = cpu_start
        .map(|(at, before)| cpu_between(&before, &thread_cpu(), at.elapsed().as_secs_f64()));
    let mut samples = Vec::new();
    while let Some(r) = tasks.join_next().await {
        samples.extend(r??);
    }
    let last_end = samples.iter().map(|s| s.end).max().unwrap_or(stop_at);
    let peak_rss = proc_mem("VmHWM:").unwrap_or(f64::NAN);
    let (commit_count, commit_window) = commits.await??;
    let stats = gw.store.stats().await?;
    let gw = Arc::into_inner(gw).context("clients finished, gateway has one owner")?;
    gw.stop().await?;

    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.end >= warm_end && s.end <= last_end)
        .collect();
    let span = (last_end - warm_end).as_secs_f64();
    let acked: usize = window.iter().filter(|s| s.ok).map(|s| s.events).sum();
    let failed = samples.iter().filter(|s| !s.ok).count();
    let ours = acked as f64 / span;
    let lat = sorted(
        window
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect(),
    );
    let (p50, p99, pmax) = (pct(&lat, 50.0), pct(&lat, 99.0), pct(&lat, 100.0));
    // Commits the 1 ms poller saw; two commits within one poll count once, so this is a lower
    // bound on commits and the group size an upper bound (exact while commits are > 1 ms apart).
    let group = if commit_count > 0 {
        ours * commit_window.as_secs_f64() / commit_count as f64
    } else {
        f64::NAN
    };
    let total_acked: usize = samples.iter().filter(|s| s.ok).map(|s| s.events).sum();

    println!("  event size           : {avg_event:.0} bytes avg ({body_bytes} bytes per request)");
    println!("  measured window      : {span:.1} s after {warmup:?} warm-up");
    println!(
        "  requests             : {} in window, {failed} non-200 overall",
        window.len()
    );
    println!(
        "  events acknowledged  : {acked} in window ({total_acked} overall, store holds {})",
        stats.events
    );
    println!(
        "  throughput           : {ours:.0} events/s ({:.0} requests/s)",
        window.len() as f64 / span
    );
    println!("  ack latency/request  : p50 {p50:.2} ms, p99 {p99:.2} ms, max {pmax:.2} ms");
    println!(
        "  peak RSS (VmHWM)     : {peak_rss:.1} MiB ({}; RSS before start {rss_before:.1} MiB, max sampled during load {:.1} MiB; includes the in-process load generator)",
        if peak_reset {
            "peak reset before the run"
        } else {
            "peak since process start"
        },
        rss_samples.iter().copied().fold(f64::NAN, f64::max),
    );

    println!(
        "  store group commits  : {commit_count} commits seen in {:.1} s ({:.1}/s) => ~{group:.0} events per commit (max possible {})",
        commit_window.as_secs_f64(),
        commit_count as f64 / commit_window.as_secs_f64(),
        clients * BATCH
    );
    let cpu = cpu.unwrap_or_default();
    let cpu_total: f64 = cpu.iter().map(|(_, p)| p).sum();
    println!(
        "  CPU in window        : {cpu_total:.0} % of one core in total (server and load generator share the process): {}",
        cpu.iter()
            .map(|(n, p)| format!("{n} {p:.0} %"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  -- raw SQLite ceiling (one thread, WAL + synchronous=FULL, events + messages tables and indexes as in the SQLite migrations) --"
    );
    let raw_dir = tempfile::tempdir()?;
    // 100 and 1000 rows per commit, plus the group size our store was measured to achieve.
    let mut sizes = vec![100, 1000];
    if group.is_finite() {
        let measured = ((group / 10.0).round() as usize * 10).clamp(10, 5000);
        if !sizes.contains(&measured) {
            sizes.insert(1, measured);
        }
    }
    let mut raws = Vec::new();
    for size in sizes {
        let p = raw_dir.path().join(format!("raw{size}.db"));
        let ts = ts.clone();
        // As many rows as the gateway stored: the index depth, and so the cost of an insert,
        // grows with the table.
        let rows = total_acked.max(size);
        let r = tokio::task::spawn_blocking(move || raw_ceiling(&p, size, rows, &ts)).await??;
        println!(
            "  raw, {:>4} rows/commit : {:.0} events/s ({} rows, {} commits, {:.2} ms per commit) => ours = {:.1} % of it",
            r.rows_per_commit,
            r.events_per_sec,
            r.rows,
            r.commits,
            r.ms_per_commit,
            ours / r.events_per_sec * 100.0
        );
        raws.push(r);
    }
    let ratio_at = |size: usize| {
        raws.iter()
            .find(|r| r.rows_per_commit == size)
            .map_or(f64::NAN, |r| ours / r.events_per_sec)
    };
    let (ratio100, ratio1000) = (ratio_at(100), ratio_at(1000));
    // The raw run closest to the achieved group is the fair comparison.
    let fair = raws
        .iter()
        .min_by(|x, y| {
            let dx = (x.rows_per_commit as f64 - group).abs();
            let dy = (y.rows_per_commit as f64 - group).abs();
            dx.total_cmp(&dy)
        })
        .map_or((0, f64::NAN), |r| {
            (r.rows_per_commit, ours / r.events_per_sec)
        });
    println!(
        "  ratio ours/raw       : {:.1} % of raw@100, {:.1} % of raw@1000, {:.1} % of raw@{} (closest to our ~{group:.0} events per commit)",
        ratio100 * 100.0,
        ratio1000 * 100.0,
        fair.1 * 100.0,
        fair.0
    );
    println!(
        "  target >= 50 % of raw (at our group size): {}; (at 100: {}, at 1000: {}); target >= 30,000 events/s: {}",
        verdict(fair.1 >= TARGET_RATIO),
        verdict(ratio100 >= TARGET_RATIO),
        verdict(ratio1000 >= TARGET_RATIO),
        verdict(ours >= TARGET_EVENTS_PER_SEC)
    );

    let cpu_json: Vec<Value> = cpu
        .iter()
        .map(|(n, p)| json!({"thread": n, "percent": p}))
        .collect();
    Ok(json!({
        "clients": clients,
        "events_per_request": BATCH,
        "avg_event_bytes": avg_event,
        "window_secs": span,
        "requests": window.len(),
        "non_200": failed,
        "events_acked": acked,
        "events_per_sec": ours,
        "ack_latency_ms": {"p50": p50, "p99": p99, "max": pmax},
        "peak_rss_mib": peak_rss,
        "peak_rss_reset_before_run": peak_reset,
        "cpu_percent_of_one_core": cpu_json,
        "store_commits_seen": commit_count,
        "events_per_commit": group,
        "raw": raws.iter().map(|r| json!({
            "rows_per_commit": r.rows_per_commit,
            "events_per_sec": r.events_per_sec,
            "ms_per_commit": r.ms_per_commit,
            "ratio_ours_over_raw": ours / r.events_per_sec,
        })).collect::<Vec<_>>(),
        "ratio_vs_raw100": ratio100,
        "ratio_vs_raw1000": ratio1000,
        "ratio_vs_raw_at_our_group": fair.1,
        "targets": {"ratio": TARGET_RATIO, "events_per_sec": TARGET_EVENTS_PER_SEC},
    }))
}

/// Count commits to the store's database between `from` and `until` by polling
/// `PRAGMA data_version` (it changes whenever another connection has committed) every 1 ms.
fn count_commits(db: &Path, from: Instant, until: Instant) -> Result<(u64, Duration)> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let version = |c: &Connection| -> Result<i64> {
        Ok(c.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    };
    while Instant::now() < from {
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let mut last = version(&conn)?;
    let mut commits = 0;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
        let v = version(&conn)?;
        if v != last {
            commits += 1;
            last = v;
        }
    }
    Ok((commits, start.elapsed()))
}

/// The SQLite store's schema, as its migrations build it.
const SQLITE_MIGRATIONS: [&str; 3] = [
    include_str!("../../freshgate-store/migrations/sqlite/0001_initial.sql"),
    include_str!("../../freshgate-store/migrations/sqlite/0002_message_index.sql"),
    include_str!("../../freshgate-store/migrations/sqlite/0003_field_metadata.sql"),
];

/// The raw ceiling at one commit size.
struct RawResult {
    rows_per_commit: usize,
    rows: usize,
    commits: usize,
    events_per_sec: f64,
    ms_per_commit: f64,
}

/// A row as our store writes it.
struct RawRow {
    message_id: String,
    event_type: &'static str,
    contact_key: String,
    raw: Vec<u8>,
}

/// Insert `rows` rows, `per_commit` per transaction, into a fresh database; only the
/// transactions are timed (row generation is not).
fn raw_ceiling(path: &Path, per_commit: usize, rows: usize, ts: &str) -> Result<RawResult> {
    let mut conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("raw ceiling: journal_mode is {mode}, not WAL");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The store's own migrations, so the tables and indexes cannot drift from the real schema.
    for migration in SQLITE_MIGRATIONS {
        conn.execute_batch(migration)?;
    }
    let base_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let mut busy = Duration::ZERO;
    let mut done = 0;
    let mut commits = 0;
    while done < rows {
        let n = per_commit.min(rows - done);
        let chunk: Vec<RawRow> = (done..done + n)
            .map(|i| {
                let (body, event_type, contact_key, message_id) = ingest_event(i, ts);
                RawRow {
                    message_id,
                    event_type,
                    contact_key,
                    raw: body.into_bytes(),
                }
            })
            .collect();
        let start = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut seen = tx.prepare_cached(
                "SELECT 1 FROM messages
                 WHERE message_id = ?1 AND source = ?2 AND received_at_ms >= ?3 LIMIT 1",
            )?;
            let mut events = tx.prepare_cached(
                "INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                                     received_at_ms, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut messages = tx.prepare_cached(
                "INSERT INTO messages (message_id, source, event_id, received_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (k, r) in chunk.iter().enumerate() {
                let at = base_ms + i64::try_from(done + k).unwrap_or(0);
                if seen.exists(params![r.message_id, SOURCE, at - 7 * 24 * 3_600_000])? {
                    bail!("raw ceiling: generated messageIds repeat");
                }
                events.execute(params![
                    SOURCE,
                    r.message_id,
                    r.event_type,
                    r.contact_key,
                    at,
                    at,
                    r.raw
                ])?;
                let event_id = tx.last_insert_rowid();
                messages.execute(params![r.message_id, SOURCE, event_id, at])?;
            }
        }
        tx.commit()?;
        busy += start.elapsed();
        done += n;
        commits += 1;
    }
    Ok(RawResult {
        rows_per_commit: per_commit,
        rows,
        commits,
        events_per_sec: rows as f64 / busy.as_secs_f64(),
        ms_per_commit: busy.as_secs_f64() * 1000.0 / commits as f64,
    })
}

// ---------------------------------------------------------------------------------------------
// Delivery economy (issue 5).
// ---------------------------------------------------------------------------------------------

/// An emulator whose account limits never throttle the benchmark.
async fn unthrottled_emulator() -> Result<RunningEmulator> {
    Ok(RunningEmulator::start(EmulatorConfig {
        hourly_limit: 1_000_000,
        minute_limit: 1_000_000,
        ..EmulatorConfig::default()
    })
    .await?)
}

/// What the emulator saw.
struct CallCount {
    total: usize,
    upserts: usize,
    bulk_upserts: usize,
    /// Contacts carried by the bulk upserts.
    bulk_contacts: usize,
    job_polls: usize,
    fields: usize,
    other: usize,
    non_2xx: usize,
}

fn count_calls(emu: &RunningEmulator) -> CallCount {
    let log = emu.state.request_log();
    let count = |f: &dyn Fn(&str) -> bool| log.iter().filter(|r| f(&r.path)).count();
    let upserts = count(&|p| p.ends_with("/contacts/upsert"));
    let bulk_upserts = count(&|p| p.ends_with("/contacts/bulk_upsert"));
    let job_polls = count(&|p| p.contains("/job_statuses/"));
    let fields = count(&|p| p.contains("fields"));
    let bulk_contacts = log
        .iter()
        .filter(|r| r.path.ends_with("/contacts/bulk_upsert"))
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .map(|b| b["contacts"].as_array().map_or(0, Vec::len))
        .sum();
    CallCount {
        total: log.len(),
        upserts,
        bulk_upserts,
        bulk_contacts,
        job_polls,
        fields,
        other: log.len() - upserts - bulk_upserts - job_polls - fields,
        non_2xx: log
            .iter()
            .filter(|r| !(200..300).contains(&r.status))
            .count(),
    }
}

/// The emails an upsert (single or bulk) carries.
fn upsert_emails(path: &str, body: &str) -> Vec<String> {
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    if path.ends_with("/contacts/bulk_upsert") {
        return body["contacts"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        // The identifier may be the `external_id`; the data carries the email.
                        c["emails"]
                            .as_str()
                            .or_else(|| c["data"]["emails"].as_str())
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
    body["unique_identifier"]["emails"]
        .as_str()
        .or_else(|| body["contact"]["emails"].as_str())
        .map(|e| vec![e.to_owned()])
        .unwrap_or_default()
}

/// Post identify batches with a few concurrent posters; every one must be acknowledged.
async fn post_batches(gw: &Gateway, batches: Vec<String>) -> Result<()> {
    let results: Vec<Result<u16>> = futures::stream::iter(batches)
        .map(|b| gw.post("/v1/batch", b))
        .buffered(4)
        .collect()
        .await;
    for r in results {
        let status = r?;
        if status != 200 {
            bail!("ingest answered {status}");
        }
    }
    Ok(())
}

/// Run one calls-per-identify scenario on a fresh emulator and gateway.
async fn calls_scenario(
    label: &str,
    identifies: &[String],
    users: usize,
    bulk_min: Option<usize>,
) -> Result<Value> {
    let emu = unthrottled_emulator().await?;
    let gw = start_gateway(Some(&emu), bulk_min).await?;
    let n = identifies.len();
    let batches: Vec<String> = identifies.chunks(BATCH).map(batch_body).collect();

    let start = Instant::now();
    post_batches(&gw, batches).await?;
    let posted = start.elapsed();
    gw.drain(Duration::from_secs(300)).await?;
    let drained = start.elapsed();
    let stats = gw.store.stats().await?;
    let (delivered, skipped, dead) = stats.destinations.iter().fold((0, 0, 0), |(a, b, c), d| {
        (a + d.delivered, b + d.skipped, c + d.dead)
    });
    let calls = count_calls(&emu);
    let contacts = emu.state.contacts().len();
    gw.stop().await?;
    emu.stop().await;
    let per = calls.total as f64 / n as f64;
    println!("  {label}");
    println!(
        "    posted {n} identifies for {users} users in {:.2} s; queue drained after {:.2} s",
        posted.as_secs_f64(),
        drained.as_secs_f64()
    );
    println!(
        "    deliveries: {delivered} delivered, {skipped} skipped, {dead} dead; emulator holds {contacts} contacts"
    );
    println!(
        "    Freshworks calls: {} total = {} single upserts + {} bulk upserts (carrying {} contacts) + {} job-status polls + {} field metadata + {} other ({} non-2xx)",
        calls.total,
        calls.upserts,
        calls.bulk_upserts,
        calls.bulk_contacts,
        calls.job_polls,
        calls.fields,
        calls.other,
        calls.non_2xx
    );
    Ok(json!({
        "identifies": n,
        "users": users,
        "post_secs": posted.as_secs_f64(),
        "drain_secs": drained.as_secs_f64(),
        "delivered": delivered,
        "skipped": skipped,
        "dead": dead,
        "contacts": contacts,
        "calls": calls.total,
        "upserts": calls.upserts,
        "bulk_upserts": calls.bulk_upserts,
        "bulk_contacts": calls.bulk_contacts,
        "job_polls": calls.job_polls,
        "field_calls": calls.fields,
        "other_calls": calls.other,
        "non_2xx": calls.non_2xx,
        "calls_per_identify": per,
    }))
}

/// One scenario twice: with the default configuration (bulk path for backlogs) and with
/// `bulk_min_contacts = 0` (one upsert per contact), each against `target` calls per identify.
async fn run_modes(label: &str, events: &[String], users: usize, target: f64) -> Result<Value> {
    let default_bulk = DestinationConfig::default().bulk_min_contacts;
    let mut out = serde_json::Map::new();
    for (mode, bulk_min) in [
        (
            format!("default config, bulk_min_contacts = {default_bulk}"),
            None,
        ),
        (
            "bulk_min_contacts = 0, one upsert per contact".to_owned(),
            Some(0),
        ),
    ] {
        let mut r = calls_scenario(&format!("{label} [{mode}]"), events, users, bulk_min).await?;
        let per = r["calls_per_identify"].as_f64().unwrap_or(f64::NAN);
        println!(
            "    calls per identify: {per:.4} (target <= {target}: {})",
            verdict(per <= target)
        );
        r["mode"] = json!(mode);
        let key = if bulk_min.is_some() {
            "single_upserts"
        } else {
            "default"
        };
        out.insert(key.into(), r);
    }
    Ok(Value::Object(out))
}

async fn delivery_bench() -> Result<Value> {
    println!(
        "\n== delivery economy (issue 5): emulator and destination budget raised to 1,000,000/h and /min =="
    );
    let ts = now_ts();

    // (a) distinct users, one identify each.
    let users_a = 10_000;
    let a_events: Vec<String> = (0..users_a)
        .map(|u| identify_json(u, &uuid::Uuid::new_v4().to_string(), &ts, "pro", 1))
        .collect();
    let a = run_modes(
        "(a) 10,000 distinct users, one identify each",
        &a_events,
        users_a,
        TARGET_CALLS_DISTINCT,
    )
    .await?;

    // (b) 2,000 users x 5 identifies, interleaved by round as a burst of real traffic would be,
    // each one changing traits (so the shadow cannot drop them: only coalescing saves calls).
    let users_b = 2_000;
    let base = OffsetDateTime::now_utc();
    let mut b_events = Vec::with_capacity(users_b * 5);
    for round in 0..5 {
        let t = (base + time::Duration::milliseconds(round))
            .format(&Rfc3339)
            .unwrap_or_else(|_| ts.clone());
        let plan =
            ["free", "growth", "pro", "enterprise", "pro"][usize::try_from(round).unwrap_or(0)];
        for u in 0..users_b {
            b_events.push(identify_json(
                100_000 + u,
                &uuid::Uuid::new_v4().to_string(),
                &t,
                plan,
                usize::try_from(round).unwrap_or(0) + 1,
            ));
        }
    }
    let b = run_modes(
        "(b) 2,000 users x 5 identifies each, posted in one burst",
        &b_events,
        users_b,
        TARGET_CALLS_BURST,
    )
    .await?;

    // (c) end-to-end latency under quota.
    let c = latency_scenario(500, 50).await?;
    Ok(json!({ "distinct_users": a, "burst": b, "latency": c }))
}

/// Post `n` single identifies at `rate`/s (distinct users) and measure, per identify, the time
/// from its 200 (and from its send) to the first successful upsert of that contact reaching the
/// emulator (the emulator logs a call when it arrives, right before applying it).
async fn latency_scenario(n: usize, rate: u64) -> Result<Value> {
    println!(
        "  (c) end-to-end latency: {n} identifies (distinct users) at {rate}/s, one request each"
    );
    let emu = unthrottled_emulator().await?;
    let gw = Arc::new(start_gateway(Some(&emu), None).await?);
    let ts = now_ts();
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        tick.tick().await;
        let gw = Arc::clone(&gw);
        let body = identify_json(
            200_000 + i,
            &uuid::Uuid::new_v4().to_string(),
            &ts,
            "pro",
            1,
        );
        tasks.spawn(async move {
            let sent = OffsetDateTime::now_utc();
            let status = gw.post("/v1/identify", body).await?;
            let acked = OffsetDateTime::now_utc();
            if status != 200 {
                bail!("ingest answered {status}");
            }
            Ok((email(200_000 + i), sent, acked))
        });
    }
    let mut posted: HashMap<String, (OffsetDateTime, OffsetDateTime)> = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (e, sent, acked) = r??;
        posted.insert(e, (sent, acked));
    }
    gw.drain(Duration::from_secs(120)).await?;
    let log = emu.state.request_log();
    let calls = log.len();
    let gw = Arc::into_inner(gw).context("posters finished, gateway has one owner")?;
    gw.stop().await?;
    emu.stop().await;

    let mut first_upsert: HashMap<String, OffsetDateTime> = HashMap::new();
    let mut via_bulk = 0;
    for r in &log {
        let is_upsert =
            r.path.ends_with("/contacts/upsert") || r.path.ends_with("/contacts/bulk_upsert");
        if !is_upsert || !(200..300).contains(&r.status) {
            continue;
        }
        for e in upsert_emails(&r.path, &r.body) {
            if let std::collections::hash_map::Entry::Vacant(slot) = first_upsert.entry(e) {
                if r.path.ends_with("/contacts/bulk_upsert") {
                    via_bulk += 1;
                }
                slot.insert(r.at);
            }
        }
    }
    let mut from_ack = Vec::new();
    let mut from_send = Vec::new();
    let mut before_ack = 0;
    for (e, (sent, acked)) in &posted {
        let Some(at) = first_upsert.get(e) else {
            continue;
        };
        let ack_ms = (*at - *acked).as_seconds_f64() * 1000.0;
        if ack_ms < 0.0 {
            before_ack += 1;
        }
        from_ack.push(ack_ms.max(0.0));
        from_send.push((*at - *sent).as_seconds_f64() * 1000.0);
    }
    let matched = from_ack.len();
    let from_ack = sorted(from_ack);
    let from_send = sorted(from_send);
    println!(
        "    matched {matched}/{n} identifies to their upsert ({via_bulk} through bulk_upsert, whose contacts appear when the emulator's job runs, ~20 ms later); {calls} Freshworks calls in total"
    );
    println!(
        "    200 -> contact upserted : p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({before_ack} reached the emulator before the client saw its 200, counted as 0)",
        pct(&from_ack, 50.0),
        pct(&from_ack, 99.0),
        pct(&from_ack, 100.0)
    );
    println!(
        "    send -> contact upserted: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&from_send, 50.0),
        pct(&from_send, 99.0),
        pct(&from_send, 100.0)
    );
    if matched != n {
        bail!("only {matched} of {n} identifies reached the emulator");
    }
    Ok(json!({
        "identifies": n,
        "rate_per_sec": rate,
        "calls": calls,
        "from_ack_ms": {"p50": pct(&from_ack, 50.0), "p99": pct(&from_ack, 99.0), "max": pct(&from_ack, 100.0)},
        "from_send_ms": {"p50": pct(&from_send, 50.0), "p99": pct(&from_send, 99.0), "max": pct(&from_send, 100.0)},
        "upserted_before_ack": before_ack,
        "via_bulk": via_bulk,
    }))
}
