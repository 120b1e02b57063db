//! Background WAL checkpoints for the SQLite backend, so the writer thread rarely does them.
//!
//! In WAL mode every commit appends pages to the `-wal` file, and a checkpoint copies them back
//! into the database file. SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold, on the writer thread, where it was a fifth of the writer's time in a profile of
//! the ingest bench. Here a second thread, with its own connection, copies the pages while the
//! writer keeps committing (a `PASSIVE` checkpoint never blocks writers or readers).
//!
//! A passive checkpoint alone falls behind under constant load: it copies the frames that
//! existed when it started, new ones arrive meanwhile, and the WAL only restarts from its
//! beginning once a checkpoint has copied every frame. (An earlier version without a pause let
//! the WAL grow without bound and lost throughput.) So once the WAL holds more than
//! [`PAUSE_AFTER_FRAMES`], the checkpointer pauses the writer between two group commits (see
//! [`WriterGate`]), copies the frames written since its last pass, and lets the writer go: the
//! writer's next transaction then starts the WAL over.
//!
//! Every acknowledgement waits for that pause, so it must be short (issue 15: it was the p99).
//! A pass costs the copy plus an fsync of the database file, both growing with the frames it
//! copies; so the checkpointer first catches up without pausing, pass after pass, until a pass
//! is quick (it found little to copy), and pauses only for the last, small one. The writer
//! connection keeps a much larger automatic checkpoint as a backstop should this thread stop.
//! How long the writer was held is the `freshgate_store_checkpoint_pause_seconds` histogram.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::StoreError;

/// How often the checkpointer copies what the writer committed.
const PASS_EVERY: Duration = Duration::from_millis(100);

/// WAL frames (pages) above which the checkpointer pauses the writer to finish a checkpoint
/// and let the WAL restart (~8 MiB of 4 KiB pages). Smaller means more pauses, each shorter:
/// measured with the ingest bench at 67–80k events/s (issue 15), 2,000 gave pauses of 10 ms
/// (none over 25) and p99 24–27 ms, where 4,000 gave 13–16 ms (up to 11 a round over 25) and
/// p99 27–33 ms at the same rate, and 16,000 longer ones still (p99 47 ms).
pub(crate) const PAUSE_AFTER_FRAMES: i64 = 2_000;

/// An unpaused pass at most this long left little behind it: the pause that follows is short.
const QUICK_PASS: Duration = Duration::from_millis(8);

/// Unpaused passes tried before pausing anyway, so that the WAL stays bounded even when every
/// pass is slow (a disk slower than the load).
const CATCH_UP_PASSES: usize = 8;

/// Lets the checkpointer hold the writer between two group commits without starving either.
#[derive(Debug, Default)]
pub(crate) struct WriterGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// The writer is inside a group commit.
    writing: bool,
    /// The checkpointer asked the writer to wait.
    paused: bool,
}

impl WriterGate {
    /// Writer side: wait while paused, then mark a group commit as running.
    pub(crate) fn enter(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while s.paused {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.writing = true;
    }

    /// Writer side: the group commit is over.
    pub(crate) fn leave(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.writing = false;
        self.changed.notify_all();
    }

    /// Checkpointer side: stop the writer at its next group boundary and run `f` meanwhile.
    fn paused<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.paused = true;
            while s.writing {
                s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        }
        let out = f();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.paused = false;
        self.changed.notify_all();
        out
    }
}

/// Start the checkpointer thread on its own connection to `path`. The writer keeps the returned
/// sender and drops it when it ends, which stops the thread. Without the thread (it could not be
/// spawned) the writer's backstop checkpoint still bounds the WAL: that is not fatal.
pub(crate) fn spawn(
    path: &Path,
    gate: std::sync::Arc<WriterGate>,
) -> Result<
    (
        std::sync::mpsc::Sender<()>,
        Option<std::thread::JoinHandle<()>>,
    ),
    StoreError,
> {
    let (alive, writer_alive) = std::sync::mpsc::channel();
    let checkpointer = Checkpointer::new(path, gate, writer_alive)?;
    let handle = std::thread::Builder::new()
        .name("fg-sqlite-ckpt".to_owned())
        .spawn(move || checkpointer.run())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot start the checkpoint thread"))
        .ok();
    Ok((alive, handle))
}

/// The checkpointer thread's state.
pub(crate) struct Checkpointer {
    conn: Connection,
    gate: std::sync::Arc<WriterGate>,
    /// Never receives; disconnects when the writer thread ends, which stops this thread too.
    writer_alive: Receiver<()>,
}

impl Checkpointer {
    /// A checkpointer on its own connection to `path`.
    pub(crate) fn new(
        path: &Path,
        gate: std::sync::Arc<WriterGate>,
        writer_alive: Receiver<()>,
    ) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Ok(Self {
            conn,
            gate,
            writer_alive,
        })
    }

    /// Checkpoint every [`PASS_EVERY`] until the writer thread ends.
    pub(crate) fn run(self) {
        while let Err(RecvTimeoutError::Timeout) = self.writer_alive.recv_timeout(PASS_EVERY) {
            match self.pass() {
                // Another process (an operator command beside `serve`) is checkpointing.
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) => {}
                Err(e) => tracing::warn!(error = %e, "SQLite background checkpoint failed"),
                Ok(()) => {}
            }
        }
        tracing::debug!("SQLite checkpointer stopped");
    }

    /// Copy what the writer committed; past [`PAUSE_AFTER_FRAMES`], catch up without pausing
    /// until a pass is quick, then pause the writer for the last pass so the WAL restarts.
    fn pass(&self) -> Result<(), rusqlite::Error> {
        let mut frames = self.passive()?;
        if frames <= PAUSE_AFTER_FRAMES {
            return Ok(());
        }
        for _ in 0..CATCH_UP_PASSES {
            let started = Instant::now();
            frames = self.passive()?;
            if started.elapsed() <= QUICK_PASS {
                break;
            }
        }
        let held = Instant::now();
        let last = self.gate.paused(|| self.passive());
        let held = held.elapsed();
        metrics::histogram!(crate::metric::CHECKPOINT_PAUSE_SECONDS).record(held.as_secs_f64());
        tracing::debug!(
            wal_frames = frames,
            pause_ms = held.as_secs_f64() * 1000.0,
            "SQLite checkpoint paused the writer"
        );
        last.map(|_| ())
    }

    /// One passive checkpoint; the WAL's size in frames before it.
    fn passive(&self) -> Result<i64, rusqlite::Error> {
        // Columns: busy (always 0 for PASSIVE), frames in the WAL, frames checkpointed.
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// The pause waits for a running group to finish, and holds the next one back until done.
    #[test]
    fn pause_waits_for_the_group_and_holds_the_next() {
        let gate = Arc::new(WriterGate::default());
        gate.enter();
        let in_pause = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let (gate, in_pause) = (Arc::clone(&gate), Arc::clone(&in_pause));
            std::thread::spawn(move || {
                gate.paused(|| {
                    in_pause.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    in_pause.store(false, Ordering::SeqCst);
                });
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !in_pause.load(Ordering::SeqCst),
            "the pause must wait for the group in progress"
        );
        gate.leave();
        // Wait until the pause has begun, then the writer's next group must wait for its end.
        while !in_pause.load(Ordering::SeqCst) && !checkpointer.is_finished() {
            std::thread::yield_now();
        }
        gate.enter();
        assert!(
            !in_pause.load(Ordering::SeqCst),
            "a group must not run during the pause"
        );
        gate.leave();
        checkpointer.join().unwrap();
    }

    /// With SQLite's own checkpoints off, the thread alone keeps the WAL from growing: once it
    /// passed the threshold it was copied back and the next write started it over (and, with
    /// `journal_size_limit = 0`, cut the file back, which is what the test can see without
    /// checkpointing anything itself).
    #[test]
    fn the_thread_copies_the_wal_back_and_lets_it_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 PRAGMA journal_size_limit = 0;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);",
            )
            .unwrap();
        let gate = Arc::new(WriterGate::default());
        let (alive, writer_alive) = std::sync::mpsc::channel();
        let checkpointer = Checkpointer::new(&path, Arc::clone(&gate), writer_alive).unwrap();
        let thread = std::thread::spawn(move || checkpointer.run());
        // ~2 pages per row: 3,000 rows put well over PAUSE_AFTER_FRAMES frames in the WAL.
        let write = |rows: usize| {
            gate.enter();
            writer.execute_batch("BEGIN").unwrap();
            for _ in 0..rows {
                writer
                    .execute("INSERT INTO t (v) VALUES (zeroblob(5000))", [])
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            gate.leave();
        };
        for _ in 0..30 {
            write(100);
        }
        // Unchecked, the WAL would now hold every one of those ~6,000 pages (24 MiB).
        let wal = dir.path().join("ckpt.db-wal");
        let small = 4 * 1024 * 1024;
        let mut size = u64::MAX;
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            write(1);
            size = std::fs::metadata(&wal).unwrap().len();
            if size < small {
                break;
            }
        }
        assert!(
            size < small,
            "the WAL should have restarted, it is still {size} bytes"
        );
        drop(alive);
        thread.join().unwrap();
    }
}
