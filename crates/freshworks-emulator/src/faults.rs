//! Fault injection for tests: the next N calls answer a given status (optionally only on matching paths),
//! a 429 wrapped in a 400 (spec §8), a seeded random failure rate, added latency and dropped connections.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Body of the upstream 429 that the real service wraps in a 400 (spec §8, [INTG]).
pub(crate) const WRAPPED_429_MESSAGE: &str =
    "UCR contact fetch failure :: response_code :: 429 :: response :: Too many requests";

/// One fault to inject; faults add up until cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The next `count` API calls (whose path contains `path_contains`, if set) answer `status` with `body`
    /// (default: the usual error shape). Example: 405 on `bulk_upsert`.
    NextStatus {
        /// How many calls.
        count: u32,
        /// HTTP status to answer.
        status: u16,
        /// Only calls whose path contains this text.
        #[serde(default)]
        path_contains: Option<String>,
        /// Raw response body; `None` gives `{"errors":{"code":status,"message":[...]}}`.
        #[serde(default)]
        body: Option<String>,
    },
    /// The next `count` calls answer 400 whose message wraps an upstream 429.
    Wrapped429 {
        /// How many calls.
        count: u32,
    },
    /// Every call fails with 500 with this probability (seeded, reproducible).
    FailureRate {
        /// Probability in `[0, 1]`.
        rate: f64,
    },
    /// Every call waits this long before being answered.
    Latency {
        /// Added delay in milliseconds.
        ms: u64,
    },
    /// Every call is processed, then its answer waits this long: a write has happened while
    /// the caller still waits (the window a crash or a timeout leaves a write in doubt).
    SlowAnswer {
        /// Delay after processing, in milliseconds.
        ms: u64,
    },
    /// The next `count` calls have their connection closed without any response.
    DropConnections {
        /// How many calls.
        count: u32,
    },
}

/// A status fault ready to answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Injected {
    /// Plain status with an optional raw body.
    Status { status: u16, body: Option<String> },
    /// A 400 wrapping a 429.
    Wrapped429,
    /// A random 500 from the failure rate.
    Random500,
}

#[derive(Debug)]
struct Pending {
    remaining: u32,
    path_contains: Option<String>,
    answer: Injected,
}

/// Current fault configuration.
#[derive(Debug)]
pub(crate) struct Faults {
    pending: Vec<Pending>,
    rate: f64,
    rng: StdRng,
    latency_ms: u64,
    answer_delay_ms: u64,
    drops: u32,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            pending: Vec::new(),
            rate: 0.0,
            rng: StdRng::seed_from_u64(seed),
            latency_ms: 0,
            answer_delay_ms: 0,
            drops: 0,
        }
    }

    pub(crate) fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::NextStatus {
                count,
                status,
                path_contains,
                body,
            } => self.pending.push(Pending {
                remaining: count,
                path_contains,
                answer: Injected::Status { status, body },
            }),
            Fault::Wrapped429 { count } => self.pending.push(Pending {
                remaining: count,
                path_contains: None,
                answer: Injected::Wrapped429,
            }),
            Fault::FailureRate { rate } => self.rate = rate.clamp(0.0, 1.0),
            Fault::Latency { ms } => self.latency_ms = ms,
            Fault::SlowAnswer { ms } => self.answer_delay_ms = ms,
            Fault::DropConnections { count } => self.drops = self.drops.saturating_add(count),
        }
    }

    /// Removes every fault; the random sequence continues (seeded once per instance).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.rate = 0.0;
        self.latency_ms = 0;
        self.answer_delay_ms = 0;
        self.drops = 0;
    }

    pub(crate) fn latency_ms(&self) -> u64 {
        self.latency_ms
    }

    pub(crate) fn answer_delay_ms(&self) -> u64 {
        self.answer_delay_ms
    }

    /// Consumes one dropped-connection fault if any is pending.
    pub(crate) fn take_drop(&mut self) -> bool {
        if self.drops > 0 {
            self.drops -= 1;
            true
        } else {
            false
        }
    }

    /// Consumes the first matching status fault, else rolls the failure rate.
    pub(crate) fn take_status(&mut self, path: &str) -> Option<Injected> {
        let hit = self.pending.iter().position(|p| {
            p.remaining > 0
                && p.path_contains
                    .as_deref()
                    .is_none_or(|needle| path.contains(needle))
        });
        if let Some(i) = hit {
            let p = &mut self.pending[i];
            p.remaining -= 1;
            let answer = p.answer.clone();
            if p.remaining == 0 {
                self.pending.remove(i);
            }
            return Some(answer);
        }
        if self.rate > 0.0 && self.rng.random::<f64>() < self.rate {
            return Some(Injected::Random500);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn next_status_respects_path_and_count() {
        let mut f = Faults::new(1);
        f.inject(Fault::NextStatus {
            count: 2,
            status: 405,
            path_contains: Some("bulk_upsert".into()),
            body: None,
        });
        assert_eq!(f.take_status("/contacts/upsert"), None);
        assert!(f.take_status("/contacts/bulk_upsert").is_some());
        assert!(f.take_status("/contacts/bulk_upsert").is_some());
        assert_eq!(f.take_status("/contacts/bulk_upsert"), None);
    }

    #[test]
    fn failure_rate_is_reproducible_for_a_seed() {
        let run = |seed| {
            let mut f = Faults::new(seed);
            f.inject(Fault::FailureRate { rate: 0.5 });
            (0..64)
                .map(|_| f.take_status("/x").is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let hits = run(7).iter().filter(|h| **h).count();
        assert!(hits > 0 && hits < 64);
    }
}
