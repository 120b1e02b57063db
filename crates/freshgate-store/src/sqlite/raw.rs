//! The store's durable append path with nothing in front of it: no queue, no savepoints, no
//! HTTP, no JSON. The ingest bench measures its ceiling with it (the same rows into the same
//! schema with the same pragmas, statements and checkpoints, from one writer thread) and seeds
//! large stores through it without going through HTTP.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::checkpoint::{self, WriterGate};
use super::index::EventIndex;
use super::runs::RunLimits;
use super::{schema, writer};
use crate::{AppendBatch, AppendOutcome, StoreError};

/// A writer connection to a store's database file, with the store's checkpoint thread beside it.
/// Only one may be open on a file, and not beside a running `SqliteStore` (both would write).
pub struct RawWriter {
    conn: Connection,
    index: EventIndex,
    gate: Arc<WriterGate>,
    /// Dropped first (see `Drop`): stops the checkpoint thread.
    alive: Option<std::sync::mpsc::Sender<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RawWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawWriter").finish_non_exhaustive()
    }
}

impl RawWriter {
    /// Open (creating and migrating if needed) the database at `path` as the store would.
    ///
    /// # Errors
    /// `Database` if the file cannot be opened, put in WAL mode or migrated.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = schema::open_writer(path)?;
        let index = EventIndex::new(RunLimits::default());
        let gate = Arc::new(WriterGate::default());
        let (alive, checkpointer) = checkpoint::spawn(path, Arc::clone(&gate))?;
        Ok(Self {
            conn,
            index,
            gate,
            alive: Some(alive),
            checkpointer,
        })
    }

    /// Append `batches` in one transaction, exactly as a group commit of the store's writer
    /// appends them (same statements, same dedup), committed with one fsync.
    ///
    /// # Errors
    /// `Database` on any SQLite failure; nothing of the group is then stored.
    pub fn append_group(&mut self, batches: &[AppendBatch]) -> Result<AppendOutcome, StoreError> {
        self.gate.enter();
        let result = self.append_in_transaction(batches);
        self.gate.leave();
        result
    }

    fn append_in_transaction(
        &mut self,
        batches: &[AppendBatch],
    ) -> Result<AppendOutcome, StoreError> {
        let result = self.append_uncommitted(batches);
        if result.is_err() {
            self.index.aborted();
        }
        result
    }

    /// The group and a chunk of the index tail's run (twice what it appended, as the store's
    /// writer does), committed with one fsync.
    fn append_uncommitted(&mut self, batches: &[AppendBatch]) -> Result<AppendOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        self.index.sync(&tx)?;
        let mut total = AppendOutcome::default();
        for batch in batches {
            let o = writer::append(&tx, &mut self.index, batch)?;
            total.accepted += o.accepted;
            total.duplicates += o.duplicates;
            total.rejected += o.rejected;
        }
        let appended = total.accepted;
        let step = self.index.flush_step(&tx, appended.saturating_mul(2))?;
        tx.commit()?;
        self.index.committed(&self.conn, step)?;
        Ok(total)
    }
}

impl Drop for RawWriter {
    fn drop(&mut self) {
        self.alive = None;
        if let Some(handle) = self.checkpointer.take() {
            let _ = handle.join();
        }
    }
}
