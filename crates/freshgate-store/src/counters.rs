//! The SQL both backends run against the delivery and event counters (`delivery_counts`,
//! `event_counts`: migrations sqlite/0012 and postgres/12), and the recounts `doctor` compares
//! them with. One text for both: PostgreSQL keeps a row per connection shard and SQLite one row
//! per key, and summing a key's rows is right for either. `$1`, `$2` are positional in both.

/// `(destination, event_type, status, count)` for every non-zero counter.
pub(crate) const KIND_COUNTS: &str = "SELECT destination, event_type, status,
        CAST(sum(count) AS BIGINT) FROM delivery_counts
     GROUP BY destination, event_type, status HAVING sum(count) <> 0
     ORDER BY destination, event_type, status";

/// `(destination, status, count)`: the outcomes `queue stats` shows.
pub(crate) const STATUS_COUNTS: &str = "SELECT destination, status, CAST(sum(count) AS BIGINT)
     FROM delivery_counts GROUP BY destination, status HAVING sum(count) <> 0";

/// `(destination, dead letters)`.
pub(crate) const DEAD_PER_DESTINATION: &str = "SELECT destination, CAST(sum(count) AS BIGINT)
     FROM delivery_counts WHERE status = 'dead'
     GROUP BY destination HAVING sum(count) <> 0";

/// `(destination, event_type, pending)` for every kind with pending deliveries.
pub(crate) const PENDING_KINDS: &str = "SELECT destination, event_type, CAST(sum(count) AS BIGINT)
     FROM delivery_counts WHERE status = 'pending'
     GROUP BY destination, event_type HAVING sum(count) > 0
     ORDER BY destination, event_type";

/// The receive time of the oldest pending event of destination `$1` and kind `$2`: the front
/// of that range of the pending index.
pub(crate) const OLDEST_PENDING_OF_KIND: &str =
    "SELECT e.received_at_ms FROM events e WHERE e.id = (
         SELECT min(d.event_id) FROM deliveries d
         WHERE d.destination = $1 AND d.event_type = $2 AND d.status = 'pending')";

/// Events stored.
pub(crate) const EVENTS_STORED: &str =
    "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM event_counts";

/// `(destination, contact_key, counted, actual)` for each key whose pending counter (what
/// leasing trusts) disagrees with its pending deliveries; at most 100.
pub(crate) const PENDING_DRIFT: &str = "SELECT coalesce(k.destination, d.destination),
        coalesce(k.contact_key, d.contact_key), coalesce(k.pending, 0), coalesce(d.n, 0)
     FROM (SELECT destination, contact_key, pending FROM contact_keys WHERE pending <> 0) k
     FULL JOIN (SELECT destination, contact_key, count(*) AS n FROM deliveries
                WHERE status = 'pending' GROUP BY destination, contact_key) d
       ON d.destination = k.destination AND d.contact_key = k.contact_key
     WHERE coalesce(k.pending, 0) <> coalesce(d.n, 0)
     ORDER BY 1, 2
     LIMIT 100";

/// `(destination, event_type, status, counted, actual)` for each delivery counter that
/// disagrees with a count of the deliveries; at most 100.
pub(crate) const COUNTER_DRIFT: &str = "SELECT coalesce(c.destination, d.destination),
        coalesce(c.event_type, d.event_type), coalesce(c.status, d.status),
        coalesce(c.n, 0), coalesce(d.n, 0)
     FROM (SELECT destination, event_type, status, CAST(sum(count) AS BIGINT) AS n
           FROM delivery_counts GROUP BY destination, event_type, status) c
     FULL JOIN (SELECT destination, event_type, status, count(*) AS n FROM deliveries
                GROUP BY destination, event_type, status) d
       ON d.destination = c.destination AND d.event_type = c.event_type
      AND d.status = c.status
     WHERE coalesce(c.n, 0) <> coalesce(d.n, 0)
     ORDER BY 1, 2, 3
     LIMIT 100";

/// A row of [`PENDING_DRIFT`].
pub(crate) type PendingDrift = (String, String, i64, i64);
/// A row of [`COUNTER_DRIFT`].
pub(crate) type CounterDrift = (String, String, String, i64, i64);

/// The doctor's sentences for the rows of [`PENDING_DRIFT`] and [`COUNTER_DRIFT`].
pub(crate) fn drift_problems(
    pending: Vec<PendingDrift>,
    counters: Vec<CounterDrift>,
) -> Vec<String> {
    let keys = pending
        .into_iter()
        .map(|(destination, contact_key, counted, actual)| {
            format!(
                "contact key {destination}/{contact_key} counts {counted} pending deliveries, \
                 {actual} exist"
            )
        });
    let counters =
        counters
            .into_iter()
            .map(|(destination, event_type, status, counted, actual)| {
                format!(
                    "delivery counter {destination}/{event_type}/{status} says {counted}, {actual} \
                 deliveries exist"
                )
            });
    keys.chain(counters).collect()
}
