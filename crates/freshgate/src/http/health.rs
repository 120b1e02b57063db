//! `/healthz` (the process answers), `/readyz` (start-up done, not shutting down), `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use secrecy::ExposeSecret;

use super::HttpState;
use super::error::ApiError;

/// Liveness.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Readiness: 503 while starting or draining, so load balancers stop sending. The details say
/// when events are accepted but not delivered (no destination): still ready, since nothing
/// acknowledged is lost.
pub async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let (status, word) = if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    match state.warning {
        Some(warning) => (status, format!("{word}\nwarning: {warning}\n")),
        None => (status, format!("{word}\n")),
    }
}

/// Prometheus text exposition; behind `Authorization: Bearer` when `metrics_token_env` is set.
///
/// # Errors
/// `401 missing_token` / `bad_token`.
pub async fn metrics(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.metrics_token {
        let given = super::bearer_token(&headers).ok_or_else(|| {
            ApiError::unauthorized("missing_token", "Authorization: Bearer <token> is required")
        })?;
        if !crate::secret::eq(given.as_bytes(), token.expose_secret().as_bytes()) {
            return Err(ApiError::unauthorized(
                "bad_token",
                "the bearer token does not match",
            ));
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::prometheus().render(),
    ))
}

/// Anything else.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the Tracking API lives under /v1/")
}
