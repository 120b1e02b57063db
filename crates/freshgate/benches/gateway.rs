//! Gateway benchmarks (`cargo bench -p freshgate --bench gateway [-- delivery]`).
//!
//! Measures the real server, started in-process on `127.0.0.1:0` over a temp data dir exactly as
//! the integration tests do:
//!
//! * `delivery` (issue 5): Freshworks calls per delivered identify against the emulator, for
//!   distinct users and for bursts of identifies per user (coalescing), and the end-to-end
//!   latency from the ingest 200 to the upsert reaching the emulator; then (issue 11, [`mixed`])
//!   a mixed workload of every kind, with calls per event of each kind (`-- mixed`: that part
//!   alone).
//!
//! Ingest throughput is not measured here: an in-process load generator competes with the
//! server for the cores and understated it threefold (issue 15). `benches/ingest` drives the
//! real binary from a separate `wrk` process instead.
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
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;

const WRITE_KEY: &str = "bench-write-key";
const API_KEY_ENV: &str = "BENCH_FRESHWORKS_KEY";
const SOURCE: &str = "web";
/// Events per `/v1/batch` request.
const BATCH: usize = 100;
/// Targets the figures are reported against.
const TARGET_CALLS_DISTINCT: f64 = 1.0;
const TARGET_CALLS_BURST: f64 = 0.3;

/// What to run, from the command line (`cargo bench` adds `--bench`, which is ignored).
struct Args {
    delivery: bool,
    /// Only the mixed workload (`-- mixed`).
    mixed_only: bool,
}

#[path = "gateway/mixed.rs"]
mod mixed;

fn parse_args() -> Result<Args> {
    let mut parts = Vec::new();
    for a in std::env::args().skip(1) {
        if !a.starts_with('-') {
            // --bench and other harness flags cargo passes along are ignored.
            parts.push(a);
        }
    }
    for p in &parts {
        if p != "delivery" && p != "mixed" {
            bail!("unknown part {p:?}: expected `delivery` or `mixed` (ingest: `--bench ingest`)");
        }
    }
    let mixed_only = parts.iter().all(|p| p == "mixed") && !parts.is_empty();
    Ok(Args {
        delivery: true,
        mixed_only,
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
    if args.mixed_only {
        println!("\n== delivery of every kind (issue 11) ==");
        let r = runtime.block_on(mixed::mixed_scenario())?;
        report.insert("mixed".into(), r);
    } else if args.delivery {
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
    _data_dir: tempfile::TempDir,
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
        _data_dir: data_dir,
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
    // (d) every kind at once (issue 11).
    let d = mixed::mixed_scenario().await?;
    Ok(json!({ "distinct_users": a, "burst": b, "latency": c, "mixed": d }))
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
