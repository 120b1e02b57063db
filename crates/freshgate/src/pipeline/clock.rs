//! The pipeline's clock: wall time, optionally sped up.
//!
//! Quota windows are an hour long; testing "a backlog several times the hourly limit" or "a
//! day-long outage" in real time is impossible. `serve --time-scale X` (hidden, for tests and
//! benchmarks, paired with the emulator's `--time-scale X`) makes every time the pipeline reads
//! or waits for run X times faster: retry schedules, quota windows, leases, pauses. Ingest
//! timestamps stay real. Process-wide on purpose: one process has one notion of "now".

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static SCALE_BITS: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0f64
static ORIGIN: OnceLock<(Instant, i64)> = OnceLock::new();

fn real_ms() -> i64 {
    super::ingest::unix_ms(time::OffsetDateTime::now_utc())
}

fn origin() -> (Instant, i64) {
    *ORIGIN.get_or_init(|| (Instant::now(), real_ms()))
}

/// Speed the clock up by `scale` (≥ 1). Call once, before the pipeline starts.
pub fn set_scale(scale: f64) {
    let scale = if scale.is_finite() && scale >= 1.0 {
        scale
    } else {
        1.0
    };
    let _ = origin();
    SCALE_BITS.store(scale.to_bits(), Ordering::Relaxed);
}

/// The current speed-up (1.0 = real time).
#[must_use]
pub fn scale() -> f64 {
    f64::from_bits(SCALE_BITS.load(Ordering::Relaxed))
}

/// Now, in Unix milliseconds of the pipeline's clock.
#[must_use]
pub fn now_ms() -> i64 {
    let s = scale();
    if (s - 1.0).abs() < f64::EPSILON {
        return real_ms();
    }
    let (start, start_ms) = origin();
    #[allow(clippy::cast_possible_truncation)]
    let elapsed = (start.elapsed().as_secs_f64() * 1000.0 * s) as i64;
    start_ms + elapsed
}

/// A real duration expressed in clock milliseconds (a 60 s lease must last 60 real seconds).
#[must_use]
pub fn clock_ms(real: Duration) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let ms = (real.as_secs_f64() * 1000.0 * scale()) as i64;
    ms
}

/// Sleep for `clock` milliseconds of the pipeline's clock.
pub async fn sleep_clock_ms(clock: i64) {
    let real = Duration::from_secs_f64((clock.max(0) as f64 / 1000.0) / scale());
    tokio::time::sleep(real).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_time_by_default() {
        let a = real_ms();
        let b = now_ms();
        assert!((b - a).abs() < 1000);
        assert_eq!(clock_ms(Duration::from_secs(2)), 2000);
    }
}
