//! The Segment Tracking API: `POST /v1/{identify,track,page,screen,group,alias,batch,import}` and
//! the analytics.js short paths `/v1/{i,t,p,s,g,a,b}`.
//!
//! Write key from `Authorization: Basic base64(key:)` or the body's `writeKey` (either is enough).
//! Unlike Segment, which answers 200 to any key, an unknown or missing key gets 401: a typo should
//! not silently send data nowhere (the official clients treat 401 as final and log it).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use freshgate_core::segment::{self, Endpoint, RequestError};
use serde_json::json;
use time::OffsetDateTime;

use super::HttpState;
use super::body::read_limited;
use super::error::ApiError;
use crate::pipeline::ingest::{IngestError, unix_ms};

/// `Retry-After` of a `503 storage_unavailable`: long enough for an operator or a prune to free
/// space, short enough that a client's retries catch the recovery.
pub const STORAGE_RETRY_AFTER_SECS: u32 = 5;

/// A store that cannot write fails every request: one log line a second is enough.
static STORE_ERROR_LOG: crate::telemetry::LogLimiter =
    crate::telemetry::LogLimiter::new(std::time::Duration::from_secs(1));

/// `POST /v1/{kind}`.
///
/// # Errors
/// The refusals documented in the README (400/401/503), as JSON `{code, message}`.
pub async fn tracking(
    State(state): State<HttpState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(endpoint) = segment::endpoint_for_path(&kind) else {
        return Err(ApiError::not_found(format!("unknown endpoint /v1/{kind}")));
    };
    let bytes = read_limited(
        &headers,
        body,
        state.max_request_bytes,
        state.body_read_timeout,
    )
    .await?;
    let received_at = OffsetDateTime::now_utc();
    let header_key = basic_auth_key(&headers);
    let config = state.ingestor.config();
    let header_source = header_key
        .as_deref()
        .and_then(|k| config.source_for_key(k))
        .map(|s| s.name.clone());

    let limits = state.ingestor.limits();
    let mut new_id = || uuid::Uuid::new_v4().to_string();
    let parsed =
        segment::parse_tracking_request(endpoint, &bytes, received_at, &limits, &mut new_id);

    let source = match (&header_source, &parsed) {
        (Some(s), _) => s.clone(),
        (None, Ok(p)) => match p
            .write_key
            .as_deref()
            .and_then(|k| config.source_for_key(k))
        {
            Some(s) => s.name.clone(),
            None => return Err(auth_error(header_key.is_some() || p.write_key.is_some())),
        },
        (None, Err(_)) if header_key.is_some() => return Err(auth_error(true)),
        // An invalid body may still carry a good key: then its source keeps the refusal, as
        // with a Basic header.
        (None, Err(e)) => match body_write_key(&bytes) {
            Some(k) => match config.source_for_key(&k) {
                Some(s) => s.name.clone(),
                None => return Err(auth_error(true)),
            },
            None => return Err(request_error(e)),
        },
    };

    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            let err = request_error(&e);
            if matches!(e, RequestError::InvalidEvent(_)) && matches!(endpoint, Endpoint::Single(_))
            {
                // A refused single event is kept with its reason, like a bad batch item.
                let _ = state
                    .ingestor
                    .reject(
                        Some(&source),
                        bytes.to_vec(),
                        e.to_string(),
                        e.code(),
                        unix_ms(received_at),
                    )
                    .await;
            } else {
                crate::telemetry::events::rejected(&source, e.code());
            }
            tracing::info!(source, code = e.code(), error = %e, "request refused");
            return Err(err);
        }
    };
    commit(&state, &source, parsed, received_at, bytes.len()).await
}

/// Store a parsed request and answer `{"success": true}`.
pub(super) async fn commit(
    state: &HttpState,
    source: &str,
    parsed: segment::ParsedRequest,
    received_at: OffsetDateTime,
    bytes: usize,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state
        .ingestor
        .ingest(source, parsed, unix_ms(received_at), bytes)
        .await
    {
        Ok(_) => Ok(Json(json!({"success": true}))),
        Err(IngestError::Saturated) => Err(ApiError::unavailable(
            "saturated",
            "the queue is saturated; retry shortly",
            1,
        )),
        Err(IngestError::Store(e)) => {
            // A full disk, a lost database, a store shutting down: nothing was acknowledged,
            // and the same request succeeds once the store can write again.
            if let Some(suppressed) = STORE_ERROR_LOG.allow(std::time::Instant::now()) {
                tracing::error!(error = %e, suppressed, "store append failed");
            }
            crate::telemetry::events::storage_unavailable();
            Err(ApiError::unavailable(
                "storage_unavailable",
                "the events could not be stored (nothing was kept); retry later",
                STORAGE_RETRY_AFTER_SECS,
            ))
        }
    }
}

/// The `RequestError` as a 400.
pub(super) fn request_error(e: &RequestError) -> ApiError {
    ApiError::bad_request(e.code(), e.to_string())
}

fn auth_error(key_given: bool) -> ApiError {
    if key_given {
        ApiError::unauthorized(
            "invalid_write_key",
            "the write key is not known to this server",
        )
    } else {
        ApiError::unauthorized(
            "missing_write_key",
            "send the write key as Authorization: Basic base64(writeKey:) or as \"writeKey\" in the body",
        )
    }
}

/// The `writeKey` of a body that did not parse as a valid request (a JSON object is enough).
fn body_write_key(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct KeyOnly {
        #[serde(rename = "writeKey")]
        write_key: Option<String>,
    }
    serde_json::from_slice::<KeyOnly>(body)
        .ok()?
        .write_key
        .filter(|k| !k.is_empty())
}

/// The username of a Basic `Authorization` header (the Segment write key). The colon is optional
/// ("might work due to backward compatibility", Segment's docs).
fn basic_auth_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let key = text.split_once(':').map_or(text.as_str(), |(k, _)| k);
    (!key.is_empty()).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_keys_with_and_without_colon() {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic V1JJVEVLRVk6"),
        );
        assert_eq!(basic_auth_key(&h).as_deref(), Some("WRITEKEY"));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("basic V1JJVEVLRVk="),
        );
        assert_eq!(basic_auth_key(&h).as_deref(), Some("WRITEKEY"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(basic_auth_key(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_auth_key(&h), None);
    }
}
