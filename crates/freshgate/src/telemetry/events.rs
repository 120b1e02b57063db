//! Every metric name freshgate emits, with its description, in one place (Vector's
//! `internal_events` idea): code records through these functions, never through string literals.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// HTTP requests by route and status.
pub const HTTP_REQUESTS: &str = "freshgate_http_requests_total";
/// Events accepted (stored) by source.
pub const EVENTS_ACCEPTED: &str = "freshgate_events_accepted_total";
/// Events rejected by source and reason code.
pub const EVENTS_REJECTED: &str = "freshgate_events_rejected_total";
/// Webhook requests refused as unauthenticated, by (configured) source and code; never stored.
pub const WEBHOOK_REFUSED: &str = "freshgate_webhook_refused_total";
/// Rejected inputs removed from the store by age or by the size bound.
pub const REJECTED_PRUNED: &str = "freshgate_rejected_pruned_total";
/// Duplicate events acknowledged but not stored, by source.
pub const EVENTS_DEDUPLICATED: &str = "freshgate_events_deduplicated_total";
/// Request body bytes received (after decompression), by source.
pub const INGEST_BYTES: &str = "freshgate_ingest_bytes_total";
/// Events per store commit.
pub const COMMIT_BATCH_EVENTS: &str = "freshgate_store_commit_events";
/// Seconds from request parsed to commit acknowledged.
pub const COMMIT_SECONDS: &str = "freshgate_store_commit_seconds";
/// Pending deliveries per destination.
pub const QUEUE_DEPTH: &str = "freshgate_queue_pending";
/// Dead letters per destination.
pub const QUEUE_DEAD: &str = "freshgate_queue_dead";
/// Connections closed at once because `server.max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "freshgate_http_connections_refused_total";
/// Requests refused because the store writer was saturated.
pub const INGEST_SATURATED: &str = "freshgate_ingest_saturated_total";
/// Requests refused with 503 because the store could not write (disk full, database down).
pub const STORAGE_UNAVAILABLE: &str = "freshgate_ingest_storage_unavailable_total";
/// Freshworks API calls by destination, endpoint and status.
pub const FRESHWORKS_CALLS: &str = "freshgate_freshworks_calls_total";
/// Freshworks call latency.
pub const FRESHWORKS_SECONDS: &str = "freshgate_freshworks_call_seconds";
/// Deliveries settled, by destination and outcome.
pub const DELIVERIES: &str = "freshgate_deliveries_total";
/// Traits that matched no contact field, by destination (the keys are in the store: a label per
/// client-sent key would let any client grow this endpoint without limit).
pub const UNMAPPED_TRAITS: &str = "freshgate_unmapped_traits_total";
/// Field values dropped because they could not be coerced, by destination and field.
pub const COERCION_FAILURES: &str = "freshgate_coercion_failures_total";
/// 1 while a destination is paused by an authentication failure.
pub const DESTINATION_PAUSED: &str = "freshgate_destination_paused";
/// Quota calls left in the current hour / minute, by destination.
pub const BUDGET_REMAINING: &str = "freshgate_budget_remaining";

/// Register descriptions (shown as `# HELP` lines).
pub fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status");
    describe_counter!(EVENTS_ACCEPTED, "Events accepted and stored");
    describe_counter!(
        EVENTS_REJECTED,
        "Events rejected, kept in the rejected table"
    );
    describe_counter!(
        WEBHOOK_REFUSED,
        "Webhook requests refused as unauthenticated (counted and logged, never stored)"
    );
    describe_counter!(
        REJECTED_PRUNED,
        "Rejected inputs removed by retention_hours or rejected_max_bytes, oldest first"
    );
    describe_counter!(
        EVENTS_DEDUPLICATED,
        "Duplicate messageIds acknowledged, not stored"
    );
    describe_counter!(INGEST_BYTES, "Decompressed request bytes received");
    describe_histogram!(COMMIT_BATCH_EVENTS, "Events per ingest request commit");
    describe_histogram!(
        freshgate_store::metric::GROUP_COMMIT_EVENTS,
        "Events (rows) per store group commit: several requests share one fsync"
    );
    describe_histogram!(
        freshgate_store::metric::GROUP_COMMIT_SECONDS,
        "Seconds per store group commit, fsync included"
    );
    describe_histogram!(
        freshgate_store::metric::CHECKPOINT_PAUSE_SECONDS,
        "Seconds the SQLite checkpointer held the writer so that the WAL could restart"
    );
    describe_counter!(
        freshgate_store::metric::DEDUP_LOOKUPS,
        "messageId dedup lookups of the SQLite writer, one per event not repeated within its batch"
    );
    describe_counter!(
        freshgate_store::metric::DEDUP_FILTER_HITS,
        "Day filters of the SQLite dedup index that answered maybe (duplicates and false positives)"
    );
    describe_counter!(
        freshgate_store::metric::DEDUP_RUN_PROBES,
        "Runs of the SQLite messageId index probed by dedup lookups"
    );
    describe_gauge!(
        freshgate_store::metric::INDEX_TAIL_EVENTS,
        "Events whose messageId and contact index entries the SQLite writer holds in memory, not yet written as runs"
    );
    describe_counter!(
        freshgate_store::metric::APPEND_UPSERTS,
        "PostgreSQL appends run again as an upsert because a messageId of theirs was already stored"
    );
    describe_histogram!(COMMIT_SECONDS, "Seconds waiting for the durable commit");
    describe_gauge!(QUEUE_DEPTH, "Pending deliveries");
    describe_gauge!(QUEUE_DEAD, "Dead letters");
    describe_counter!(
        INGEST_SATURATED,
        "Requests refused with 503: writer saturated"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused: server.max_connections were open"
    );
    describe_counter!(
        STORAGE_UNAVAILABLE,
        "Requests refused with 503: the store could not write"
    );
    describe_counter!(FRESHWORKS_CALLS, "Freshworks API calls");
    describe_histogram!(FRESHWORKS_SECONDS, "Freshworks API call latency");
    describe_counter!(DELIVERIES, "Deliveries settled by outcome");
    describe_counter!(UNMAPPED_TRAITS, "Traits matching no Freshworks field");
    describe_counter!(COERCION_FAILURES, "Trait values that could not be coerced");
    describe_gauge!(DESTINATION_PAUSED, "1 while paused by 401/403");
    describe_gauge!(BUDGET_REMAINING, "Quota calls left in the window");
}

/// One HTTP request answered.
pub fn http_request(route: &str, status: u16) {
    counter!(HTTP_REQUESTS, "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
}

/// The outcome of one ingest request.
pub fn ingest(source: &str, accepted: usize, duplicates: usize, bytes: usize) {
    counter!(EVENTS_ACCEPTED, "source" => source.to_owned()).increment(accepted as u64);
    counter!(EVENTS_DEDUPLICATED, "source" => source.to_owned()).increment(duplicates as u64);
    counter!(INGEST_BYTES, "source" => source.to_owned()).increment(bytes as u64);
}

/// One rejected event or request.
pub fn rejected(source: &str, code: &str) {
    counter!(EVENTS_REJECTED, "source" => source.to_owned(), "code" => code.to_owned())
        .increment(1);
}

/// A webhook request refused as unauthenticated. `source` is a configured source's name.
pub fn webhook_refused(source: &str, code: &'static str) {
    counter!(WEBHOOK_REFUSED, "source" => source.to_owned(), "code" => code).increment(1);
}

/// Rejected inputs pruned.
pub fn rejected_pruned(n: u64) {
    counter!(REJECTED_PRUNED).increment(n);
}

/// One store commit of an ingest request.
pub fn commit(events: usize, seconds: f64) {
    histogram!(COMMIT_BATCH_EVENTS).record(events as f64);
    histogram!(COMMIT_SECONDS).record(seconds);
}

/// A request refused with 503.
pub fn saturated() {
    counter!(INGEST_SATURATED).increment(1);
}

/// A connection refused over the cap.
pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// A request refused with 503 because the store could not write.
pub fn storage_unavailable() {
    counter!(STORAGE_UNAVAILABLE).increment(1);
}

/// Queue figures of a destination.
pub fn queue(destination: &str, pending: u64, dead: u64) {
    gauge!(QUEUE_DEPTH, "destination" => destination.to_owned()).set(pending as f64);
    gauge!(QUEUE_DEAD, "destination" => destination.to_owned()).set(dead as f64);
}

/// One Freshworks call.
pub fn freshworks_call(destination: &str, endpoint: &str, status: Option<u16>, seconds: f64) {
    let status = status.map_or_else(|| "transport_error".to_owned(), |s| s.to_string());
    counter!(FRESHWORKS_CALLS, "destination" => destination.to_owned(), "endpoint" => endpoint.to_owned(), "status" => status)
        .increment(1);
    histogram!(FRESHWORKS_SECONDS, "destination" => destination.to_owned()).record(seconds);
}

/// Deliveries settled with an outcome (`delivered`, `unchanged`, `retry`, `dead`, `rejected`…).
pub fn deliveries(destination: &str, outcome: &str, n: usize) {
    counter!(DELIVERIES, "destination" => destination.to_owned(), "outcome" => outcome.to_owned())
        .increment(n as u64);
}

/// Traits that matched no field in one mapping.
pub fn unmapped_traits(destination: &str, n: usize) {
    if n > 0 {
        counter!(UNMAPPED_TRAITS, "destination" => destination.to_owned()).increment(n as u64);
    }
}

/// A value that could not be coerced.
pub fn coercion_failure(destination: &str, field: &str) {
    counter!(COERCION_FAILURES, "destination" => destination.to_owned(), "field" => field.to_owned())
        .increment(1);
}

/// A destination paused (true) or resumed (false).
pub fn paused(destination: &str, paused: bool) {
    gauge!(DESTINATION_PAUSED, "destination" => destination.to_owned()).set(if paused {
        1.0
    } else {
        0.0
    });
}

/// Budget left.
pub fn budget(destination: &str, hour: u64, minute: u64) {
    gauge!(BUDGET_REMAINING, "destination" => destination.to_owned(), "window" => "hour")
        .set(hour as f64);
    gauge!(BUDGET_REMAINING, "destination" => destination.to_owned(), "window" => "minute")
        .set(minute as f64);
}
