//! Soak benchmark (`cargo bench -p freshgate --bench soak [-- --minutes=60]`): the real
//! `freshgate serve` binary under steady mixed traffic with hostile requests mixed in, for an
//! hour by default.
//!
//! 1. Capacity: `/v1/batch` of 100 events from 4 keep-alive clients as fast as they are
//!    answered, for `--capacity-secs` (default 15).
//! 2. Soak: half that rate (or `--rate=N` events/s), 5 % identifies that go to a destination on
//!    the built-in emulator throttled to its plan (1,000 calls/h, 400/min), the rest tracks;
//!    every second also a bad write key, an oversize body, a forged webhook, an identify with 50
//!    random trait keys, and 20 slowloris connections kept re-opening.
//! 3. Every `--sample-secs` (default 60): acknowledged events/s, the server's RSS and open file
//!    descriptors, p99 acknowledgement latency, refusals by status.
//! 4. With `--outage-minutes=N`, the emulator fails every call for the first N minutes of the
//!    soak, then recovers: the backlog of N minutes meets the quota at once, as it does an hour
//!    in, when the hourly window slides past the first calls, without waiting the hour.
//!    `--time-scale=X` runs the quota's clock (the server's and the emulator's) X times faster,
//!    so that the hourly window slides past the first calls after 60/X minutes: the real
//!    hour boundary, with less backlog.
//! 5. `--binary=PATH` soaks another build of `freshgate` (an A/B against an older commit);
//!    `--concurrency=N` and `--bulk-jobs=N` set the destination's keys of those names.
//! 6. At the end: the server is stopped (SIGTERM) and every acknowledged event is looked for in
//!    the store: lost = acknowledged − stored (must be 0).
//!
//! Goals (issue 13): RSS flat within ±10 % after warm-up (the first fifth) and under 150 MiB;
//! 0 lost. The report is printed and written as JSON to `<target>/soak-report.json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use freshworks_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

const WRITE_KEY: &str = "soak-write-key";
const API_KEY_ENV: &str = "SOAK_FRESHWORKS_KEY";
const WEBHOOK_SECRET_ENV: &str = "SOAK_WEBHOOK_SECRET";
const BATCH: usize = 100;
const CLIENTS: usize = 4;
const SLOW_CLIENTS: usize = 20;
const RSS_LIMIT_MIB: f64 = 150.0;
const RSS_FLAT: f64 = 0.10;

struct Args {
    minutes: f64,
    sample_secs: u64,
    capacity_secs: u64,
    rate: Option<f64>,
    outage_minutes: f64,
    binary: PathBuf,
    time_scale: f64,
    /// The destination's `concurrency`; the server's default when `None`.
    concurrency: Option<usize>,
    /// The destination's `bulk_jobs`; the server's default when `None`.
    bulk_jobs: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        minutes: 60.0,
        sample_secs: 60,
        capacity_secs: 15,
        rate: None,
        outage_minutes: 0.0,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_freshgate")),
        time_scale: 1.0,
        concurrency: None,
        bulk_jobs: None,
    };
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--minutes=") {
            a.minutes = v.parse().context("--minutes=N")?;
        } else if let Some(v) = arg.strip_prefix("--sample-secs=") {
            a.sample_secs = v.parse().context("--sample-secs=N")?;
        } else if let Some(v) = arg.strip_prefix("--capacity-secs=") {
            a.capacity_secs = v.parse().context("--capacity-secs=N")?;
        } else if let Some(v) = arg.strip_prefix("--rate=") {
            a.rate = Some(v.parse().context("--rate=EVENTS_PER_SEC")?);
        } else if let Some(v) = arg.strip_prefix("--time-scale=") {
            a.time_scale = v.parse().context("--time-scale=X")?;
        } else if let Some(v) = arg.strip_prefix("--binary=") {
            a.binary = PathBuf::from(v);
        } else if let Some(v) = arg.strip_prefix("--concurrency=") {
            a.concurrency = Some(v.parse().context("--concurrency=N")?);
        } else if let Some(v) = arg.strip_prefix("--bulk-jobs=") {
            a.bulk_jobs = Some(v.parse().context("--bulk-jobs=N")?);
        } else if let Some(v) = arg.strip_prefix("--outage-minutes=") {
            a.outage_minutes = v.parse().context("--outage-minutes=N")?;
        } else if !arg.starts_with('-') {
            bail!("unknown argument {arg:?}");
        }
    }
    a.sample_secs = a.sample_secs.max(1);
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(soak(&args))?;
    let path = target_dir().join("soak-report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!("\nreport written to {}", path.display());
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("target"))
        },
        PathBuf::from,
    )
}

/// The server process and what the load knows about it.
struct Server {
    child: Child,
    url: String,
    data_dir: PathBuf,
}

impl Drop for Server {
    /// A soak that fails half way must not leave its server running (and loading the machine
    /// under the next run); after a clean stop this finds the child already reaped.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_server(args: &Args, dir: &Path, emulator: &RunningEmulator) -> Result<Server> {
    let plan = EmulatorConfig::default();
    let config = dir.join("freshgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\nname = \"web\"\nwrite_keys = [\"{WRITE_KEY}\"]\nwebhook_secret_env = \"{WEBHOOK_SECRET_ENV}\"\n\n\
             [[destinations]]\nname = \"crm\"\nbase_url = \"{}\"\napi_key_env = \"{API_KEY_ENV}\"\nhourly_limit = {}\nminute_limit = {}\n",
            emulator.base_url, plan.hourly_limit, plan.minute_limit
        ) + &[
            ("concurrency", args.concurrency),
            ("bulk_jobs", args.bulk_jobs),
        ]
        .iter()
        .filter_map(|(key, value)| value.map(|n| format!("{key} = {n}\n")))
        .collect::<String>(),
    )?;
    let data_dir = dir.join("data");
    let mut child = Command::new(&args.binary)
        .arg("serve")
        .arg("--time-scale")
        .arg(args.time_scale.to_string())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .env(API_KEY_ENV, &plan.api_key)
        .env(WEBHOOK_SECRET_ENV, "soak-secret")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start freshgate serve")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().context("no output")??;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .context("no URL printed")?
        .to_owned();
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(Server {
        child,
        url,
        data_dir,
    })
}

/// The number after `field` in `/proc/<pid>/status` (kB for sizes, a count for `Threads:`).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A size from `/proc/<pid>/status` in MiB.
#[allow(clippy::cast_precision_loss)]
fn proc_mib(pid: u32, field: &str) -> Option<f64> {
    proc_status(pid, field).map(|kb| kb as f64 / 1024.0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// One batch body of `BATCH` events with fresh ids; `identifies` of them identifies.
fn batch_body(seq: &AtomicU64, identifies: usize) -> (String, usize) {
    let mut events = Vec::with_capacity(BATCH);
    for i in 0..BATCH {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let user = n % 2000;
        let id = format!("soak-{n}");
        events.push(if i < identifies {
            json!({"type": "identify", "userId": format!("u{user}"), "messageId": id,
                   "traits": {"email": format!("u{user}@example.com"), "first_name": format!("N{n}"), "plan": "pro"}})
        } else {
            json!({"type": "track", "userId": format!("u{user}"), "messageId": id, "event": "Viewed",
                   "properties": {"path": "/pricing", "n": n, "pad": "x".repeat(400)}})
        });
    }
    (json!({"batch": events}).to_string(), BATCH)
}

/// Shared counters of the load.
#[derive(Default)]
struct Load {
    acked: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    hostile: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
    stop: AtomicBool,
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<u16> {
    let r = client
        .post(format!("{url}/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let _ = r.bytes().await?;
    Ok(status)
}

/// One client: a batch every `every` (or back to back with `None`) until stopped.
async fn client_loop(
    client: reqwest::Client,
    url: String,
    load: Arc<Load>,
    seq: Arc<AtomicU64>,
    every: Option<Duration>,
    identifies: usize,
) {
    let mut tick = every.map(tokio::time::interval);
    if let Some(t) = tick.as_mut() {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    while !load.stop.load(Ordering::Relaxed) {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let (body, n) = batch_body(&seq, identifies);
        let started = Instant::now();
        match post(&client, &url, body).await {
            Ok(200) => {
                load.acked.fetch_add(n as u64, Ordering::Relaxed);
                load.latencies_ms
                    .lock()
                    .await
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(_) => {
                load.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                load.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Once a second: a bad key, an oversize body, a forged webhook, 50 random trait keys.
async fn hostile_loop(client: reqwest::Client, url: String, load: Arc<Load>, seq: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let oversize = format!(
        "{{\"batch\":[{{\"type\":\"track\",\"userId\":\"u\",\"event\":\"{}\"}}]}}",
        "x".repeat(600 * 1024)
    );
    while !load.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let bad_key = client
            .post(format!("{url}/v1/batch"))
            .basic_auth("not-a-key", Some(""))
            .body("{\"batch\":[]}")
            .send();
        let big = client
            .post(format!("{url}/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .body(oversize.clone())
            .send();
        let forged = client
            .post(format!("{url}/webhook/web"))
            .header("x-signature", "00")
            .body("{\"type\":\"identify\",\"userId\":\"evil\"}")
            .send();
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let mut traits = serde_json::Map::new();
        for _ in 0..50 {
            traits.insert(format!("r_{}", uuid::Uuid::new_v4().simple()), json!(1));
        }
        traits.insert("email".into(), json!(format!("r{}@example.com", n % 500)));
        let random_keys = json!({"batch": [{"type": "identify", "userId": format!("r{}", n % 500),
                                            "messageId": format!("soak-{n}"), "traits": traits}]});
        let random = post(&client, &url, random_keys.to_string());
        let (a, b, c, d) = tokio::join!(bad_key, big, forged, random);
        for r in [a, b, c].into_iter().flatten() {
            let _ = r.bytes().await;
        }
        if matches!(d, Ok(200)) {
            load.acked.fetch_add(1, Ordering::Relaxed);
        }
        load.hostile.fetch_add(4, Ordering::Relaxed);
    }
}

/// A slowloris: half a request head, then silence until the server cuts it; again.
async fn slow_loop(addr: String, load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
            let _ = s.write_all(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n").await;
            let mut buf = [0_u8; 256];
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                use tokio::io::AsyncReadExt;
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server's `/metrics`, on a fresh connection each try: a pooled one may have been closed
/// by the server's keep-alive timeout while the load ran (seen once: "connection closed before
/// message completed", which ended the run without its report).
async fn scrape_metrics(url: &str) -> Result<String> {
    let mut tries = 0;
    loop {
        let answer = async {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?
                .get(format!("{url}/metrics"))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        }
        .await;
        match answer {
            Ok(text) => return Ok(text),
            Err(e) if tries < 3 => {
                eprintln!("scraping /metrics: {e}; trying again");
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("scraping /metrics"),
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn capacity(url: &str, secs: u64, seq: &Arc<AtomicU64>) -> Result<f64> {
    let load = Arc::new(Load::default());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()?;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client_loop(
                client.clone(),
                url.to_owned(),
                Arc::clone(&load),
                Arc::clone(seq),
                None,
                5,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = load.acked.load(Ordering::Relaxed) as f64 / secs as f64;
    Ok(rate)
}

#[allow(clippy::too_many_lines, clippy::cast_precision_loss)]
async fn soak(args: &Args) -> Result<Value> {
    let emulator = RunningEmulator::start(EmulatorConfig {
        time_scale: args.time_scale,
        ..EmulatorConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let mut server = start_server(args, dir.path(), &emulator)?;
    let pid = server.child.id();
    let url = server.url.clone();
    let seq = Arc::new(AtomicU64::new(0));
    println!("freshgate soak: server pid {pid} at {url}");

    let measured = capacity(&url, args.capacity_secs, &seq).await?;
    let capacity_acked = seq.load(Ordering::Relaxed);
    let rate = args.rate.unwrap_or(measured / 2.0).max(BATCH as f64);
    println!(
        "capacity: {measured:.0} events/s over {} s; soak at {rate:.0} events/s for {} min",
        args.capacity_secs, args.minutes
    );

    let load = Arc::new(Load::default());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()?;
    let every = Duration::from_secs_f64(BATCH as f64 * CLIENTS as f64 / rate);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(client_loop(
            client.clone(),
            url.clone(),
            Arc::clone(&load),
            Arc::clone(&seq),
            Some(every),
            5,
        )));
    }
    tasks.push(tokio::spawn(hostile_loop(
        client.clone(),
        url.clone(),
        Arc::clone(&load),
        Arc::clone(&seq),
    )));
    let addr = url.trim_start_matches("http://").to_owned();
    for _ in 0..SLOW_CLIENTS {
        tasks.push(tokio::spawn(slow_loop(addr.clone(), Arc::clone(&load))));
    }

    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let outage = Duration::from_secs_f64(args.outage_minutes.max(0.0) * 60.0);
    if !outage.is_zero() {
        emulator
            .state
            .inject(freshworks_emulator::Fault::FailureRate { rate: 1.0 });
        println!(
            "the emulator fails every call for {:.1} min",
            args.outage_minutes
        );
        let state = emulator.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(outage).await;
            state.clear_faults();
            println!("the emulator answers again");
        });
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last_acked = 0;
    println!(
        "{:>7} {:>10} {:>9} {:>6} {:>7} {:>9} {:>8} {:>8}",
        "min", "events/s", "RSS MiB", "fds", "threads", "p99 ms", "refused", "errors"
    );
    while started.elapsed() < total {
        tokio::time::sleep(
            Duration::from_secs(args.sample_secs).min(
                total
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1)),
            ),
        )
        .await;
        let acked = load.acked.load(Ordering::Relaxed);
        let window = args.sample_secs as f64;
        let mut lat = std::mem::take(&mut *load.latencies_ms.lock().await);
        lat.sort_by(f64::total_cmp);
        let sample = json!({
            "minute": started.elapsed().as_secs_f64() / 60.0,
            "events_per_sec": (acked - last_acked) as f64 / window,
            "rss_mib": proc_mib(pid, "VmRSS:"),
            "open_fds": open_fds(pid),
            "threads": proc_status(pid, "Threads:"),
            "p99_ack_ms": pct(&lat, 0.99),
            "refused": load.refused.load(Ordering::Relaxed),
            "errors": load.errors.load(Ordering::Relaxed),
        });
        println!(
            "{:>7.1} {:>10.0} {:>9.1} {:>6} {:>7} {:>9.1} {:>8} {:>8}",
            sample["minute"].as_f64().unwrap_or(0.0),
            sample["events_per_sec"].as_f64().unwrap_or(0.0),
            sample["rss_mib"].as_f64().unwrap_or(0.0),
            sample["open_fds"],
            sample["threads"],
            sample["p99_ack_ms"].as_f64().unwrap_or(0.0),
            sample["refused"],
            sample["errors"]
        );
        samples.push(sample);
        last_acked = acked;
    }
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let peak = proc_mib(pid, "VmHWM:");
    let metrics = scrape_metrics(&url).await?;
    let metrics_bytes = metrics.len();
    let metrics_series = metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    server.child.wait()?;
    emulator.stop().await;

    let store = freshgate::cli::open_store(&server.data_dir, 16)?;
    let stats = store.stats().await?;
    store.close().await;
    let acked = capacity_acked + load.acked.load(Ordering::Relaxed);
    let lost = acked.saturating_sub(stats.events);

    let rss: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["rss_mib"].as_f64())
        .collect();
    let warm = rss.len() / 5;
    let steady = &rss[warm.min(rss.len())..];
    let mean = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    let spread = steady
        .iter()
        .map(|r| (r - mean).abs() / mean.max(1.0))
        .fold(0.0, f64::max);
    let max_rss = rss.iter().copied().fold(0.0, f64::max);
    let ok = |b: bool| if b { "met" } else { "NOT met" };
    println!(
        "\nacknowledged {acked} events, stored {}, lost {lost} ({})",
        stats.events,
        ok(lost == 0)
    );
    println!(
        "RSS after warm-up: mean {mean:.1} MiB, largest deviation {:.1} % (goal ±{:.0} %: {}); max {max_rss:.1} MiB, peak (VmHWM) {:.1} MiB (goal < {RSS_LIMIT_MIB} MiB: {})",
        spread * 100.0,
        RSS_FLAT * 100.0,
        ok(spread <= RSS_FLAT),
        peak.unwrap_or(0.0),
        ok(max_rss < RSS_LIMIT_MIB)
    );
    println!("/metrics at the end: {metrics_series} series, {metrics_bytes} bytes");
    Ok(json!({
        "minutes": args.minutes,
        "capacity_events_per_sec": measured,
        "soak_rate_events_per_sec": rate,
        "samples": samples,
        "acknowledged": acked,
        "stored": stats.events,
        "lost": lost,
        "rss_mean_after_warmup_mib": mean,
        "rss_max_deviation": spread,
        "rss_max_mib": max_rss,
        "rss_peak_mib": peak,
        "metrics_series": metrics_series,
        "metrics_bytes": metrics_bytes,
        "goals": {"lost_zero": lost == 0, "rss_flat": spread <= RSS_FLAT, "rss_under_150_mib": max_rss < RSS_LIMIT_MIB},
    }))
}
