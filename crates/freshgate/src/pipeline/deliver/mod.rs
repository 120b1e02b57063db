//! Delivery to one Freshworks account, split by role:
//!
//! - [`worker`]: the destination's shared context; a leased contact is drained, paused and
//!   given back.
//! - [`steps`]: the planner glue: a contact's pending deliveries are read and planned
//!   ([`freshgate_core::plan`]); steps that need no call are settled, the next contact upsert is
//!   mapped against the shadow ([`Prepared`]).
//! - [`call`]: the one Freshworks call path: quota, timing, metrics, rate-limit headers,
//!   classification, the attempt record.
//! - [`contact`]: what the contact upsert sink does around a call, whichever path sends it
//!   (in-doubt marking, the shadow moved forward, the web-form fallback).
//! - [`single`]: one `POST /contacts/upsert` per contact.
//! - [`bulk`]: up to 100 contacts per `POST /contacts/bulk_upsert`, the job polled.
//! - [`account`]: group / `traits.company` → `POST /sales_accounts/upsert` against the account
//!   shadow, the contact associated.
//! - [`activity`]: a track / page a rule takes: the contact's lifecycle stage set by upsert,
//!   one `POST /sales_activities` on the contact, never twice for a `messageId`.
//! - [`settle`]: delivered / retry / dead / skipped recorded, once for every kind.
//! - [`lists`]: Engage audiences: memberships handed off by a contact's steps, sent in batches
//!   per list by the destination's list flusher.
//!
//! A new kind of delivery is one planner case ([`freshgate_core::plan::Step`]), one sink
//! module here sending through [`call`], and its outcomes recorded through [`settle`].

pub mod account;
pub mod activity;
pub mod bulk;
pub mod call;
pub mod contact;
pub mod lists;
pub mod settle;
pub mod single;
pub mod steps;
pub mod worker;

pub use contact::Prepared;
pub use worker::{DestinationWorker, client_for};

use freshgate_store::StoreError;

/// A failure that stops work on this lease.
pub enum Stop {
    /// Retry later (already settled, or give the key back until then).
    Later(Option<i64>),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}
