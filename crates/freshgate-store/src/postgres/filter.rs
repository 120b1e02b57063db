//! Translation of a [`DeliveryFilter`] into a PostgreSQL `WHERE` fragment over
//! `deliveries d JOIN events e`, with numbered (`$n`) placeholders.

use sqlx_core::query::Query;
use sqlx_postgres::{PgArguments, Postgres};

use crate::DeliveryFilter;

/// One bound value of a filter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// A `WHERE` fragment (starting with `AND`, or empty) and its parameters.
pub(crate) struct FilterSql {
    /// e.g. ` AND d.destination = $1 AND e.received_at_ms >= $2`.
    pub(crate) clause: String,
    /// Parameters for the placeholders, in order.
    pub(crate) params: Vec<Param>,
}

impl FilterSql {
    /// The placeholder for the next parameter a caller appends after the filter's own.
    pub(crate) fn next_placeholder(&self) -> String {
        format!("${}", self.params.len() + 1)
    }

    /// Bind the filter's parameters, in order, to `query`.
    pub(crate) fn bind<'q>(
        &self,
        mut query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        for p in &self.params {
            query = match p {
                Param::Text(s) => query.bind(s.clone()),
                Param::Int(i) => query.bind(*i),
            };
        }
        query
    }
}

/// Build the conditions of `filter` (the limit is left to the caller, see [`limit_value`]).
pub(crate) fn filter_sql(filter: &DeliveryFilter) -> FilterSql {
    let mut clause = String::new();
    let mut params = Vec::new();
    let mut push = |condition: &str, param: Param| {
        params.push(param);
        clause.push_str(&condition.replace('?', &format!("${}", params.len())));
    };
    if let Some(id) = filter.delivery_id {
        push(" AND d.id = ?", Param::Int(id));
    }
    let text = [
        ("d.destination", &filter.destination),
        ("e.source", &filter.source),
        ("d.contact_key", &filter.contact_key),
        ("e.event_type", &filter.event_type),
        ("d.reason_code", &filter.reason_code),
    ];
    for (column, value) in text {
        if let Some(v) = value {
            push(&format!(" AND {column} = ?"), Param::Text(v.clone()));
        }
    }
    if let Some(needle) = &filter.reason_contains {
        // strpos() rather than LIKE: the operator's text is matched literally (no % or _ magic).
        push(
            " AND strpos(coalesce(d.reason, ''), ?) > 0",
            Param::Text(needle.clone()),
        );
    }
    if let Some(since) = filter.since_ms {
        push(" AND e.received_at_ms >= ?", Param::Int(since));
    }
    if let Some(until) = filter.until_ms {
        push(" AND e.received_at_ms < ?", Param::Int(until));
    }
    FilterSql { clause, params }
}

/// The filter's limit as a bind value for `LIMIT $n` (`NULL` means no limit in PostgreSQL).
pub(crate) fn limit_value(filter: &DeliveryFilter) -> Option<i64> {
    filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let f = filter_sql(&DeliveryFilter {
            destination: Some("crm".to_owned()),
            reason_contains: Some("50%_".to_owned()),
            since_ms: Some(5),
            until_ms: Some(9),
            ..DeliveryFilter::default()
        });
        assert_eq!(
            f.clause,
            " AND d.destination = $1 AND strpos(coalesce(d.reason, ''), $2) > 0 \
             AND e.received_at_ms >= $3 AND e.received_at_ms < $4"
        );
        assert_eq!(f.params.len(), 4);
        assert_eq!(f.next_placeholder(), "$5");
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = filter_sql(&DeliveryFilter::default());
        assert!(f.clause.is_empty());
        assert_eq!(f.next_placeholder(), "$1");
        assert_eq!(limit_value(&DeliveryFilter::default()), None);
    }
}
