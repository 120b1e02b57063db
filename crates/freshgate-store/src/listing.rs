//! The event listing's query, decided once for both backends: which conditions an
//! [`EventQuery`] adds and in which order its parameters bind. Each backend supplies the SQL of
//! its messageId lookup and its placeholder style, then runs the statement.

use std::collections::BTreeMap;

use crate::{
    Backlog, DeliveryStatus, EventId, EventQuery, EventSummary, EventTrace, KindBacklog,
    MinuteCount,
};

/// One bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// The statement selecting event rows, with `?` placeholders, and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventListSql {
    /// Selects `id, source, message_id, event_type, contact_key, timestamp_ms, received_at_ms,
    /// raw`.
    pub(crate) sql: String,
    /// Values of the `?` placeholders, in order.
    pub(crate) params: Vec<Param>,
}

/// The columns every read of events selects, in this order: `id, source, message_id,
/// event_type, contact_key, timestamp_ms, received_at_ms, raw`. Each backend reads a row into
/// it once; a trace and a listing row are built from it.
pub(crate) struct EventHead {
    pub(crate) event_id: EventId,
    pub(crate) source: String,
    pub(crate) message_id: String,
    pub(crate) event_type: String,
    pub(crate) contact_key: String,
    pub(crate) timestamp_ms: i64,
    pub(crate) received_at_ms: i64,
    /// The stored bytes; shown as lossy UTF-8.
    pub(crate) raw: Vec<u8>,
}

impl EventHead {
    /// The event for `events show` and the console's trace; deliveries are added after.
    pub(crate) fn into_trace(self) -> EventTrace {
        EventTrace {
            event_id: self.event_id,
            source: self.source,
            message_id: self.message_id,
            event_type: self.event_type,
            contact_key: self.contact_key,
            timestamp_ms: self.timestamp_ms,
            received_at_ms: self.received_at_ms,
            raw: String::from_utf8_lossy(&self.raw).into_owned(),
            deliveries: Vec::new(),
        }
    }

    /// A row of the event listing; delivery states are added after.
    pub(crate) fn into_summary(self) -> EventSummary {
        EventSummary {
            event_id: self.event_id,
            source: self.source,
            message_id: self.message_id,
            event_type: self.event_type,
            contact_key: self.contact_key,
            timestamp_ms: self.timestamp_ms,
            received_at_ms: self.received_at_ms,
            raw: String::from_utf8_lossy(&self.raw).into_owned(),
            deliveries: Vec::new(),
        }
    }
}

/// Largest page a caller gets, whatever it asks for.
pub(crate) const MAX_PAGE: usize = 500;

/// The conditions whose SQL differs per backend, each with one `?`.
pub(crate) struct BackendSql {
    /// Event `e` has the parameter as its messageId (through the backend's messageId index).
    pub(crate) message_match: &'static str,
    /// The scalar function returning the smaller of two values (`min` in SQLite, `LEAST` in
    /// PostgreSQL).
    pub(crate) least: &'static str,
    /// The rest of the `FROM` clause and the condition that keep only part of the events, with
    /// one `?` bound to the scope value given to [`event_list_sql`] (SQLite's contact listing:
    /// the candidate event ids of one hour).
    pub(crate) scope: &'static str,
}

/// Build the listing statement; with `scope`, only the events the backend's scope keeps.
pub(crate) fn event_list_sql(
    query: &EventQuery,
    backend: &BackendSql,
    scope: Option<Param>,
) -> EventListSql {
    let mut sql = String::from(
        "SELECT e.id, e.source, e.message_id, e.event_type, e.contact_key, e.timestamp_ms,
                e.received_at_ms, e.raw
         FROM events e",
    );
    let mut params = Vec::new();
    match scope {
        Some(value) => {
            sql.push_str(backend.scope);
            params.push(value);
        }
        None => sql.push_str(" WHERE 1 = 1"),
    }
    let mut text = |sql: &mut String, condition: &str, value: &Option<String>| {
        if let Some(v) = value {
            sql.push_str(condition);
            params.push(Param::Text(v.clone()));
        }
    };
    text(&mut sql, " AND e.contact_key = ?", &query.contact_key);
    // The contacts the email was identified with, recorded by the append (`contact_emails`).
    text(
        &mut sql,
        " AND e.contact_key IN (SELECT c.contact_key FROM contact_emails c WHERE c.email = ?)",
        &query.email.as_deref().map(crate::email_key),
    );
    text(
        &mut sql,
        &format!(" AND {}", backend.message_match),
        &query.message_id,
    );
    text(&mut sql, " AND e.event_type = ?", &query.event_type);
    text(&mut sql, " AND e.source = ?", &query.source);
    // The state is one of four fixed words, written into the statement so that the planner
    // sees it: dead letters are few and have their own partial index, so their events are
    // looked up from it; the other states are common, so the newest events are walked and each
    // checked until the page is full.
    match query.status {
        Some(DeliveryStatus::Dead) => sql
            .push_str(" AND e.id IN (SELECT d.event_id FROM deliveries d WHERE d.status = 'dead')"),
        Some(other) => sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = '{}')",
            other.as_str()
        )),
        None => {}
    }
    if query.since_ms.is_none() && query.until_ms.is_none() {
        if let Some(before) = query.before_id {
            sql.push_str(" AND e.id < ?");
            params.push(Param::Int(before));
        }
        sql.push_str(" ORDER BY e.id DESC LIMIT ?");
    } else {
        // A time range is walked newest first on the `(received_at_ms, id)` index, and the
        // cursor (the previous page's last id) is turned into that index's key, so a page is an
        // index range of `limit` entries wherever it lies (ordering by id alone walked ids down
        // from the newest, past every event after the range). The range and the cursor make one
        // upper bound: SQLite's planner bounds an index range by one condition only.
        const CURSOR_TIME: &str = "(SELECT c.received_at_ms FROM events c WHERE c.id = ?)";
        if let Some(since) = query.since_ms {
            sql.push_str(" AND e.received_at_ms >= ?");
            params.push(Param::Int(since));
        }
        match (query.until_ms, query.before_id) {
            (Some(until), None) => {
                sql.push_str(" AND e.received_at_ms < ?");
                params.push(Param::Int(until));
            }
            (None, None) => {}
            (until, Some(before)) => {
                if let Some(until) = until {
                    sql.push_str(&format!(
                        " AND e.received_at_ms <= {}(?, {CURSOR_TIME})",
                        backend.least
                    ));
                    params.extend([Param::Int(until.saturating_sub(1)), Param::Int(before)]);
                }
                sql.push_str(&format!(
                    " AND (e.received_at_ms, e.id) < ({CURSOR_TIME}, ?)"
                ));
                params.extend([Param::Int(before), Param::Int(before)]);
            }
        }
        sql.push_str(" ORDER BY e.received_at_ms DESC, e.id DESC LIMIT ?");
    }
    params.push(Param::Int(
        i64::try_from(query.limit.clamp(1, MAX_PAGE)).unwrap_or(1),
    ));
    EventListSql { sql, params }
}

/// `(minute_ms, count)` rows (several per minute when sharded) as one count per minute,
/// oldest first.
pub(crate) fn minute_counts(rows: Vec<(i64, i64)>) -> Vec<MinuteCount> {
    let mut per: BTreeMap<i64, u64> = BTreeMap::new();
    for (minute_ms, n) in rows {
        *per.entry(minute_ms.div_euclid(60_000) * 60_000)
            .or_default() += u64::try_from(n).unwrap_or(0);
    }
    per.into_iter()
        .map(|(minute_ms, count)| MinuteCount { minute_ms, count })
        .collect()
}

/// `(destination, pending deliveries, pending contact keys, earliest next attempt)`.
pub(crate) type KeyFigures = (String, i64, i64, i64);

/// `(destination, event type, pending deliveries, receive time of the oldest pending event)`,
/// read from the delivery counters and the pending index.
pub(crate) type KindFigures = (String, String, i64, Option<i64>);

/// One backlog row per destination from the contact-key figures, the dead-letter counts and the
/// per-kind pending figures; a destination's oldest pending event is the oldest of its kinds'.
pub(crate) fn merge_backlog(
    keys: Vec<KeyFigures>,
    dead: Vec<(String, i64)>,
    kinds: Vec<KindFigures>,
) -> Vec<Backlog> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    fn entry(per: &mut BTreeMap<String, Backlog>, d: String) -> &mut Backlog {
        per.entry(d.clone()).or_insert_with(|| Backlog {
            destination: d,
            ..Backlog::default()
        })
    }
    let mut per: BTreeMap<String, Backlog> = BTreeMap::new();
    for (destination, pending, contacts, next) in keys {
        let b = entry(&mut per, destination);
        b.pending = count(pending);
        b.pending_contacts = count(contacts);
        b.next_attempt_ms = Some(next);
    }
    for (destination, n) in dead {
        entry(&mut per, destination).dead = count(n);
    }
    for (destination, oldest) in oldest_pending(&kinds) {
        entry(&mut per, destination).oldest_pending_received_ms = Some(oldest);
    }
    for (destination, event_type, pending, oldest) in kinds {
        let b = entry(&mut per, destination);
        b.kinds.push(KindBacklog {
            event_type,
            pending: count(pending),
            oldest_pending_received_ms: oldest,
        });
    }
    let mut rows: Vec<Backlog> = per.into_values().collect();
    for b in &mut rows {
        b.kinds.sort_by(|x, y| x.event_type.cmp(&y.event_type));
    }
    rows
}

/// The oldest pending event per destination: the oldest of its kinds'.
pub(crate) fn oldest_pending(kinds: &[KindFigures]) -> BTreeMap<String, i64> {
    let mut per: BTreeMap<String, i64> = BTreeMap::new();
    for (destination, _, _, oldest) in kinds {
        if let Some(at) = *oldest {
            per.entry(destination.clone())
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
    }
    per
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_BACKEND: BackendSql = BackendSql {
        message_match: "e.message_id = ?",
        least: "min",
        scope: " WHERE e.received_at_ms / 3600000 = ?",
    };

    #[test]
    fn a_time_range_pages_on_receive_time_then_id() {
        let q = EventQuery {
            since_ms: Some(1_000),
            until_ms: Some(2_000),
            before_id: Some(42),
            limit: 50,
            ..EventQuery::default()
        };
        let built = event_list_sql(&q, &TEST_BACKEND, None);
        assert_eq!(built.sql.matches('?').count(), built.params.len());
        assert!(
            built
                .sql
                .ends_with("ORDER BY e.received_at_ms DESC, e.id DESC LIMIT ?"),
            "{}",
            built.sql
        );
        assert_eq!(
            built.params,
            vec![
                Param::Int(1_000),
                Param::Int(1_999),
                Param::Int(42),
                Param::Int(42),
                Param::Int(42),
                Param::Int(50),
            ]
        );
        let no_cursor = event_list_sql(
            &EventQuery {
                before_id: None,
                ..q
            },
            &TEST_BACKEND,
            None,
        );
        assert!(no_cursor.sql.contains("AND e.received_at_ms < ?"));
        assert_eq!(no_cursor.sql.matches('?').count(), no_cursor.params.len());
    }

    #[test]
    fn parameters_follow_their_placeholders() {
        let q = EventQuery {
            contact_key: Some("u1".into()),
            status: Some(DeliveryStatus::Dead),
            before_id: Some(42),
            limit: 10_000,
            ..EventQuery::default()
        };
        let built = event_list_sql(&q, &TEST_BACKEND, None);
        assert_eq!(built.sql.matches('?').count(), built.params.len());
        assert_eq!(
            built.params,
            vec![
                Param::Text("u1".into()),
                Param::Int(42),
                Param::Int(i64::try_from(MAX_PAGE).unwrap_or(0)),
            ]
        );
    }

    #[test]
    fn shards_of_a_minute_are_summed() {
        let counts = minute_counts(vec![(120_000, 2), (60_000, 1), (120_000, 3)]);
        assert_eq!(
            counts,
            vec![
                MinuteCount {
                    minute_ms: 60_000,
                    count: 1
                },
                MinuteCount {
                    minute_ms: 120_000,
                    count: 5
                },
            ]
        );
    }
}
