//! The dispatcher of one destination: leases due contact keys and runs each on its own task,
//! at most `concurrency` at once. Different contacts proceed in parallel; one contact's events
//! are only ever handled by the task holding its lease (per-contact FIFO).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::deliver::DestinationWorker;
use super::now_ms;

/// How long a lease lasts; a worker gives the key back well before (see `deliver`).
pub const LEASE_MS: i64 = 60_000;
/// Fallback poll when no wake-up arrives.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Run until `stop` is cancelled, then let in-flight contacts finish and release their leases.
pub async fn run(
    worker: Arc<DestinationWorker>,
    node_id: String,
    concurrency: usize,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        if stop.is_cancelled() {
            break;
        }
        let now = now_ms();
        if let Some(until) = worker.paused_until()
            && until > now
        {
            let wait = Duration::from_millis(u64::try_from(until - now).unwrap_or(0));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait.min(Duration::from_secs(5))) => continue,
            }
        }
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tasks.join_next() => continue,
            }
        }
        let leases = match worker
            .store
            .lease_contacts(&worker.name, &node_id, now, LEASE_MS, free)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(destination = worker.name, error = %e, "cannot lease contacts");
                Vec::new()
            }
        };
        if leases.is_empty() {
            let notified = wake.notified();
            tokio::select! {
                () = stop.cancelled() => break,
                () = notified => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
                _ = tasks.join_next(), if !tasks.is_empty() => {}
            }
            continue;
        }
        for lease in leases {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let worker = Arc::clone(&worker);
            let stop = stop.clone();
            tasks.spawn(async move {
                let _permit = permit;
                worker.run_lease(&lease, &stop).await
            });
        }
    }
    // Drain: in-flight contacts stop after their current call and release their leases.
    while tasks.join_next().await.is_some() {}
}
