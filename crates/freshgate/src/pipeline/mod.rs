//! The pipeline: ingest → store, and per destination: lease a contact → map → coalesce →
//! budget → send → settle. Only this module holds both the store and the Freshworks client.

pub mod budget;
pub mod deliver;
pub mod dispatcher;
pub mod fields;
pub mod ingest;

/// Current Unix time in milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    ingest::unix_ms(time::OffsetDateTime::now_utc())
}
