//! The dispatcher of one destination: leases due contact keys and runs each on its own task,
//! at most `concurrency` at once. Different contacts proceed in parallel; one contact's events
//! are only ever handled by the task holding its lease (per-contact FIFO).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::deliver::DestinationWorker;
use super::deliver::bulk;
use super::{clock, now_ms};

/// How long a lease lasts (real time); a worker gives the key back well before (see `deliver`).
pub const LEASE: Duration = Duration::from_secs(60);
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
            let wait = (until - now).min(clock::clock_ms(Duration::from_secs(5)));
            tokio::select! {
                () = stop.cancelled() => break,
                () = clock::sleep_clock_ms(wait) => continue,
            }
        }
        let bulk = worker.force_bulk || worker.bulk_min_contacts > 0;
        // Quota spent: wait for the budget rather than lease contacts only to give them back.
        // (Contacts deferred for quota carry no stored time; this wait is recomputed from the
        // budget, so a restart with a higher limit resumes at once.)
        if let Some(until) = worker.budget.blocked_until(if bulk { 2 } else { 1 }) {
            let wait = (until - now).clamp(1, clock::clock_ms(Duration::from_secs(5)));
            tokio::select! {
                () = stop.cancelled() => break,
                () = clock::sleep_clock_ms(wait) => continue,
            }
        }
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tasks.join_next() => continue,
            }
        }
        let max = if bulk { bulk::MAX_BULK.max(free) } else { free };
        let mut leases = match worker
            .store
            .lease_contacts(&worker.name, &node_id, now, clock::clock_ms(LEASE), max)
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
        if bulk && (worker.force_bulk || leases.len() >= worker.bulk_min_contacts.max(1)) {
            // A backlog: one bulk job for up to 100 contacts, on one permit.
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let worker = Arc::clone(&worker);
            let stop = stop.clone();
            tasks.spawn(async move {
                let _permit = permit;
                bulk::run(&worker, leases, &stop).await;
            });
            continue;
        }
        // Few contacts ready: one call each; give back what the permits cannot take now.
        for extra in leases.split_off(free.min(leases.len())) {
            worker.give_back(&extra, None).await;
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
