//! Pure logic of freshgate: no tokio, no I/O, clock passed in.
//!
//! Everything that decides lives here (is this input valid? which destination takes it? which
//! contact field does a trait go to? retry when? how many calls are left this hour?) so it can be
//! unit- and property-tested without a socket or a clock.

pub mod account;
pub mod account_shadow;
pub mod activity;
pub mod audience;
pub mod budget;
pub mod coalesce;
pub mod delivery;
pub mod email;
pub mod fields;
pub mod mapping;
pub mod model;
pub mod notes;
pub mod plan;
pub mod reason;
pub mod routing;
pub mod rules;
pub mod segment;
pub mod shadow;
pub mod template;
