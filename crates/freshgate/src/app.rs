//! Assembling the running gateway: store, HTTP server, one dispatcher per destination, and
//! housekeeping (pruning, queue gauges). [`App::run`] takes an already-bound listener and a
//! shutdown future, so tests start it on `127.0.0.1:0` (mini-redis style).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use freshgate_core::budget::BudgetConfig;
use freshgate_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminAuth, AdminState, Views};
use crate::config::Resolved;
use crate::http::{self, HttpState};
use crate::pipeline::budget::BudgetGate;
use crate::pipeline::deliver::DestinationWorker;
use crate::pipeline::ingest::Ingestor;
use crate::pipeline::unmapped::{self, UnmappedTally};
use crate::pipeline::{dispatcher, now_ms};
use crate::telemetry::events;

/// Knobs that are not user configuration (tests shorten them).
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Identifies this process in leases.
    pub node_id: String,
    /// How long a 401/403 pause lasts before the next probe.
    pub pause_probe: Duration,
    /// How often housekeeping runs.
    pub housekeeping_every: Duration,
    /// Send every identify through `bulk_upsert` (`freshgate backfill`).
    pub force_bulk: bool,
    /// Speed-up of the pipeline's clock (tests and benchmarks with the emulator's time scale).
    pub time_scale: f64,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            node_id: format!("node-{}", uuid::Uuid::new_v4()),
            pause_probe: Duration::from_secs(60),
            housekeeping_every: Duration::from_secs(10),
            force_bulk: false,
            time_scale: 1.0,
        }
    }
}

/// A built gateway, ready to run.
pub struct App {
    config: Arc<Resolved>,
    store: Arc<dyn Store>,
    workers: Vec<(Arc<DestinationWorker>, usize)>,
    options: AppOptions,
    wake: Arc<Notify>,
    /// Unmapped trait keys noted by every worker, written to the store by a flusher.
    unmapped: Arc<UnmappedTally>,
    admin: Option<(TcpListener, AdminAuth)>,
}

impl App {
    /// Build the gateway over an opened store.
    ///
    /// # Errors
    /// When a destination's client cannot be built or the quota ledger cannot be read.
    pub async fn build(
        config: Resolved,
        store: Arc<dyn Store>,
        options: AppOptions,
    ) -> anyhow::Result<Self> {
        // Install the metrics recorder before anything records.
        let _ = crate::telemetry::prometheus();
        if options.time_scale > 1.0 {
            crate::pipeline::clock::set_scale(options.time_scale);
        }
        let mut workers = Vec::new();
        let unmapped = Arc::new(UnmappedTally::default());
        clear_stale_pauses(store.as_ref(), options.pause_probe).await?;
        let pauses = store.pauses().await?;
        let mut gates: Vec<(String, Arc<BudgetGate>)> = Vec::new();
        for d in &config.destinations {
            // One budget per account: destinations on the same base URL share it.
            let account = d.base_url.clone();
            let gate = match gates.iter().find(|(a, _)| *a == account) {
                Some((_, g)) => Arc::clone(g),
                None => {
                    let g = Arc::new(
                        BudgetGate::restore(
                            account.clone(),
                            d.config.name.clone(),
                            BudgetConfig {
                                hourly_limit: d.config.effective_hourly_limit(),
                                minute_limit: d.config.minute_limit,
                                headroom: d.config.headroom,
                            },
                            Arc::clone(&store),
                            config.config.store.kind == crate::config::StoreKind::Postgres,
                        )
                        .await?,
                    );
                    gates.push((account, Arc::clone(&g)));
                    g
                }
            };
            let mut worker =
                DestinationWorker::new(d, Arc::clone(&store), gate, options.pause_probe)?;
            // A current pause may be another node's (several nodes share a PostgreSQL store):
            // it stays recorded. This node takes it as its own with the probe due now, so the
            // first delivery probes the key: success clears the record (as it would for the node
            // that set it), a refusal renews it. Pauses nobody renewed were cleared above.
            if pauses.iter().any(|p| p.destination == d.config.name) {
                *worker
                    .paused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now_ms());
            }
            worker.force_bulk = options.force_bulk;
            worker.unmapped = Arc::clone(&unmapped);
            workers.push((Arc::new(worker), d.config.concurrency));
        }
        Ok(Self {
            config: Arc::new(config),
            store,
            workers,
            options,
            wake: Arc::new(Notify::new()),
            unmapped,
            admin: None,
        })
    }

    /// Also serve the web console and admin API on `listener` (see [`crate::admin`]).
    #[must_use]
    pub fn with_admin(mut self, listener: TcpListener, auth: AdminAuth) -> Self {
        self.admin = Some((listener, auth));
        self
    }

    /// Serve on `listener` until `shutdown` resolves, then drain: stop taking requests, let
    /// in-flight commits finish, let in-flight deliveries settle, close the store.
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let ready = Arc::new(AtomicBool::new(false));
        let ingestor = Arc::new(Ingestor::new(
            Arc::clone(&self.store),
            Arc::clone(&self.config),
            Arc::clone(&self.wake),
        ));
        let state = HttpState {
            ingestor,
            max_request_bytes: self.config.config.server.max_request_bytes,
            body_read_timeout: Duration::from_secs(
                self.config.config.server.body_read_timeout_secs,
            ),
            ready: Arc::clone(&ready),
            metrics_token: self.config.metrics_token.clone(),
            warning: crate::pipeline::ingest::no_destination_warning(
                self.config.destinations.len(),
            ),
        };
        let stop = CancellationToken::new();
        let mut background = tokio::task::JoinSet::new();
        self.spawn_dispatchers(&mut background, &stop);
        background.spawn(housekeeping(
            Arc::clone(&self.store),
            Arc::clone(&self.config),
            self.options.housekeeping_every,
            self.options.pause_probe,
            stop.clone(),
        ));

        let admin = self.admin.take().map(|(admin_listener, auth)| {
            let state = AdminState {
                views: Views::new(
                    Arc::clone(&self.store),
                    Arc::new(self.config.config.clone()),
                    self.config.destinations.clone(),
                ),
                auth,
                wake: Arc::clone(&self.wake),
            };
            tokio::spawn(crate::admin::serve(
                admin_listener,
                state,
                stop.clone().cancelled_owned(),
            ))
        });
        let http_stop = stop.clone();
        let ready_flag = Arc::clone(&ready);
        let limits = http::server::ConnectionLimits {
            header_read_timeout: Duration::from_secs(
                self.config.config.server.header_read_timeout_secs,
            ),
            max_connections: self.config.config.server.max_connections,
        };
        let server = http::server::serve(listener, http::router(state), limits, async move {
            shutdown.await;
            ready_flag.store(false, Ordering::Release);
            tracing::info!("shutting down: draining requests and deliveries");
            http_stop.cancel();
        });
        ready.store(true, Ordering::Release);
        let served = server.await;
        stop.cancel();
        if let Some(admin) = admin {
            match admin.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "admin listener failed"),
                Err(e) => tracing::warn!(error = %e, "admin listener task failed"),
            }
        }
        while background.join_next().await.is_some() {}
        self.store.close().await;
        tracing::info!("stopped");
        served.map_err(anyhow::Error::from)
    }
}

impl App {
    /// One dispatcher per destination, until `stop`.
    fn spawn_dispatchers(&self, set: &mut tokio::task::JoinSet<()>, stop: &CancellationToken) {
        set.spawn(unmapped::flush_until(
            Arc::clone(&self.store),
            Arc::clone(&self.unmapped),
            UNMAPPED_FLUSH_EVERY,
            stop.clone(),
        ));
        for (worker, _) in &self.workers {
            if worker.kinds.audience_lists {
                set.spawn(crate::pipeline::deliver::lists::run_flusher(
                    Arc::clone(worker),
                    self.options.node_id.clone(),
                    stop.clone(),
                ));
            }
        }
        for (worker, concurrency) in &self.workers {
            set.spawn(dispatcher::run(
                Arc::clone(worker),
                self.options.node_id.clone(),
                *concurrency,
                Arc::clone(&self.wake),
                stop.clone(),
            ));
        }
    }

    /// Deliver what the store holds, without serving HTTP, until nothing is pending (or
    /// `give_up` passes); `progress` sees the figures twice a second. For `freshgate backfill`.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn deliver_until_drained(
        self,
        give_up: Duration,
        mut progress: impl FnMut(&freshgate_store::QueueStats),
    ) -> anyhow::Result<freshgate_store::QueueStats> {
        let stop = CancellationToken::new();
        let mut background = tokio::task::JoinSet::new();
        self.spawn_dispatchers(&mut background, &stop);
        let started = std::time::Instant::now();
        let stats = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stats = self.store.stats().await?;
            progress(&stats);
            let pending: u64 = stats.destinations.iter().map(|d| d.pending).sum();
            if pending == 0 || started.elapsed() > give_up {
                break stats;
            }
        };
        stop.cancel();
        while background.join_next().await.is_some() {}
        self.store.close().await;
        Ok(stats)
    }
}

/// How often unmapped trait keys noted by the workers are written to the store.
const UNMAPPED_FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Forget the recorded pauses whose probe is overdue by a whole probe interval: the node that
/// set each one would have renewed it by then, had its probe failed again (it stopped, or its
/// probe succeeded while another node's record was in the way). A pause is otherwise cleared
/// only by a successful probe (`DestinationWorker::resume`), never because a node started.
async fn clear_stale_pauses(
    store: &dyn Store,
    pause_probe: Duration,
) -> Result<u64, freshgate_store::StoreError> {
    let n = store
        .clear_expired_pauses(now_ms() - crate::pipeline::clock::clock_ms(pause_probe))
        .await?;
    if n > 0 {
        tracing::info!(pauses = n, "forgot destination pauses nobody renewed");
    }
    Ok(n)
}

/// Prune old events, forget stale pauses and publish queue gauges, until stopped.
async fn housekeeping(
    store: Arc<dyn Store>,
    config: Arc<Resolved>,
    every: Duration,
    pause_probe: Duration,
    stop: CancellationToken,
) {
    let retention_ms = i64::try_from(config.config.server.retention_hours)
        .unwrap_or(72)
        .saturating_mul(3_600_000);
    let dedup_ms = i64::try_from(config.config.server.dedup_window_hours)
        .unwrap_or(168)
        .saturating_mul(3_600_000);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        // Not `stats()`: that counts every event and delivery, and this runs every few seconds.
        if let Ok(depths) = store.depths().await {
            let published: Vec<&str> = depths.iter().map(|d| d.destination.as_str()).collect();
            for d in &depths {
                events::queue(&d.destination, d.pending, d.dead);
            }
            // A destination whose queue emptied is left out of `depths`: its gauges go to 0.
            for d in &config.destinations {
                if !published.contains(&d.config.name.as_str()) {
                    events::queue(&d.config.name, 0, 0);
                }
            }
        }
        if let Err(e) = clear_stale_pauses(store.as_ref(), pause_probe).await {
            tracing::warn!(error = %e, "clearing stale pauses failed");
        }
        // Rejected inputs are bounded in bytes: checked every tick, so one burst of invalid
        // input cannot outgrow the bound for long.
        let max_bytes = config.config.server.rejected_max_bytes;
        match store
            .prune_rejected(now_ms() - retention_ms, max_bytes)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                events::rejected_pruned(n);
                tracing::info!(rejected = n, "pruned rejected inputs");
            }
            Err(e) => tracing::warn!(error = %e, "pruning rejected inputs failed"),
        }
        // Pruning is heavier: once a minute at the default interval.
        ticks += 1;
        if ticks.is_multiple_of(6) {
            let now = now_ms();
            match store.prune(now - retention_ms, now - dedup_ms).await {
                Ok(p) if p.events > 0 || p.dedup_entries > 0 => {
                    tracing::info!(events = p.events, dedup_entries = p.dedup_entries, "pruned");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "prune failed"),
            }
            // Activity intents guard against creating an activity twice for a messageId: kept
            // as long as the event or its dedup entry could bring the messageId back.
            match store
                .prune_activity_intents(now - retention_ms.max(dedup_ms))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(activity_intents = n, "pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning activity intents failed"),
            }
        }
    }
}
