//! Typed HTTP client for the Freshworks CRM REST API (`/crm/sales/api`, spec/freshworks.md).
//!
//! Owns: request/response shapes of the endpoints freshgate calls, the `Token token=` auth,
//! per-request timeouts, and the mapping of every non-2xx answer into [`FreshworksError`].
//! It sends each request exactly once and knows nothing of queues, retries or rate budgets:
//! those decisions belong to the caller, which gets status, `Retry-After` and
//! `X-RateLimit-Remaining` to make them.

mod client;
mod config;
mod error;
mod model;

pub use client::{Exchange, FreshworksClient};
pub use config::{ClientConfig, ClientError, DomainError, base_url_for_domain};
pub use error::FreshworksError;
pub use freshgate_core::fields::{FieldDef, FieldsResponse};
pub use model::{
    BulkJobAccepted, Contact, ContactEnvelope, FailureItem, Identifier, JobData, JobStatus,
    ListEnvelope, ListsMeta, ListsPage, MarketingList, RecordStatus, SalesAccount,
    SalesAccountEnvelope, SalesActivity, SalesActivityEnvelope,
};
