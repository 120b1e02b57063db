//! Per-account quota: a sliding emulated hour and a sliding emulated minute over every counted call
//! (spec §8). Emulated time runs `time_scale` times faster than wall time so tests can pass an hour in seconds.

use std::collections::VecDeque;
use std::time::Instant;

const HOUR: f64 = 3600.0;
const MINUTE: f64 = 60.0;

/// Outcome of a granted call, for the optional `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Granted {
    pub limit: u32,
    pub remaining: u32,
}

/// A refused call: how long (wall seconds) until a slot frees up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub limit: u32,
    pub retry_after_wall_secs: f64,
}

/// Sliding-window quota state.
#[derive(Debug)]
pub(crate) struct Quota {
    hourly: u32,
    minute: u32,
    scale: f64,
    anchor_wall: Instant,
    anchor_emu: f64,
    /// Emulated timestamps (seconds) of counted calls, ascending.
    calls: VecDeque<f64>,
    refused: u64,
}

impl Quota {
    pub(crate) fn new(hourly: u32, minute: u32, scale: f64) -> Self {
        Self {
            hourly,
            minute,
            scale,
            anchor_wall: Instant::now(),
            anchor_emu: 0.0,
            calls: VecDeque::new(),
            refused: 0,
        }
    }

    fn now(&self) -> f64 {
        self.anchor_emu + self.anchor_wall.elapsed().as_secs_f64() * self.scale
    }

    fn prune(&mut self, now: f64) {
        while self.calls.front().is_some_and(|&t| t <= now - HOUR) {
            self.calls.pop_front();
        }
    }

    fn in_minute(&self, now: f64) -> usize {
        self.calls.len() - self.calls.partition_point(|&t| t <= now - MINUTE)
    }

    /// Emulated seconds until the window of `len`-limited calls has room again.
    fn wait(&self, now: f64, limit: u32, window: f64) -> f64 {
        let limit = limit as usize;
        match self.calls.len().checked_sub(limit.max(1)) {
            Some(idx) if limit > 0 => self.calls.get(idx).map_or(window, |t| t + window - now),
            _ => window,
        }
        .max(0.0)
    }

    /// Counts one call if both windows have room; otherwise refuses it (a refused call is not counted).
    pub(crate) fn try_take(&mut self) -> Result<Granted, Refused> {
        let now = self.now();
        self.prune(now);
        let hour_used = self.calls.len();
        let minute_used = self.in_minute(now);
        if hour_used >= self.hourly as usize {
            self.refused += 1;
            let secs = self.wait(now, self.hourly, HOUR);
            return Err(Refused {
                limit: self.hourly,
                retry_after_wall_secs: secs / self.scale,
            });
        }
        if minute_used >= self.minute as usize {
            self.refused += 1;
            let secs = self.wait(now, self.minute, MINUTE);
            return Err(Refused {
                limit: self.minute,
                retry_after_wall_secs: secs / self.scale,
            });
        }
        self.calls.push_back(now);
        let remaining =
            (self.hourly as usize - hour_used - 1).min(self.minute as usize - minute_used - 1);
        Ok(Granted {
            limit: self.hourly,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        })
    }

    /// Counts `n` calls made by "another integration" of the account right now.
    pub(crate) fn spend(&mut self, n: u32) {
        let now = self.now();
        self.prune(now);
        // Calls beyond the larger limit at one instant change nothing: they all expire together.
        let n = n.min(self.hourly.max(self.minute));
        self.calls.extend(std::iter::repeat_n(now, n as usize));
    }

    pub(crate) fn set_limits(&mut self, hourly: u32, minute: u32) {
        self.hourly = hourly;
        self.minute = minute;
    }

    /// Changes the time scale without a jump in emulated time.
    pub(crate) fn set_scale(&mut self, scale: f64) {
        self.anchor_emu = self.now();
        self.anchor_wall = Instant::now();
        self.scale = scale;
    }

    /// Forgets every counted call and the refusal counter.
    pub(crate) fn reset(&mut self) {
        self.calls.clear();
        self.refused = 0;
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// `(limits, used in hour, used in minute)` for the admin API.
    pub(crate) fn snapshot(&mut self) -> serde_json::Value {
        let now = self.now();
        self.prune(now);
        serde_json::json!({
            "hourly_limit": self.hourly,
            "minute_limit": self.minute,
            "time_scale": self.scale,
            "used_hour": self.calls.len(),
            "used_minute": self.in_minute(now),
            "quota_429_count": self.refused,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn minute_limit_bites_before_hour_and_refusals_are_not_counted() {
        let mut q = Quota::new(10, 3, 1.0);
        for _ in 0..3 {
            q.try_take().unwrap();
        }
        let r = q.try_take().unwrap_err();
        assert_eq!(r.limit, 3);
        assert!(r.retry_after_wall_secs > 0.0 && r.retry_after_wall_secs <= 60.0);
        assert_eq!(q.refused(), 1);
        assert_eq!(q.snapshot()["used_hour"], 3);
    }

    #[test]
    fn a_huge_scale_lets_the_hour_pass() {
        let mut q = Quota::new(2, 100, 1.0);
        q.spend(2);
        assert!(q.try_take().is_err());
        // At 1e9 emulated seconds per wall second, any measurable wall time exceeds an hour.
        q.set_scale(1e9);
        let mut granted = false;
        for _ in 0..1000 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            if q.try_take().is_ok() {
                granted = true;
                break;
            }
        }
        assert!(granted);
    }
}
