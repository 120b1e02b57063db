//! `POST /webhook/{source}`: Segment's Webhooks (Actions) and classic webhook deliveries.
//!
//! The body is one Spec event or, with Actions batching, a JSON array of them. Two ways to
//! authenticate, per source:
//! - `X-Signature`: hex HMAC-SHA1 with the source's shared secret over the raw body, or over the
//!   raw bytes of the **first element** of an array (spec/segment.md §6.1). It proves nothing
//!   about the other elements, so an array is refused unless the operator opted in
//!   (`webhook_batches = "first-element-signature"`).
//! - `Authorization: Bearer <token>` (`webhook_token_env`, a custom header of the Actions
//!   destination): covers the whole request, arrays included.
//!
//! When both are configured both must match. Verified events then go the same way as Tracking
//! API events.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use freshgate_core::segment;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::body::read_limited;
use super::error::ApiError;
use super::ingest::{commit, request_error};
use super::{HttpState, bearer_token};
use crate::config::{ResolvedSource, WebhookBatches};

/// Refused webhook requests write at most one log line a second.
static REFUSAL_LOG: crate::telemetry::LogLimiter =
    crate::telemetry::LogLimiter::new(std::time::Duration::from_secs(1));
/// How much of a refused body the log line shows.
const LOGGED_BODY_BYTES: usize = 160;

/// Why a webhook request is not authenticated. Each is a 401 with its own `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookRefusal {
    /// The source has neither a secret nor a token.
    NotConfigured,
    /// A token is configured and no `Authorization: Bearer` came.
    MissingToken,
    /// The bearer token does not match.
    BadToken,
    /// A secret is configured and no `X-Signature` came.
    MissingSignature,
    /// The signature does not match.
    BadSignature,
    /// An array body, authenticated only by its first element's signature, without opt-in.
    UnauthenticatedBatch,
}

impl WebhookRefusal {
    /// The stable `code` of the 401 body (and of the refusal counter).
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::NotConfigured => "webhook_not_configured",
            Self::MissingToken => "missing_token",
            Self::BadToken => "bad_token",
            Self::MissingSignature => "missing_signature",
            Self::BadSignature => "bad_signature",
            Self::UnauthenticatedBatch => "unauthenticated_batch",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::NotConfigured => {
                "this source has no webhook_secret_env or webhook_token_env; webhooks are refused"
            }
            Self::MissingToken => "Authorization: Bearer <token> is required",
            Self::BadToken => "the bearer token does not match",
            Self::MissingSignature => "X-Signature header is required",
            Self::BadSignature => "X-Signature does not match the body",
            Self::UnauthenticatedBatch => {
                "a batched (array) body is signed on its first element only; configure \
                 webhook_token_env (Authorization: Bearer) or opt in with \
                 webhook_batches = \"first-element-signature\""
            }
        }
    }
}

impl From<WebhookRefusal> for ApiError {
    fn from(r: WebhookRefusal) -> Self {
        ApiError::unauthorized(r.code(), r.message())
    }
}

/// Decide whether a webhook request is authentic for `source` (pure: headers and raw body in).
///
/// # Errors
/// The first rule the request fails.
pub fn authenticate(
    source: &ResolvedSource,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), WebhookRefusal> {
    if source.webhook_secret.is_none() && source.webhook_token.is_none() {
        return Err(WebhookRefusal::NotConfigured);
    }
    if let Some(token) = &source.webhook_token {
        let given = bearer_token(headers).ok_or(WebhookRefusal::MissingToken)?;
        if !crate::secret::eq(given.as_bytes(), token.expose_secret().as_bytes()) {
            return Err(WebhookRefusal::BadToken);
        }
    }
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if is_array
        && source.webhook_token.is_none()
        && source.webhook_batches != WebhookBatches::FirstElementSignature
    {
        return Err(WebhookRefusal::UnauthenticatedBatch);
    }
    if let Some(secret) = &source.webhook_secret {
        let signature = headers
            .get("x-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or(WebhookRefusal::MissingSignature)?;
        segment::verify_signature(secret.expose_secret().as_bytes(), body, signature)
            .map_err(|_| WebhookRefusal::BadSignature)?;
    }
    Ok(())
}

/// `POST /webhook/{source}`.
///
/// # Errors
/// 404 unknown source, 401 not authenticated, 400 bad body, 503 saturated.
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
    if source.webhook_secret.is_none() && source.webhook_token.is_none() {
        return Err(WebhookRefusal::NotConfigured.into());
    }
    let bytes = read_limited(
        &headers,
        body,
        state.max_request_bytes,
        state.body_read_timeout,
    )
    .await?;
    let received_at = OffsetDateTime::now_utc();
    if let Err(refusal) = authenticate(source, &headers, &bytes) {
        // Nothing unauthenticated is stored: counted, and logged at most once a second.
        crate::telemetry::events::webhook_refused(&source.name, refusal.code());
        if let Some(suppressed) = REFUSAL_LOG.allow(std::time::Instant::now()) {
            tracing::warn!(
                source = source.name,
                code = refusal.code(),
                bytes = bytes.len(),
                body = crate::telemetry::log_excerpt(&bytes, LOGGED_BODY_BYTES),
                suppressed,
                "webhook refused"
            );
        }
        return Err(refusal.into());
    }
    let limits = state.ingestor.limits();
    let mut new_id = || uuid::Uuid::new_v4().to_string();
    let parsed = segment::parse_webhook_request(&bytes, received_at, &limits, &mut new_id)
        .map_err(|e| request_error(&e))?;
    commit(&state, &source_name, parsed, received_at, bytes.len()).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::header::AUTHORIZATION;
    use secrecy::SecretString;

    /// Body and signature of the test vector in spec/segment.md §6.1 (secret `s3cr3t`).
    const BODY: &str = r#"{"type":"identify","userId":"u123","traits":{"email":"jane@example.com","first_time_shopper":true},"context":{"personas":{"computation_class":"audience","computation_id":"aud_2Xyz","computation_key":"first_time_shopper","namespace":"spa_9Abc","space_id":"spa_9Abc"}},"integrations":{"All":false,"Webhooks (Actions)":true},"messageId":"personas_2p4q8example","timestamp":"2025-11-07T17:00:00.000Z","receivedAt":"2025-11-07T17:00:00.512Z","sentAt":"2025-11-07T17:00:00.000Z","originalTimestamp":"2025-11-07T17:00:00.000Z","version":2}"#;
    const SIGNATURE: &str = "6d5c98d7e3fcf66d9013e465e19e68e4d4513102";

    fn source(secret: bool, token: bool, batches: WebhookBatches) -> ResolvedSource {
        ResolvedSource {
            name: "web".into(),
            write_keys: Vec::new(),
            webhook_secret: secret.then(|| SecretString::from("s3cr3t")),
            webhook_token: token.then(|| SecretString::from("tok-123")),
            webhook_batches: batches,
        }
    }

    fn headers(signature: Option<&str>, bearer: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(s) = signature {
            h.insert("x-signature", HeaderValue::from_str(s).unwrap());
        }
        if let Some(t) = bearer {
            h.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        h
    }

    fn batch() -> String {
        let forged = r#"{"type":"identify","userId":"evil","traits":{"email":"evil@example.com"}}"#;
        format!("[{BODY},{forged}]")
    }

    #[test]
    fn a_signed_single_body_passes_and_a_changed_one_does_not() {
        let s = source(true, false, WebhookBatches::Refuse);
        assert_eq!(
            authenticate(&s, &headers(Some(SIGNATURE), None), BODY.as_bytes()),
            Ok(())
        );
        let changed = BODY.replace("jane@", "evil@");
        assert_eq!(
            authenticate(&s, &headers(Some(SIGNATURE), None), changed.as_bytes()),
            Err(WebhookRefusal::BadSignature)
        );
        assert_eq!(
            authenticate(&s, &headers(None, None), BODY.as_bytes()),
            Err(WebhookRefusal::MissingSignature)
        );
    }

    #[test]
    fn a_batch_signed_on_its_first_element_needs_a_token_or_the_opt_in() {
        let body = batch();
        let h = headers(Some(SIGNATURE), None);
        assert_eq!(
            authenticate(
                &source(true, false, WebhookBatches::Refuse),
                &h,
                body.as_bytes()
            ),
            Err(WebhookRefusal::UnauthenticatedBatch)
        );
        assert_eq!(
            authenticate(
                &source(true, false, WebhookBatches::FirstElementSignature),
                &h,
                body.as_bytes()
            ),
            Ok(())
        );
        let with_token = headers(Some(SIGNATURE), Some("tok-123"));
        assert_eq!(
            authenticate(
                &source(true, true, WebhookBatches::Refuse),
                &with_token,
                body.as_bytes()
            ),
            Ok(())
        );
    }

    #[test]
    fn the_token_is_required_and_compared_in_constant_time() {
        let s = source(false, true, WebhookBatches::Refuse);
        let before = crate::secret::calls::count();
        assert_eq!(
            authenticate(&s, &headers(None, Some("tok-123")), b"[{}]"),
            Ok(())
        );
        assert!(
            crate::secret::calls::count() > before,
            "the token comparison must go through secret::eq"
        );
        assert_eq!(
            authenticate(&s, &headers(None, Some("tok-124")), b"{}"),
            Err(WebhookRefusal::BadToken)
        );
        assert_eq!(
            authenticate(&s, &headers(None, None), b"{}"),
            Err(WebhookRefusal::MissingToken)
        );
        // Both configured: both must match.
        let both = source(true, true, WebhookBatches::Refuse);
        assert_eq!(
            authenticate(&both, &headers(None, Some("tok-123")), BODY.as_bytes()),
            Err(WebhookRefusal::MissingSignature)
        );
        assert_eq!(
            authenticate(
                &source(false, false, WebhookBatches::Refuse),
                &HeaderMap::new(),
                b"{}"
            ),
            Err(WebhookRefusal::NotConfigured)
        );
    }
}
