//! Logging and metrics set-up. Metric names live in [`events`] so they are defined once.

pub mod events;

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, human-readable otherwise.
    Auto,
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable.
    Pretty,
}

/// Install the global tracing subscriber (logs go to stderr; stdout is for command output).
/// `RUST_LOG` sets the filter (default `default_level`). Calling it twice is harmless.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            // Sizes, not durations: events per request commit and per group commit.
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_events".to_owned()),
                    &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
                )
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may already be installed (tests): then ours only renders its own.
        let _ = metrics::set_global_recorder(recorder);
        events::describe();
        start_upkeep(handle.clone());
        handle
    })
}

/// How often the recorder's pending histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Upkeep passes run so far (the test's evidence that the thread runs).
static UPKEEP_PASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Fold pending histogram samples into their buckets every [`UPKEEP_EVERY`], for the life of the
/// process (the recorder is process-wide too). A recorder from `build_recorder` keeps every
/// sample recorded between two renders; only the exporter's own listener does this upkeep. With
/// nobody scraping `/metrics` (or during a `backfill`, which serves none) RSS grew with the
/// requests served: the soak bench, which reads `/metrics` only at its end, saw +0.3 MiB a
/// minute at 106 requests/s.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("fg-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
                UPKEEP_PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    if let Err(e) = started {
        // Scrapes still drain the samples; only an unscraped process would grow.
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
}

/// Lets one log line through per interval and counts the ones it held back, so that a flood of
/// hostile requests costs a bounded amount of log.
#[derive(Debug)]
pub struct LogLimiter {
    every: std::time::Duration,
    state: std::sync::Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// At most one line per `every`.
    #[must_use]
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new(LimiterState {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn allow(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

/// At most `max` bytes of client input, as lossy UTF-8 with control characters escaped, for a
/// log line.
#[must_use]
pub fn log_excerpt(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let text = String::from_utf8_lossy(cut);
    let mut out: String = text.escape_debug().collect();
    if bytes.len() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Histogram samples recorded while nobody renders `/metrics` are folded in by the upkeep
    /// thread the recorder starts, not kept until the next scrape.
    #[test]
    fn the_recorder_drains_histograms_without_a_scrape() {
        let handle = prometheus();
        for i in 0..10_000_u32 {
            metrics::histogram!("freshgate_test_upkeep_seconds").record(f64::from(i) / 1e4);
        }
        let before = UPKEEP_PASSES.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + UPKEEP_EVERY * 5;
        while UPKEEP_PASSES.load(std::sync::atomic::Ordering::Relaxed) <= before {
            assert!(
                Instant::now() < deadline,
                "no upkeep pass within 5 intervals"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The drained samples are in the buckets the next render shows.
        let text = handle.render();
        if text.contains("freshgate_test_upkeep_seconds") {
            assert!(
                text.contains("freshgate_test_upkeep_seconds_count 10000"),
                "{text}"
            );
        }
    }

    #[test]
    fn one_line_per_interval_and_the_held_back_ones_are_counted() {
        let limiter = LogLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(limiter.allow(t0 + Duration::from_millis(900)), None);
        assert_eq!(limiter.allow(t0 + Duration::from_millis(1000)), Some(2));
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(log_excerpt(b"ab\ncd", 10), "ab\\ncd");
        assert_eq!(log_excerpt(b"abcdef", 3), "abc…");
        assert_eq!(log_excerpt(&[0xff, b'a'], 10), "\u{fffd}a");
    }
}
