//! The writer's index tail and its flush into sorted runs (migration 0014).
//!
//! Two indexes are derived from every stored event: `messages` (by messageId, for dedup and
//! traces) and `contact_events` (by contact, for a contact's listing). Inserted per event, each
//! landed on a random leaf of the current hour's part of its B-tree and dirtied a page per event
//! per commit: five sixths of ingest's capacity (issue 15). So the writer keeps the entries of
//! the events above a stored watermark in memory (the *tail*: an exact lookup by messageId for
//! dedup) and, once the tail holds [`RunLimits::run_events`], freezes it and writes it as one
//! *run* per hour of receipt, sorted by key, [`RunLimits::chunk_entries`] at a time inside the
//! following group commits (or between them when idle). Each chunk appends to the end of a new
//! key range, so a page is written once, full. The last chunk marks the runs live and moves the
//! watermark past them in one transaction; until then readers and dedup ignore them and find
//! those events in the tail.
//!
//! The tail is derived from `events` (the ids above the watermark), so a crash loses nothing:
//! the next writer reads it back, and runs left half-written are deleted by the next flush that
//! covers their events. Entries staged by an append are only kept once its transaction commits:
//! a rolled-back event's id is reused by the next insert, and a stale entry would make its
//! messageId look seen. Another connection's appends are taken in at [`IndexTail::sync`]; if
//! another writer moved the watermark, the flush in progress is dropped and the tail trimmed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::dedup::pair_hash;
use super::hour_of;
use super::tail_view::TailView;
use crate::StoreError;

/// An event's entries in both indexes, as the tail holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TailEntry {
    pub(crate) event_id: i64,
    pub(crate) received_at_ms: i64,
    pub(crate) source: String,
    pub(crate) message_id: String,
    pub(crate) contact_key: String,
    /// Of (source, messageId), computed once.
    hash: u64,
}

impl TailEntry {
    pub(crate) fn new(
        event_id: i64,
        received_at_ms: i64,
        source: String,
        message_id: String,
        contact_key: String,
    ) -> Self {
        let hash = pair_hash(&source, &message_id);
        Self {
            event_id,
            received_at_ms,
            source,
            message_id,
            contact_key,
            hash,
        }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// How large runs are and how fast they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Committed tail entries that make the next run (all hours together). Memory: about
    /// 250 bytes an entry, twice over while a run is being written.
    pub run_events: usize,
    /// Most entries a group commit writes of the run being flushed, in both indexes together.
    /// A group commit that appended n events writes at least 2n, so flushing keeps pace.
    pub chunk_entries: usize,
    /// Committed entries are sorted in segments of this many as they commit (a few
    /// milliseconds, after a group's answers), so that freezing a tail sorts at most one
    /// segment and the run is merged from the segments a chunk at a time: no sort of a whole
    /// run holds up a group commit (a 100,000-entry freeze had taken 110-125 ms, the bench's
    /// p99).
    pub segment_entries: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            run_events: 100_000,
            chunk_entries: 1_024,
            segment_entries: 4_096,
        }
    }
}

/// A run's state in `index_runs`, stored as a stable word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Chunks are being written; nobody reads it.
    Writing,
    /// Its events are below the watermark: dedup, traces and listings read it.
    Live,
}

impl RunState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Writing => "writing",
            Self::Live => "live",
        }
    }
}

/// A run that has just gone live: its hour, id and the pair hashes of its entries (for its
/// dedup filter).
#[derive(Debug)]
pub(crate) struct LiveRun {
    pub(crate) hour: i64,
    pub(crate) run: i64,
    pub(crate) hashes: Vec<u64>,
}

/// What a committed flush step changed for the rest of the writer's state.
#[derive(Debug, Default)]
pub(crate) enum FlushEnd {
    /// Still writing (or nothing to write).
    #[default]
    Pending,
    /// The runs went live and the watermark moved past them.
    Live(Vec<LiveRun>),
    /// Another writer had moved the watermark: the runs were deleted, the tail trimmed; dedup
    /// must re-read the live runs.
    Superseded,
}

/// What one flush step wrote, applied by [`IndexTail::committed`] once its transaction commits.
/// The default is a step that wrote nothing (no flush, or its chunk failed): nothing to apply.
#[derive(Debug, Default)]
pub(crate) struct FlushStep {
    progress: Option<Progress>,
}

/// Where the flush stands after a step.
#[derive(Debug, Default)]
struct Progress {
    created: Option<BTreeMap<i64, i64>>,
    messages_written: usize,
    contacts_written: usize,
    finish: Option<Finish>,
}

#[derive(Debug)]
enum Finish {
    Live,
    Superseded { watermark: i64 },
}

/// What [`IndexTail::sync`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Synced {
    /// Another writer moved the watermark: the live runs changed.
    pub(crate) superseded: bool,
    /// Entries of other connections' events taken in (the last ones of the tail).
    pub(crate) taken_in: usize,
}

/// Event ids per pair hash: one per hash in the map, a rare second one (the same pair stored
/// twice, outside its window) aside. No allocation per entry.
#[derive(Debug, Default)]
struct IdsByHash {
    first: HashMap<u64, i64>,
    more: Vec<(u64, i64)>,
}

impl IdsByHash {
    fn insert(&mut self, hash: u64, id: i64) {
        match self.first.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.more.push((hash, id)),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
        }
    }

    fn remove(&mut self, hash: u64, id: i64) {
        if self.first.get(&hash) == Some(&id) {
            self.first.remove(&hash);
            if let Some(i) = self.more.iter().position(|(h, _)| *h == hash) {
                let (_, other) = self.more.swap_remove(i);
                self.first.insert(hash, other);
            }
        } else {
            self.more.retain(|(h, i)| !(*h == hash && *i == id));
        }
    }

    fn ids(&self, hash: u64) -> impl Iterator<Item = i64> + '_ {
        self.first.get(&hash).copied().into_iter().chain(
            self.more
                .iter()
                .filter(move |(h, _)| *h == hash)
                .map(|(_, id)| *id),
        )
    }
}

/// Which index an order is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    /// `messages`: hour, messageId, source, event id.
    Messages,
    /// `contact_events`: hour, contact, event id.
    Contacts,
}

/// An entry's key in an index, hour first so that a run (one hour) is contiguous.
type SortKey<'a> = (i64, &'a str, &'a str, i64);

fn sort_key(index: Index, e: &TailEntry) -> SortKey<'_> {
    let hour = hour_of(e.received_at_ms);
    match index {
        Index::Messages => (hour, &e.message_id, &e.source, e.event_id),
        Index::Contacts => (hour, &e.contact_key, "", e.event_id),
    }
}

/// Positions `range` of `entries`, sorted by `index`'s key.
fn sorted_segment(
    entries: &VecDeque<TailEntry>,
    range: std::ops::Range<usize>,
    index: Index,
) -> Vec<u32> {
    let mut keyed: Vec<(SortKey<'_>, u32)> = range
        .map(|i| (sort_key(index, &entries[i]), position(i)))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// Sorted segments of one index and their merge into one order, pulled as chunks need it.
/// The merge keeps a binary heap of segments ordered by their next entry's key, compared in
/// place (a heap of owned keys cost two string copies per entry: a tenth of ingest's CPU).
#[derive(Debug, Default)]
struct Merge {
    segments: Vec<Vec<u32>>,
    /// Next position to take in each segment.
    heads: Vec<usize>,
    /// Segments not exhausted, as a min-heap on their next entry's key.
    heap: Vec<usize>,
    started: bool,
    /// The merged order so far: positions in the frozen entries.
    order: Vec<u32>,
}

impl Merge {
    /// The key of segment `s`'s next entry (callers only ask for segments in the heap).
    fn head<'e>(&self, entries: &'e [TailEntry], index: Index, s: usize) -> SortKey<'e> {
        let pos = self.segments[s][self.heads[s]] as usize;
        sort_key(index, &entries[pos])
    }

    fn sift_down(&mut self, entries: &[TailEntry], index: Index, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            for child in [l, r] {
                if child < self.heap.len()
                    && self.head(entries, index, self.heap[child])
                        < self.head(entries, index, self.heap[least])
                {
                    least = child;
                }
            }
            if least == i {
                return;
            }
            self.heap.swap(i, least);
            i = least;
        }
    }

    /// Extend the merged order to at least `n` positions (fewer if there are not as many).
    fn extend_to(&mut self, entries: &[TailEntry], index: Index, n: usize) {
        if !self.started {
            self.started = true;
            self.heads = vec![0; self.segments.len()];
            self.heap = (0..self.segments.len())
                .filter(|s| !self.segments[*s].is_empty())
                .collect();
            for i in (0..self.heap.len()).rev() {
                self.sift_down(entries, index, i);
            }
        }
        while self.order.len() < n {
            let Some(&s) = self.heap.first() else {
                break;
            };
            self.order.push(self.segments[s][self.heads[s]]);
            self.heads[s] += 1;
            if self.heads[s] == self.segments[s].len() {
                let last = self.heap.len() - 1;
                self.heap.swap(0, last);
                self.heap.pop();
            }
            self.sift_down(entries, index, 0);
        }
    }
}

/// The frozen part of the tail being written as runs.
#[derive(Debug)]
struct Flush {
    /// The frozen entries, by event id.
    entries: Vec<TailEntry>,
    ids: IdsByHash,
    /// The watermark the flush started from and the one it moves to.
    from_watermark: i64,
    to_watermark: i64,
    /// Hour → run id, once created.
    runs: Option<BTreeMap<i64, i64>>,
    messages: Merge,
    contacts: Merge,
    messages_written: usize,
    contacts_written: usize,
}

impl Flush {
    fn entry(&self, event_id: i64) -> Option<&TailEntry> {
        self.entries
            .binary_search_by_key(&event_id, |e| e.event_id)
            .ok()
            .and_then(|i| self.entries.get(i))
    }
}

/// The tail and the flush in progress. See the module documentation.
#[derive(Debug)]
pub(crate) struct IndexTail {
    limits: RunLimits,
    /// Events with ids up to this are in live runs.
    watermark: i64,
    /// Entries above the watermark and not frozen, by event id: `[..committed]` committed, the
    /// rest staged by the open transaction.
    entries: VecDeque<TailEntry>,
    committed: usize,
    ids: IdsByHash,
    /// Sorted segments of `entries[..segmented]`, per index.
    message_segments: Vec<Vec<u32>>,
    contact_segments: Vec<Vec<u32>>,
    segmented: usize,
    flush: Option<Flush>,
    /// `PRAGMA data_version` at the last sync: it changes only when another connection commits,
    /// so a sync that finds it unchanged reads nothing.
    data_version: i64,
    /// A prune asked for the entries received before this to be written out, whatever the
    /// tail's size: it only prunes events below the watermark.
    due_before_ms: Option<i64>,
    loaded: bool,
    /// The committed entries' ids as the reader threads see them.
    view: Arc<TailView>,
}

impl IndexTail {
    pub(crate) fn new(limits: RunLimits) -> Self {
        Self {
            limits,
            watermark: 0,
            entries: VecDeque::new(),
            committed: 0,
            ids: IdsByHash::default(),
            message_segments: Vec::new(),
            contact_segments: Vec::new(),
            segmented: 0,
            flush: None,
            data_version: 0,
            due_before_ms: None,
            loaded: false,
            view: Arc::default(),
        }
    }

    /// The view of this tail that readers look ids up in (see `tail_view.rs`).
    pub(crate) fn view(&self) -> Arc<TailView> {
        Arc::clone(&self.view)
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Read the watermark and the tail's events from the tables; how many entries were read
    /// (the newest ones, see [`Self::newest`]).
    pub(crate) fn load(&mut self, conn: &Connection) -> Result<usize, StoreError> {
        self.entries.clear();
        self.ids = IdsByHash::default();
        self.committed = 0;
        self.clear_segments();
        self.flush = None;
        self.watermark = stored_watermark(conn)?;
        self.view.reset(self.watermark);
        self.data_version = data_version(conn)?;
        let read = self.take_in_events(conn)?;
        self.loaded = true;
        Ok(read)
    }

    /// Events not yet in live runs: the tail's, staged ones included, and the frozen ones.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.flush.as_ref().map_or(0, |f| f.entries.len())
    }

    /// Whether the tail holds this source's messageId received at or after `since_ms`.
    pub(crate) fn holds(&self, hash: u64, source: &str, message_id: &str, since_ms: i64) -> bool {
        let matches = |e: &TailEntry| {
            e.received_at_ms >= since_ms && e.source == source && e.message_id == message_id
        };
        self.ids
            .ids(hash)
            .any(|id| self.entry(id).is_some_and(matches))
            || self
                .flush
                .as_ref()
                .is_some_and(|f| f.ids.ids(hash).any(|id| f.entry(id).is_some_and(matches)))
    }

    fn entry(&self, event_id: i64) -> Option<&TailEntry> {
        self.entries
            .binary_search_by_key(&event_id, |e| e.event_id)
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// Stage the entries of an event just inserted by the open transaction.
    pub(crate) fn stage(&mut self, entry: TailEntry) {
        self.ids.insert(entry.hash(), entry.event_id);
        self.entries.push_back(entry);
    }

    /// How many entries are held now: a mark for [`Self::rollback_to`].
    pub(crate) fn mark(&self) -> usize {
        self.entries.len()
    }

    /// Drop the entries staged after `mark` (their savepoint was rolled back).
    pub(crate) fn rollback_to(&mut self, mark: usize) {
        while self.entries.len() > mark.max(self.committed) {
            if let Some(e) = self.entries.pop_back() {
                self.ids.remove(e.hash(), e.event_id);
            }
        }
    }

    /// The largest event id held (tail, frozen, or below the watermark): ids above it are
    /// another connection's appends.
    fn newest_event_id(&self) -> i64 {
        self.entries
            .back()
            .map(|e| e.event_id)
            .or_else(|| {
                self.flush
                    .as_ref()
                    .and_then(|f| f.entries.last().map(|e| e.event_id))
            })
            .unwrap_or(self.watermark)
            .max(self.watermark)
    }

    /// At the start of a write transaction (write lock held): if another writer moved the
    /// watermark, drop what it indexed and our flush; then take in the events another
    /// connection appended (the last `taken_in` entries).
    pub(crate) fn sync(&mut self, conn: &Connection) -> Result<Synced, StoreError> {
        self.rollback_to(self.committed);
        let version = data_version(conn)?;
        if version == self.data_version {
            return Ok(Synced {
                superseded: false,
                taken_in: 0,
            });
        }
        self.data_version = version;
        let stored = stored_watermark(conn)?;
        let superseded = stored != self.watermark;
        if superseded {
            tracing::warn!(
                ours = self.watermark,
                stored,
                "another writer flushed the index tail; dropping ours up to its watermark"
            );
            self.unfreeze();
            self.trim_to(stored);
        }
        let taken_in = self.take_in_events(conn)?;
        Ok(Synced {
            superseded,
            taken_in,
        })
    }

    /// Entries of the events above the newest one held, read from `events`.
    fn take_in_events(&mut self, conn: &Connection) -> Result<usize, StoreError> {
        let mut statement = conn.prepare_cached(
            "SELECT id, received_at_ms, source, message_id, contact_key FROM events
             WHERE id > ?1 ORDER BY id",
        )?;
        let mut rows = statement.query(params![self.newest_event_id()])?;
        let mut added = 0;
        while let Some(row) = rows.next()? {
            let entry = TailEntry::new(
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            );
            self.stage(entry);
            added += 1;
        }
        self.keep_staged();
        Ok(added)
    }

    /// The staged entries are committed: keep them, show them to the readers, sort what makes
    /// a full segment.
    fn keep_staged(&mut self) {
        let first = self.committed;
        self.committed = self.entries.len();
        self.view.publish(self.entries.range(first..));
        self.segment();
    }

    /// Events up to `watermark` are in live runs.
    fn move_watermark(&mut self, watermark: i64) {
        self.watermark = watermark;
        self.view.advance(watermark);
    }

    /// The last `n` entries of the tail (those just taken in), for the dedup filters.
    pub(crate) fn newest(&self, n: usize) -> impl Iterator<Item = &TailEntry> {
        self.entries
            .iter()
            .skip(self.entries.len().saturating_sub(n))
    }

    /// The frozen entries go back to the front of the tail (their flush was dropped).
    fn unfreeze(&mut self) {
        let Some(flush) = self.flush.take() else {
            return;
        };
        let back = flush.entries.len();
        for e in flush.entries.into_iter().rev() {
            self.ids.insert(e.hash(), e.event_id);
            self.entries.push_front(e);
        }
        self.committed += back;
        self.clear_segments();
    }

    /// Drop entries at or below `watermark` (another writer indexed them).
    fn trim_to(&mut self, watermark: i64) {
        let mut trimmed = false;
        while self
            .entries
            .front()
            .is_some_and(|e| e.event_id <= watermark)
        {
            if let Some(e) = self.entries.pop_front() {
                self.ids.remove(e.hash(), e.event_id);
                trimmed = true;
            }
        }
        if trimmed {
            self.clear_segments();
        }
        self.committed = self.entries.len();
        self.move_watermark(watermark);
        self.segment();
    }

    fn clear_segments(&mut self) {
        self.message_segments.clear();
        self.contact_segments.clear();
        self.segmented = 0;
    }

    /// Sort the committed entries not yet in a segment, a full segment at a time.
    fn segment(&mut self) {
        let size = self.limits.segment_entries.max(1);
        while self.committed - self.segmented >= size {
            self.sort_segment(self.segmented + size);
        }
    }

    fn sort_segment(&mut self, end: usize) {
        let range = self.segmented..end;
        self.message_segments.push(sorted_segment(
            &self.entries,
            range.clone(),
            Index::Messages,
        ));
        self.contact_segments
            .push(sorted_segment(&self.entries, range, Index::Contacts));
        self.segmented = end;
    }

    /// Whether a flush step has work: a run being written, or a tail large enough (or old
    /// enough, see [`Self::flush_before`]) to freeze.
    pub(crate) fn has_flush_work(&self) -> bool {
        self.flush.is_some() || self.freeze_due()
    }

    fn freeze_due(&self) -> bool {
        self.committed > 0
            && (self.committed >= self.limits.run_events
                || self
                    .due_before_ms
                    .is_some_and(|before| self.holds_received_before(before)))
    }

    fn holds_received_before(&self, before_ms: i64) -> bool {
        self.entries
            .range(..self.committed)
            .any(|e| e.received_at_ms < before_ms)
    }

    /// A prune is about to remove what was received before `before_ms`: if the tail holds such
    /// entries, have them written as runs (whatever the tail's size) and say so; the prune
    /// comes back for their events once they are below the watermark.
    pub(crate) fn flush_before(&mut self, before_ms: i64) -> bool {
        let held = self.holds_received_before(before_ms)
            || self
                .flush
                .as_ref()
                .is_some_and(|f| f.entries.iter().any(|e| e.received_at_ms < before_ms));
        self.due_before_ms = held.then_some(before_ms);
        held
    }

    /// Within the open write transaction: write the next chunk of the run being flushed
    /// (freezing the committed tail first if it is due), at most `budget` entries, at least
    /// [`RunLimits::chunk_entries`]. Nothing is kept here until [`Self::committed`].
    pub(crate) fn flush_step(
        &mut self,
        conn: &Connection,
        budget: usize,
    ) -> Result<FlushStep, StoreError> {
        if self.flush.is_none() && self.freeze_due() {
            let started = std::time::Instant::now();
            self.freeze();
            // Everything committed is frozen; a prune still waiting asks again.
            self.due_before_ms = None;
            tracing::debug!(
                entries = self.flush.as_ref().map_or(0, |f| f.entries.len()),
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "index tail frozen"
            );
        }
        let Some(flush) = &mut self.flush else {
            return Ok(FlushStep::default());
        };
        let mut budget = budget.max(self.limits.chunk_entries);
        let mut step = Progress {
            messages_written: flush.messages_written,
            contacts_written: flush.contacts_written,
            ..Progress::default()
        };
        let runs = match &flush.runs {
            Some(runs) => runs.clone(),
            None => {
                let runs = create_runs(conn, &flush.entries)?;
                step.created = Some(runs.clone());
                runs
            }
        };
        let total = flush.entries.len();
        let run_of = |e: &TailEntry| runs.get(&hour_of(e.received_at_ms)).copied();
        if step.messages_written < total {
            let upto = (step.messages_written + budget).min(total);
            flush
                .messages
                .extend_to(&flush.entries, Index::Messages, upto);
            let mut insert = conn.prepare_cached(
                "INSERT INTO messages (run, message_id, source, event_id, received_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for pos in &flush.messages.order[step.messages_written..upto] {
                let e = &flush.entries[*pos as usize];
                insert.execute(params![
                    run_of(e),
                    e.message_id,
                    e.source,
                    e.event_id,
                    e.received_at_ms
                ])?;
            }
            budget -= upto - step.messages_written;
            step.messages_written = upto;
        }
        if step.contacts_written < total && budget > 0 {
            let upto = (step.contacts_written + budget).min(total);
            flush
                .contacts
                .extend_to(&flush.entries, Index::Contacts, upto);
            let mut insert = conn.prepare_cached(
                "INSERT INTO contact_events (run, contact_key, event_id) VALUES (?1, ?2, ?3)",
            )?;
            for pos in &flush.contacts.order[step.contacts_written..upto] {
                let e = &flush.entries[*pos as usize];
                insert.execute(params![run_of(e), e.contact_key, e.event_id])?;
            }
            step.contacts_written = upto;
        }
        if step.messages_written == total && step.contacts_written == total {
            step.finish = Some(finish(conn, flush, &runs)?);
        }
        Ok(FlushStep {
            progress: Some(step),
        })
    }

    /// The open transaction committed: keep its staged entries, apply its flush step, and say
    /// what changed for dedup.
    pub(crate) fn committed(&mut self, step: FlushStep) -> FlushEnd {
        self.keep_staged();
        let (Some(flush), Some(step)) = (&mut self.flush, step.progress) else {
            return FlushEnd::Pending;
        };
        if let Some(runs) = step.created {
            flush.runs = Some(runs);
        }
        flush.messages_written = step.messages_written;
        flush.contacts_written = step.contacts_written;
        match step.finish {
            None => FlushEnd::Pending,
            Some(Finish::Superseded { watermark }) => {
                self.unfreeze();
                self.trim_to(watermark);
                FlushEnd::Superseded
            }
            Some(Finish::Live) => {
                let Some(flush) = self.flush.take() else {
                    return FlushEnd::Pending;
                };
                let started = std::time::Instant::now();
                let mut per_run: BTreeMap<i64, LiveRun> = BTreeMap::new();
                for (hour, run) in flush.runs.iter().flatten() {
                    per_run.insert(
                        *hour,
                        LiveRun {
                            hour: *hour,
                            run: *run,
                            hashes: Vec::new(),
                        },
                    );
                }
                for e in &flush.entries {
                    if let Some(live) = per_run.get_mut(&hour_of(e.received_at_ms)) {
                        live.hashes.push(e.hash());
                    }
                }
                self.move_watermark(flush.to_watermark);
                let entries = flush.entries.len();
                drop(flush);
                tracing::debug!(
                    entries,
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    "index runs live"
                );
                FlushEnd::Live(per_run.into_values().collect())
            }
        }
    }

    /// The open transaction rolled back: drop its staged entries; the flush step is redone.
    pub(crate) fn aborted(&mut self) {
        self.rollback_to(self.committed);
    }

    /// Freeze the committed entries: they move out of the tail with their sorted segments (the
    /// last, partial one sorted now); the staged ones stay.
    fn freeze(&mut self) {
        if self.segmented < self.committed {
            self.sort_segment(self.committed);
        }
        let staged: VecDeque<TailEntry> = self.entries.drain(self.committed..).collect();
        let frozen: Vec<TailEntry> = std::mem::replace(&mut self.entries, staged).into();
        let mut ids = std::mem::take(&mut self.ids);
        for e in &self.entries {
            ids.remove(e.hash(), e.event_id);
            self.ids.insert(e.hash(), e.event_id);
        }
        let to_watermark = frozen.last().map_or(self.watermark, |e| e.event_id);
        self.flush = Some(Flush {
            entries: frozen,
            ids,
            from_watermark: self.watermark,
            to_watermark,
            runs: None,
            messages: Merge {
                segments: std::mem::take(&mut self.message_segments),
                ..Merge::default()
            },
            contacts: Merge {
                segments: std::mem::take(&mut self.contact_segments),
                ..Merge::default()
            },
            messages_written: 0,
            contacts_written: 0,
        });
        self.committed = 0;
        self.segmented = 0;
    }
}

/// A position in the tail as stored in a sort order (a tail is far below 4 G entries).
fn position(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

pub(crate) fn stored_watermark(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT event_id FROM index_watermark WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// One `writing` run per hour of the frozen entries; hour → run id.
fn create_runs(conn: &Connection, entries: &[TailEntry]) -> Result<BTreeMap<i64, i64>, StoreError> {
    let mut spans: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for e in entries {
        let span = spans
            .entry(hour_of(e.received_at_ms))
            .or_insert((e.event_id, e.event_id));
        span.0 = span.0.min(e.event_id);
        span.1 = span.1.max(e.event_id);
    }
    let mut runs = BTreeMap::new();
    let mut insert = conn.prepare_cached(
        "INSERT INTO index_runs (hour, first_event_id, last_event_id, state)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (hour, (first, last)) in spans {
        insert.execute(params![hour, first, last, RunState::Writing.as_str()])?;
        runs.insert(hour, conn.last_insert_rowid());
    }
    Ok(runs)
}

/// The last chunk is written: move the watermark if nobody else did, and make the runs live;
/// otherwise delete them. Either way, delete the runs other writers left half-written below the
/// watermark (a crash mid-flush leaves one).
fn finish(
    conn: &Connection,
    flush: &Flush,
    runs: &BTreeMap<i64, i64>,
) -> Result<Finish, StoreError> {
    let moved = conn
        .prepare_cached("UPDATE index_watermark SET event_id = ?1 WHERE id = 1 AND event_id = ?2")?
        .execute(params![flush.to_watermark, flush.from_watermark])?;
    let finish = if moved == 1 {
        let mut live =
            conn.prepare_cached("UPDATE index_runs SET state = ?1 WHERE run = ?2 AND state = ?3")?;
        for run in runs.values() {
            live.execute(params![
                RunState::Live.as_str(),
                run,
                RunState::Writing.as_str()
            ])?;
        }
        Finish::Live
    } else {
        for run in runs.values() {
            delete_run(conn, *run)?;
        }
        Finish::Superseded {
            watermark: stored_watermark(conn)?,
        }
    };
    let abandoned: Vec<i64> = conn
        .prepare_cached("SELECT run FROM index_runs WHERE state = ?1 AND last_event_id <= ?2")?
        .query_map(
            params![RunState::Writing.as_str(), stored_watermark(conn)?],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for run in abandoned {
        if !runs.values().any(|r| *r == run) {
            tracing::info!(run, "deleting an index run left half-written");
            delete_run(conn, run)?;
        }
    }
    Ok(finish)
}

fn delete_run(conn: &Connection, run: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM messages WHERE run = ?1")?
        .execute(params![run])?;
    conn.prepare_cached("DELETE FROM contact_events WHERE run = ?1")?
        .execute(params![run])?;
    conn.prepare_cached("DELETE FROM index_runs WHERE run = ?1")?
        .execute(params![run])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(event_id: i64, message_id: &str, contact: &str, at_ms: i64) -> TailEntry {
        TailEntry::new(
            event_id,
            at_ms,
            "web".to_owned(),
            message_id.to_owned(),
            contact.to_owned(),
        )
    }

    /// Segments sorted apart and merged give each index's key order over all of them.
    #[test]
    fn merged_segments_are_in_key_order() {
        let entries: VecDeque<TailEntry> = (0..1000)
            .map(|i: i64| {
                let scrambled = (i * 7919) % 1000;
                entry(
                    i + 1,
                    &format!("m{scrambled:04}"),
                    &format!("c{}", scrambled % 37),
                    (i % 3) * 3_600_000,
                )
            })
            .collect();
        for index in [Index::Messages, Index::Contacts] {
            let mut merge = Merge {
                segments: (0..1000)
                    .step_by(64)
                    .map(|start| sorted_segment(&entries, start..(start + 64).min(1000), index))
                    .collect(),
                ..Merge::default()
            };
            let flat: Vec<TailEntry> = entries.iter().cloned().collect();
            merge.extend_to(&flat, index, 10);
            assert_eq!(merge.order.len(), 10, "pulled only as far as asked");
            merge.extend_to(&flat, index, 2000);
            assert_eq!(merge.order.len(), 1000);
            let keys: Vec<SortKey<'_>> = merge
                .order
                .iter()
                .map(|p| sort_key(index, &flat[*p as usize]))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            assert_eq!(keys, sorted, "{index:?}");
        }
    }

    #[test]
    fn ids_by_hash_keep_a_second_id_for_the_same_hash() {
        let mut ids = IdsByHash::default();
        ids.insert(7, 1);
        ids.insert(7, 2);
        ids.insert(8, 3);
        assert_eq!(ids.ids(7).collect::<Vec<_>>(), [1, 2]);
        ids.remove(7, 1);
        assert_eq!(ids.ids(7).collect::<Vec<_>>(), [2]);
        ids.remove(7, 2);
        assert_eq!(ids.ids(7).count(), 0);
        assert_eq!(ids.ids(8).collect::<Vec<_>>(), [3]);
    }
}
