//! freshgate: a Segment-compatible event gateway that delivers to Freshworks CRM.
//!
//! Data flows one way: HTTP in → validated, durable, acknowledged ([`http`], [`pipeline::ingest`])
//! → leased per contact → mapped and coalesced → within the account's quota → Freshworks
//! ([`pipeline::dispatcher`], [`pipeline::deliver`]) → outcome recorded.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod pipeline;
pub mod secret;
pub mod telemetry;
