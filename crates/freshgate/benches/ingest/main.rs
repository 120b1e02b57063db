//! Ingest bench (`cargo bench -p freshgate --bench ingest`, or `scripts/bench-ingest.sh`).
//!
//! Drives the real `freshgate serve` binary (release, built by cargo for this bench) with `wrk`
//! from a separate process: `/v1/batch` bodies of 100 events of ~745 bytes, each with a unique
//! messageId, from 8 keep-alive connections on 2 threads. In the same run, on the same disk: the
//! fsync rate of a 75 KiB append and the raw ceiling (the store's own append path, same rows,
//! schema, pragmas and checkpoints, one writer thread, no HTTP or JSON; on PostgreSQL the
//! store's append by as many concurrent appenders as wrk has connections), alternating with our
//! rounds. See `driver.rs` for the flags and README "Benchmarks" for figures.
//!
//! Flags: `--help` ([`USAGE`]).

mod driver;

use std::path::PathBuf;

use anyhow::{Context, Result};

/// What `--help` prints.
const USAGE: &str = "\
Ingest bench: the release `freshgate serve` loaded by wrk (2 threads, 8 keep-alive connections,
/v1/batch bodies of 100 events of ~745 bytes, unique messageIds), alternating round by round with
the raw ceiling (the store's own append path with no HTTP or JSON) on the same disk.

Usage: cargo bench -p freshgate --bench ingest -- [FLAGS]     (or scripts/bench-ingest.sh [FLAGS])

  --secs=N             length of a measured round (20)
  --warmup=N           load before each round, not measured (3)
  --rounds=N           rounds of ours, each followed by a raw-ceiling round (3)
  --connections=N      wrk connections (8); --threads=N wrk threads (2)
  --fsync-secs=N       count the server's fsyncs with strace for N s after the rounds (5; 0: skip)
  --no-raw             skip the raw-ceiling rounds
  --postgres[=URL]     run on PostgreSQL (default: the local server through its Unix socket when it
                       has one, else 127.0.0.1:5432); a fresh database per round; the report adds
                       the local server's own CPU and disk writes per event
  --nodes=N            with --postgres: N servers on one database, wrk split between them
  --seed=N             store N events first (received one per ms up to the start of this hour)
  --seed-current-hour=N  and N more received since the hour began, with random ids
  --prune-share=F      with --seed: time a prune of that share of the seeded events (0.1)
  --seed-keep=DIR      keep the seeded store in DIR and start every later run from a copy
  --seed-in-place      with --seed-keep: run on the kept store itself (stores too big to copy)
  --binary=PATH        the freshgate binary to load (an A/B against another build)
  --work-dir=DIR       where stores and configs go (CARGO_TARGET_DIR/bench-ingest)
  --smoke              2 s, one round (what the test suite runs)
  --json               print the report as JSON on stdout as well
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let defaults = driver::Options {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_freshgate")),
        lua: manifest.join("../../scripts/bench/ingest.lua"),
        work_dir: std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| manifest.join("../../target"), PathBuf::from)
            .join("bench-ingest"),
        store: driver::StoreKind::Sqlite,
        secs: if smoke { 2 } else { 20 },
        warmup_secs: if smoke { 0 } else { 3 },
        rounds: if smoke { 1 } else { 3 },
        connections: 8,
        threads: 2,
        raw: true,
        fsync_secs: if smoke { 1 } else { 5 },
        seed: 0,
        prune_share: 0.1,
        seed_keep: None,
        seed_in_place: false,
        seed_current_hour: 0,
    };
    let opts = driver::parse_args(&args, defaults)?;
    let report = driver::run(&opts)?;
    if args.iter().any(|a| a == "--json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("report")?
        );
    }
    Ok(())
}
