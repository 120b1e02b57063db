//! The SQLite store's messageId dedup: has this source sent this messageId within the window?
//!
//! The `messages` table answers it (one row per stored event, kept while its event is stored or
//! its window is open; traces look events up in it too). Keyed by messageId first, every insert
//! landed on a random leaf of one B-tree as large as the window: with 10 M events stored the
//! leaves an append dirtied were scattered over a 1.2 GB index, and copying them back in the
//! checkpoints cost the ingest a third of its rate (issue 15; with that table emptied, the same
//! 10 M store took events as fast as an empty one). Keyed by the hour of receipt first
//! (migration 0013), inserts land only in the current hour's part of the tree, whatever the
//! store holds; older hours are only read, and deleted by the prune.
//!
//! Asking every hour of a 7-day window would be 169 index seeks per event, so the writer keeps a
//! Bloom filter per UTC day of receipt over the `(source, messageId)` pairs of that day's rows.
//! Only a day whose filter may hold the pair has its hours probed, newest first (a client's retry
//! is usually recent). A filter must never miss a pair the table holds: it is built from the
//! table when `serve` opens the store, or else by the writer's first append (so that a CLI
//! command that only reads or settles never pays for it: 4.5 s for 10 M messageIds), fed every
//! insert, and topped up from the events another
//! connection appended (`PRAGMA data_version` says when). Extra entries (an append rolled back,
//! a row pruned) only cost a probe. The filters are written by hand around the `fastbloom`
//! crate's filter: it has a fixed capacity, and a day's count is not known in advance.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use fastbloom::BloomFilter;
use rusqlite::{Connection, params};

use super::hour_of;
use crate::StoreError;

const HOURS_PER_DAY: i64 = 24;

/// Items the first filter of a day holds at its target false-positive rate; each next one
/// holds twice as many, so a day of n pairs has about log2(n / 65,536) filters.
const FIRST_CAPACITY: usize = 65_536;

/// Per filter. With a day of 10 M pairs in 8 filters and 8 days in the window, about 1 % of
/// new events probe one day's hours.
const FALSE_POSITIVE_RATE: f64 = 0.001;

/// One hash of a pair serves every filter, so all of them hash alike (SipHash, fixed keys).
type PairHasher = BuildHasherDefault<DefaultHasher>;

fn day_of(hour: i64) -> i64 {
    hour.div_euclid(HOURS_PER_DAY)
}

fn pair_hash(source: &str, message_id: &str) -> u64 {
    PairHasher::default().hash_one((source, message_id))
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
        Self {
            full: Vec::new(),
            current: Member::new(FIRST_CAPACITY),
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
    /// Hours of `messages` probed with an index seek.
    pub(crate) hour_probes: u64,
}

/// The writer's dedup index over `messages`. See the module documentation.
pub(crate) struct DedupIndex {
    counts: LookupCounts,
    days: BTreeMap<i64, DayFilter>,
    /// `PRAGMA data_version` at the last [`DedupIndex::sync`]: it changes when another
    /// connection commits.
    data_version: i64,
    /// The largest event id at the last sync: events above it are ours or another connection's.
    synced_event_id: i64,
    /// Days end before the widest window asked for so far reaches them: a day forgotten for a
    /// short window would be missed by a wider one.
    widest_window_ms: i64,
    /// The filters were built from the table (by the first lookup).
    built: bool,
}

impl DedupIndex {
    /// An index whose filters are built from the table by its first lookup.
    pub(crate) fn new() -> Self {
        Self {
            counts: LookupCounts::default(),
            days: BTreeMap::new(),
            data_version: 0,
            synced_event_id: 0,
            widest_window_ms: 0,
            built: false,
        }
    }

    /// An index with its filters built from the table now.
    #[cfg(test)]
    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut index = Self::new();
        index.build(conn)?;
        Ok(index)
    }

    /// Build the filters from every row of `messages` (rows outside the window too: they are
    /// few, as a row outlives its window only while its event is stored).
    pub(crate) fn build(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.add_rows(
            conn.prepare("SELECT hour, source, message_id FROM messages")?
                .query([])?,
        )?;
        self.data_version = data_version(conn)?;
        self.synced_event_id = max_event_id(conn)?;
        self.built = true;
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

    /// Call at the start of each write transaction (the write lock held): take in the events
    /// another connection appended since the last call.
    pub(crate) fn sync(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if !self.built {
            // The build will read them all.
            return Ok(());
        }
        let version = data_version(conn)?;
        if version != self.data_version {
            // Ours since the last call are among them: adding a pair twice is harmless.
            let added = self.add_rows(
                conn.prepare_cached(
                    "SELECT received_at_ms / 3600000, source, message_id FROM events
                     WHERE id > ?1",
                )?
                .query(params![self.synced_event_id])?,
            )?;
            tracing::debug!(
                added,
                "dedup filters topped up after another connection wrote"
            );
            self.data_version = version;
        }
        self.synced_event_id = max_event_id(conn)?;
        Ok(())
    }

    /// Whether the key's source stored its messageId within `window_ms` before `received_at_ms`.
    pub(crate) fn seen_within(
        &mut self,
        conn: &Connection,
        key: &MessageKey<'_>,
        received_at_ms: i64,
        window_ms: i64,
    ) -> Result<bool, StoreError> {
        if !self.built {
            self.build(conn)?;
        }
        self.widest_window_ms = self.widest_window_ms.max(window_ms);
        let reach_ms = received_at_ms.saturating_sub(self.widest_window_ms);
        self.forget_days_before(day_of(hour_of(reach_ms)) - 1);
        let since_ms = received_at_ms.saturating_sub(window_ms);
        let since_hour = hour_of(since_ms);
        self.counts.lookups += 1;
        for (_, day) in self.days.range(day_of(since_hour)..).rev() {
            if !day.filter.may_contain(key.hash) {
                continue;
            }
            self.counts.filter_hits += 1;
            for hour in (day.first_hour.max(since_hour)..=day.last_hour).rev() {
                self.counts.hour_probes += 1;
                let found = conn
                    .prepare_cached(
                        "SELECT 1 FROM messages WHERE hour = ?1 AND message_id = ?2
                           AND source = ?3 AND received_at_ms >= ?4 LIMIT 1",
                    )?
                    .exists(params![hour, key.message_id, key.source, since_ms])?;
                if found {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The lookup counts since the last call.
    pub(crate) fn take_lookup_counts(&mut self) -> LookupCounts {
        std::mem::take(&mut self.counts)
    }

    /// Record a row just inserted into `messages`.
    pub(crate) fn inserted(&mut self, key: &MessageKey<'_>, received_at_ms: i64) {
        self.add(hour_of(received_at_ms), key.hash);
    }

    pub(crate) fn size(&self) -> FilterSize {
        FilterSize {
            days: self.days.len(),
            pairs: self
                .days
                .values()
                .flat_map(|d| d.filter.members())
                .map(|m| m.items)
                .sum(),
            bytes: self.days.values().map(|d| d.filter.bytes()).sum(),
        }
    }

    /// Add every row of (hour of receipt, source, messageId); how many there were.
    fn add_rows(&mut self, mut rows: rusqlite::Rows<'_>) -> Result<usize, StoreError> {
        let mut added = 0;
        while let Some(row) = rows.next()? {
            let hour: i64 = row.get(0)?;
            let source = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            let message_id = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
            self.add(hour, pair_hash(source, message_id));
            added += 1;
        }
        Ok(added)
    }

    fn add(&mut self, hour: i64, hash: u64) {
        let day = self.days.entry(day_of(hour)).or_insert_with(|| DayFilter {
            filter: GrowingFilter::new(),
            first_hour: hour,
            last_hour: hour,
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
    }
}

fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

fn max_event_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM events")?
        .query_row([], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::HOUR_MS;
    use super::*;

    fn seen(
        index: &mut DedupIndex,
        conn: &Connection,
        source: &str,
        message_id: &str,
        received_at_ms: i64,
        window_ms: i64,
    ) -> bool {
        index
            .seen_within(
                conn,
                &MessageKey::new(source, message_id),
                received_at_ms,
                window_ms,
            )
            .unwrap()
    }

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

    /// The columns of `events` and `messages` that dedup reads.
    const TABLES: &str = "
        CREATE TABLE events (id INTEGER PRIMARY KEY, source TEXT, message_id TEXT,
                             received_at_ms INTEGER);
        CREATE TABLE messages (hour INTEGER, message_id TEXT, source TEXT,
                               event_id INTEGER, received_at_ms INTEGER,
                               PRIMARY KEY (hour, message_id, source, event_id)) WITHOUT ROWID;";

    fn conn_with_tables() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(TABLES).unwrap();
        conn
    }

    fn store_row(conn: &Connection, id: i64, source: &str, message_id: &str, at_ms: i64) {
        conn.execute(
            "INSERT INTO events (id, source, message_id, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id, source, message_id, at_ms],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO messages VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hour_of(at_ms), message_id, source, id, at_ms],
        )
        .unwrap();
    }

    const DAY_MS: i64 = HOUR_MS * HOURS_PER_DAY;

    #[test]
    fn rows_of_earlier_days_and_hours_are_found_by_their_receive_time() {
        let conn = conn_with_tables();
        let base = 20_000 * DAY_MS;
        store_row(&conn, 1, "web", "a", base + 5 * HOUR_MS);
        store_row(&conn, 2, "web", "b", base + 2 * DAY_MS + 23 * HOUR_MS);
        let mut index = DedupIndex::load(&conn).unwrap();
        assert_eq!(index.size().days, 2);
        let now = base + 3 * DAY_MS;
        let window = 7 * DAY_MS;
        assert!(seen(&mut index, &conn, "web", "a", now, window));
        assert!(seen(&mut index, &conn, "web", "b", now, window));
        assert!(!seen(&mut index, &conn, "ios", "a", now, window));
        assert!(!seen(&mut index, &conn, "web", "c", now, window));
        // The window starts after "a" was received: not a duplicate any more.
        let after_a = now - (base + 5 * HOUR_MS + 1);
        assert!(!seen(&mut index, &conn, "web", "a", now, after_a));
        assert!(seen(&mut index, &conn, "web", "b", now, after_a));
    }

    #[test]
    fn lookups_count_the_filters_that_said_maybe_and_the_hours_probed() {
        let conn = conn_with_tables();
        let base = 20_000 * DAY_MS;
        store_row(&conn, 1, "web", "a", base + 5 * HOUR_MS);
        store_row(&conn, 2, "web", "b", base + 2 * DAY_MS + 20 * HOUR_MS);
        store_row(&conn, 3, "web", "c", base + 2 * DAY_MS + 23 * HOUR_MS);
        let mut index = DedupIndex::load(&conn).unwrap();
        let now = base + 3 * DAY_MS;
        let window = 7 * DAY_MS;
        // Day 2's filter holds "b": its hours 23 down to 20 are probed, the last one finds it.
        assert!(seen(&mut index, &conn, "web", "b", now, window));
        // Only day 0's filter holds "a": its one stored hour is probed.
        assert!(seen(&mut index, &conn, "web", "a", now, window));
        // No filter holds "z": nothing is probed.
        assert!(!seen(&mut index, &conn, "web", "z", now, window));
        assert_eq!(
            index.take_lookup_counts(),
            LookupCounts {
                lookups: 3,
                filter_hits: 2,
                hour_probes: 4 + 1,
            }
        );
        assert_eq!(index.take_lookup_counts(), LookupCounts::default());
    }

    #[test]
    fn pairs_another_connection_appended_are_taken_in_at_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let ours = Connection::open(&path).unwrap();
        ours.execute_batch(TABLES).unwrap();
        let mut index = DedupIndex::load(&ours).unwrap();
        let other = Connection::open(&path).unwrap();
        store_row(&other, 1, "web", "from-elsewhere", 5 * HOUR_MS);
        index.sync(&ours).unwrap();
        assert!(seen(
            &mut index,
            &ours,
            "web",
            "from-elsewhere",
            6 * HOUR_MS,
            HOUR_MS * 2
        ));
        // Our own rows change nothing for the next sync.
        store_row(&ours, 2, "web", "ours", 5 * HOUR_MS);
        index.inserted(&MessageKey::new("web", "ours"), 5 * HOUR_MS);
        index.sync(&ours).unwrap();
        assert_eq!(index.size().pairs, 2);
    }

    #[test]
    fn an_index_builds_its_filters_at_its_first_lookup() {
        let conn = conn_with_tables();
        let mut index = DedupIndex::new();
        index.sync(&conn).unwrap();
        store_row(&conn, 1, "web", "before-first-use", HOUR_MS);
        index.sync(&conn).unwrap();
        assert_eq!(
            index.size().pairs,
            0,
            "nothing read before the first lookup"
        );
        assert!(seen(
            &mut index,
            &conn,
            "web",
            "before-first-use",
            2 * HOUR_MS,
            DAY_MS
        ));
        assert_eq!(index.size().pairs, 1);
    }

    #[test]
    fn days_the_widest_window_does_not_reach_are_forgotten() {
        let conn = conn_with_tables();
        store_row(&conn, 1, "web", "old", 0);
        store_row(&conn, 2, "web", "new", 10 * DAY_MS);
        let mut index = DedupIndex::load(&conn).unwrap();
        let now = 10 * DAY_MS + HOUR_MS;
        assert!(!seen(&mut index, &conn, "web", "old", now, DAY_MS));
        assert_eq!(
            index.size().days,
            1,
            "day 0 is past the window from day 9 on"
        );
        assert!(seen(&mut index, &conn, "web", "new", now, DAY_MS));
        // A wider window later finds the rows of its days, but not of days already forgotten
        // (they were past every window asked for until then).
        assert!(!seen(&mut index, &conn, "web", "old", now, 11 * DAY_MS));
    }
}
