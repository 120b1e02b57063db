//! Reading a request body under a size limit, with `Content-Encoding: gzip` inflated on the fly.
//!
//! The limit applies to the decompressed bytes (Segment's limits are stated for the JSON), and
//! inflation stops one byte past the limit, so a gzip bomb costs at most `limit + 1` bytes of
//! memory. Written by hand rather than with tower-http's decompression layer so that the limit,
//! the error body and the code are exactly Segment's (`400 payload_too_large`).

use std::io::Read;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_ENCODING;
use axum::http::{HeaderMap, StatusCode};

use super::error::ApiError;

/// Read the whole body within `timeout`, inflating gzip, refusing anything over `limit`
/// decoded bytes.
///
/// # Errors
/// `400 payload_too_large`, `400 unsupported_encoding`, `400 malformed_gzip`,
/// `400 body_read_error` when the client stopped sending, `408 body_timeout` when it sends too
/// slowly.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body was not received within {} s", timeout.as_secs()),
            )
        })?;
    let raw = read.map_err(|e| {
        if is_length_limit(&e) {
            too_large(limit)
        } else {
            ApiError::bad_request("body_read_error", format!("could not read the body: {e}"))
        }
    })?;
    decode(&encoding, raw, limit)
}

/// The body as JSON bytes: `raw` as received with `Content-Encoding: encoding` (lower-case),
/// inflated if gzip, refused past `limit` decoded bytes. Pure, so the fuzzers call it directly.
///
/// # Errors
/// `400 payload_too_large`, `400 unsupported_encoding`, `400 malformed_gzip`.
pub fn decode(encoding: &str, raw: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    match encoding {
        "" | "identity" if raw.len() > limit => Err(too_large(limit)),
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => inflate(&raw, limit),
        other => Err(ApiError::bad_request(
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        )),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("length limit") {
            return true;
        }
        source = s.source();
    }
    false
}

fn too_large(limit: usize) -> ApiError {
    ApiError::bad_request(
        "payload_too_large",
        format!("request body exceeds {limit} bytes (after decompression)"),
    )
}

/// Inflate at most `limit + 1` bytes.
fn inflate(compressed: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit + 1));
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request("malformed_gzip", format!("gzip body is invalid: {e}"))
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_within_the_limit() {
        let out = inflate(&gzip(b"{\"a\":1}"), 100).unwrap();
        assert_eq!(&out[..], b"{\"a\":1}");
    }

    #[test]
    fn a_bomb_stops_one_byte_past_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let err = inflate(&bomb, 512 * 1024).unwrap_err();
        assert_eq!(err.code, "payload_too_large");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert_eq!(
            inflate(b"not gzip", 100).unwrap_err().code,
            "malformed_gzip"
        );
    }
}
