//! The fuzz smoke of CI: every target over its committed corpus, then mutants for a bounded
//! time (`FRESHGATE_FUZZ_SMOKE_SECS` per target, default 3). Long, coverage-guided runs:
//! `scripts/fuzz.sh`.

use std::path::PathBuf;
use std::time::Duration;

use freshgate_fuzz::{TARGETS, driver};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_target_survives_its_corpus_and_mutants() {
    let secs: u64 = std::env::var("FRESHGATE_FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let corpus = driver::load_corpus(&corpus_dir(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let seed = 0x5eed_0000 + u64::try_from(i).unwrap_or(0);
        let run = driver::run(*target, &corpus, Duration::from_secs(secs), seed);
        eprintln!(
            "fuzz smoke {name}: {} executions in {secs} s ({} corpus inputs)",
            run.executions,
            corpus.len()
        );
    }
}
