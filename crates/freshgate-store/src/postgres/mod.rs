//! The PostgreSQL backend of the queue of record (cargo feature `postgres`), shared by several nodes.
//!
//! Same model and semantics as the SQLite backend (`crate::sqlite`), built for many writers:
//! - ingest appends a whole batch in one `UNNEST` statement; `messageId` dedup is an insert into
//!   the `(message_id, source)` primary key of `dedup` (an upsert for a batch that meets a stored
//!   messageId; see [`ingest`]), which is also how events are
//!   found by messageId: under the receive times of their dedup entries (the `message_times` view,
//!   migration 14), on the events' receive-time index;
//! - nodes lease *contact keys* with `SELECT … FOR UPDATE SKIP LOCKED` in one short statement,
//!   read that key's deliveries outside any transaction, and settle in a second transaction that
//!   re-checks the lease token under a row lock (see [`delivery`]);
//! - the quota ledger lives in the database, so every node spends the same account budget.
//!
//! There is no writer queue: concurrency is bounded by the connection pool, and a write that cannot
//! get a connection in time fails with `Database` (never `Saturated`).

/// The CTE that adds the deliveries a statement inserted to `delivery_counts` (migration 12's
/// sharded counters): `$rows` names the CTE whose `RETURNING` gives each inserted delivery's
/// destination, event_type and status. The two statements that insert deliveries (the append and
/// [`delivery::add_deliveries`]) count in the same statement (migration 15); rows are taken in key
/// order, as every counting statement takes them.
macro_rules! count_new_deliveries {
    ($rows:literal) => {
        concat!(
            "INSERT INTO delivery_counts AS c (destination, event_type, status, shard, count)
             SELECT destination, event_type, status, pg_backend_pid() % 16, count(*)
             FROM ",
            $rows,
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
             ON CONFLICT (destination, event_type, status, shard)
                 DO UPDATE SET count = c.count + excluded.count"
        )
    };
}

mod bounded;
mod delivery;
mod filter;
mod ingest;
mod memberships;
mod queries;
mod records;
mod schema;

use std::time::Duration;

use async_trait::async_trait;
use sqlx_core::pool::PoolOptions;
use sqlx_postgres::{PgConnectOptions, PgPool, Postgres};

use crate::{
    ActivityIntent, AppendBatch, AppendOutcome, Attempt, Backlog, ContactLease, DeadLetter,
    DeliveryFilter, DeliveryId, DestinationPause, DueMembership, EventId, EventQuery, EventSummary,
    EventTrace, FieldMetadata, FinishedDelivery, KindCount, LateDelivery, ListClaim,
    MembershipChange, MembershipCounts, MembershipResult, MinuteCount, PendingDelivery,
    PruneOutcome, QueueDepth, QueueStats, RejectedRecord, Reopen, Settlement, Store, StoreError,
    UnmappedTrait, UnroutedEvent,
};

/// Tuning of the PostgreSQL backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Most connections this node opens; every store operation holds one while it runs, so this
    /// also bounds how many run at once.
    pub max_connections: u32,
    /// How long an operation waits for a free connection before failing with `Database`.
    pub acquire_timeout: Duration,
    /// Apply pending migrations on connect. Off when operators run [`migrate`] separately.
    pub run_migrations: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
            run_migrations: true,
        }
    }
}

/// The PostgreSQL queue of record. Cheap to share behind an `Arc`; see [`Store`] for the operations.
pub struct PostgresStore {
    pool: PgPool,
    known_emails: ingest::KnownEmails,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only where it points.
        let opts = self.pool.connect_options();
        f.debug_struct("PostgresStore")
            .field("host", &opts.get_host())
            .field("port", &opts.get_port())
            .field("database", &opts.get_database())
            .finish_non_exhaustive()
    }
}

impl From<sqlx_core::Error> for StoreError {
    fn from(e: sqlx_core::Error) -> Self {
        match e {
            // `close()` closes the pool: what follows is a write to a closed store.
            sqlx_core::Error::PoolClosed => Self::Closed,
            other => Self::Database(other.to_string()),
        }
    }
}

impl From<sqlx_core::migrate::MigrateError> for StoreError {
    fn from(e: sqlx_core::migrate::MigrateError) -> Self {
        Self::Database(format!("migration failed: {e}"))
    }
}

/// Where `url` points, without its user or password: `HOST:PORT (TCP)`, or the socket's directory
/// (`DIR (Unix socket)`), as this backend reads the URL to connect.
///
/// # Errors
/// `Database` if the URL is invalid.
pub fn server_location(url: &str) -> Result<String, StoreError> {
    let opts = parse_url(url)?;
    Ok(match opts.get_socket() {
        Some(dir) => format!("{} (Unix socket)", dir.display()),
        None => format!("{}:{} (TCP)", opts.get_host(), opts.get_port()),
    })
}

fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    url.parse::<PgConnectOptions>()
        .map_err(|e| StoreError::Database(format!("invalid PostgreSQL URL: {e}")))
}

/// Apply every pending migration to the database at `url` and return; for operators who migrate
/// before starting nodes with `run_migrations: false`. Safe to run from several nodes at once
/// (migrations take an advisory lock).
///
/// # Errors
/// `Database` if the URL is invalid, the server cannot be reached, or a migration fails.
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    migrate_through(url, i64::MAX).await
}

/// Apply the pending migrations up to and including `version` and stop there: for operators who
/// take a fleet forward one schema version at a time, and for upgrade tests that write data in
/// an older schema.
///
/// # Errors
/// `Database` if the URL is invalid, the server cannot be reached, or a migration fails.
pub async fn migrate_through(url: &str, version: i64) -> Result<(), StoreError> {
    let pool = PoolOptions::<Postgres>::new()
        .max_connections(1)
        .connect_with(parse_url(url)?)
        .await?;
    let result = schema::migrator_through(version).run(&pool).await;
    pool.close().await;
    result.map_err(StoreError::from)
}

impl PostgresStore {
    /// Connect a pool to `url` (e.g. `postgres://user:pass@host:5432/freshgate`, TLS with
    /// `?sslmode=require`) and, unless disabled in `options`, apply pending migrations.
    ///
    /// # Errors
    /// `Database` if the URL is invalid, the server cannot be reached, or a migration fails.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let pool = PoolOptions::<Postgres>::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(parse_url(url)?)
            .await?;
        if options.run_migrations
            && let Err(e) = schema::migrator().run(&pool).await
        {
            pool.close().await;
            return Err(e.into());
        }
        tracing::info!(
            host = pool.connect_options().get_host(),
            database = pool.connect_options().get_database(),
            "opened PostgreSQL store"
        );
        Ok(Self {
            pool,
            known_emails: ingest::KnownEmails::default(),
        })
    }

    /// The connection pool, for operator tooling and tests (the schema is described in
    /// `migrations/postgres`).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        ingest::append(&self.pool, &self.known_emails, &batch).await
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
        delivery::lease_contacts(&self.pool, destination, owner, now_ms, lease_ms, max).await
    }

    async fn pending_for(
        &self,
        lease: &ContactLease,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        delivery::pending_for(&self.pool, lease, limit).await
    }

    async fn settle(
        &self,
        lease: &ContactLease,
        now_ms: i64,
        settlements: Vec<(DeliveryId, Settlement)>,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        delivery::settle(&self.pool, lease, now_ms, &settlements, attempt.as_ref()).await
    }

    async fn release(
        &self,
        lease: &ContactLease,
        not_before_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        delivery::release(&self.pool, lease, not_before_ms).await
    }

    async fn shadow(
        &self,
        destination: &str,
        contact_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        queries::shadow(&self.pool, destination, contact_key).await
    }

    async fn put_shadow(
        &self,
        destination: &str,
        contact_key: &str,
        shadow: Vec<u8>,
    ) -> Result<(), StoreError> {
        queries::put_shadow(&self.pool, destination, contact_key, shadow).await
    }

    async fn field_metadata(&self, account: &str) -> Result<Option<FieldMetadata>, StoreError> {
        queries::field_metadata(&self.pool, account).await
    }

    async fn put_field_metadata(
        &self,
        account: &str,
        metadata: FieldMetadata,
    ) -> Result<(), StoreError> {
        queries::put_field_metadata(&self.pool, account, metadata).await
    }

    async fn entity_field_metadata(
        &self,
        account: &str,
        entity: &str,
    ) -> Result<Option<FieldMetadata>, StoreError> {
        records::entity_field_metadata(&self.pool, account, entity).await
    }

    async fn put_entity_field_metadata(
        &self,
        account: &str,
        entity: &str,
        metadata: FieldMetadata,
    ) -> Result<(), StoreError> {
        records::put_entity_field_metadata(&self.pool, account, entity, metadata).await
    }

    async fn put_contact_ids(
        &self,
        destination: &str,
        ids: Vec<(String, i64)>,
    ) -> Result<(), StoreError> {
        records::put_contact_ids(&self.pool, destination, ids).await
    }

    async fn contact_ids(
        &self,
        destination: &str,
        keys: Vec<String>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        records::contact_ids(&self.pool, destination, keys).await
    }

    async fn account_shadow(
        &self,
        destination: &str,
        account_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        records::account_shadow(&self.pool, destination, account_key).await
    }

    async fn put_account_shadow(
        &self,
        destination: &str,
        account_key: &str,
        shadow: Vec<u8>,
    ) -> Result<(), StoreError> {
        records::put_account_shadow(&self.pool, destination, account_key, shadow).await
    }

    async fn list_id(&self, destination: &str, name: &str) -> Result<Option<i64>, StoreError> {
        records::list_id(&self.pool, destination, name).await
    }

    async fn claim_list(
        &self,
        destination: &str,
        name: &str,
        owner: &str,
        now_ms: i64,
        claim_ms: i64,
    ) -> Result<ListClaim, StoreError> {
        records::claim_list(&self.pool, destination, name, owner, now_ms, claim_ms).await
    }

    async fn put_list_id(
        &self,
        destination: &str,
        name: &str,
        list_id: i64,
    ) -> Result<i64, StoreError> {
        records::put_list_id(&self.pool, destination, name, list_id).await
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
        memberships::record(&self.pool, destination, changes, now_ms).await
    }

    async fn take_memberships(
        &self,
        destination: &str,
        now_ms: i64,
        hold_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueMembership>, StoreError> {
        memberships::take(&self.pool, destination, now_ms, hold_ms, limit).await
    }

    async fn finish_memberships(
        &self,
        destination: &str,
        results: Vec<MembershipResult>,
        attempts: Vec<Attempt>,
    ) -> Result<(), StoreError> {
        memberships::finish(&self.pool, destination, results, attempts).await
    }

    async fn forget_list_id(
        &self,
        destination: &str,
        name: &str,
        list_id: i64,
    ) -> Result<(), StoreError> {
        memberships::forget_list(&self.pool, destination, name, list_id).await
    }

    async fn membership_counts(&self, destination: &str) -> Result<MembershipCounts, StoreError> {
        memberships::counts(&self.pool, destination).await
    }

    async fn intend_activity(
        &self,
        destination: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<Option<ActivityIntent>, StoreError> {
        records::intend_activity(&self.pool, destination, message_id, now_ms).await
    }

    async fn activity_created(
        &self,
        destination: &str,
        message_id: &str,
        activity_id: i64,
    ) -> Result<(), StoreError> {
        records::activity_created(&self.pool, destination, message_id, activity_id).await
    }

    async fn clear_activity_intent(
        &self,
        destination: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        records::clear_activity_intent(&self.pool, destination, message_id).await
    }

    async fn activity_intents(
        &self,
        destination: &str,
        message_ids: Vec<String>,
    ) -> Result<Vec<(String, ActivityIntent)>, StoreError> {
        records::activity_intents(&self.pool, destination, message_ids).await
    }

    async fn prune_activity_intents(&self, before_ms: i64) -> Result<u64, StoreError> {
        records::prune_activity_intents(&self.pool, before_ms).await
    }

    async fn record_calls(&self, account: &str, at_ms: i64, calls: u32) -> Result<(), StoreError> {
        queries::record_calls(&self.pool, account, at_ms, calls).await
    }

    async fn reserve_calls(
        &self,
        account: &str,
        at_ms: i64,
        calls: u32,
        minute_cap: u32,
        hour_cap: u32,
    ) -> Result<bool, StoreError> {
        queries::reserve_calls(&self.pool, account, at_ms, calls, minute_cap, hour_cap).await
    }

    async fn calls_since(&self, account: &str, since_ms: i64) -> Result<u64, StoreError> {
        queries::calls_since(&self.pool, account, since_ms).await
    }

    async fn event_traces(&self, message_id: &str) -> Result<Vec<EventTrace>, StoreError> {
        queries::event_traces(&self.pool, message_id).await
    }

    async fn dead_letters(&self, filter: &DeliveryFilter) -> Result<Vec<DeadLetter>, StoreError> {
        queries::dead_letters(&self.pool, filter).await
    }

    async fn requeue_dead(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64, StoreError> {
        delivery::requeue_dead(&self.pool, filter, now_ms).await
    }

    async fn forget_shadows(
        &self,
        destination: Option<&str>,
        contact_key: Option<&str>,
    ) -> Result<u64, StoreError> {
        queries::forget_shadows(&self.pool, destination, contact_key).await
    }

    async fn contacts_matching(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<(String, String)>, StoreError> {
        queries::contacts_matching(&self.pool, filter).await
    }

    async fn finished_deliveries(
        &self,
        filter: &DeliveryFilter,
        after_id: DeliveryId,
        limit: usize,
    ) -> Result<Vec<FinishedDelivery>, StoreError> {
        queries::finished_deliveries(&self.pool, filter, after_id, limit).await
    }

    async fn reopen(
        &self,
        delivery_ids: Vec<DeliveryId>,
        cause: Reopen,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        delivery::reopen(&self.pool, &delivery_ids, cause, now_ms).await
    }

    async fn events_without_delivery(
        &self,
        destination: &str,
        since_ms: i64,
        until_ms: i64,
        after_id: EventId,
        limit: usize,
    ) -> Result<Vec<UnroutedEvent>, StoreError> {
        queries::events_without_delivery(
            &self.pool,
            destination,
            since_ms,
            until_ms,
            after_id,
            limit,
        )
        .await
    }

    async fn add_deliveries(
        &self,
        deliveries: Vec<LateDelivery>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        delivery::add_deliveries(&self.pool, &deliveries, now_ms).await
    }

    async fn rejected(&self, limit: usize) -> Result<Vec<RejectedRecord>, StoreError> {
        queries::rejected(&self.pool, limit).await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        queries::stats(&self.pool).await
    }

    async fn depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        queries::depths(&self.pool).await
    }

    async fn kind_counts(&self) -> Result<Vec<KindCount>, StoreError> {
        queries::kind_counts(&self.pool).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
        queries::list_events(&self.pool, query).await
    }

    async fn delivery_messages(
        &self,
        delivery_ids: &[DeliveryId],
    ) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        queries::delivery_messages(&self.pool, delivery_ids).await
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        queries::backlog(&self.pool).await
    }

    async fn events_per_minute(&self, since_ms: i64) -> Result<Vec<MinuteCount>, StoreError> {
        queries::events_per_minute(&self.pool, since_ms).await
    }

    async fn calls_per_minute(
        &self,
        account: &str,
        since_ms: i64,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        queries::calls_per_minute(&self.pool, account, since_ms).await
    }

    async fn set_pause(
        &self,
        destination: &str,
        pause: Option<DestinationPause>,
    ) -> Result<(), StoreError> {
        queries::set_pause(&self.pool, destination, pause).await
    }

    async fn pauses(&self) -> Result<Vec<DestinationPause>, StoreError> {
        queries::pauses(&self.pool).await
    }

    async fn clear_expired_pauses(&self, now_ms: i64) -> Result<u64, StoreError> {
        queries::clear_expired_pauses(&self.pool, now_ms).await
    }

    async fn prune(
        &self,
        events_before_ms: i64,
        dedup_before_ms: i64,
    ) -> Result<PruneOutcome, StoreError> {
        queries::prune(&self.pool, events_before_ms, dedup_before_ms).await
    }

    async fn prune_rejected(&self, before_ms: i64, max_bytes: u64) -> Result<u64, StoreError> {
        bounded::prune_rejected(&self.pool, before_ms, max_bytes).await
    }

    async fn record_unmapped_traits(&self, traits: Vec<UnmappedTrait>) -> Result<(), StoreError> {
        bounded::record_unmapped(&self.pool, &traits).await
    }

    async fn unmapped_traits(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<UnmappedTrait>, StoreError> {
        bounded::unmapped_traits(&self.pool, destination, limit).await
    }

    async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        schema::integrity_check(&self.pool).await
    }

    async fn close(&self) {
        // Waits for checked-out connections to come back (in-flight operations finish and commit),
        // then every later operation gets `PoolClosed`, i.e. `StoreError::Closed`.
        if !self.pool.is_closed() {
            self.pool.close().await;
            tracing::info!("closed PostgreSQL store");
        }
    }
}
