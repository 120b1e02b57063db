//! Quota benchmarks of issue 6 (`cargo bench -p freshgate --bench quota [-- backfill|stream]`).
//!
//! Owns two measurements of the real `freshgate` binary against the emulator binary, both sped
//! up with the hidden `--time-scale` flags (an emulated hour is one real second at 3600):
//!
//! * `backfill`: 100,000 new contacts through `freshgate backfill` on a 1,000-calls/hour plan:
//!   calls used, calls per contact, and emulated hours of quota, against the 100 hours one call
//!   per contact would need.
//! * `stream`: identifies of distinct users posted at twice the plan's hourly rate for an
//!   emulated day, every identify costing a call (`bulk_min_contacts = 0`), then with the bulk
//!   path: 429s caused by freshgate itself and budget utilisation per emulated hour.
//!
//! Options: `--headroom=H` (default 0.9), `--contacts=N` (backfill, default 100000),
//! `--warm` (backfill: field metadata stored by an earlier run), `--hours=N` (stream, default 12), `--scale=X` (backfill, default 30),
//! `--hourly=N` (the plan's hourly limit, default 1000), `--bulk-jobs=N` (backfill: the
//! destination's `bulk_jobs`), `--stream-scale=X`
//! (default 1200: at 3600 one call per contact means 900 calls a real second, and the run
//! measures the machine instead of the budget).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const KEY: &str = "bench-quota-key";
const KEY_VAR: &str = "BENCH_QUOTA_FRESHWORKS_KEY";
const WRITE_KEY: &str = "bench-quota-write-key";
/// The plan's hourly limit unless `--hourly=N`.
const HOURLY: u32 = 1000;
const MINUTE: u32 = 400;

struct Args {
    backfill: bool,
    stream: bool,
    headroom: f64,
    contacts: usize,
    hours: u64,
    scale: f64,
    stream_scale: f64,
    /// Run a one-contact backfill on the same store first, so the account's field metadata is
    /// already stored (as after `freshgate serve`), and count only the main run's calls.
    warm: bool,
    /// The plan's hourly limit (`--hourly=N`).
    hourly: u32,
    /// The destination's `bulk_jobs` (`--bulk-jobs=N`); the server's default when `None`.
    bulk_jobs: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        backfill: false,
        stream: false,
        headroom: 0.9,
        contacts: 100_000,
        hours: 12,
        // The backfill must be bound by the quota, not by this machine: 100,000 contacts take
        // ~200 real seconds to load, map and push through the emulator here, and ~2 emulated
        // hours of quota at 30x are 240 real seconds. (At 3600x the run lasted 200 emulated
        // hours, and every time-based rule, such as the field metadata TTL, fired 100 times.)
        scale: 30.0,
        stream_scale: 1200.0,
        warm: false,
        hourly: HOURLY,
        bulk_jobs: None,
    };
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--headroom=") {
            a.headroom = v.parse().context("--headroom")?;
        } else if let Some(v) = arg.strip_prefix("--contacts=") {
            a.contacts = v.parse().context("--contacts")?;
        } else if let Some(v) = arg.strip_prefix("--hours=") {
            a.hours = v.parse().context("--hours")?;
        } else if let Some(v) = arg.strip_prefix("--stream-scale=") {
            a.stream_scale = v.parse().context("--stream-scale")?;
        } else if let Some(v) = arg.strip_prefix("--scale=") {
            a.scale = v.parse().context("--scale")?;
        } else if let Some(v) = arg.strip_prefix("--hourly=") {
            a.hourly = v.parse().context("--hourly")?;
        } else if let Some(v) = arg.strip_prefix("--bulk-jobs=") {
            a.bulk_jobs = Some(v.parse().context("--bulk-jobs")?);
        } else if arg == "--warm" {
            a.warm = true;
        } else if arg == "backfill" {
            a.backfill = true;
        } else if arg == "stream" {
            a.stream = true;
        } else if arg.starts_with("--") {
            // `cargo bench` passes `--bench`.
        } else {
            bail!("unknown argument {arg:?}");
        }
    }
    if !a.backfill && !a.stream {
        a.backfill = true;
        a.stream = true;
    }
    Ok(a)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_url(cmd: &mut Command) -> Result<(Proc, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().context("the process printed no URL")??;
        if let Some(w) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break w.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok((proc, url))
}

struct Emulator {
    _proc: Proc,
    base: String,
    admin: String,
}

fn emulator(scale: f64, hourly: u32) -> Result<Emulator> {
    let (proc, base) = spawn_url(
        Command::new(env!("CARGO_BIN_EXE_freshgate"))
            .args(["emulator", "--listen", "127.0.0.1:0", "--api-key", KEY])
            .args(["--hourly-limit", &hourly.to_string()])
            .args(["--minute-limit", &MINUTE.to_string()])
            .args(["--time-scale", &scale.to_string()])
            .env_remove("FRESHWORKS_API_KEY")
            .env("RUST_LOG", "warn"),
    )?;
    let admin = base.replace("/crm/sales/api", "/__emulator");
    Ok(Emulator {
        _proc: proc,
        base,
        admin,
    })
}

/// `(wall seconds since the epoch, status, counted)` of every logged call.
/// One call the emulator logged.
struct Call {
    /// Unix seconds.
    at: f64,
    status: u16,
    /// Counted against the account's quota.
    counted: bool,
    path: String,
}

async fn call_log(emu: &Emulator) -> Result<Vec<Call>> {
    let v: Value = reqwest::get(format!("{}/requests", emu.admin))
        .await?
        .json()
        .await?;
    let mut out = Vec::new();
    for r in v.as_array().context("log")? {
        let at = time::OffsetDateTime::parse(
            r["at"].as_str().context("at")?,
            &time::format_description::well_known::Rfc3339,
        )?;
        out.push(Call {
            at: at.unix_timestamp_nanos() as f64 / 1e9,
            status: u16::try_from(r["status"].as_u64().unwrap_or(0))?,
            counted: r["counted"].as_bool().unwrap_or(false),
            path: r["path"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(out)
}

fn write_config(
    dir: &Path,
    emu: &Emulator,
    extra: &str,
    headroom: f64,
    hourly: u32,
) -> Result<PathBuf> {
    let path = dir.join("freshgate.toml");
    std::fs::write(
        &path,
        format!(
            "[[sources]]\nname = \"web\"\nwrite_keys = [\"{WRITE_KEY}\"]\n\n\
             [[destinations]]\nname = \"crm\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\n\
             hourly_limit = {hourly}\nminute_limit = {MINUTE}\nheadroom = {headroom}\n{extra}\n",
            emu.base
        ),
    )?;
    Ok(path)
}

fn identify(tag: &str, i: usize) -> Value {
    json!({
        "type": "identify", "userId": format!("{tag}-{i}"), "messageId": format!("{tag}-m{i}"),
        "timestamp": "2026-11-20T10:00:00Z",
        "traits": {"email": format!("{tag}{i}@example.com"), "firstName": format!("F{i}"),
                   "plan": "Pro", "employees": i % 5000},
    })
}

fn cap(headroom: f64, hourly: u32) -> f64 {
    (f64::from(hourly) * headroom).floor()
}

async fn bench_backfill(args: &Args) -> Result<()> {
    let n = args.contacts;
    let emu = emulator(args.scale, args.hourly)?;
    let dir = tempfile::tempdir()?;
    let extra = args
        .bulk_jobs
        .map(|n| format!("bulk_jobs = {n}"))
        .unwrap_or_default();
    let config = write_config(dir.path(), &emu, &extra, args.headroom, args.hourly)?;
    let file = dir.path().join("history.ndjson");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for i in 0..n {
            writeln!(f, "{}", identify("bf", i))?;
        }
    }
    let backfill = |file: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_freshgate"))
            .args([
                "backfill",
                "--json",
                "--time-scale",
                &args.scale.to_string(),
            ])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(file)
            .env(KEY_VAR, KEY)
            .env("RUST_LOG", "warn")
            .output()?;
        if !out.status.success() {
            bail!("backfill failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice::<Value>(&out.stdout)?)
    };
    let mut before = 0;
    if args.warm {
        let warm_file = dir.path().join("warm.ndjson");
        std::fs::write(&warm_file, format!("{}\n", identify("warm", 0)))?;
        backfill(&warm_file)?;
        before = call_log(&emu).await?.len();
    }
    let started = Instant::now();
    let summary = backfill(&file)?;
    let wall = started.elapsed();
    let log: Vec<Call> = call_log(&emu).await?.into_iter().skip(before).collect();
    let counted: Vec<f64> = log.iter().filter(|c| c.counted).map(|c| c.at).collect();
    let calls = counted.len();
    let kind = |needle: &str| {
        log.iter()
            .filter(|c| c.counted && c.path.contains(needle))
            .count()
    };
    let (bulk, fields) = (
        kind("/contacts/bulk_upsert"),
        kind("/settings/contacts/fields"),
    );
    let polls = kind("/job_statuses/");
    let first = counted.iter().copied().fold(f64::INFINITY, f64::min);
    let last = counted.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span_hours = (last - first) * args.scale / 3600.0;
    let throttled = log.iter().filter(|c| c.status == 429).count();
    let per_contact = calls as f64 / n as f64;
    let quota_hours = calls as f64 / f64::from(args.hourly);
    println!(
        "== backfill: {n} new contacts, plan {}/h, {MINUTE}/min, headroom {}, time scale {}, bulk_jobs {}, {}",
        args.hourly,
        args.headroom,
        args.scale,
        args.bulk_jobs
            .map_or_else(|| "default".to_owned(), |n| n.to_string()),
        if args.warm {
            "field metadata already stored by an earlier run (--warm)"
        } else {
            "empty store"
        }
    );
    println!(
        "  delivered {}, dead {}, pending {}",
        summary["destinations"][0]["delivered"],
        summary["destinations"][0]["dead"],
        summary["pending"]
    );
    println!(
        "  calls used              {calls} ({throttled} answered 429): {bulk} bulk_upsert, {polls} job polls, {fields} field metadata, {} other",
        calls - bulk - polls - fields
    );
    println!(
        "  calls per contact       {per_contact:.4}   (target <= 0.02; one call per contact: 1)"
    );
    println!(
        "  quota time              {quota_hours:.3} hours of the plan's {} calls/h (target <= 2 h; {:.2} h at the {} calls/h the headroom leaves us)",
        args.hourly,
        calls as f64 / cap(args.headroom, args.hourly),
        cap(args.headroom, args.hourly)
    );
    println!(
        "  first to last call      {span_hours:.2} emulated hours   (one call per contact: {:.1} h at {}/h)",
        n as f64 / f64::from(args.hourly),
        args.hourly
    );
    println!(
        "  real time               {:.1} s (load + deliver)",
        wall.as_secs_f64()
    );
    Ok(())
}

async fn post(client: &reqwest::Client, url: &str, events: &[Value]) -> Result<()> {
    loop {
        let r = client
            .post(format!("{url}/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": events }))
            .send()
            .await?;
        if r.status() == 200 {
            return Ok(());
        }
        if r.status() != 503 {
            bail!("batch refused: {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench_stream(args: &Args, bulk: bool) -> Result<()> {
    let emu = emulator(args.stream_scale, args.hourly)?;
    let dir = tempfile::tempdir()?;
    let extra = if bulk { "" } else { "bulk_min_contacts = 0\n" };
    let config = write_config(dir.path(), &emu, extra, args.headroom, args.hourly)?;
    let (server, url) = spawn_url(
        Command::new(env!("CARGO_BIN_EXE_freshgate"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(["--time-scale", &args.stream_scale.to_string(), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env(KEY_VAR, KEY)
            .env("RUST_LOG", "warn"),
    )?;
    let client = reqwest::Client::new();
    // Twice the plan's hourly rate, in batches of 100.
    let per_hour = 2 * args.hourly as usize;
    let total = per_hour * usize::try_from(args.hours)?;
    let emulated_hour = Duration::from_secs_f64(3600.0 / args.stream_scale);
    let batch_every = emulated_hour.mul_f64(100.0 / per_hour as f64);
    let started = Instant::now();
    let tag = if bulk { "sb" } else { "ss" };
    for (k, chunk) in (0..total)
        .map(|i| identify(tag, i))
        .collect::<Vec<_>>()
        .chunks(100)
        .enumerate()
    {
        let due = batch_every.mul_f64(k as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        post(&client, &url, chunk).await?;
    }
    let end = started + emulated_hour.mul_f64(args.hours as f64);
    if let Some(wait) = end.checked_duration_since(Instant::now()) {
        tokio::time::sleep(wait).await;
    }
    drop(server);
    let log = call_log(&emu).await?;
    let counted: Vec<f64> = log.iter().filter(|c| c.counted).map(|c| c.at).collect();
    let first = counted.iter().copied().fold(f64::INFINITY, f64::min);
    let throttled = log.iter().filter(|c| c.status == 429).count();
    let hours = usize::try_from(args.hours)?;
    let mut per_hour_calls = vec![0usize; hours];
    for t in &counted {
        let h = ((t - first) * args.stream_scale / 3600.0).floor();
        if h >= 0.0 && (h as usize) < hours {
            per_hour_calls[h as usize] += 1;
        }
    }
    // The last hour may be cut short by the stop; the first starts at the first call.
    let full = &per_hour_calls[..hours.saturating_sub(1)];
    let c = cap(args.headroom, args.hourly);
    let min = full.iter().copied().min().unwrap_or(0);
    let mean = full.iter().sum::<usize>() as f64 / full.len().max(1) as f64;
    println!(
        "== stream ({}): {per_hour} identifies per emulated hour (2x the plan) for {} emulated hours, headroom {}, time scale {}",
        if bulk {
            "bulk path on, default bulk_min_contacts = 20"
        } else {
            "bulk_min_contacts = 0: one call per contact"
        },
        args.hours,
        args.headroom,
        args.stream_scale
    );
    println!(
        "  posted {total}; calls {} ({throttled} answered 429)",
        counted.len()
    );
    println!("  calls per full emulated hour: {full:?}");
    println!(
        "  utilisation of the cap {c}/h: min {:.1} %, mean {:.1} %   (target >= 90 %, zero 429s)",
        min as f64 / c * 100.0,
        mean / c * 100.0
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if args.backfill {
            bench_backfill(&args).await?;
        }
        if args.stream {
            bench_stream(&args, false).await?;
            bench_stream(&args, true).await?;
        }
        Ok(())
    })
}
