//! Crash bench of issue 12 (`cargo bench -p freshgate --bench crash [-- --trials=N --sites=S]`).
//!
//! Runs the suite's identity crash trials at scale: each trial `kill -9`s the real binary while
//! a contact write (single upsert or bulk job) is in flight, with the users' emails changing
//! behind it, then restarts it on the same data dir. Reports the users that ended as more than
//! one contact (must be 0) and those without the newest values. Defaults: 200 trials over 4
//! sites (each its own emulator, server and data dir, side by side).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/it/procs.rs"]
mod procs;

#[path = "../tests/it/crash_identity.rs"]
mod crash_identity;

use std::time::Instant;

fn main() {
    let mut trials = 200usize;
    let mut sites = 4usize;
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--trials=") {
            trials = v.parse().expect("--trials=N");
        } else if let Some(v) = arg.strip_prefix("--sites=") {
            sites = v.parse::<usize>().expect("--sites=N").max(1);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let per_site = trials.div_ceil(sites);
    let reports = rt.block_on(async {
        let runs: Vec<_> = (0..sites)
            .map(|s| {
                tokio::spawn(async move {
                    crash_identity::crash_trials(per_site, &format!("s{s}")).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for r in runs {
            out.push(r.await.unwrap());
        }
        out
    });
    let trials: usize = reports.iter().map(|r| r.trials).sum();
    let users: usize = reports.iter().map(|r| r.users).sum();
    let duplicates: Vec<&String> = reports.iter().flat_map(|r| &r.duplicates).collect();
    let wrong: Vec<&String> = reports.iter().flat_map(|r| &r.wrong).collect();
    println!("== crash: kill -9 during single and bulk delivery with email changes");
    println!(
        "  trials {trials} (one kill -9 each, half single upserts, half bulk jobs), users {users}, {sites} sites side by side, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  users with more than one contact: {} (must be 0)",
        duplicates.len()
    );
    println!("  users without the newest values:  {}", wrong.len());
    for d in duplicates.iter().chain(&wrong).take(10) {
        println!("    {d}");
    }
    if !duplicates.is_empty() || !wrong.is_empty() {
        std::process::exit(1);
    }
}
