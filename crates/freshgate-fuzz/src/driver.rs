//! A small mutation fuzzer for stable Rust: start from a corpus, mutate (bit flips, interesting
//! bytes, JSON tokens, inserts, deletes, splices), run the target, stop at a time budget. No
//! coverage feedback (that needs libFuzzer's instrumentation, `scripts/fuzz.sh`): it is the CI
//! smoke that runs every target on every change, not the search for deep bugs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Target;

/// Longest input the driver makes.
const MAX_INPUT: usize = 16 * 1024;

/// Fragments worth inserting: JSON structure, Segment keys, timestamp pieces, gzip magic.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"\\u0000",
    b"\"type\"",
    b"\"identify\"",
    b"\"userId\"",
    b"\"traits\"",
    b"\"batch\"",
    b"\"writeKey\"",
    b"\"timestamp\"",
    b"\"sentAt\"",
    b"\"messageId\"",
    b"T",
    b"Z",
    b"+05:30",
    b"-",
    b"9999",
    b"\x1f\x8b\x08\x00",
    b"\n",
    b"[[sources]]",
    b"name = ",
    b"=",
    b"\xff\xfe",
];

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Inputs executed (corpus and mutants).
    pub executions: u64,
}

/// The files of a corpus directory (missing directory: empty corpus).
#[must_use]
pub fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Run `target` on every corpus input, then on mutants until `budget` has passed.
///
/// # Panics
/// When the target panics: the message names the input (hex) that made it panic.
#[must_use]
pub fn run(target: Target, corpus: &[Vec<u8>], budget: Duration, seed: u64) -> Run {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut executions = 0_u64;
    let seeds: Vec<Vec<u8>> = if corpus.is_empty() {
        vec![Vec::new()]
    } else {
        corpus.to_vec()
    };
    for input in &seeds {
        execute(target, input);
        executions += 1;
    }
    while started.elapsed() < budget {
        // Checking the clock costs more than a small input: check it every 64 runs.
        for _ in 0..64 {
            let base = &seeds[rng.random_range(0..seeds.len())];
            let input = mutate(base, &seeds, &mut rng);
            execute(target, &input);
            executions += 1;
        }
    }
    Run { executions }
}

fn execute(target: Target, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!(
            "target panicked on input (hex, {} bytes): {hex}",
            input.len()
        );
    }
}

fn mutate(base: &[u8], seeds: &[Vec<u8>], rng: &mut StdRng) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..=out.len())
        };
        match rng.random_range(0..7) {
            0 if at < out.len() => out[at] ^= 1 << rng.random_range(0..8),
            1 if at < out.len() => {
                out[at] = [0, 0xff, 0x7f, 0x80, b'0', b'"', b'\\'][rng.random_range(0..7)];
            }
            2 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 if !out.is_empty() => {
                let end = (at + rng.random_range(1..=16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if at < out.len() => {
                // Repeat a piece: deep nesting, long strings, many items.
                let end = (at + rng.random_range(1..=32)).min(out.len());
                let piece = out[at..end].to_vec();
                for _ in 0..rng.random_range(1..=64) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let end = (from + rng.random_range(1..=64)).min(other.len());
                    out.splice(at..at, other[from..end].iter().copied());
                }
            }
            _ => out.insert(at, rng.random()),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boom(data: &[u8]) {
        assert!(!data.starts_with(b"{}"), "found it");
    }

    #[test]
    fn a_panicking_target_is_reported_with_its_input() {
        let caught = catch_unwind(|| run(boom, &[b"{}".to_vec()], Duration::ZERO, 1));
        let message = caught
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(message.contains("7b7d"), "{message}");
    }

    #[test]
    fn runs_until_the_budget() {
        fn nothing(_: &[u8]) {}
        let r = run(nothing, &[b"abc".to_vec()], Duration::from_millis(50), 2);
        assert!(r.executions > 64);
    }
}
