//! The pipeline: ingest → store, and per destination: lease a contact → map → coalesce →
//! budget → send → settle. Only this module holds both the store and the Freshworks client.

pub mod budget;
pub mod clock;
pub mod deliver;
pub mod dispatcher;
pub mod fields;
pub mod ingest;
pub mod late;
pub mod unmapped;

pub use clock::now_ms;
