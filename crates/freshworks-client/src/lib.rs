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
mod request;

pub use client::{Exchange, FreshworksClient};
pub use config::{ClientConfig, ClientError, DomainError, base_url_for_domain};
pub use error::FreshworksError;
pub use freshgate_core::fields::{FieldDef, FieldsResponse};
pub use model::{
    BulkJobAccepted, Contact, ContactEnvelope, FailureItem, Identifier, JobData, JobStatus,
    LifecycleStages, ListEnvelope, ListsMeta, ListsPage, MarketingList, Owner, OwnersResponse,
    RecordStatus, SalesAccount, SalesAccountEnvelope, SalesActivity, SalesActivityEnvelope,
    SalesActivityTypes, SelectorChoice,
};
pub use request::{
    AccountIdentifier, AccountValues, ListMembership, NewList, NewSalesActivity,
    SalesAccountUpsert, SalesActivityRequest, TargetableType,
};
