//! Ingest: a parsed request becomes one durable append.
//!
//! Routing happens here, once, at ingest: each accepted event gets one delivery row per
//! destination its source feeds, either pending or skipped with the reason (the destination does
//! not handle that type, or the `integrations` object opts out). The answer to the client is
//! sent only after the store committed (fsync), so an acknowledged event is never lost.

use std::sync::Arc;
use std::time::Instant;

use freshgate_core::reason::SkipReason;
use freshgate_core::routing::Route;
use freshgate_core::segment::{ItemOutcome, NormalizedEvent, ParsedRequest};
use freshgate_store::{
    AppendBatch, AppendOutcome, NewDelivery, NewEvent, RejectedInput, Store, StoreError,
};
use tokio::sync::Notify;

use crate::config::Resolved;
use crate::telemetry::events;

/// Why an ingest failed; the HTTP layer turns it into a status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The writer is saturated: 503 with `Retry-After`.
    #[error("the queue is saturated, retry shortly")]
    Saturated,
    /// The store failed: 500; nothing was acknowledged.
    #[error("could not store the events: {0}")]
    Store(StoreError),
}

/// What `serve` says at start, `/readyz` and `queue stats` show, when `destinations` is 0.
#[must_use]
pub fn no_destination_warning(destinations: usize) -> Option<&'static str> {
    (destinations == 0).then_some(NO_DESTINATION_WARNING)
}

const NO_DESTINATION_WARNING: &str = "no destination is configured: events are accepted and STORED BUT NOT DELIVERED (add [[destinations]] or FRESHWORKS_API_KEY with FRESHWORKS_DOMAIN, then `freshgate replay --since` delivers the stored events)";

/// Turns parsed requests into durable events.
pub struct Ingestor {
    store: Arc<dyn Store>,
    config: Arc<Resolved>,
    dedup_window_ms: i64,
    /// Woken after each commit so dispatchers pick new work up at once.
    wake: Arc<Notify>,
}

impl Ingestor {
    /// A new ingestor.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, config: Arc<Resolved>, wake: Arc<Notify>) -> Self {
        let hours = i64::try_from(config.config.server.dedup_window_hours).unwrap_or(i64::MAX / 2);
        Self {
            store,
            config,
            dedup_window_ms: hours.saturating_mul(3_600_000),
            wake,
        }
    }

    /// Segment's size and count limits, as configured.
    #[must_use]
    pub fn limits(&self) -> freshgate_core::segment::Limits {
        freshgate_core::segment::Limits {
            max_event_bytes: self.config.config.server.max_event_bytes,
            ..freshgate_core::segment::Limits::default()
        }
    }

    /// The resolved configuration.
    #[must_use]
    pub fn config(&self) -> &Resolved {
        &self.config
    }

    /// Store the accepted items of a request and the rejected ones (with their reasons).
    ///
    /// # Errors
    /// `Saturated` (client should retry), `Store`.
    pub async fn ingest(
        &self,
        source: &str,
        parsed: ParsedRequest,
        received_at_ms: i64,
        bytes: usize,
    ) -> Result<AppendOutcome, IngestError> {
        let mut batch = AppendBatch {
            events: Vec::with_capacity(parsed.items.len()),
            rejected: Vec::new(),
            dedup_window_ms: self.dedup_window_ms,
        };
        for item in parsed.items {
            match item {
                ItemOutcome::Accepted(event) => batch.events.push(self.new_event(source, event)),
                ItemOutcome::Rejected(rejected) => {
                    tracing::warn!(source, reason = %rejected.reason, "event in batch rejected");
                    events::rejected(source, rejected.code);
                    batch.rejected.push(RejectedInput {
                        source: Some(source.to_owned()),
                        raw: rejected.raw,
                        reason: rejected.reason,
                        received_at_ms,
                    });
                }
            }
        }
        self.append(source, batch, bytes).await
    }

    /// Keep one rejected input (a refused single event, a failed signature …).
    ///
    /// # Errors
    /// As [`Ingestor::ingest`].
    pub async fn reject(
        &self,
        source: Option<&str>,
        raw: Vec<u8>,
        reason: String,
        code: &str,
        received_at_ms: i64,
    ) -> Result<(), IngestError> {
        events::rejected(source.unwrap_or("unknown"), code);
        let batch = AppendBatch {
            events: Vec::new(),
            rejected: vec![RejectedInput {
                source: source.map(str::to_owned),
                raw,
                reason,
                received_at_ms,
            }],
            dedup_window_ms: self.dedup_window_ms,
        };
        self.append(source.unwrap_or("unknown"), batch, 0)
            .await
            .map(|_| ())
    }

    async fn append(
        &self,
        source: &str,
        batch: AppendBatch,
        bytes: usize,
    ) -> Result<AppendOutcome, IngestError> {
        let events_in = batch.events.len();
        let started = Instant::now();
        let outcome = self.store.append(batch).await.map_err(|e| match e {
            StoreError::Saturated => {
                events::saturated();
                IngestError::Saturated
            }
            other => IngestError::Store(other),
        })?;
        events::commit(events_in, started.elapsed().as_secs_f64());
        events::ingest(source, outcome.accepted, outcome.duplicates, bytes);
        if outcome.accepted > 0 {
            self.wake.notify_waiters();
        }
        Ok(outcome)
    }

    fn new_event(&self, source: &str, event: NormalizedEvent) -> NewEvent {
        let deliveries = self
            .config
            .destinations
            .iter()
            .filter(|d| d.config.takes_source(source))
            .map(|d| {
                let route = Route::decide(
                    event.event_type,
                    event.name.as_deref(),
                    event.destination_enabled(&d.config.integration_key),
                    &d.kinds,
                    || freshgate_core::segment::parse_stored_event(&event.raw).ok(),
                );
                new_delivery(&d.config.name, route.skip(&d.config.integration_key))
            })
            .collect();
        NewEvent {
            source: source.to_owned(),
            message_id: event.message_id,
            event_type: event.event_type.as_str().to_owned(),
            contact_key: event.contact_key,
            timestamp_ms: unix_ms(event.timestamp),
            received_at_ms: unix_ms(event.received_at),
            raw: event.raw,
            email: event.email,
            deliveries,
        }
    }
}

/// Unix milliseconds of a time.
#[must_use]
pub fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The initial state of an event's delivery to `destination`: pending, or skipped with the
/// reason's code and words.
pub(super) fn new_delivery(destination: &str, skip: Option<SkipReason>) -> NewDelivery {
    NewDelivery {
        destination: destination.to_owned(),
        skip_code: skip.as_ref().map(|r| r.code().to_owned()),
        skip_reason: skip.map(|r| r.detail()),
    }
}
