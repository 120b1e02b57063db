//! The writer's view of the two indexes derived from stored events: the dedup filters over the
//! live runs (`dedup.rs`) and the tail with its flush into runs (`runs.rs`), kept in step. The
//! writer and the raw writer call only this.

use rusqlite::Connection;

use super::dedup::{DedupIndex, LookupCounts, MessageKey};
use super::hour_of;
use super::runs::{FlushEnd, FlushStep, IndexTail, RunLimits, Synced, TailEntry};
use crate::StoreError;

pub(crate) struct EventIndex {
    dedup: DedupIndex,
    tail: IndexTail,
}

impl EventIndex {
    /// An index that reads the tables at its first lookup (or [`Self::build`]), so that a CLI
    /// command that only reads or settles never pays for it (10 M stored messageIds: 4.5 s).
    pub(crate) fn new(limits: RunLimits) -> Self {
        Self {
            dedup: DedupIndex::new(),
            tail: IndexTail::new(limits),
        }
    }

    /// The view of the tail that readers look ids up in.
    pub(crate) fn tail_view(&self) -> std::sync::Arc<super::tail_view::TailView> {
        self.tail.view()
    }

    /// Read the tail and build the dedup filters from the tables now.
    pub(crate) fn build(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.dedup.build(conn)?;
        let read = self.tail.load(conn)?;
        self.filter_newest(read);
        Ok(())
    }

    /// At the start of each write transaction (the write lock held): take in what other
    /// connections appended or flushed.
    pub(crate) fn sync(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if !self.tail.is_loaded() {
            // The build will read it all.
            return Ok(());
        }
        let Synced {
            superseded,
            taken_in,
        } = self.tail.sync(conn)?;
        if superseded {
            self.dedup.reload_runs(conn)?;
        }
        if taken_in > 0 {
            self.filter_newest(taken_in);
            tracing::debug!(
                taken_in,
                superseded,
                "index tail synced with another writer"
            );
        }
        Ok(())
    }

    /// The newest `n` tail entries (just read from the table) into the dedup filters.
    fn filter_newest(&mut self, n: usize) {
        for e in self.tail.newest(n) {
            self.dedup.add(hour_of(e.received_at_ms), e.hash());
        }
    }

    /// Whether the key's source stored its messageId within `window_ms` before `received_at_ms`.
    pub(crate) fn seen_within(
        &mut self,
        conn: &Connection,
        key: &MessageKey<'_>,
        received_at_ms: i64,
        window_ms: i64,
    ) -> Result<bool, StoreError> {
        if !self.tail.is_loaded() {
            self.build(conn)?;
        }
        self.dedup
            .seen_within(conn, &self.tail, key, received_at_ms, window_ms)
    }

    /// Record an event just inserted by the open transaction.
    pub(crate) fn inserted(&mut self, entry: TailEntry) {
        self.dedup.add(hour_of(entry.received_at_ms), entry.hash());
        self.tail.stage(entry);
    }

    /// A mark for [`Self::rollback_to`], taken before a command's savepoint.
    pub(crate) fn mark(&self) -> usize {
        self.tail.mark()
    }

    /// The command's savepoint was rolled back: forget the events it inserted.
    pub(crate) fn rollback_to(&mut self, mark: usize) {
        self.tail.rollback_to(mark);
    }

    /// Before a prune of what was received before `before_ms`: whether the tail holds such
    /// events (the prune leaves them until they are written as runs, which this asks for).
    pub(crate) fn flush_before(
        &mut self,
        conn: &Connection,
        before_ms: i64,
    ) -> Result<bool, StoreError> {
        if !self.tail.is_loaded() {
            self.build(conn)?;
        }
        Ok(self.tail.flush_before(before_ms))
    }

    /// Whether [`Self::flush_step`] has work to do.
    pub(crate) fn has_flush_work(&self) -> bool {
        self.tail.has_flush_work()
    }

    /// Within the open write transaction, write the next chunk of a run (see `runs.rs`).
    pub(crate) fn flush_step(
        &mut self,
        conn: &Connection,
        budget: usize,
    ) -> Result<FlushStep, StoreError> {
        if !self.tail.is_loaded() {
            return Ok(FlushStep::default());
        }
        self.tail.flush_step(conn, budget)
    }

    /// The open transaction committed, with `step` in it.
    pub(crate) fn committed(
        &mut self,
        conn: &Connection,
        step: FlushStep,
    ) -> Result<(), StoreError> {
        match self.tail.committed(step) {
            FlushEnd::Pending => {}
            FlushEnd::Live(runs) => {
                for run in runs {
                    self.dedup.add_run(run.hour, run.run, &run.hashes);
                }
            }
            FlushEnd::Superseded => self.dedup.reload_runs(conn)?,
        }
        Ok(())
    }

    /// The open transaction rolled back.
    pub(crate) fn aborted(&mut self) {
        self.tail.aborted();
    }

    pub(crate) fn take_lookup_counts(&mut self) -> LookupCounts {
        self.dedup.take_lookup_counts()
    }

    /// Events in the tail (not yet in live runs).
    pub(crate) fn tail_len(&self) -> usize {
        self.tail.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rusqlite::params;

    use super::super::HOUR_MS;
    use super::super::dedup::LookupCounts;
    use super::super::schema::open_writer;
    use super::*;

    const DAY_MS: i64 = 24 * HOUR_MS;
    const WEEK_MS: i64 = 7 * DAY_MS;

    /// Runs of `run_events`, written `chunk` entries per commit, sorted in segments of 2.
    fn limits(run_events: usize, chunk: usize) -> RunLimits {
        RunLimits {
            run_events,
            chunk_entries: chunk,
            segment_entries: 2,
        }
    }

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("db")).unwrap();
        (dir, conn)
    }

    /// One write transaction as the writer runs it: sync, the events (each looked up first:
    /// those seen are skipped), one flush step with a budget of one entry, commit. The
    /// messageIds found to be duplicates.
    fn commit(index: &mut EventIndex, conn: &Connection, events: &[(&str, i64)]) -> Vec<String> {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        index.sync(conn).unwrap();
        let mut seen = Vec::new();
        for (message_id, at_ms) in events {
            let key = MessageKey::new("web", message_id);
            if index.seen_within(conn, &key, *at_ms, WEEK_MS).unwrap() {
                seen.push((*message_id).to_owned());
                continue;
            }
            let id = insert_event(conn, message_id, *at_ms);
            index.inserted(entry(id, message_id, *at_ms));
        }
        let step = index.flush_step(conn, 1).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        index.committed(conn, step).unwrap();
        seen
    }

    fn insert_event(conn: &Connection, message_id: &str, at_ms: i64) -> i64 {
        conn.execute(
            "INSERT INTO events (source, message_id, event_type, contact_key, timestamp_ms,
                                 received_at_ms, raw)
             VALUES ('web', ?1, 'identify', 'c-' || ?1, ?2, ?2, x'7b7d')",
            params![message_id, at_ms],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn entry(event_id: i64, message_id: &str, at_ms: i64) -> TailEntry {
        TailEntry::new(
            event_id,
            at_ms,
            "web".to_owned(),
            message_id.to_owned(),
            format!("c-{message_id}"),
        )
    }

    fn seen(index: &mut EventIndex, conn: &Connection, message_id: &str, at_ms: i64) -> bool {
        index
            .seen_within(conn, &MessageKey::new("web", message_id), at_ms, WEEK_MS)
            .unwrap()
    }

    /// Idle flush steps until no work is left (as the writer does between groups).
    fn flush_all(index: &mut EventIndex, conn: &Connection) {
        while index.has_flush_work() {
            commit(index, conn, &[]);
        }
    }

    /// A run and a key in it.
    type RunRow = (i64, String);

    /// (run, messageId) rows of `messages`, and (run, contact) rows of `contact_events`, of
    /// live runs.
    fn live_rows(conn: &Connection) -> (Vec<RunRow>, Vec<RunRow>) {
        let rows = |sql: &str| -> Vec<RunRow> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        (
            rows(
                "SELECT m.run, m.message_id FROM messages m JOIN index_runs r USING (run)
                 WHERE r.state = 'live' ORDER BY 1, 2",
            ),
            rows(
                "SELECT c.run, c.contact_key FROM contact_events c JOIN index_runs r USING (run)
                 WHERE r.state = 'live' ORDER BY 1, 2",
            ),
        )
    }

    fn watermark(conn: &Connection) -> i64 {
        super::super::runs::stored_watermark(conn).unwrap()
    }

    #[test]
    fn a_full_tail_is_written_as_one_sorted_run_per_hour_and_the_watermark_moves_past_it() {
        let (_dir, conn) = store();
        let mut index = EventIndex::new(limits(4, 1));
        let base = 20_000 * DAY_MS;
        commit(
            &mut index,
            &conn,
            &[("d", base), ("b", base + 1), ("c", base + HOUR_MS)],
        );
        assert!(!index.has_flush_work(), "three events do not make a run");
        commit(&mut index, &conn, &[("a", base + 2)]);
        assert!(index.has_flush_work());
        // Written an entry per commit: nothing is live, or out of the tail, until the last.
        assert_eq!(live_rows(&conn).0, []);
        assert_eq!(index.tail_len(), 4);
        flush_all(&mut index, &conn);
        assert_eq!(index.tail_len(), 0);
        assert_eq!(watermark(&conn), 4);
        let (messages, contacts) = live_rows(&conn);
        let runs: Vec<i64> = messages.iter().map(|(run, _)| *run).collect();
        let (first, second) = (runs[0], runs[3]);
        assert_ne!(first, second, "one run per hour");
        let ids = |rows: &[RunRow]| rows.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&messages), ["a", "b", "d", "c"]);
        assert_eq!(ids(&contacts), ["c-a", "c-b", "c-d", "c-c"]);
        for id in ["a", "b", "c", "d"] {
            assert!(seen(&mut index, &conn, id, base + 2 * HOUR_MS), "{id}");
        }
        assert!(!seen(&mut index, &conn, "e", base + 2 * HOUR_MS));
    }

    #[test]
    fn lookups_find_the_tail_exactly_and_probe_only_runs_whose_filters_say_maybe() {
        let (_dir, conn) = store();
        let mut index = EventIndex::new(limits(2, 100));
        let base = 20_000 * DAY_MS;
        commit(&mut index, &conn, &[("a", base), ("b", base + 1)]);
        flush_all(&mut index, &conn);
        commit(&mut index, &conn, &[("c", base + 2), ("d", base + 3)]);
        flush_all(&mut index, &conn);
        commit(&mut index, &conn, &[("e", base + 4)]);
        index.take_lookup_counts();
        let now = base + HOUR_MS;
        // In the tail: found without a probe.
        assert!(seen(&mut index, &conn, "e", now));
        // In the second run: the day filter says maybe, the first run's filter no.
        assert!(seen(&mut index, &conn, "c", now));
        // Nowhere: no filter holds it (at this size a false positive is one in a thousand).
        assert!(!seen(&mut index, &conn, "z", now));
        assert_eq!(
            index.take_lookup_counts(),
            LookupCounts {
                lookups: 3,
                filter_hits: 1,
                run_probes: 1,
            }
        );
    }

    #[test]
    fn an_entry_rolled_back_is_forgotten_and_its_reused_id_indexed_anew() {
        let (_dir, conn) = store();
        let mut index = EventIndex::new(limits(2, 100));
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        index.sync(&conn).unwrap();
        let mark = index.mark();
        conn.execute_batch("SAVEPOINT cmd").unwrap();
        assert!(!seen(&mut index, &conn, "gone", 1000));
        let id = insert_event(&conn, "gone", 1000);
        index.inserted(entry(id, "gone", 1000));
        conn.execute_batch("ROLLBACK TO cmd; RELEASE cmd").unwrap();
        index.rollback_to(mark);
        conn.execute_batch("COMMIT").unwrap();
        index.committed(&conn, FlushStep::default()).unwrap();
        // The rolled-back event's id goes to the next insert.
        commit(&mut index, &conn, &[("kept", 2000), ("gone", 2001)]);
        flush_all(&mut index, &conn);
        assert_eq!(
            live_rows(&conn)
                .0
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>(),
            ["gone", "kept"]
        );
        let ids: Vec<(String, i64)> = conn
            .prepare("SELECT message_id, event_id FROM messages ORDER BY event_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [("kept".to_owned(), id), ("gone".to_owned(), id + 1)]);
    }

    #[test]
    fn a_group_that_fails_to_commit_leaves_neither_entries_nor_flush_progress() {
        let (_dir, conn) = store();
        let mut index = EventIndex::new(limits(1, 1));
        commit(&mut index, &conn, &[("a", 1000)]);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        index.sync(&conn).unwrap();
        let id = insert_event(&conn, "b", 1001);
        index.inserted(entry(id, "b", 1001));
        let step = index.flush_step(&conn, 1).unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
        drop(step);
        index.aborted();
        assert!(!seen(&mut index, &conn, "b", 2000));
        flush_all(&mut index, &conn);
        assert_eq!(live_rows(&conn).0.len(), 1);
        assert_eq!(watermark(&conn), 1);
    }

    /// A writer killed mid-flush leaves a run half-written: the next one reads the tail back
    /// from `events`, ignores that run, and deletes it when its own flush covers its events.
    #[test]
    fn a_run_left_half_written_by_a_crash_is_ignored_then_deleted() {
        let (dir, conn) = store();
        let mut crashed = EventIndex::new(limits(3, 1));
        commit(
            &mut crashed,
            &conn,
            &[("a", 1000), ("b", 1001), ("c", 1002)],
        );
        commit(&mut crashed, &conn, &[]);
        let half: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert!(half > 0, "some chunks were written");
        drop(crashed);
        drop(conn);
        let conn = open_writer(&dir.path().join("db")).unwrap();
        let mut index = EventIndex::new(limits(3, 1));
        index.build(&conn).unwrap();
        assert_eq!(index.tail_len(), 3);
        for id in ["a", "b", "c"] {
            assert!(seen(&mut index, &conn, id, 2000), "{id}");
        }
        assert!(index.has_flush_work());
        flush_all(&mut index, &conn);
        let (messages, contacts) = live_rows(&conn);
        assert_eq!(messages.len(), 3);
        assert_eq!(contacts.len(), 3);
        let all: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(all, 3, "the half-written run is gone");
        let writing: i64 = conn
            .query_row(
                "SELECT count(*) FROM index_runs WHERE state = 'writing'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(writing, 0);
    }

    /// Two writers on one file (an operator command beside `serve`): each takes in the other's
    /// events; the one that finishes its flush second finds the watermark moved, drops its run
    /// and keeps only what is above the new watermark.
    #[test]
    fn a_flush_overtaken_by_another_writer_is_dropped_and_nothing_is_indexed_twice() {
        let (dir, ours_conn) = store();
        let theirs_conn = open_writer(&dir.path().join("db")).unwrap();
        let mut ours = EventIndex::new(limits(2, 1));
        let mut theirs = EventIndex::new(limits(2, 100));
        commit(&mut ours, &ours_conn, &[("a", 1000), ("b", 1001)]);
        assert!(ours.has_flush_work());
        commit(&mut ours, &ours_conn, &[]);
        // Theirs takes in ours at its first lookup, adds one, and flushes a and b.
        assert_eq!(
            commit(&mut theirs, &theirs_conn, &[("a", 1002), ("c", 1003)]),
            ["a"]
        );
        flush_all(&mut theirs, &theirs_conn);
        assert_eq!(watermark(&ours_conn), 2);
        // Ours syncs: its flush is dropped, its tail trimmed to c.
        flush_all(&mut ours, &ours_conn);
        assert_eq!(ours.tail_len(), 1);
        commit(&mut ours, &ours_conn, &[("d", 1004)]);
        flush_all(&mut ours, &ours_conn);
        assert_eq!(watermark(&ours_conn), 4);
        let (messages, contacts) = live_rows(&ours_conn);
        assert_eq!(
            messages.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(contacts.len(), 4);
        let all: i64 = ours_conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(all, 4, "ours' half-written run is gone");
        for id in ["a", "b", "c", "d"] {
            assert!(seen(&mut ours, &ours_conn, id, 2000), "ours: {id}");
        }
        commit(&mut theirs, &theirs_conn, &[]);
        assert!(seen(&mut theirs, &theirs_conn, "d", 2000), "theirs: d");
    }

    #[test]
    fn an_index_reads_the_tables_at_its_first_lookup_only() {
        let (_dir, conn) = store();
        let mut index = EventIndex::new(limits(2, 100));
        index.sync(&conn).unwrap();
        insert_event(&conn, "before-first-use", HOUR_MS);
        index.sync(&conn).unwrap();
        assert_eq!(index.tail_len(), 0, "nothing read before the first lookup");
        assert!(seen(&mut index, &conn, "before-first-use", 2 * HOUR_MS));
        assert_eq!(index.tail_len(), 1);
    }

    #[test]
    fn rows_of_earlier_days_and_hours_are_found_by_their_receive_time() {
        let (_dir, conn) = store();
        let mut index = EventIndex::new(limits(1, 100));
        let base = 20_000 * DAY_MS;
        commit(&mut index, &conn, &[("a", base + 5 * HOUR_MS)]);
        flush_all(&mut index, &conn);
        commit(
            &mut index,
            &conn,
            &[("b", base + 2 * DAY_MS + 23 * HOUR_MS)],
        );
        flush_all(&mut index, &conn);
        let now = base + 3 * DAY_MS;
        // Rebuilt from the tables, as at the next start.
        let mut index = EventIndex::new(limits(1, 100));
        index.build(&conn).unwrap();
        for window in [WEEK_MS, now - (base + 5 * HOUR_MS + 1)] {
            let found = |index: &mut EventIndex, id: &str| {
                index
                    .seen_within(&conn, &MessageKey::new("web", id), now, window)
                    .unwrap()
            };
            assert_eq!(found(&mut index, "a"), window == WEEK_MS, "a, {window}");
            assert!(found(&mut index, "b"));
            assert!(!found(&mut index, "c"));
        }
        assert!(
            !index
                .seen_within(&conn, &MessageKey::new("ios", "a"), now, WEEK_MS)
                .unwrap()
        );
    }

    #[test]
    fn days_the_widest_window_does_not_reach_are_forgotten() {
        let (_dir, conn) = store();
        let mut index = EventIndex::new(limits(1, 100));
        commit(&mut index, &conn, &[("old", 0)]);
        flush_all(&mut index, &conn);
        commit(&mut index, &conn, &[("new", 10 * DAY_MS)]);
        flush_all(&mut index, &conn);
        let now = 10 * DAY_MS + HOUR_MS;
        let found = |index: &mut EventIndex, id: &str, window: i64| {
            index
                .seen_within(&conn, &MessageKey::new("web", id), now, window)
                .unwrap()
        };
        assert!(!found(&mut index, "old", DAY_MS));
        assert!(found(&mut index, "new", DAY_MS));
        // A wider window later does not find the rows of days already forgotten (they were
        // past every window asked for until then).
        assert!(!found(&mut index, "old", 11 * DAY_MS));
    }

    /// What happens to the index between two checks.
    #[derive(Debug, Clone)]
    enum Op {
        /// A group commit appending these messageIds (those already seen are skipped).
        Append(Vec<u8>),
        /// A group that inserts these and rolls back.
        RolledBack(Vec<u8>),
        /// A group commit that appends nothing (a flush step).
        Idle,
        /// The process dies and a new writer opens the file.
        Restart,
        /// Another connection appends an event without any index.
        Elsewhere(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => proptest::collection::vec(0u8..24, 0..6).prop_map(Op::Append),
            1 => proptest::collection::vec(0u8..24, 1..3).prop_map(Op::RolledBack),
            3 => Just(Op::Idle),
            1 => Just(Op::Restart),
            1 => (0u8..24).prop_map(Op::Elsewhere),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the run size, the chunking, crashes, rollbacks and another connection's
        /// appends, the index says "seen" for exactly the messageIds stored (the model: a set),
        /// and every stored event is in exactly one of the tail and a live run.
        #[test]
        fn the_index_agrees_with_the_set_of_stored_message_ids(
            run_events in 1usize..6,
            chunk in 1usize..5,
            segment in 1usize..4,
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let (dir, conn) = store();
            let path = dir.path().join("db");
            let other = open_writer(&path).unwrap();
            let mut conn = conn;
            let limits = RunLimits {
                segment_entries: segment,
                ..limits(run_events, chunk)
            };
            let mut index = EventIndex::new(limits);
            let mut stored: std::collections::BTreeSet<u8> = std::collections::BTreeSet::new();
            let mut now = 1_000;
            for op in ops {
                now += 1;
                match op {
                    Op::Append(ids) => {
                        let names: Vec<String> = ids.iter().map(|i| format!("m{i}")).collect();
                        let events: Vec<(&str, i64)> =
                            names.iter().map(|n| (n.as_str(), now)).collect();
                        let mut expected = Vec::new();
                        let mut in_group = std::collections::BTreeSet::new();
                        for i in &ids {
                            if stored.contains(i) || !in_group.insert(*i) {
                                expected.push(format!("m{i}"));
                            }
                        }
                        proptest::prop_assert_eq!(commit(&mut index, &conn, &events), expected);
                        stored.extend(ids);
                    }
                    Op::RolledBack(ids) => {
                        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                        index.sync(&conn).unwrap();
                        for i in ids {
                            let name = format!("m{i}");
                            let key = MessageKey::new("web", &name);
                            if !index.seen_within(&conn, &key, now, WEEK_MS).unwrap() {
                                let id = insert_event(&conn, &name, now);
                                index.inserted(entry(id, &name, now));
                            }
                        }
                        let step = index.flush_step(&conn, 1).unwrap();
                        drop(step);
                        conn.execute_batch("ROLLBACK").unwrap();
                        index.aborted();
                    }
                    Op::Idle => {
                        commit(&mut index, &conn, &[]);
                    }
                    Op::Restart => {
                        drop(index);
                        drop(conn);
                        conn = open_writer(&path).unwrap();
                        index = EventIndex::new(limits);
                    }
                    Op::Elsewhere(i) => {
                        if !stored.contains(&i) {
                            insert_event(&other, &format!("m{i}"), now);
                            stored.insert(i);
                        }
                    }
                }
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                index.sync(&conn).unwrap();
                for i in 0u8..24 {
                    proptest::prop_assert_eq!(
                        seen(&mut index, &conn, &format!("m{i}"), now),
                        stored.contains(&i),
                        "m{}", i
                    );
                }
                conn.execute_batch("COMMIT").unwrap();
                index.committed(&conn, FlushStep::default()).unwrap();
                let (live, _) = live_rows(&conn);
                let events: i64 = conn
                    .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                    .unwrap();
                let in_tail: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM events
                         WHERE id > (SELECT event_id FROM index_watermark)",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                proptest::prop_assert_eq!(
                    i64::try_from(live.len()).unwrap() + in_tail,
                    events,
                    "every event once, in a live run or the tail"
                );
                // The readers' view of the tail, once the writer is in step with the file,
                // answers for it, and answers what reading the tail's events would.
                let view = index.tail_view();
                let at = super::super::queries::tail_snapshot(&conn).unwrap();
                let read = |sql: &str, key: &str| -> Vec<i64> {
                    conn.prepare(sql)
                        .unwrap()
                        .query_map(params![at.watermark, key], |r| r.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap()
                };
                let sorted = |ids: Option<Vec<i64>>| {
                    ids.map(|mut ids| {
                        ids.sort_unstable();
                        ids
                    })
                };
                for i in 0u8..24 {
                    let name = format!("m{i}");
                    proptest::prop_assert_eq!(
                        sorted(view.message_ids(&name, at)),
                        Some(read("SELECT id FROM events WHERE id > ?1 AND message_id = ?2", &name)),
                        "messageId {}", name
                    );
                    let contact = format!("c-{name}");
                    let contact_ids = view
                        .contact_events(&contact, at)
                        .map(|rows| rows.into_iter().map(|(id, _)| id).collect());
                    proptest::prop_assert_eq!(
                        sorted(contact_ids),
                        Some(read("SELECT id FROM events WHERE id > ?1 AND contact_key = ?2", &contact)),
                        "contact {}", contact
                    );
                }
            }
        }
    }
}
