//! The one integration-test binary of the `freshgate` crate: the real server on `127.0.0.1:0`
//! against the built-in emulator (zero-to-production's `spawn_app()` pattern).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod helpers;

mod accounts;
mod admin;
mod bench;
mod browser;
mod bulk;
mod cli;
mod compat;
mod crash;
mod crash_identity;
mod delivery;
mod forget;
mod hardening;
mod identity;
mod ingest;
mod lists;
mod multinode;
mod procs;
mod quota;
mod replay;
mod track;
