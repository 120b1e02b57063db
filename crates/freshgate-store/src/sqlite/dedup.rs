//! The SQLite store's messageId dedup: has this source sent this messageId within the window?
//!
//! The `messages` table answers it for the events written as runs (one row per stored event,
//! kept while its event is stored or its window is open; traces look events up in it too), and
//! the writer's tail for the events above the watermark (see `runs.rs`: the tail is looked up
//! exactly, in memory). `messages` is keyed by run first (migration 0014): a run is one hour's
//! events written in one go, so a lookup is an index seek per run asked.
//!
//! Asking every run of a 7-day window would be thousands of seeks per event, so the writer keeps
//! a Bloom filter per UTC day of receipt over the `(source, messageId)` pairs of that day, and
//! one per run. Only a day whose filter may hold the pair has its runs asked, newest first (a
//! client's retry is usually recent), and only the runs whose own filter may hold it are probed.
//! A filter must never miss a pair the table holds: they are built from the table when `serve`
//! opens the store, or else by the writer's first append (so that a CLI command that only reads
//! or settles never pays for it: 4.5 s for 10 M messageIds), fed every event staged in the tail
//! and every event another connection appended. A run another writer made has no filter of its
//! own and is probed whenever its day is asked. Extra entries (an append rolled back, a row
//! pruned) only cost a probe. The filters are written by hand around the `fastbloom` crate's
//! filter: it has a fixed capacity, and a day's count is not known in advance.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use fastbloom::BloomFilter;
use rusqlite::{Connection, params};

use super::hour_of;
use super::runs::{IndexTail, RunState};
use crate::StoreError;

const HOURS_PER_DAY: i64 = 24;

/// Items the first filter of a day holds at its target false-positive rate; each next one
/// holds twice as many, so a day of n pairs has about log2(n / 65,536) filters.
const FIRST_CAPACITY: usize = 65_536;

/// The first member of a run's filter built from the table: a run written by a writer holds
/// [`super::runs::RunLimits::run_events`] pairs at most, but one made from a store of schema
/// 13 holds a whole hour.
const RUN_FIRST_CAPACITY: usize = 16_384;

/// Per filter. With a day of 10 M pairs in 8 filters and 8 days in the window, about 1 % of
/// new events probe one day's hours.
const FALSE_POSITIVE_RATE: f64 = 0.001;

/// One hash of a pair serves every filter, so all of them hash alike (SipHash, fixed keys).
type PairHasher = BuildHasherDefault<DefaultHasher>;

fn day_of(hour: i64) -> i64 {
    hour.div_euclid(HOURS_PER_DAY)
}

pub(crate) fn pair_hash(source: &str, message_id: &str) -> u64 {
    PairHasher::default().hash_one((source, message_id))
}

/// The same hash of one key alone (the readers' tail view looks up a messageId or a contact
/// key without its source).
pub(crate) fn key_hash(key: &str) -> u64 {
    PairHasher::default().hash_one(key)
}

/// A `(source, messageId)` pair and its hash, computed once for the lookup and the insert.
pub(crate) struct MessageKey<'a> {
    pub(crate) source: &'a str,
    pub(crate) message_id: &'a str,
    hash: u64,
}

impl<'a> MessageKey<'a> {
    pub(crate) fn new(source: &'a str, message_id: &'a str) -> Self {
        Self {
            source,
            message_id,
            hash: pair_hash(source, message_id),
        }
    }
}

/// A Bloom filter that grows: a full member is kept and a member twice as large takes the
/// inserts.
struct GrowingFilter {
    full: Vec<Member>,
    current: Member,
}

struct Member {
    bloom: BloomFilter<PairHasher>,
    capacity: usize,
    items: usize,
}

impl Member {
    fn new(capacity: usize) -> Self {
        Self {
            bloom: BloomFilter::with_false_pos(FALSE_POSITIVE_RATE)
                .hasher(PairHasher::default())
                .expected_items(capacity),
            capacity,
            items: 0,
        }
    }
}

impl GrowingFilter {
    fn new() -> Self {
        Self::with_first_capacity(FIRST_CAPACITY)
    }

    fn with_first_capacity(capacity: usize) -> Self {
        Self {
            full: Vec::new(),
            current: Member::new(capacity),
        }
    }

    fn insert(&mut self, hash: u64) {
        if self.current.items >= self.current.capacity {
            let next = Member::new(self.current.capacity.saturating_mul(2));
            self.full.push(std::mem::replace(&mut self.current, next));
        }
        self.current.bloom.insert_hash(hash);
        self.current.items += 1;
    }

    fn members(&self) -> impl Iterator<Item = &Member> {
        self.full.iter().chain(std::iter::once(&self.current))
    }

    fn may_contain(&self, hash: u64) -> bool {
        self.members().any(|m| m.bloom.contains_hash(hash))
    }

    fn bytes(&self) -> usize {
        self.members().map(|m| m.bloom.num_bits() / 8).sum()
    }
}

/// The pairs received on one UTC day, and the hours of that day that hold rows.
struct DayFilter {
    filter: GrowingFilter,
    first_hour: i64,
    last_hour: i64,
    /// It has a run another writer made, whose pairs no filter holds: always asked.
    unfiltered: bool,
}

/// What the filters hold, for the log line at open and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FilterSize {
    pub(crate) days: usize,
    pub(crate) pairs: usize,
    pub(crate) bytes: usize,
}

/// What the lookups cost since the last [`DedupIndex::take_lookup_counts`]: the writer adds them
/// to counters once per group commit (a counter update per event would cost more than the
/// filters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LookupCounts {
    /// Lookups (one per event, except a repeat within its own batch).
    pub(crate) lookups: u64,
    /// Day filters that said "maybe" (a false positive unless the event was a duplicate).
    pub(crate) filter_hits: u64,
    /// Runs of `messages` probed with an index seek.
    pub(crate) run_probes: u64,
}

/// A live run of one hour, with a filter over its pairs when this writer built one (runs
/// another writer made have none and are probed whenever their day's filter says maybe).
struct RunFilter {
    run: i64,
    filter: Option<GrowingFilter>,
}

/// The writer's dedup index over the live runs of `messages` (the tail is looked up exactly,
/// see `runs.rs`). See the module documentation.
pub(crate) struct DedupIndex {
    counts: LookupCounts,
    days: BTreeMap<i64, DayFilter>,
    /// Live runs per hour, oldest first.
    runs: BTreeMap<i64, Vec<RunFilter>>,
    /// Days end before the widest window asked for so far reaches them: a day forgotten for a
    /// short window would be missed by a wider one.
    widest_window_ms: i64,
}

impl DedupIndex {
    /// An index with no filters; [`Self::build`] fills them.
    pub(crate) fn new() -> Self {
        Self {
            counts: LookupCounts::default(),
            days: BTreeMap::new(),
            runs: BTreeMap::new(),
            widest_window_ms: 0,
        }
    }

    /// Build the filters from every row of the live runs of `messages` (rows outside the window
    /// too: they are few, as a row outlives its window only while its event is stored).
    pub(crate) fn build(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.days.clear();
        let hours = live_runs(conn)?;
        let mut statement = conn.prepare("SELECT run, source, message_id FROM messages")?;
        let mut rows = statement.query([])?;
        let mut current: Option<(i64, i64, GrowingFilter)> = None;
        let mut built: BTreeMap<i64, Vec<RunFilter>> = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let run: i64 = row.get(0)?;
            if current.as_ref().is_none_or(|(r, _, _)| *r != run) {
                if let Some((r, hour, filter)) = current.take() {
                    built.entry(hour).or_default().push(RunFilter {
                        run: r,
                        filter: Some(filter),
                    });
                }
                // Rows of runs not live (being written, or left half-written) are not read.
                if let Some(hour) = hours.get(&run) {
                    current = Some((
                        run,
                        *hour,
                        GrowingFilter::with_first_capacity(RUN_FIRST_CAPACITY),
                    ));
                }
            }
            let Some((_, hour, filter)) = current.as_mut().filter(|(r, _, _)| *r == run) else {
                continue;
            };
            let source = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            let message_id = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
            let hash = pair_hash(source, message_id);
            filter.insert(hash);
            let hour = *hour;
            self.add(hour, hash);
        }
        if let Some((r, hour, filter)) = current.take() {
            built.entry(hour).or_default().push(RunFilter {
                run: r,
                filter: Some(filter),
            });
        }
        // A live run with no rows (all pruned) has nothing to find: it is not asked.
        for runs in built.values_mut() {
            runs.sort_by_key(|f| f.run);
        }
        self.runs = built;
        let size = self.size();
        tracing::info!(
            days = size.days,
            message_ids = size.pairs,
            filter_mib = size.bytes / (1024 * 1024),
            secs = started.elapsed().as_secs_f64(),
            "dedup filters built from the stored messageIds"
        );
        Ok(())
    }

    /// Another writer changed the live runs: take in those we do not know, without filters.
    pub(crate) fn reload_runs(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let live = live_runs(conn)?;
        for runs in self.runs.values_mut() {
            runs.retain(|f| live.contains_key(&f.run));
        }
        for (run, hour) in live {
            let runs = self.runs.entry(hour).or_default();
            if !runs.iter().any(|f| f.run == run) {
                runs.push(RunFilter { run, filter: None });
                runs.sort_by_key(|f| f.run);
                // Its pairs are in no day filter: make sure its day is asked.
                let day = self.days.entry(day_of(hour)).or_insert_with(|| DayFilter {
                    filter: GrowingFilter::new(),
                    first_hour: hour,
                    last_hour: hour,
                    unfiltered: true,
                });
                day.unfiltered = true;
                day.first_hour = day.first_hour.min(hour);
                day.last_hour = day.last_hour.max(hour);
            }
        }
        Ok(())
    }

    /// A run of ours went live: its pairs are in the day filters already (fed as staged).
    pub(crate) fn add_run(&mut self, hour: i64, run: i64, hashes: &[u64]) {
        let mut filter = GrowingFilter::with_first_capacity(hashes.len().max(1));
        for hash in hashes {
            filter.insert(*hash);
        }
        let runs = self.runs.entry(hour).or_default();
        runs.push(RunFilter {
            run,
            filter: Some(filter),
        });
        runs.sort_by_key(|f| f.run);
    }

    /// Whether the key's source stored its messageId within `window_ms` before `received_at_ms`.
    pub(crate) fn seen_within(
        &mut self,
        conn: &Connection,
        tail: &IndexTail,
        key: &MessageKey<'_>,
        received_at_ms: i64,
        window_ms: i64,
    ) -> Result<bool, StoreError> {
        self.widest_window_ms = self.widest_window_ms.max(window_ms);
        let reach_ms = received_at_ms.saturating_sub(self.widest_window_ms);
        self.forget_days_before(day_of(hour_of(reach_ms)) - 1);
        let since_ms = received_at_ms.saturating_sub(window_ms);
        let since_hour = hour_of(since_ms);
        self.counts.lookups += 1;
        if tail.holds(key.hash, key.source, key.message_id, since_ms) {
            return Ok(true);
        }
        for (_, day) in self.days.range(day_of(since_hour)..).rev() {
            if !day.unfiltered && !day.filter.may_contain(key.hash) {
                continue;
            }
            self.counts.filter_hits += 1;
            let hours = day.first_hour.max(since_hour)..=day.last_hour;
            for runs in self.runs.range(hours).rev().map(|(_, runs)| runs) {
                for run in runs.iter().rev() {
                    if run
                        .filter
                        .as_ref()
                        .is_some_and(|f| !f.may_contain(key.hash))
                    {
                        continue;
                    }
                    self.counts.run_probes += 1;
                    let found = conn
                        .prepare_cached(
                            "SELECT 1 FROM messages WHERE run = ?1 AND message_id = ?2
                               AND source = ?3 AND received_at_ms >= ?4 LIMIT 1",
                        )?
                        .exists(params![run.run, key.message_id, key.source, since_ms])?;
                    if found {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// The lookup counts since the last call.
    pub(crate) fn take_lookup_counts(&mut self) -> LookupCounts {
        std::mem::take(&mut self.counts)
    }

    pub(crate) fn size(&self) -> FilterSize {
        let run_filters = || {
            self.runs
                .values()
                .flatten()
                .filter_map(|r| r.filter.as_ref())
        };
        FilterSize {
            days: self.days.len(),
            pairs: self
                .days
                .values()
                .flat_map(|d| d.filter.members())
                .map(|m| m.items)
                .sum(),
            bytes: self.days.values().map(|d| d.filter.bytes()).sum::<usize>()
                + run_filters().map(GrowingFilter::bytes).sum::<usize>(),
        }
    }

    /// Record a pair received in `hour` (staged in the tail, or taken in from another
    /// connection's append). Extra pairs (an append rolled back) only cost a probe.
    pub(crate) fn add(&mut self, hour: i64, hash: u64) {
        let day = self.days.entry(day_of(hour)).or_insert_with(|| DayFilter {
            filter: GrowingFilter::new(),
            first_hour: hour,
            last_hour: hour,
            unfiltered: false,
        });
        day.filter.insert(hash);
        day.first_hour = day.first_hour.min(hour);
        day.last_hour = day.last_hour.max(hour);
    }

    /// Drop the filters of days no window reaches any more. Callers keep a day of slack, so a
    /// receive time a little behind the last (a clock stepped back) still finds its rows.
    fn forget_days_before(&mut self, day: i64) {
        while let Some(entry) = self.days.first_entry() {
            if *entry.key() >= day {
                break;
            }
            entry.remove();
        }
        let first_hour = day.saturating_mul(HOURS_PER_DAY);
        while let Some(entry) = self.runs.first_entry() {
            if *entry.key() >= first_hour {
                break;
            }
            entry.remove();
        }
    }
}

/// Run → hour of every live run.
fn live_runs(conn: &Connection) -> Result<BTreeMap<i64, i64>, StoreError> {
    let rows: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT run, hour FROM index_runs WHERE state = ?1")?
        .query_map(params![RunState::Live.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::HOUR_MS;
    use super::*;

    #[test]
    fn a_growing_filter_never_misses_and_rarely_claims() {
        let mut f = GrowingFilter::new();
        let n = 300_000_u64;
        for i in 0..n {
            f.insert(pair_hash("web", &format!("m-{i}")));
        }
        assert!(f.members().count() >= 3, "it grew past its first capacity");
        for i in 0..n {
            assert!(
                f.may_contain(pair_hash("web", &format!("m-{i}"))),
                "missed m-{i}"
            );
        }
        let false_hits = (0..100_000)
            .filter(|i| f.may_contain(pair_hash("web", &format!("absent-{i}"))))
            .count();
        // Three members at 0.1 % each: well under 1 %.
        assert!(
            false_hits < 1_000,
            "{false_hits} false positives in 100,000"
        );
    }

    #[test]
    fn the_pair_hash_tells_sources_apart() {
        assert_ne!(pair_hash("web", "m-1"), pair_hash("ios", "m-1"));
        assert_ne!(pair_hash("web1", "m"), pair_hash("web", "1m"));
    }

    #[test]
    fn hours_and_days_follow_the_receive_time() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR_MS - 1), 0);
        assert_eq!(hour_of(HOUR_MS), 1);
        assert_eq!(day_of(23), 0);
        assert_eq!(day_of(24), 1);
    }
}
