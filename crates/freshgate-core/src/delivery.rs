//! What a Freshworks response means for the event that caused it, and when to try again.
//!
//! Outcomes are shaped by what the dispatcher does next: acknowledge, retry later, dead-letter
//! the event, or pause the whole destination (its credentials or permissions are wrong, so every
//! other event would fail the same way). Status table: spec/freshworks.md §8.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// What to do with a delivery attempt's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered.
    Success,
    /// Transient: try again, not before `after` when the server said so.
    Retry {
        /// The server's `Retry-After`, capped at [`RETRY_AFTER_CAP`].
        after: Option<Duration>,
        /// Why, for traces.
        reason: String,
    },
    /// The account's rate limit refused the call (a 429, or a 429 Freshworks wrapped in a 400):
    /// retry as [`Outcome::Retry`], and count the account's current window as spent.
    Throttled {
        /// The server's `Retry-After`, capped at [`RETRY_AFTER_CAP`].
        after: Option<Duration>,
        /// Why, for traces.
        reason: String,
    },
    /// This event can never succeed as it is.
    DeadLetter {
        /// Why, from the error body when there is one.
        reason: String,
    },
    /// Nothing for this destination can succeed until someone acts (bad key, no permission,
    /// wrong base URL).
    Pause {
        /// Why.
        reason: String,
    },
}

/// Longest `Retry-After` honoured.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);
/// First retry delay ceiling.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Largest retry delay ceiling.
pub const RETRY_CAP: Duration = Duration::from_secs(600);
/// Shortest computed delay, so a jitter near 0 never retries in a hot loop.
pub const RETRY_FLOOR: Duration = Duration::from_millis(100);

/// Whether a refusal says another contact already holds a unique value (an email or mobile
/// number: "Email is not unique", "Contact is not unique", spec/freshworks.md §8). It is the one
/// refusal a write keyed by `external_id` meets when a contact created elsewhere (a web form)
/// owns the email without our `external_id`; any other refusal ("Email is invalid") is about the
/// data and stands.
#[must_use]
pub fn is_uniqueness_conflict(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("is not unique") || reason.contains("already been taken")
}

/// Classify a response of `/contacts/upsert` and the other single-call endpoints.
///
/// A `Retry-After` HTTP-date needs the current time: this function honours only delta-seconds;
/// use [`classify_at`] to honour both.
#[must_use]
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    classify_inner(
        status,
        retry_after.and_then(|v| parse_retry_after(v, None)),
        body,
        false,
    )
}

/// [`classify`], with the clock for HTTP-date `Retry-After` values.
#[must_use]
pub fn classify_at(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: OffsetDateTime,
) -> Outcome {
    classify_inner(
        status,
        retry_after.and_then(|v| parse_retry_after(v, Some(now))),
        body,
        false,
    )
}

/// Classify a response of `/contacts/bulk_upsert`, where 405 is a transient refusal in
/// practice (spec/freshworks.md §3) and so retried.
#[must_use]
pub fn classify_bulk(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    classify_inner(
        status,
        retry_after.and_then(|v| parse_retry_after(v, None)),
        body,
        true,
    )
}

/// [`classify_bulk`], with the clock for HTTP-date `Retry-After` values.
#[must_use]
pub fn classify_bulk_at(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: OffsetDateTime,
) -> Outcome {
    classify_inner(
        status,
        retry_after.and_then(|v| parse_retry_after(v, Some(now))),
        body,
        true,
    )
}

/// No HTTP status at all (connect error, timeout, reset): always transient.
#[must_use]
pub fn transport_error(reason: &str) -> Outcome {
    Outcome::Retry {
        after: None,
        reason: format!("transport: {reason}"),
    }
}

fn classify_inner(status: u16, after: Option<Duration>, body: &[u8], bulk: bool) -> Outcome {
    let message = error_message(body);
    let reason = || format!("HTTP {status}: {message}");
    let retry = |reason: String| Outcome::Retry { after, reason };
    let throttled = |reason: String| Outcome::Throttled { after, reason };
    match status {
        200..=299 => Outcome::Success,
        429 => throttled(reason()),
        408 => retry(reason()),
        500..=599 if status != 501 => retry(reason()),
        400 if is_wrapped_429(&message) => throttled(reason()),
        405 if bulk => retry(reason()),
        401 | 403 => Outcome::Pause { reason: reason() },
        300..=399 => Outcome::Pause {
            reason: format!("HTTP {status}: unexpected redirect (check the account's base URL)"),
        },
        400..=499 | 501 => Outcome::DeadLetter { reason: reason() },
        // 1xx or out of range: not a verdict on the event.
        _ => retry(reason()),
    }
}

/// Freshworks sometimes wraps an upstream 429 in a 400 (spec/freshworks.md §8): the English
/// upstream text is the only sign, so this one match on message text is unavoidable.
fn is_wrapped_429(message: &str) -> bool {
    let lower = message.to_lowercase();
    lower.contains("response_code :: 429") || lower.contains("too many requests")
}

/// The human text of an error body: `errors.message` (array or string), else a top-level
/// `message`, else the body itself (trimmed, at most 300 characters).
#[must_use]
pub fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let msg = v.pointer("/errors/message").or_else(|| v.get("message"))?;
            match msg {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(items) => Some(
                    items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                other => Some(other.to_string()),
            }
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    text.chars().take(300).collect()
}

/// `Retry-After` as delta-seconds, or as an HTTP-date when `now` is given; capped at
/// [`RETRY_AFTER_CAP`]. A date in the past is zero.
#[must_use]
pub fn parse_retry_after(value: &str, now: Option<OffsetDateTime>) -> Option<Duration> {
    let v = value.trim();
    let delay = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = parse_http_date(v)?;
        let diff = at - now?;
        diff.try_into().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(RETRY_AFTER_CAP))
}

/// IMF-fixdate (`Wed, 21 Oct 2015 07:28:00 GMT`), the form RFC 9110 requires senders to use.
fn parse_http_date(v: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc2822) {
        return Some(t);
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(v, fmt)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// Delay before retry number `attempt` (1 = the first retry): full jitter over a capped
/// exponential ceiling (1 s, 2 s, 4 s, … 10 min), never below [`RETRY_FLOOR`], and never
/// shorter than the server's `Retry-After`. `jitter` is a random number in `[0, 1)`.
#[must_use]
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let ceiling = RETRY_BASE.saturating_mul(1 << exp).min(RETRY_CAP);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let jittered = ceiling.mul_f64(jitter).max(RETRY_FLOOR);
    match retry_after {
        Some(after) => jittered.max(after.min(RETRY_AFTER_CAP)),
        None => jittered,
    }
}

/// Whether an event first tried at `first_attempt_ms` has been retried for longer than the
/// retry horizon (then it is dead-lettered).
#[must_use]
pub fn horizon_exceeded(first_attempt_ms: i64, now_ms: i64, horizon_ms: i64) -> bool {
    now_ms.saturating_sub(first_attempt_ms) >= horizon_ms
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_uniqueness_refusal_is_a_conflict() {
        assert!(super::is_uniqueness_conflict(
            r#"400: {"errors":{"code":400,"message":["Email is not unique"]}}"#
        ));
        assert!(super::is_uniqueness_conflict("Contact is not unique"));
        assert!(!super::is_uniqueness_conflict(
            r#"400: {"errors":{"code":400,"message":["Email is invalid"]}}"#
        ));
        assert!(!super::is_uniqueness_conflict("404: not found"));
    }
    use proptest::prelude::*;

    fn kind(o: &Outcome) -> &'static str {
        match o {
            Outcome::Success => "success",
            Outcome::Retry { .. } => "retry",
            Outcome::Throttled { .. } => "throttled",
            Outcome::DeadLetter { .. } => "dead",
            Outcome::Pause { .. } => "pause",
        }
    }

    #[test]
    fn status_table() {
        let body = br#"{"errors":{"code":400,"message":["Email is not unique"]}}"#;
        for (status, want, want_bulk) in [
            (200, "success", "success"),
            (201, "success", "success"),
            (204, "success", "success"),
            (301, "pause", "pause"),
            (400, "dead", "dead"),
            (401, "pause", "pause"),
            (403, "pause", "pause"),
            (404, "dead", "dead"),
            (405, "dead", "retry"),
            (408, "retry", "retry"),
            (409, "dead", "dead"),
            (422, "dead", "dead"),
            (429, "throttled", "throttled"),
            (500, "retry", "retry"),
            (501, "dead", "dead"),
            (502, "retry", "retry"),
            (503, "retry", "retry"),
            (599, "retry", "retry"),
            (100, "retry", "retry"),
        ] {
            assert_eq!(kind(&classify(status, None, body)), want, "{status}");
            assert_eq!(
                kind(&classify_bulk(status, None, body)),
                want_bulk,
                "bulk {status}"
            );
        }
        assert_eq!(kind(&transport_error("connection reset")), "retry");
    }

    #[test]
    fn reasons_come_from_errors_message() {
        let o = classify(
            400,
            None,
            br#"{"errors":{"code":400,"message":["Email is not unique","x"]}}"#,
        );
        assert_eq!(
            o,
            Outcome::DeadLetter {
                reason: "HTTP 400: Email is not unique; x".into()
            }
        );
        let o = classify(
            404,
            None,
            br#"{"errors":{"code":404,"message":"Not found"}}"#,
        );
        assert_eq!(
            o,
            Outcome::DeadLetter {
                reason: "HTTP 404: Not found".into()
            }
        );
        let o = classify(
            401,
            None,
            br#"{"login":"failed","message":"Incorrect or expired API key"}"#,
        );
        assert_eq!(
            o,
            Outcome::Pause {
                reason: "HTTP 401: Incorrect or expired API key".into()
            }
        );
        let o = classify(422, None, b"plain text");
        assert_eq!(
            o,
            Outcome::DeadLetter {
                reason: "HTTP 422: plain text".into()
            }
        );
        let o = classify(400, None, b"");
        assert_eq!(
            o,
            Outcome::DeadLetter {
                reason: "HTTP 400: (empty body)".into()
            }
        );
    }

    #[test]
    fn a_429_wrapped_in_a_400_is_throttled_like_a_plain_one() {
        let body = br#"{"errors":{"code":400,"message":["UCR contact fetch failure :: response_code :: 429 :: response :: Too many requests"]}}"#;
        assert_eq!(kind(&classify(400, None, body)), "throttled");
        assert_eq!(kind(&classify_bulk(400, None, body)), "throttled");
        let body = br#"{"errors":{"code":400,"message":"too many requests"}}"#;
        assert_eq!(kind(&classify(400, None, body)), "throttled");
        assert_eq!(kind(&classify(429, None, b"")), "throttled");
    }

    #[test]
    fn retry_after_seconds_and_http_date_capped() {
        let after = |o: Outcome| match o {
            Outcome::Retry { after, .. } | Outcome::Throttled { after, .. } => after,
            other => panic!("not a retry: {other:?}"),
        };
        assert_eq!(
            after(classify(429, Some("30"), b"")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            after(classify(503, Some("99999"), b"")),
            Some(RETRY_AFTER_CAP)
        );
        assert_eq!(after(classify(429, Some("soon"), b"")), None);
        let now = OffsetDateTime::from_unix_timestamp(1_445_412_000).unwrap(); // 07:20:00 GMT
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            after(classify_at(429, Some(date), b"", now)),
            Some(Duration::from_secs(480))
        );
        assert_eq!(
            after(classify(429, Some(date), b"")),
            None,
            "no clock, no date"
        );
        let later = now + time::Duration::hours(1);
        assert_eq!(
            after(classify_bulk_at(405, Some(date), b"", later)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_delay_grows_caps_and_honours_retry_after() {
        assert_eq!(
            retry_delay(1, None, 0.999_999),
            Duration::from_secs(1).mul_f64(0.999_999)
        );
        assert_eq!(retry_delay(4, None, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(30, None, 0.5), Duration::from_secs(300));
        assert_eq!(retry_delay(1, None, 0.0), RETRY_FLOOR);
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(90)), 0.5),
            Duration::from_secs(90)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(86_400)), 0.5),
            RETRY_AFTER_CAP
        );
        assert_eq!(retry_delay(0, None, f64::NAN), Duration::from_secs(1));
    }

    #[test]
    fn horizon() {
        assert!(!horizon_exceeded(1_000, 1_999, 1_000));
        assert!(horizon_exceeded(1_000, 2_000, 1_000));
        assert!(
            horizon_exceeded(i64::MIN, 0, i64::MAX),
            "saturates, no overflow"
        );
    }

    proptest! {
        #[test]
        fn retry_delay_bounds(attempt in 0u32..100, jitter in 0.0f64..1.0, after in proptest::option::of(0u64..10_000)) {
            let after = after.map(Duration::from_secs);
            let d = retry_delay(attempt, after, jitter);
            let ceiling = RETRY_CAP.max(after.unwrap_or_default().min(RETRY_AFTER_CAP));
            prop_assert!(d >= RETRY_FLOOR);
            prop_assert!(d <= ceiling);
            if let Some(a) = after {
                prop_assert!(d >= a.min(RETRY_AFTER_CAP));
            }
        }

        #[test]
        fn classify_never_panics(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = classify(status, Some("12"), &body);
            let _ = classify_bulk(status, None, &body);
        }
    }
}
