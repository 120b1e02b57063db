//! Per-account Freshworks quota arithmetic: an hourly and a per-minute limit (spec/freshworks.md
//! §8), shared by every call to the account, with a headroom left for other integrations.
//!
//! Both limits are enforced as sliding windows over the recorded calls: at no instant do the
//! calls of the last hour (minute) exceed `floor(limit × headroom)`. The clock is passed in as
//! Unix ms. Signals that the account is busier than our own count (a 429, a low
//! `X-RateLimit-Remaining`) are recorded as phantom calls that use up the window until it
//! slides, so they expire by themselves and are never persisted.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

/// The quota of one account.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetConfig {
    /// Calls per hour of the plan (1,000 / 2,000 / 5,000).
    pub hourly_limit: u32,
    /// Calls per minute (400 on every paid plan).
    pub minute_limit: u32,
    /// Fraction of each limit freshgate may use (the rest is left to other integrations).
    pub headroom: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            hourly_limit: 1000,
            minute_limit: 400,
            headroom: 0.9,
        }
    }
}

impl BudgetConfig {
    /// Calls freshgate may make in any sliding hour.
    #[must_use]
    pub fn hour_cap(&self) -> u32 {
        cap(self.hourly_limit, self.headroom)
    }

    /// Calls freshgate may make in any sliding minute.
    #[must_use]
    pub fn minute_cap(&self) -> u32 {
        cap(self.minute_limit, self.headroom)
    }
}

fn cap(limit: u32, headroom: f64) -> u32 {
    let h = if headroom.is_finite() {
        headroom.clamp(0.0, 1.0)
    } else {
        1.0
    };
    // The product is within 0..=limit, so the cast cannot truncate beyond the intended floor.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let c = (f64::from(limit) * h).floor() as u32;
    c
}

/// Not now: the earliest Unix ms at which the calls fit. `i64::MAX` when they never can (more
/// calls at once than a window's cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quota used up until {0} (Unix ms)")]
pub struct WaitUntil(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A real call: counts in both windows and is persisted.
    Call,
    /// Phantom use of the hourly window.
    Hour,
    /// Phantom use of the minute window.
    Minute,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: i64,
    count: u32,
    kind: Kind,
}

/// One account's budget. Not shared by itself: the pipeline keeps one per account behind its
/// own lock (and, with several nodes, in the store).
#[derive(Debug, Clone)]
pub struct Budget {
    cfg: BudgetConfig,
    /// Sorted by `at`.
    entries: VecDeque<Entry>,
    last_429: Option<i64>,
}

impl Budget {
    /// An empty budget.
    #[must_use]
    pub fn new(cfg: BudgetConfig) -> Self {
        Self {
            cfg,
            entries: VecDeque::new(),
            last_429: None,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> BudgetConfig {
        self.cfg
    }

    /// Take `calls` calls at `now_ms`, or say when they would fit. Never lets the calls of any
    /// sliding hour or minute exceed the caps.
    pub fn try_acquire(&mut self, now_ms: i64, calls: u32) -> Result<(), WaitUntil> {
        if calls == 0 {
            return Ok(());
        }
        if calls > self.cfg.hour_cap() || calls > self.cfg.minute_cap() {
            return Err(WaitUntil(i64::MAX));
        }
        if let Some(at) = self.free_at(now_ms, calls) {
            return Err(WaitUntil(at));
        }
        self.record(now_ms, calls, Kind::Call);
        Ok(())
    }

    /// When `calls` calls would fit, if not at `now_ms` (nothing is taken).
    pub fn free_at(&mut self, now_ms: i64, calls: u32) -> Option<i64> {
        if calls == 0 {
            return None;
        }
        if calls > self.cfg.hour_cap() || calls > self.cfg.minute_cap() {
            return Some(i64::MAX);
        }
        self.prune(now_ms);
        let hour = self.fits_at(now_ms, HOUR_MS, Kind::Minute, self.cfg.hour_cap(), calls);
        let minute = self.fits_at(now_ms, MINUTE_MS, Kind::Hour, self.cfg.minute_cap(), calls);
        let at = hour.max(minute);
        (at > now_ms).then_some(at)
    }

    /// Give back `calls` taken at `at_ms` that were not made after all (another node got the
    /// shared ledger's last slot first).
    pub fn refund(&mut self, at_ms: i64, calls: u32) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.kind == Kind::Call && e.at == at_ms && e.count >= calls)
        {
            e.count -= calls;
        }
        self.entries.retain(|e| e.count > 0);
    }

    /// A 429: the account is busier than our count says. The minute window is taken as full
    /// until it slides. A 429 that comes back more than a minute but less than an hour after
    /// the previous one means waiting out the minute did not help, so the hour window is taken
    /// as full too (a single 429 blocking for up to an hour would be too costly when it was
    /// only another integration's burst).
    pub fn observe_429(&mut self, now_ms: i64) {
        self.prune(now_ms);
        let (hour_left, minute_left) = self.remaining(now_ms);
        if minute_left > 0 {
            self.record(now_ms, minute_left, Kind::Minute);
        }
        let repeated = self
            .last_429
            .is_some_and(|t| now_ms - t >= MINUTE_MS && now_ms - t < HOUR_MS);
        if repeated && hour_left > 0 {
            self.record(now_ms, hour_left, Kind::Hour);
        }
        self.last_429 = Some(now_ms);
    }

    /// The server says `remaining` calls are left in its hourly window
    /// (`X-RateLimit-Remaining`). Shrinks our hourly remaining to that, less the headroom
    /// reserve; never grows it.
    pub fn observe_remaining(&mut self, now_ms: i64, remaining: u32) {
        self.prune(now_ms);
        let reserve = self.cfg.hourly_limit.saturating_sub(self.cfg.hour_cap());
        let allowed = remaining.saturating_sub(reserve);
        let (hour_left, _) = self.remaining(now_ms);
        if hour_left > allowed {
            self.record(now_ms, hour_left - allowed, Kind::Hour);
        }
    }

    /// Restore the real calls from the persisted ledger (`(Unix ms, calls)`), replacing what
    /// is recorded.
    pub fn load(&mut self, spent: Vec<(i64, u32)>) {
        let mut entries: Vec<Entry> = spent
            .into_iter()
            .filter(|&(_, count)| count > 0)
            .map(|(at, count)| Entry {
                at,
                count,
                kind: Kind::Call,
            })
            .collect();
        entries.sort_by_key(|e| e.at);
        self.entries = entries.into();
    }

    /// The real calls still inside the hourly window, for persisting.
    #[must_use]
    pub fn ledger(&self, now_ms: i64) -> Vec<(i64, u32)> {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::Call && now_ms - e.at < HOUR_MS)
            .map(|e| (e.at, e.count))
            .collect()
    }

    /// Calls still allowed now: (this hour, this minute).
    #[must_use]
    pub fn remaining(&self, now_ms: i64) -> (u32, u32) {
        (
            self.cfg
                .hour_cap()
                .saturating_sub(self.used(now_ms, HOUR_MS, Kind::Minute)),
            self.cfg
                .minute_cap()
                .saturating_sub(self.used(now_ms, MINUTE_MS, Kind::Hour)),
        )
    }

    fn used(&self, now_ms: i64, window: i64, excluded: Kind) -> u32 {
        self.entries
            .iter()
            .filter(|e| e.kind != excluded && now_ms - e.at < window)
            .fold(0u32, |acc, e| acc.saturating_add(e.count))
    }

    /// The earliest time ≥ `now_ms` at which `calls` more fit under `cap` in `window`. Entries
    /// only leave a window as time passes, so walking the oldest ones finds it.
    fn fits_at(&self, now_ms: i64, window: i64, excluded: Kind, cap: u32, calls: u32) -> i64 {
        let used = self.used(now_ms, window, excluded);
        let needed = i64::from(used) + i64::from(calls) - i64::from(cap);
        if needed <= 0 {
            return now_ms;
        }
        let mut freed = 0i64;
        for e in self
            .entries
            .iter()
            .filter(|e| e.kind != excluded && now_ms - e.at < window)
        {
            freed += i64::from(e.count);
            if freed >= needed {
                return e.at.saturating_add(window);
            }
        }
        // Unreachable while calls <= cap: everything in the window expiring frees `used`.
        i64::MAX
    }

    fn record(&mut self, at: i64, count: u32, kind: Kind) {
        let pos = self.entries.partition_point(|e| e.at <= at);
        self.entries.insert(pos, Entry { at, count, kind });
    }

    fn prune(&mut self, now_ms: i64) {
        while self
            .entries
            .front()
            .is_some_and(|e| now_ms - e.at >= HOUR_MS)
        {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod refund_tests {
    use super::*;

    #[test]
    fn a_refund_gives_the_slot_back() {
        let mut b = Budget::new(BudgetConfig {
            hourly_limit: 10,
            minute_limit: 2,
            headroom: 1.0,
        });
        assert!(b.try_acquire(1_000, 1).is_ok());
        assert!(b.try_acquire(1_000, 1).is_ok());
        assert!(b.try_acquire(1_000, 1).is_err());
        b.refund(1_000, 1);
        assert!(b.try_acquire(1_000, 1).is_ok());
        assert_eq!(b.remaining(1_000), (8, 0));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn budget(hour: u32, minute: u32, headroom: f64) -> Budget {
        Budget::new(BudgetConfig {
            hourly_limit: hour,
            minute_limit: minute,
            headroom,
        })
    }

    #[test]
    fn default_caps_keep_ten_percent_headroom() {
        let c = BudgetConfig::default();
        assert_eq!((c.hour_cap(), c.minute_cap()), (900, 360));
    }

    #[test]
    fn minute_window_waits_until_the_oldest_call_slides_out() {
        let mut b = budget(1000, 10, 0.5); // minute cap 5
        for i in 0..5 {
            b.try_acquire(1_000 + i, 1).unwrap();
        }
        assert_eq!(b.remaining(1_010), (495, 0));
        assert_eq!(b.try_acquire(2_000, 1), Err(WaitUntil(61_000)));
        assert_eq!(b.try_acquire(2_000, 2), Err(WaitUntil(61_001)));
        b.try_acquire(61_000, 1).unwrap();
    }

    #[test]
    fn hour_window_waits_an_hour() {
        let mut b = budget(4, 400, 1.0);
        b.try_acquire(0, 3).unwrap();
        b.try_acquire(600_000, 1).unwrap();
        assert_eq!(b.try_acquire(700_000, 1), Err(WaitUntil(HOUR_MS)));
        assert_eq!(b.try_acquire(700_000, 4), Err(WaitUntil(HOUR_MS + 600_000)));
        b.try_acquire(HOUR_MS, 3).unwrap();
    }

    #[test]
    fn more_than_a_cap_at_once_never_fits() {
        let mut b = budget(10, 10, 0.5);
        assert_eq!(b.try_acquire(0, 6), Err(WaitUntil(i64::MAX)));
        assert!(b.try_acquire(0, 0).is_ok());
    }

    #[test]
    fn a_429_fills_the_minute_and_a_repeated_one_the_hour() {
        let mut b = budget(100, 10, 1.0);
        b.try_acquire(0, 2).unwrap();
        b.observe_429(1_000);
        assert_eq!(b.remaining(1_000), (98, 0));
        // The 2 real calls at 0 slide out first; the phantom 8 at 1_000 a second later.
        assert_eq!(b.try_acquire(1_000, 1), Err(WaitUntil(60_000)));
        assert_eq!(b.try_acquire(1_000, 3), Err(WaitUntil(61_000)));
        assert!(b.try_acquire(61_000, 1).is_ok());
        // Still 429 after waiting out the minute: the hour is used up.
        b.observe_429(62_000);
        assert_eq!(b.remaining(62_000), (0, 0));
        assert_eq!(b.try_acquire(70_000, 1), Err(WaitUntil(HOUR_MS)));
        assert_eq!(
            b.ledger(70_000),
            vec![(0, 2), (61_000, 1)],
            "phantoms are not persisted"
        );
    }

    #[test]
    fn remaining_header_shrinks_but_never_grows() {
        let mut b = budget(1000, 400, 0.9); // hour cap 900, reserve 100
        b.try_acquire(0, 10).unwrap();
        b.observe_remaining(0, 600); // 500 for us
        assert_eq!(b.remaining(0).0, 500);
        b.observe_remaining(0, 5000);
        assert_eq!(b.remaining(0).0, 500);
        b.observe_remaining(0, 50);
        assert_eq!(b.remaining(0).0, 0);
    }

    #[test]
    fn load_restores_the_ledger() {
        let mut b = budget(10, 100, 1.0);
        b.load(vec![(-1_000, 6), (5, 0), (-3_000_000, 3)]);
        assert_eq!(b.remaining(0).0, 1);
        b.try_acquire(0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Err(WaitUntil(HOUR_MS - 3_000_000)));
        assert_eq!(b.ledger(0), vec![(-3_000_000, 3), (-1_000, 6), (0, 1)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u32),
        Too429,
        Remaining(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (1u32..4).prop_map(Op::Acquire),
            1 => Just(Op::Too429),
            1 => (0u32..40).prop_map(Op::Remaining),
        ]
    }

    proptest! {
        #[test]
        fn never_more_than_the_cap_in_any_sliding_window(
            hour in 4u32..60,
            minute in 3u32..20,
            headroom in 0.5f64..=1.0,
            preload in proptest::collection::vec((-HOUR_MS..0, 1u32..3), 0..5),
            ops in proptest::collection::vec((0i64..90_000, op()), 1..300),
        ) {
            let mut b = budget(hour, minute, headroom);
            let cfg = b.config();
            b.load(preload.clone());
            let mut granted: Vec<(i64, u32)> = Vec::new();
            let mut now = 0i64;
            for (dt, op) in ops {
                now += dt;
                match op {
                    Op::Acquire(n) => match b.try_acquire(now, n) {
                        Ok(()) => granted.push((now, n)),
                        Err(WaitUntil(at)) => {
                            if n <= cfg.hour_cap() && n <= cfg.minute_cap() {
                                prop_assert!(at > now);
                                // The promised time is exact: it fits then, not a ms earlier.
                                prop_assert!(b.clone().try_acquire(at, n).is_ok());
                                prop_assert!(b.clone().try_acquire(at - 1, n).is_err());
                            }
                        }
                    },
                    Op::Too429 => b.observe_429(now),
                    Op::Remaining(r) => b.observe_remaining(now, r),
                }
            }
            let all: Vec<(i64, u32)> = preload.iter().chain(&granted).copied().collect();
            // Windows ending at each grant (where a maximum can be reached); the preloaded
            // ledger counts but may itself be over the cap, so windows ending there are not ours.
            for &(end, _) in &granted {
                for (window, cap) in [(HOUR_MS, cfg.hour_cap()), (MINUTE_MS, cfg.minute_cap())] {
                    let sum: u32 = all
                        .iter()
                        .filter(|(t, _)| *t <= end && end - *t < window)
                        .map(|(_, n)| n)
                        .sum();
                    prop_assert!(sum <= cap, "{sum} calls in the window ending at {end}, cap {cap}");
                }
            }
        }
    }
}
