//! The HTTP surface: Segment Tracking API ingest, Segment webhook ingest, health, metrics.
//!
//! Handlers are thin: they read the body, ask `freshgate_core::segment` what it says, ask
//! [`crate::pipeline::ingest`] to make it durable, and answer. The router is built by
//! [`router`] so tests can drive it without a socket.

pub mod body;
pub mod error;
pub mod health;
pub mod ingest;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::pipeline::ingest::Ingestor;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// Turns parsed requests into durable events.
    pub ingestor: Arc<Ingestor>,
    /// Largest request body, after decompression.
    pub max_request_bytes: usize,
    /// False until start-up finished and again once shutdown began.
    pub ready: Arc<AtomicBool>,
    /// What `/readyz` adds to "ready" about how the gateway is set up (no destination).
    pub warning: Option<&'static str>,
}

/// The full router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/{kind}", post(ingest::tracking))
        .route("/webhook/{source}", post(webhook::receive))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(health::not_found)
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

/// Count every request by matched route and status.
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    crate::telemetry::events::http_request(&route, response.status().as_u16());
    response
}
