//! The HTTP surface: Segment Tracking API ingest, Segment webhook ingest, health, metrics.
//!
//! Handlers are thin: they read the body, ask `freshgate_core::segment` what it says, ask
//! [`crate::pipeline::ingest`] to make it durable, and answer. The router is built by
//! [`router`] so tests can drive it without a socket.

pub mod body;
pub mod error;
pub mod health;
pub mod ingest;
pub mod server;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use self::error::ApiError;
use crate::pipeline::ingest::Ingestor;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// Turns parsed requests into durable events.
    pub ingestor: Arc<Ingestor>,
    /// Largest request body, after decompression.
    pub max_request_bytes: usize,
    /// Longest a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// False until start-up finished and again once shutdown began.
    pub ready: Arc<AtomicBool>,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<secrecy::SecretString>,
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
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(refuse_oversized_head))
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Longest request target (path and query) answered; longer gets `414 uri_too_long`.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names, values and separators) answered; more gets `431`.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields answered; more gets `431 headers_too_large`.
pub const MAX_HEADERS: usize = 100;

/// `414` and `431` with the JSON body every refusal carries (hyper's own, for heads past its
/// larger buffer, have none).
async fn refuse_oversized_head(request: Request, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {uri_bytes} bytes; at most {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} header fields, {header_bytes} bytes; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// A known path with the wrong method.
async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}; the Tracking API and webhooks take POST",
            request.method(),
            request.uri().path()
        ),
    )
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
