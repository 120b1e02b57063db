//! Translation of a [`DeliveryFilter`] into a SQL `WHERE` fragment over `deliveries d JOIN events e`.

use rusqlite::types::Value;

use crate::DeliveryFilter;

/// A `WHERE` fragment (starting with `AND`, or empty) and its positional parameters.
pub(crate) struct FilterSql {
    /// e.g. ` AND d.destination = ? AND e.received_at_ms >= ?`.
    pub(crate) clause: String,
    /// Parameters for the `?` placeholders, in order.
    pub(crate) params: Vec<Value>,
}

/// Build the conditions of `filter` (the limit is left to the caller).
pub(crate) fn filter_sql(filter: &DeliveryFilter) -> FilterSql {
    let mut clause = String::new();
    let mut params = Vec::new();
    if let Some(id) = filter.delivery_id {
        clause.push_str(" AND d.id = ?");
        params.push(Value::Integer(id));
    }
    let mut text = |column: &str, value: &Option<String>| {
        if let Some(v) = value {
            clause.push_str(&format!(" AND {column} = ?"));
            params.push(Value::Text(v.clone()));
        }
    };
    text("d.destination", &filter.destination);
    text("e.source", &filter.source);
    text("d.contact_key", &filter.contact_key);
    text("e.event_type", &filter.event_type);
    text("d.reason_code", &filter.reason_code);
    if let Some(needle) = &filter.reason_contains {
        // instr() rather than LIKE: the operator's text is matched literally (no % or _ magic).
        clause.push_str(" AND instr(coalesce(d.reason, ''), ?) > 0");
        params.push(Value::Text(needle.clone()));
    }
    if let Some(since) = filter.since_ms {
        clause.push_str(" AND e.received_at_ms >= ?");
        params.push(Value::Integer(since));
    }
    if let Some(until) = filter.until_ms {
        clause.push_str(" AND e.received_at_ms < ?");
        params.push(Value::Integer(until));
    }
    FilterSql { clause, params }
}

/// The filter's limit as a SQL `LIMIT` value (`-1` means no limit in SQLite).
pub(crate) fn limit_value(filter: &DeliveryFilter) -> i64 {
    filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}
