//! The embedded SQLite backend of the queue of record (the default).
//!
//! One `std::thread` owns the only read-write connection and applies writes in group commits
//! (see [`writer`]); reads run on a few reader threads, each with its own read-only connection
//! (see [`readers`], [`queries`]); one more thread copies the WAL back into the database file
//! (see [`checkpoint`]).
//! The database is in WAL mode with `synchronous=FULL`: every `Ok` from a write is on disk.

mod bounded;
mod checkpoint;
mod dedup;
mod filter;
mod group;
mod index;
mod memberships;
mod queries;
mod raw;
mod readers;
mod records;
mod runs;
mod schema;
mod tail_view;
mod writer;

/// Width of the hour of receipt: each run of `messages` and `contact_events` holds one hour's
/// events (migration 0014), and dedup asks the days and hours a window reaches. Public for the
/// ingest bench, which seeds a store's history up to the current hour.
pub const HOUR_MS: i64 = 3_600_000;

/// The hour of receipt of an event received at `received_at_ms`, as the migration and the
/// index expression compute it with SQLite's integer division.
pub(crate) fn hour_of(received_at_ms: i64) -> i64 {
    received_at_ms / HOUR_MS
}

pub use self::raw::RawWriter;
pub use self::runs::RunLimits;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use self::checkpoint::WriterGate;
use self::group::GroupLimits;
use self::memberships::{MembershipOp, MembershipReply};
use self::readers::ReaderPool;
use self::records::{RecordOp, RecordReply};
use self::writer::{Command, WriteOp, WriteReply, Writer};
use crate::{
    ActivityIntent, AppendBatch, AppendOutcome, Attempt, Backlog, ContactLease, DeadLetter,
    DeliveryFilter, DeliveryId, DestinationPause, DueMembership, EventId, EventQuery, EventSummary,
    EventTrace, FieldMetadata, FinishedDelivery, KindCount, LateDelivery, ListClaim,
    MembershipChange, MembershipCounts, MembershipResult, MinuteCount, PendingDelivery,
    PruneOutcome, QueueDepth, QueueStats, RejectedRecord, Reopen, Settlement, Store, StoreError,
    UnmappedTrait, UnroutedEvent,
};

/// Events (and dedup entries) deleted per prune command: a chunk holds the writer for tens of
/// milliseconds, not the seconds a prune of a busy hour would.
const PRUNE_CHUNK: usize = 5_000;

/// File name of the database inside a data directory (see [`open_in`]).
pub const DB_FILE_NAME: &str = "freshgate.db";

/// Tuning of the SQLite backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Capacity of the writer's queue, in requests. When full, `append` answers `Saturated`.
    pub writer_queue: usize,
    /// Most events (roughly rows) appended in one group transaction.
    pub max_group_commit_events: usize,
    /// Most delivery rows (settles, leases, records, prunes) in one group transaction beside
    /// the appends: bounds how long a request waits behind delivery work.
    pub max_group_background_rows: usize,
    /// Read-only connections kept open for queries.
    pub readers: usize,
    /// Drop every lease when opening. Right for the process that delivers (`serve`,
    /// `backfill`): an SQLite store has one delivering process, so any lease found on open was
    /// left by a crash, and waiting for it to expire would only stall those contacts. Wrong for
    /// operator commands that open the file beside a running server.
    pub release_leases_on_open: bool,
    /// Build the writer's dedup filters before `open` returns (10 M stored messageIds: 4.5 s),
    /// rather than at the first append. Right for the process that takes ingest (`serve`), so
    /// that its first requests do not wait for them; operator commands that seldom append
    /// would only wait longer to start.
    pub build_dedup_on_open: bool,
    /// How large the runs of the messageId and contact indexes are (see `runs.rs`).
    pub index_runs: RunLimits,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            writer_queue: 1024,
            max_group_commit_events: 5000,
            max_group_background_rows: 1000,
            readers: 4,
            release_leases_on_open: false,
            build_dedup_on_open: false,
            index_runs: RunLimits::default(),
        }
    }
}

/// The SQLite queue of record. Cheap to share behind an `Arc`; see [`Store`] for the operations.
pub struct SqliteStore {
    path: PathBuf,
    /// `None` once closed: new writes get `Closed`.
    sender: RwLock<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    /// The writer's index tail as the readers see it.
    tail_view: Arc<tail_view::TailView>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Open (creating if needed) `dir/freshgate.db` with default options, creating `dir` too.
///
/// # Errors
/// `Database` if the directory or database cannot be created, opened or migrated.
pub fn open_in(dir: &Path) -> Result<SqliteStore, StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
    SqliteStore::open(&dir.join(DB_FILE_NAME), SqliteOptions::default())
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, migrate it, and start the writer thread.
    ///
    /// # Errors
    /// `Database` if the file cannot be opened, put in WAL mode or migrated.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let conn = schema::open_writer(path)?;
        if options.release_leases_on_open {
            let released = conn.execute(
                "UPDATE contact_keys SET lease_owner = NULL, lease_token = NULL, lease_until_ms = NULL
                 WHERE lease_token IS NOT NULL",
                [],
            )?;
            if released > 0 {
                tracing::warn!(released, "released leases left by a crashed process");
            }
        }
        let mut index = index::EventIndex::new(options.index_runs);
        if options.build_dedup_on_open {
            index.build(&conn)?;
        }
        let tail_view = index.tail_view();
        let readers = Arc::new(ReaderPool::new(path, options.readers)?);
        let (tx, rx) = mpsc::channel(options.writer_queue.max(1));
        let gate = Arc::new(WriterGate::default());
        let (alive, checkpointer) = checkpoint::spawn(path, Arc::clone(&gate))?;
        let limits = GroupLimits {
            ingest: options.max_group_commit_events,
            background: options.max_group_background_rows,
        };
        let writer = Writer::new(conn, rx, limits, options.writer_queue, gate, alive, index);
        let handle = std::thread::Builder::new()
            .name("fg-sqlite-write".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        tracing::info!(path = %path.display(), "opened SQLite store");
        Ok(Self {
            path: path.to_path_buf(),
            sender: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(checkpointer),
            readers,
            tail_view,
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sender(&self) -> Result<mpsc::Sender<Command>, StoreError> {
        self.sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Send a write and wait for its commit. With `shed`, a full queue is `Saturated` instead of
    /// a wait: that is the ingest back-pressure.
    async fn write(&self, op: WriteOp, shed: bool) -> Result<WriteReply, StoreError> {
        let tx = self.sender()?;
        let (reply, answer) = oneshot::channel();
        let cmd = Command { op, reply };
        if shed {
            tx.try_send(cmd).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Saturated,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        } else {
            tx.send(cmd).await.map_err(|_| StoreError::Closed)?;
        }
        drop(tx);
        // A dropped reply means the writer thread is gone (it stopped or panicked).
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl SqliteStore {
    /// Run one list-membership write on the writer thread.
    async fn membership(&self, op: MembershipOp) -> Result<MembershipReply, StoreError> {
        match self.write(WriteOp::Membership(op), false).await? {
            WriteReply::Membership(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }

    /// Run one delivery-record write on the writer thread.
    async fn record(&self, op: RecordOp) -> Result<RecordReply, StoreError> {
        match self.write(WriteOp::Record(op), false).await? {
            WriteReply::Record(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected_record(reply: &RecordReply) -> StoreError {
    StoreError::Database(format!(
        "writer answered a record write with an unexpected reply: {reply:?}"
    ))
}

fn unexpected(reply: &WriteReply) -> StoreError {
    StoreError::Database(format!(
        "writer answered with an unexpected reply: {reply:?}"
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        match self.write(WriteOp::Append(batch), true).await? {
            WriteReply::Appended(o) => Ok(o),
            other => Err(unexpected(&other)),
        }
    }

    async fn lease_contacts(
        &self,
        destination: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<ContactLease>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let op = WriteOp::Lease {
            destination: destination.to_owned(),
            owner: owner.to_owned(),
            now_ms,
            lease_ms,
            max,
        };
        match self.write(op, false).await? {
            WriteReply::Leased(l) => Ok(l),
            other => Err(unexpected(&other)),
        }
    }

    async fn pending_for(
        &self,
        lease: &ContactLease,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let lease = lease.clone();
        self.readers
            .run(move |c| queries::pending_for(c, &lease, limit))
            .await
    }

    async fn settle(
        &self,
        lease: &ContactLease,
        now_ms: i64,
        settlements: Vec<(DeliveryId, Settlement)>,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        let op = WriteOp::Settle {
            lease: lease.clone(),
            now_ms,
            settlements,
            attempt,
        };
        match self.write(op, false).await? {
            WriteReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn release(
        &self,
        lease: &ContactLease,
        not_before_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let op = WriteOp::Release {
            lease: lease.clone(),
            not_before_ms,
        };
        match self.write(op, false).await? {
            WriteReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn shadow(
        &self,
        destination: &str,
        contact_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (d, k) = (destination.to_owned(), contact_key.to_owned());
        self.readers.run(move |c| queries::shadow(c, &d, &k)).await
    }

    async fn put_shadow(
        &self,
        destination: &str,
        contact_key: &str,
        shadow: Vec<u8>,
    ) -> Result<(), StoreError> {
        let op = WriteOp::PutShadow {
            destination: destination.to_owned(),
            contact_key: contact_key.to_owned(),
            body: shadow,
        };
        match self.write(op, false).await? {
            WriteReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn field_metadata(&self, account: &str) -> Result<Option<FieldMetadata>, StoreError> {
        let account = account.to_owned();
        self.readers
            .run(move |c| queries::field_metadata(c, &account))
            .await
    }

    async fn put_field_metadata(
        &self,
        account: &str,
        metadata: FieldMetadata,
    ) -> Result<(), StoreError> {
        let op = WriteOp::PutFieldMetadata {
            account: account.to_owned(),
            metadata,
        };
        match self.write(op, false).await? {
            WriteReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn entity_field_metadata(
        &self,
        account: &str,
        entity: &str,
    ) -> Result<Option<FieldMetadata>, StoreError> {
        let (a, e) = (account.to_owned(), entity.to_owned());
        self.readers
            .run(move |c| records::entity_field_metadata(c, &a, &e))
            .await
    }

    async fn put_entity_field_metadata(
        &self,
        account: &str,
        entity: &str,
        metadata: FieldMetadata,
    ) -> Result<(), StoreError> {
        self.record(RecordOp::PutEntityFields {
            account: account.to_owned(),
            entity: entity.to_owned(),
            metadata,
        })
        .await
        .map(drop)
    }

    async fn put_contact_ids(
        &self,
        destination: &str,
        ids: Vec<(String, i64)>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.record(RecordOp::PutContactIds {
            destination: destination.to_owned(),
            ids,
        })
        .await
        .map(drop)
    }

    async fn contact_ids(
        &self,
        destination: &str,
        keys: Vec<String>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let d = destination.to_owned();
        self.readers
            .run(move |c| records::contact_ids(c, &d, &keys))
            .await
    }

    async fn account_shadow(
        &self,
        destination: &str,
        account_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (d, k) = (destination.to_owned(), account_key.to_owned());
        self.readers
            .run(move |c| records::account_shadow(c, &d, &k))
            .await
    }

    async fn put_account_shadow(
        &self,
        destination: &str,
        account_key: &str,
        shadow: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.record(RecordOp::PutAccountShadow {
            destination: destination.to_owned(),
            account_key: account_key.to_owned(),
            body: shadow,
        })
        .await
        .map(drop)
    }

    async fn list_id(&self, destination: &str, name: &str) -> Result<Option<i64>, StoreError> {
        let (d, n) = (destination.to_owned(), name.to_owned());
        self.readers.run(move |c| records::list_id(c, &d, &n)).await
    }

    async fn claim_list(
        &self,
        destination: &str,
        name: &str,
        owner: &str,
        now_ms: i64,
        claim_ms: i64,
    ) -> Result<ListClaim, StoreError> {
        match self
            .record(RecordOp::ClaimList {
                destination: destination.to_owned(),
                name: name.to_owned(),
                owner: owner.to_owned(),
                now_ms,
                claim_ms,
            })
            .await?
        {
            RecordReply::Claim(claim) => Ok(claim),
            other => Err(unexpected_record(&other)),
        }
    }

    async fn put_list_id(
        &self,
        destination: &str,
        name: &str,
        list_id: i64,
    ) -> Result<i64, StoreError> {
        match self
            .record(RecordOp::PutListId {
                destination: destination.to_owned(),
                name: name.to_owned(),
                list_id,
            })
            .await?
        {
            RecordReply::ListId(id) => Ok(id),
            other => Err(unexpected_record(&other)),
        }
    }

    async fn record_memberships(
        &self,
        destination: &str,
        changes: Vec<MembershipChange>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.membership(MembershipOp::Record {
            destination: destination.to_owned(),
            changes,
            now_ms,
        })
        .await
        .map(drop)
    }

    async fn take_memberships(
        &self,
        destination: &str,
        now_ms: i64,
        hold_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueMembership>, StoreError> {
        match self
            .membership(MembershipOp::Take {
                destination: destination.to_owned(),
                now_ms,
                hold_ms,
                limit,
            })
            .await?
        {
            MembershipReply::Due(due) => Ok(due),
            MembershipReply::Done => Err(StoreError::Database(
                "writer answered a membership take without rows".to_owned(),
            )),
        }
    }

    async fn finish_memberships(
        &self,
        destination: &str,
        results: Vec<MembershipResult>,
        attempts: Vec<Attempt>,
    ) -> Result<(), StoreError> {
        if results.is_empty() && attempts.is_empty() {
            return Ok(());
        }
        self.membership(MembershipOp::Finish {
            destination: destination.to_owned(),
            results,
            attempts,
        })
        .await
        .map(drop)
    }

    async fn forget_list_id(
        &self,
        destination: &str,
        name: &str,
        list_id: i64,
    ) -> Result<(), StoreError> {
        self.membership(MembershipOp::ForgetList {
            destination: destination.to_owned(),
            name: name.to_owned(),
            list_id,
        })
        .await
        .map(drop)
    }

    async fn membership_counts(&self, destination: &str) -> Result<MembershipCounts, StoreError> {
        let d = destination.to_owned();
        self.readers.run(move |c| memberships::counts(c, &d)).await
    }

    async fn intend_activity(
        &self,
        destination: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<Option<ActivityIntent>, StoreError> {
        match self
            .record(RecordOp::IntendActivity {
                destination: destination.to_owned(),
                message_id: message_id.to_owned(),
                now_ms,
            })
            .await?
        {
            RecordReply::Intent(intent) => Ok(intent),
            other => Err(unexpected_record(&other)),
        }
    }

    async fn activity_created(
        &self,
        destination: &str,
        message_id: &str,
        activity_id: i64,
    ) -> Result<(), StoreError> {
        self.record(RecordOp::ActivityCreated {
            destination: destination.to_owned(),
            message_id: message_id.to_owned(),
            activity_id,
        })
        .await
        .map(drop)
    }

    async fn clear_activity_intent(
        &self,
        destination: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        self.record(RecordOp::ClearActivityIntent {
            destination: destination.to_owned(),
            message_id: message_id.to_owned(),
        })
        .await
        .map(drop)
    }

    async fn activity_intents(
        &self,
        destination: &str,
        message_ids: Vec<String>,
    ) -> Result<Vec<(String, ActivityIntent)>, StoreError> {
        let d = destination.to_owned();
        self.readers
            .run(move |c| records::activity_intents(c, &d, &message_ids))
            .await
    }

    async fn prune_activity_intents(&self, before_ms: i64) -> Result<u64, StoreError> {
        match self
            .record(RecordOp::PruneActivityIntents { before_ms })
            .await?
        {
            RecordReply::Count(n) => Ok(n),
            other => Err(unexpected_record(&other)),
        }
    }

    async fn record_calls(&self, account: &str, at_ms: i64, calls: u32) -> Result<(), StoreError> {
        let op = WriteOp::RecordCalls {
            account: account.to_owned(),
            at_ms,
            calls,
        };
        match self.write(op, false).await? {
            WriteReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn reserve_calls(
        &self,
        account: &str,
        at_ms: i64,
        calls: u32,
        minute_cap: u32,
        hour_cap: u32,
    ) -> Result<bool, StoreError> {
        let op = WriteOp::ReserveCalls {
            account: account.to_owned(),
            at_ms,
            calls,
            minute_cap,
            hour_cap,
        };
        match self.write(op, false).await? {
            WriteReply::Count(n) => Ok(n > 0),
            other => Err(unexpected(&other)),
        }
    }

    async fn calls_since(&self, account: &str, since_ms: i64) -> Result<u64, StoreError> {
        let account = account.to_owned();
        self.readers
            .run(move |c| queries::calls_since(c, &account, since_ms))
            .await
    }

    async fn event_traces(&self, message_id: &str) -> Result<Vec<EventTrace>, StoreError> {
        let message_id = message_id.to_owned();
        let view = Arc::clone(&self.tail_view);
        self.readers
            .run(move |c| queries::event_traces(c, &view, &message_id))
            .await
    }

    async fn dead_letters(&self, filter: &DeliveryFilter) -> Result<Vec<DeadLetter>, StoreError> {
        let filter = filter.clone();
        self.readers
            .run(move |c| queries::dead_letters(c, &filter))
            .await
    }

    async fn requeue_dead(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64, StoreError> {
        let op = WriteOp::RequeueDead {
            filter: filter.clone(),
            now_ms,
        };
        match self.write(op, false).await? {
            WriteReply::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn forget_shadows(
        &self,
        destination: Option<&str>,
        contact_key: Option<&str>,
    ) -> Result<u64, StoreError> {
        let op = WriteOp::ForgetShadows {
            destination: destination.map(str::to_owned),
            contact_key: contact_key.map(str::to_owned),
        };
        match self.write(op, false).await? {
            WriteReply::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn contacts_matching(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let filter = filter.clone();
        self.readers
            .run(move |c| queries::contacts_matching(c, &filter))
            .await
    }

    async fn finished_deliveries(
        &self,
        filter: &DeliveryFilter,
        after_id: DeliveryId,
        limit: usize,
    ) -> Result<Vec<FinishedDelivery>, StoreError> {
        let filter = filter.clone();
        self.readers
            .run(move |c| queries::finished_deliveries(c, &filter, after_id, limit))
            .await
    }

    async fn reopen(
        &self,
        delivery_ids: Vec<DeliveryId>,
        cause: Reopen,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        if delivery_ids.is_empty() {
            return Ok(0);
        }
        let op = WriteOp::Reopen {
            delivery_ids,
            cause,
            now_ms,
        };
        match self.write(op, false).await? {
            WriteReply::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn events_without_delivery(
        &self,
        destination: &str,
        since_ms: i64,
        until_ms: i64,
        after_id: EventId,
        limit: usize,
    ) -> Result<Vec<UnroutedEvent>, StoreError> {
        let destination = destination.to_owned();
        self.readers
            .run(move |c| {
                queries::events_without_delivery(
                    c,
                    &destination,
                    since_ms,
                    until_ms,
                    after_id,
                    limit,
                )
            })
            .await
    }

    async fn add_deliveries(
        &self,
        deliveries: Vec<LateDelivery>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let op = WriteOp::AddDeliveries { deliveries, now_ms };
        match self.write(op, false).await? {
            WriteReply::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn rejected(&self, limit: usize) -> Result<Vec<RejectedRecord>, StoreError> {
        self.readers.run(move |c| queries::rejected(c, limit)).await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.readers.run(queries::stats).await
    }

    async fn depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        self.readers.run(queries::depths).await
    }

    async fn kind_counts(&self) -> Result<Vec<KindCount>, StoreError> {
        self.readers.run(queries::kind_counts).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
        let query = query.clone();
        let view = Arc::clone(&self.tail_view);
        self.readers
            .run(move |c| queries::list_events(c, &view, &query))
            .await
    }

    async fn delivery_messages(
        &self,
        delivery_ids: &[DeliveryId],
    ) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        let ids = delivery_ids.to_vec();
        self.readers
            .run(move |c| queries::delivery_messages(c, &ids))
            .await
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        self.readers.run(queries::backlog).await
    }

    async fn events_per_minute(&self, since_ms: i64) -> Result<Vec<MinuteCount>, StoreError> {
        self.readers
            .run(move |c| queries::events_per_minute(c, since_ms))
            .await
    }

    async fn calls_per_minute(
        &self,
        account: &str,
        since_ms: i64,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        let account = account.to_owned();
        self.readers
            .run(move |c| queries::calls_per_minute(c, &account, since_ms))
            .await
    }

    async fn set_pause(
        &self,
        destination: &str,
        pause: Option<DestinationPause>,
    ) -> Result<(), StoreError> {
        let op = WriteOp::SetPause {
            destination: destination.to_owned(),
            pause,
        };
        match self.write(op, false).await? {
            WriteReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn pauses(&self) -> Result<Vec<DestinationPause>, StoreError> {
        self.readers.run(queries::pauses).await
    }

    async fn clear_expired_pauses(&self, now_ms: i64) -> Result<u64, StoreError> {
        match self
            .write(WriteOp::ClearExpiredPauses { now_ms }, false)
            .await?
        {
            WriteReply::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn prune(
        &self,
        events_before_ms: i64,
        dedup_before_ms: i64,
    ) -> Result<PruneOutcome, StoreError> {
        // In chunks, each its own writer command: appends commit between them.
        let mut total = PruneOutcome::default();
        loop {
            let op = WriteOp::Prune {
                events_before_ms,
                dedup_before_ms,
                limit: PRUNE_CHUNK,
            };
            match self.write(op, false).await? {
                WriteReply::Pruned(p, more) => {
                    total.events += p.events;
                    total.dedup_entries += p.dedup_entries;
                    if !more {
                        return Ok(total);
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    async fn prune_rejected(&self, before_ms: i64, max_bytes: u64) -> Result<u64, StoreError> {
        let op = WriteOp::PruneRejected {
            before_ms,
            max_bytes,
        };
        match self.write(op, false).await? {
            WriteReply::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn record_unmapped_traits(&self, traits: Vec<UnmappedTrait>) -> Result<(), StoreError> {
        if traits.is_empty() {
            return Ok(());
        }
        match self.write(WriteOp::RecordUnmapped(traits), false).await? {
            WriteReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn unmapped_traits(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<UnmappedTrait>, StoreError> {
        let destination = destination.to_owned();
        self.readers
            .run(move |c| bounded::unmapped_traits(c, &destination, limit))
            .await
    }

    async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.readers.run(queries::integrity_check).await
    }

    async fn close(&self) {
        // Dropping the last sender ends the writer's loop once the queued commands are done;
        // writes already holding a sender clone still get in and are answered.
        drop(
            self.sender
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => tracing::info!(path = %self.path.display(), "closed SQLite store"),
                Ok(Err(_)) => tracing::error!("SQLite writer thread panicked"),
                Err(e) => tracing::error!(error = %e, "could not join the SQLite writer thread"),
            }
        }
        // It stops on its own once the writer is gone (within one pass).
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = checkpointer
            && let Ok(Err(_)) = tokio::task::spawn_blocking(move || handle.join()).await
        {
            tracing::error!("SQLite checkpoint thread panicked");
        }
    }
}
