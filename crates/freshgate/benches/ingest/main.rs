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
//! Flags: --secs=N (20) --warmup=N (3) --rounds=N (3) --connections=N (8) --threads=N (2)
//! --fsync-secs=N (5, 0 to skip) --no-raw --seed=N (events stored before the rounds, received
//! one per ms up to the start of the current hour) --seed-current-hour=N (and N received in it)
//! --prune-share=F (with --seed: time a prune of that share of them) --postgres[=URL] (default:
//! the local server through its Unix socket when it has one, else 127.0.0.1:5432)
//! --seed-keep=DIR (keep the seeded store there, start every round from a copy)
//! --seed-in-place (with --seed-keep: run on the kept store itself, for stores too big to copy)
//! --nodes=N --work-dir=DIR --smoke (2 s, one round, for CI) --json (print the report as JSON).

mod driver;

use std::path::PathBuf;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
