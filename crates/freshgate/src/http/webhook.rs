//! `POST /webhook/{source}`: Segment's Webhooks (Actions) and classic webhook deliveries.
//!
//! The body is one Spec event or, with Actions batching, a JSON array of them. `X-Signature` is
//! hex HMAC-SHA1 with the source's shared secret over the raw body, or over the raw bytes of the
//! first element of an array (spec/segment.md §6.1). Verified events then go the same way as
//! Tracking API events.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use freshgate_core::segment;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::HttpState;
use super::body::read_limited;
use super::error::ApiError;
use super::ingest::{commit, request_error};
use crate::pipeline::ingest::unix_ms;

/// `POST /webhook/{source}`.
///
/// # Errors
/// 404 unknown source, 401 missing/bad signature, 400 bad body, 503 saturated.
pub async fn receive(
    State(state): State<HttpState>,
    Path(source_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let config = state.ingestor.config();
    let Some(source) = config.source(&source_name) else {
        return Err(ApiError::not_found(format!(
            "no source named {source_name:?}"
        )));
    };
    let Some(secret) = source.webhook_secret.clone() else {
        return Err(ApiError::unauthorized(
            "webhook_not_configured",
            format!("source {source_name:?} has no webhook_secret_env; webhooks are refused"),
        ));
    };
    let bytes = read_limited(&headers, body, state.max_request_bytes).await?;
    let received_at = OffsetDateTime::now_utc();
    let Some(signature) = headers.get("x-signature").and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::unauthorized(
            "missing_signature",
            "X-Signature header is required",
        ));
    };
    if segment::verify_signature(secret.expose_secret().as_bytes(), &bytes, signature).is_err() {
        tracing::warn!(source = source_name, "webhook signature mismatch");
        let _ = state
            .ingestor
            .reject(
                Some(&source_name),
                bytes.to_vec(),
                "webhook signature mismatch".into(),
                "bad_signature",
                unix_ms(received_at),
            )
            .await;
        return Err(ApiError::unauthorized(
            "bad_signature",
            "X-Signature does not match the body",
        ));
    }
    let limits = state.ingestor.limits();
    let mut new_id = || uuid::Uuid::new_v4().to_string();
    let parsed = segment::parse_webhook_request(&bytes, received_at, &limits, &mut new_id)
        .map_err(|e| request_error(&e))?;
    commit(&state, &source_name, parsed, received_at, bytes.len()).await
}
