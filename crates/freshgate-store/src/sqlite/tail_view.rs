//! What the reader threads know of the writer's index tail: the ids of the events above the
//! watermark, by messageId and by contact.
//!
//! The tail's events are in no run yet (see `runs.rs`), so a trace, a search by messageId or a
//! contact's listing would otherwise scan them all, with their raw JSON: up to a run's worth,
//! 27–59 ms per lookup at the default run size (issue 15). The writer publishes each group's
//! committed entries here after it commits, and moves the view's lower bound when runs go
//! live. A reader first reads its snapshot's watermark and newest event id; when the view holds
//! every event between the two it answers from here, and otherwise (a flush went live after the
//! snapshot, another connection appended, the writer has not loaded its tail yet) the reader
//! scans as before. Ids are candidates: the query that reads the events checks the key, so a
//! collision of the 64-bit hashes costs a row read, never a wrong answer.

use std::collections::VecDeque;
use std::sync::{PoisonError, RwLock};

use super::dedup::key_hash;
use super::runs::TailEntry;

/// Entries per block: blocks are dropped whole once the watermark passes them, and sorted by
/// hash when full, so a lookup is a binary search per full block and a scan of the last.
const BLOCK_ENTRIES: usize = 4096;

/// What a reader's snapshot holds above the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Events up to this id are in live runs.
    pub(crate) watermark: i64,
    /// The newest event id (0 without events).
    pub(crate) newest: i64,
}

/// The tail's ids, shared between the writer (which publishes) and the readers.
#[derive(Debug, Default)]
pub(crate) struct TailView {
    state: RwLock<ViewState>,
}

#[derive(Debug, Default)]
struct ViewState {
    /// Every committed event with an id in `(above, through()]` is in `blocks`.
    above: i64,
    blocks: VecDeque<Block>,
}

impl ViewState {
    /// The newest id published (or `above`, when nothing above it is held).
    fn through(&self) -> i64 {
        self.blocks
            .back()
            .map_or(self.above, |b| b.last_id)
            .max(self.above)
    }
}

/// One block of entries, in id order until full, then sorted by hash.
#[derive(Debug, Default)]
struct Block {
    last_id: i64,
    /// (hash of the messageId, event id).
    messages: Vec<(u64, i64)>,
    /// (hash of the contact key, event id, receive time).
    contacts: Vec<(u64, i64, i64)>,
}

impl Block {
    /// A full block is sorted by hash (the moment it fills, see [`TailView::publish`]).
    fn sealed(&self) -> bool {
        self.messages.len() >= BLOCK_ENTRIES
    }

    fn message_ids(&self, hash: u64) -> impl Iterator<Item = i64> + '_ {
        matching(&self.messages, self.sealed(), hash, |m| m.0).map(|m| m.1)
    }

    fn contact_events(&self, hash: u64) -> impl Iterator<Item = (i64, i64)> + '_ {
        matching(&self.contacts, self.sealed(), hash, |c| c.0).map(|c| (c.1, c.2))
    }
}

/// The items of `items` whose hash is `hash`: a binary search when sorted, a scan otherwise.
fn matching<T>(
    items: &[T],
    sorted: bool,
    hash: u64,
    key: impl Fn(&T) -> u64 + Copy,
) -> impl Iterator<Item = &T> {
    let range = if sorted {
        let start = items.partition_point(|i| key(i) < hash);
        let end = start + items[start..].partition_point(|i| key(i) == hash);
        &items[start..end]
    } else {
        items
    };
    range.iter().filter(move |i| key(i) == hash)
}

impl TailView {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ViewState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start over: nothing above `watermark` is known yet.
    pub(crate) fn reset(&self, watermark: i64) {
        let mut s = self.write();
        s.blocks.clear();
        s.above = watermark;
    }

    /// Entries just committed, in id order, all above what was published before.
    pub(crate) fn publish<'a>(&self, entries: impl IntoIterator<Item = &'a TailEntry>) {
        let mut s = self.write();
        for e in entries {
            if e.event_id <= s.through() {
                continue;
            }
            if s.blocks.back().is_none_or(Block::sealed) {
                s.blocks.push_back(Block::default());
            }
            if let Some(block) = s.blocks.back_mut() {
                block.messages.push((key_hash(&e.message_id), e.event_id));
                block
                    .contacts
                    .push((key_hash(&e.contact_key), e.event_id, e.received_at_ms));
                block.last_id = e.event_id;
                if block.sealed() {
                    block.messages.sort_unstable();
                    block.contacts.sort_unstable();
                }
            }
        }
    }

    /// Events up to `watermark` are in live runs now: the view no longer answers for them.
    pub(crate) fn advance(&self, watermark: i64) {
        let mut s = self.write();
        while s.blocks.front().is_some_and(|b| b.last_id <= watermark) {
            s.blocks.pop_front();
        }
        s.above = s.above.max(watermark);
    }

    /// The ids (candidates) of the events stored under `message_id` above the snapshot's
    /// watermark, or `None` when the view does not hold the snapshot's tail.
    pub(crate) fn message_ids(&self, message_id: &str, at: Snapshot) -> Option<Vec<i64>> {
        let hash = key_hash(message_id);
        self.answer(
            at,
            |b, out: &mut Vec<i64>| out.extend(b.message_ids(hash)),
            |id| *id,
        )
    }

    /// The (id, receive time) of the events of `contact_key` above the snapshot's watermark
    /// (candidates), or `None` when the view does not hold the snapshot's tail.
    pub(crate) fn contact_events(
        &self,
        contact_key: &str,
        at: Snapshot,
    ) -> Option<Vec<(i64, i64)>> {
        let hash = key_hash(contact_key);
        self.answer(
            at,
            |b, out: &mut Vec<(i64, i64)>| out.extend(b.contact_events(hash)),
            |e| e.0,
        )
    }

    fn answer<T>(
        &self,
        at: Snapshot,
        collect: impl Fn(&Block, &mut Vec<T>),
        id: impl Fn(&T) -> i64,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        if at.newest <= at.watermark {
            return Some(out);
        }
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if s.above > at.watermark || s.through() < at.newest {
            return None;
        }
        for block in s.blocks.iter().filter(|b| b.last_id > at.watermark) {
            collect(block, &mut out);
        }
        out.retain(|x| (at.watermark + 1..=at.newest).contains(&id(x)));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(id: i64, message_id: &str, contact: &str) -> TailEntry {
        TailEntry::new(
            id,
            id * 10,
            "web".to_owned(),
            message_id.to_owned(),
            contact.to_owned(),
        )
    }

    fn at(watermark: i64, newest: i64) -> Snapshot {
        Snapshot { watermark, newest }
    }

    #[test]
    fn answers_only_for_the_snapshots_it_holds() {
        let view = TailView::default();
        // Not loaded: it holds nothing above 0.
        assert_eq!(view.message_ids("a", at(0, 1)), None);
        assert_eq!(view.message_ids("a", at(0, 0)), Some(vec![]));
        view.reset(10);
        view.publish(&[
            entry(11, "a", "u1"),
            entry(12, "b", "u1"),
            entry(13, "a", "u2"),
        ]);
        assert_eq!(view.message_ids("a", at(10, 13)), Some(vec![11, 13]));
        // A snapshot taken before the last commit: the newer id is left out.
        assert_eq!(view.message_ids("a", at(10, 12)), Some(vec![11]));
        assert_eq!(
            view.contact_events("u1", at(10, 13)),
            Some(vec![(11, 110), (12, 120)])
        );
        // Another connection appended id 14: not here yet.
        assert_eq!(view.message_ids("a", at(10, 14)), None);
        // Runs went live up to 12: a snapshot from before that must scan.
        view.advance(12);
        assert_eq!(view.message_ids("a", at(10, 13)), None);
        assert_eq!(view.message_ids("a", at(12, 13)), Some(vec![13]));
        // A snapshot from after a later go-live: the view still holds more than it needs.
        assert_eq!(view.contact_events("u2", at(13, 13)), Some(vec![]));
    }

    #[test]
    fn full_blocks_are_searched_and_dropped_whole() {
        let view = TailView::default();
        let n = i64::try_from(BLOCK_ENTRIES).unwrap() * 3 + 5;
        let entries: Vec<TailEntry> = (1..=n)
            .map(|id| entry(id, &format!("m{}", id % 7), &format!("u{}", id % 5)))
            .collect();
        view.publish(&entries);
        let mut expected: Vec<i64> = (1..=n).filter(|id| id % 7 == 3).collect();
        let mut got = view.message_ids("m3", at(0, n)).unwrap();
        got.sort_unstable();
        assert_eq!(got, expected);
        let cut = i64::try_from(BLOCK_ENTRIES).unwrap() + 1;
        view.advance(cut);
        assert_eq!(view.state.read().unwrap().blocks.len(), 3);
        expected.retain(|id| *id > cut);
        let mut got = view.message_ids("m3", at(cut, n)).unwrap();
        got.sort_unstable();
        assert_eq!(got, expected);
        let contacts = view.contact_events("u4", at(cut, n)).unwrap();
        assert!(
            contacts
                .iter()
                .all(|(id, at)| id % 5 == 4 && *id > cut && *at == id * 10)
        );
        assert_eq!(
            contacts.len(),
            (cut + 1..=n).filter(|id| id % 5 == 4).count()
        );
    }
}
