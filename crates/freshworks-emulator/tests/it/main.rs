//! Integration tests: a real emulator bound on 127.0.0.1:0, driven with reqwest.
#![allow(clippy::unwrap_used)]

mod admin;
mod bulk;
mod contacts;
mod faults;
mod helpers;
mod other_routes;
mod quota;
mod shapes;
