//! One conformance suite for every `Store` backend, plus backend-specific tests.
//!
//! `cases` holds the suite, written against `&dyn Store` through a `Fixture`; each backend module
//! instantiates it with the `conformance!` macro (SQLite here; PostgreSQL adds its own module).
#![allow(clippy::unwrap_used)]

mod cases;
mod harness;
#[cfg(feature = "postgres")]
mod postgres;
mod prop;
mod sqlite;
