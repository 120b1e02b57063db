//! The one Freshworks call path (the "service" of a Vector sink): every call any sink makes goes
//! through [`DestinationWorker::call`], which takes its quota, times it, counts it in the
//! metrics, reads the rate-limit headers, classifies the answer into an [`Outcome`] and keeps
//! what is needed for the attempt record. What the account's rate limit says is decided here
//! once, from the classified outcome, for every endpoint.

use std::future::Future;
use std::time::{Duration, Instant};

use freshgate_core::delivery::{self, Outcome};
use freshgate_store::Attempt;
use freshworks_client::{Exchange, FreshworksError};

use super::DestinationWorker;
use crate::pipeline::now_ms;
use crate::telemetry::events;

/// Response bodies kept in traces are cut to this many bytes.
const MAX_KEPT_BODY: usize = 4096;

/// Which Freshworks endpoint a call is: its metric label and its classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /contacts/upsert`.
    ContactsUpsert,
    /// `GET /lookup` (contacts by a field).
    Lookup,
    /// `POST /contacts/bulk_upsert`.
    ContactsBulkUpsert,
    /// `GET` of a bulk job's status.
    JobStatus,
    /// `GET /settings/contacts/fields`.
    Fields,
    /// `POST /sales_accounts/upsert`.
    AccountsUpsert,
    /// `GET /settings/sales_accounts/fields`.
    AccountFields,
    /// `GET /lists` (one page).
    Lists,
    /// `POST /lists`.
    CreateList,
    /// `PUT /lists/{id}/add_contacts` or `remove_contacts`.
    ListMembership,
    /// `POST /sales_activities`.
    SalesActivities,
    /// `GET /selector/...` (activity types, lifecycle stages, owners).
    Selector,
}

impl Endpoint {
    /// The `endpoint` label of `freshgate_freshworks_calls_total`.
    #[must_use]
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::ContactsUpsert => "contacts_upsert",
            Self::Lookup => "lookup",
            Self::ContactsBulkUpsert => "contacts_bulk_upsert",
            Self::JobStatus => "job_status",
            Self::Fields => "fields",
            Self::AccountsUpsert => "sales_accounts_upsert",
            Self::AccountFields => "account_fields",
            Self::Lists => "lists",
            Self::CreateList => "create_list",
            Self::ListMembership => "list_membership",
            Self::SalesActivities => "sales_activities",
            Self::Selector => "selector",
        }
    }

    /// The answer's meaning (`bulk_upsert` has its own status table).
    fn classify(self, error: &FreshworksError) -> Outcome {
        match (self, error) {
            (
                Self::ContactsBulkUpsert,
                FreshworksError::Http {
                    status,
                    retry_after,
                    body,
                    ..
                },
            ) => delivery::classify_bulk_at(
                *status,
                retry_after.as_deref(),
                body.as_bytes(),
                time::OffsetDateTime::now_utc(),
            ),
            _ => outcome_of(error),
        }
    }
}

/// How a call pays for its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Take this many calls from the budget first (more than 1: calls that must follow this
    /// one at once, like a bulk job's first poll, are paid for with it).
    Take(u32),
    /// Already paid for by an earlier call.
    Prepaid,
}

/// The quota is spent until this time (Unix ms of the pipeline clock): no call was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWait(pub i64);

/// A call that was made: its result, what it means, and when it was answered.
#[derive(Debug)]
pub struct Called<T> {
    /// The parsed answer, or the error carrying request and response.
    pub result: Result<Exchange<T>, FreshworksError>,
    /// The answer classified (`Success` for any readable 2xx; an unreadable 2xx also counts
    /// as `Success`: the write most likely happened).
    pub outcome: Outcome,
    /// When the answer (or the failure) arrived, Unix ms.
    pub at_ms: i64,
}

impl<T> Called<T> {
    /// The HTTP status, if any answer arrived.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.result
            .as_ref()
            .map_or_else(FreshworksError::status, |x| Some(x.status))
    }

    /// The attempt record of this call for `delivery_ids`, with no outcome words yet.
    #[must_use]
    pub fn attempt(&self, delivery_ids: &[i64]) -> Attempt {
        let (request_line, request_body, response) = match &self.result {
            Ok(x) => (
                x.request_line.clone(),
                x.request_body.clone(),
                truncate(&x.raw),
            ),
            Err(e) => (
                e.request_line().to_owned(),
                e.request_body().map(str::to_owned),
                truncate(e.response_body().unwrap_or(&e.to_string())),
            ),
        };
        Attempt {
            delivery_ids: delivery_ids.to_vec(),
            at_ms: self.at_ms,
            request_line,
            request_body,
            status: self.status(),
            response_body: Some(response),
            outcome: String::new(),
        }
    }
}

impl DestinationWorker {
    /// Make one Freshworks call: take its quota (`Err` when the budget is spent, nothing sent),
    /// send it, time and count it, read the rate-limit headers, classify the answer, and tell
    /// the budget when the account's rate limit refused it.
    ///
    /// # Errors
    /// [`QuotaWait`] when the quota frees up only later.
    pub async fn call<T, Fut>(
        &self,
        endpoint: Endpoint,
        quota: Quota,
        send: impl FnOnce() -> Fut,
    ) -> Result<Called<T>, QuotaWait>
    where
        Fut: Future<Output = Result<Exchange<T>, FreshworksError>>,
    {
        if let Quota::Take(calls) = quota {
            self.budget.acquire(calls).await.map_err(QuotaWait)?;
        }
        let started = Instant::now();
        let result = send().await;
        let at_ms = now_ms();
        let called_status = result
            .as_ref()
            .map_or_else(FreshworksError::status, |x| Some(x.status));
        events::freshworks_call(
            &self.name,
            endpoint.metric_label(),
            called_status,
            started.elapsed().as_secs_f64(),
        );
        let outcome = match &result {
            Ok(exchange) => {
                if let Some(remaining) = exchange.rate_limit_remaining {
                    self.budget.observe_remaining(remaining);
                }
                Outcome::Success
            }
            Err(error) => endpoint.classify(error),
        };
        // Decided from the outcome, not the status: Freshworks also wraps a 429 in a 400.
        if matches!(outcome, Outcome::Throttled { .. }) {
            self.budget.observe_429();
        }
        Ok(Called {
            result,
            outcome,
            at_ms,
        })
    }
}

/// How a failed call is classified.
#[must_use]
pub fn outcome_of(error: &FreshworksError) -> Outcome {
    match error {
        FreshworksError::Http {
            status,
            retry_after,
            body,
            ..
        } => delivery::classify_at(
            *status,
            retry_after.as_deref(),
            body.as_bytes(),
            time::OffsetDateTime::now_utc(),
        ),
        // 2xx we could not read: the write most likely happened; do not resend blindly.
        FreshworksError::Decode { .. } => Outcome::Success,
        other => delivery::transport_error(&other.to_string()),
    }
}

/// A response body cut to what traces keep.
pub(super) fn truncate(s: &str) -> String {
    if s.len() <= MAX_KEPT_BODY {
        return s.to_owned();
    }
    let mut end = MAX_KEPT_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A duration in milliseconds, saturating.
pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
