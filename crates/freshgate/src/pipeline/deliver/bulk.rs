//! The bulk contact sink, for backlogs: up to 100 contacts per `POST /contacts/bulk_upsert`, then the
//! job is polled until it is done and each record's failure (from `detailed_failure_report`)
//! is mapped back to its contact's events.
//!
//! One call (plus usually one poll) for 100 contacts instead of 100 calls: this is how a
//! backlog several times the hourly quota drains within it. Per-contact order still holds:
//! every contact in a job is leased, and only its leading group of identifies is in the job.

use std::collections::HashMap;
use std::time::Duration;

use freshgate_core::delivery::{self, Outcome};
use freshgate_core::mapping;
use freshgate_store::{Attempt, ContactLease};
use freshworks_client::JobStatus;
use futures::future::join_all;
use futures::stream::{self, StreamExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::call::{Endpoint, Quota, truncate};
use super::worker::quota_not_before;
use super::{DestinationWorker, Prepared, Stop};
use crate::pipeline::{clock, now_ms};

/// Records per bulk call (the documented practice of every working client).
pub const MAX_BULK: usize = 100;
/// Polls of one job before its outcome counts as unknown (and its records are retried).
const MAX_POLLS: u32 = 12;

/// Contacts of one job prepared at once. Each holds up to a round of its pending events, read
/// and parsed, while it plans its upsert: a job of 100 contacts prepared all at once held up to
/// 10,000 parsed events per job. Eight at a time still share group commits.
const PREPARED_AT_ONCE: usize = 8;

/// Deliver the leased contacts through one bulk job. Every lease is settled or released.
/// Once `stop` is cancelled a job already sent is no longer polled: its records are retried.
pub async fn run(worker: &DestinationWorker, leases: Vec<ContactLease>, stop: &CancellationToken) {
    // Contacts are prepared and settled concurrently: their store writes then share group
    // commits instead of paying one fsync each.
    let outcomes: Vec<_> = stream::iter(leases.into_iter().map(|lease| async move {
        let r = worker.next_upsert(&lease).await;
        (lease, r)
    }))
    .buffered(PREPARED_AT_ONCE)
    .collect()
    .await;
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut give_back = Vec::new();
    for (lease, r) in outcomes {
        match r {
            Ok(Some(p)) => prepared.push(p),
            Ok(None) => give_back.push((lease, None)),
            Err(Stop::Later(not_before)) => give_back.push((lease, not_before)),
            Err(Stop::Store(e)) => {
                tracing::warn!(destination = worker.name, error = %e, "store error preparing a bulk job");
                give_back.push((lease, Some(now_ms() + 1000)));
            }
        }
    }
    join_all(
        give_back
            .iter()
            .map(|(lease, nb)| worker.give_back(lease, *nb)),
    )
    .await;
    if prepared.is_empty() {
        return;
    }
    let waits = deliver_prepared(worker, &prepared, stop).await;
    join_all(
        prepared
            .iter()
            .zip(waits)
            .map(|(p, not_before)| worker.give_back(&p.lease, not_before)),
    )
    .await;
}

/// What became of one record of a job.
enum Verdict {
    /// Written.
    Delivered(Attempt),
    /// Not written: classified outcome, attempt.
    Failed(Outcome, Attempt),
}

/// Settle every record's verdict concurrently; returns each contact's not-before time.
async fn settle_all(
    worker: &DestinationWorker,
    prepared: &[Prepared],
    verdicts: Vec<Verdict>,
) -> Vec<Option<i64>> {
    join_all(prepared.iter().zip(verdicts).map(|(p, v)| async move {
        wait_of(match v {
            Verdict::Delivered(attempt) => worker.contact_delivered(p, None, attempt).await,
            Verdict::Failed(outcome, attempt) => worker.contact_failed(p, outcome, attempt).await,
        })
    }))
    .await
}

/// The identifier a record is matched back by: `(key, value)` as in the bulk item.
fn identifier(item: &Value) -> Option<(String, String)> {
    ["external_id", "emails", "mobile_number", "id"]
        .iter()
        .find_map(|k| {
            item.get(*k).map(|v| {
                let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                ((*k).to_owned(), value.to_lowercase())
            })
        })
}

/// Send, poll, settle. Returns, per prepared contact, when its lease may be taken again.
async fn deliver_prepared(
    worker: &DestinationWorker,
    prepared: &[Prepared],
    stop: &CancellationToken,
) -> Vec<Option<i64>> {
    let items: Vec<Value> = prepared
        .iter()
        .map(|p| mapping::bulk_item(&p.user_id, &p.email, &p.plan, &p.identity))
        .collect();
    let body = json!({ "contacts": items });
    // The job's first poll is paid for with the POST. Once a job is sent, its status must be
    // read while the contacts' leases last: a poll that waited for the next quota window would
    // outlive them, another worker would take the contacts and send them again, and this job's
    // outcome could no longer be recorded against them.
    if let Err(stop) = worker.mark_in_doubt(prepared).await {
        return vec![wait_of(Err(stop)); prepared.len()];
    }
    let leases_end = prepared
        .iter()
        .map(|p| p.lease.until_ms)
        .min()
        .unwrap_or_else(now_ms);
    let posted = match worker
        .call(Endpoint::ContactsBulkUpsert, Quota::Take(2), || {
            worker.client.bulk_upsert_contacts(&body)
        })
        .await
    {
        Ok(called) => called,
        Err(wait) => return vec![quota_not_before(wait.0); prepared.len()],
    };
    let job_url = match posted.result {
        Ok(x) => x.body.job_status_url,
        Err(error) => {
            // A readable-less 2xx still gave no job to poll: retry the records.
            let outcome = match posted.outcome {
                Outcome::Success => Outcome::Retry {
                    after: None,
                    reason: format!("bulk upsert answer unreadable: {error}"),
                },
                o => o,
            };
            let verdicts = prepared
                .iter()
                .zip(&items)
                .map(|(p, item)| {
                    let attempt = attempt_for(
                        p,
                        item,
                        error.status(),
                        error.response_body().unwrap_or(&error.to_string()),
                    );
                    Verdict::Failed(outcome.clone(), attempt)
                })
                .collect();
            return settle_all(worker, prepared, verdicts).await;
        }
    };

    let status = poll(worker, &job_url, leases_end, stop).await;
    let mut verdicts = Vec::with_capacity(prepared.len());
    match status {
        Ok(job) if job.is_done() => {
            let failures: HashMap<(String, String), Vec<String>> = job
                .data
                .detailed_failure_report
                .iter()
                .filter_map(|f| {
                    f.identifier.as_ref().map(|id| {
                        (
                            (id.key.clone(), id.value.to_lowercase()),
                            f.error_message.clone(),
                        )
                    })
                })
                .collect();
            let summary = format!(
                "job {job_url}: {} succeeded, {} failed",
                job.data.record_status.succeeded, job.data.record_status.failed
            );
            for (p, item) in prepared.iter().zip(&items) {
                let failure = identifier(item).and_then(|id| failures.get(&id));
                match failure {
                    None => {
                        let mut attempt = attempt_for(p, item, Some(200), &summary);
                        attempt.outcome = format!("delivered by bulk upsert{}", p.summary);
                        verdicts.push(Verdict::Delivered(attempt));
                    }
                    Some(messages) => {
                        let reason = messages.join("; ");
                        let body =
                            json!({"errors": {"code": 400, "message": messages}}).to_string();
                        // The record's own error, classified as if the single upsert had
                        // answered it (a wrapped 429 is retried, "not unique" is dead-lettered).
                        let outcome = delivery::classify_at(
                            400,
                            None,
                            body.as_bytes(),
                            time::OffsetDateTime::now_utc(),
                        );
                        let attempt = attempt_for(
                            p,
                            item,
                            Some(400),
                            &format!("{summary}; this record: {reason}"),
                        );
                        verdicts.push(Verdict::Failed(outcome, attempt));
                    }
                }
            }
        }
        other => {
            // Failed job, poll error or no answer in time: the records' fate is unknown;
            // upserts are idempotent, so they are retried.
            let reason = match &other {
                Ok(job) => format!("bulk job {job_url} ended {:?}", job.status),
                Err(e) => format!("bulk job {job_url}: {e}"),
            };
            for (p, item) in prepared.iter().zip(&items) {
                let attempt = attempt_for(p, item, None, &reason);
                let outcome = Outcome::Retry {
                    after: None,
                    reason: reason.clone(),
                };
                verdicts.push(Verdict::Failed(outcome, attempt));
            }
        }
    }
    settle_all(worker, prepared, verdicts).await
}

/// Poll a job until it is done, failed, or `MAX_POLLS` polls went by. Every poll is charged to
/// the quota like any call; the first was paid for with the POST. A later poll that would have
/// to wait for quota past `leases_end` (Unix ms) is not made: the records are then retried.
/// Nor is one after `stop`: the process is shutting down, and a job Freshworks is slow to
/// process would otherwise hold the shutdown for the whole backoff (minutes).
async fn poll(
    worker: &DestinationWorker,
    job_url: &str,
    leases_end: i64,
    stop: &CancellationToken,
) -> Result<JobStatus, String> {
    // Most jobs of 100 records finish within a second or two: the first poll waits for that,
    // so a job usually costs exactly one poll.
    let mut wait = Duration::from_millis(1500);
    for n in 0..MAX_POLLS {
        tokio::select! {
            () = stop.cancelled() => {
                return Err(format!("shutting down; job {job_url} not polled again"));
            }
            () = clock::sleep_clock_ms(clock::clock_ms(wait)) => {}
        }
        let quota = if n == 0 {
            Quota::Prepaid
        } else {
            Quota::Take(1)
        };
        let called = match worker
            .call(Endpoint::JobStatus, quota, || {
                worker.client.job_status(job_url)
            })
            .await
        {
            Ok(called) => called,
            Err(wait) if wait.0 >= leases_end => {
                return Err(format!(
                    "the quota is spent until {} ms, past the contacts' leases; status not read",
                    wait.0
                ));
            }
            Err(wait) => {
                tokio::select! {
                    () = stop.cancelled() => {
                        return Err(format!("shutting down; job {job_url} not polled again"));
                    }
                    () = clock::sleep_clock_ms(wait.0 - now_ms()) => continue,
                }
            }
        };
        match called.result {
            Ok(x) if x.body.is_terminal() => return Ok(x.body),
            Ok(_) => {}
            Err(e) => tracing::warn!(destination = worker.name, error = %e, "bulk job poll failed"),
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    Err(format!("no final status after {MAX_POLLS} polls"))
}

fn attempt_for(p: &Prepared, item: &Value, status: Option<u16>, response: &str) -> Attempt {
    Attempt {
        delivery_ids: p.delivery_ids.clone(),
        at_ms: now_ms(),
        request_line: "POST /contacts/bulk_upsert".into(),
        request_body: Some(item.to_string()),
        status,
        response_body: Some(truncate(response)),
        outcome: String::new(),
    }
}

fn wait_of(r: Result<(), Stop>) -> Option<i64> {
    match r {
        Ok(()) => None,
        Err(Stop::Later(at)) => at,
        Err(Stop::Store(_)) => Some(now_ms() + 1000),
    }
}
