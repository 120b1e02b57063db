//! freshworks-emulator: a stateful, in-memory stand-in for the Freshworks CRM API (`/crm/sales/api`),
//! written from `spec/freshworks.md` alone and depending on none of freshgate's crates. It enforces auth,
//! uniqueness, required fields, field types and the per-account hour/minute quota, runs bulk jobs
//! asynchronously, injects faults, and exposes an admin API under `/__emulator/`.

mod admin;
mod cli;
mod config;
mod faults;
mod fields;
mod quota;
mod routes;
mod server;
mod state;

pub use cli::{EmulatorArgs, run_cli};
pub use config::{
    BulkDataFormat, EmulatorConfig, EmulatorError, Locale, Switches, UnknownFieldPolicy,
};
pub use faults::Fault;
pub use server::{RunningEmulator, serve};
pub use state::{EmulatorState, LoggedRequest};

/// The whole emulator: the API under `/crm/sales/api` and the admin API under `/__emulator`.
pub fn router(state: EmulatorState) -> axum::Router {
    axum::Router::new()
        .nest(routes::BASE, routes::api_router(state.clone()))
        .nest("/__emulator", admin::admin_router(state))
}
