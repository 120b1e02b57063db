//! The dispatcher of one destination: leases due contact keys and runs each on its own task,
//! at most `concurrency` at once. Different contacts proceed in parallel; one contact's events
//! are only ever handled by the task holding its lease (per-contact FIFO). A backlog goes out
//! as bulk jobs, at most `bulk_jobs` of them at once, each on one of the permits.

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
    // A job holds its contacts' plans and settles until Freshworks has processed it (seconds):
    // jobs on every permit made draining an hour of backlog cost ~15 MiB more for a minute.
    let bulk_slots = Arc::new(Semaphore::new(worker.bulk_jobs.max(1)));
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
        // With the bulk path on, what is leased may become a job: take its slot first. While
        // every slot is busy the backlog waits for a job to end (it would be leased only to
        // be given back, or sent a call per contact, which a backlog cannot afford).
        let bulk_slot = if bulk {
            Arc::clone(&bulk_slots).try_acquire_owned().ok()
        } else {
            None
        };
        if free == 0 || (bulk && bulk_slot.is_none()) {
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
                let _slot = bulk_slot;
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
