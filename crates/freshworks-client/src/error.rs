//! The error of every Freshworks call, shaped by what the caller does next: `Http` (the server
//! answered non-2xx: classify by status, honour `Retry-After`), `Transport` (no answer at all:
//! retry later, the request may or may not have been applied), `Decode` (2xx we cannot read: the
//! write probably happened, do not blindly resend), `InvalidUrl` (we refused to send: permanent).
//! Each variant carries the request line and body so failures can be recorded verbatim.

use serde_json::Value;

use crate::model::messages_from_value;

/// A failed Freshworks call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshworksError {
    /// The server answered with a non-2xx status.
    #[error("Freshworks answered HTTP {status} to {request_line}: {}", summary(.messages, .body))]
    Http {
        /// HTTP status.
        status: u16,
        /// `errors.message` (localised; never match on the text). Empty if the body had none.
        messages: Vec<String>,
        /// The raw response body.
        body: String,
        /// The `Retry-After` header, verbatim (seconds or an HTTP date).
        retry_after: Option<String>,
        /// The `X-RateLimit-Remaining` header, if sent and numeric.
        rate_limit_remaining: Option<u32>,
        /// e.g. `POST /contacts/upsert`.
        request_line: String,
        /// The JSON body we sent, if any.
        request_body: Option<String>,
    },
    /// No response: connect error, timeout, connection reset, body cut short.
    #[error("no response from Freshworks to {request_line}{}: {message}", if *.timeout { " (timed out)" } else { "" })]
    Transport {
        /// The underlying error.
        message: String,
        /// Whether the request timed out (it may still have been applied by the server).
        timeout: bool,
        /// e.g. `POST /contacts/upsert`.
        request_line: String,
        /// The JSON body we sent, if any.
        request_body: Option<String>,
    },
    /// A 2xx answer whose body does not have the expected shape.
    #[error(
        "Freshworks answered HTTP {status} to {request_line} with a body we cannot read: {message}"
    )]
    Decode {
        /// HTTP status (2xx).
        status: u16,
        /// What did not parse.
        message: String,
        /// The raw response body.
        body: String,
        /// e.g. `POST /contacts/upsert`.
        request_line: String,
        /// The JSON body we sent, if any.
        request_body: Option<String>,
    },
    /// We refused to send the request, e.g. a `job_status_url` pointing at a foreign host
    /// (our API key would go with it).
    #[error("refusing to call {url:?}: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        message: String,
        /// e.g. `GET <url>`.
        request_line: String,
    },
}

fn summary(messages: &[String], body: &str) -> String {
    if !messages.is_empty() {
        return messages.join("; ");
    }
    // No structured message: show the start of the body so logs still say something useful.
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut cut: String = trimmed.chars().take(200).collect();
    if cut.len() < trimmed.len() {
        cut.push('…');
    }
    cut
}

impl FreshworksError {
    /// The HTTP status, if the server answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport { .. } | Self::InvalidUrl { .. } => None,
        }
    }

    /// The `Retry-After` header of a non-2xx answer, verbatim.
    #[must_use]
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::Http { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }

    /// The `X-RateLimit-Remaining` header of a non-2xx answer.
    #[must_use]
    pub fn rate_limit_remaining(&self) -> Option<u32> {
        match self {
            Self::Http {
                rate_limit_remaining,
                ..
            } => *rate_limit_remaining,
            _ => None,
        }
    }

    /// `errors.message` of a non-2xx answer (empty otherwise).
    #[must_use]
    pub fn messages(&self) -> &[String] {
        match self {
            Self::Http { messages, .. } => messages,
            _ => &[],
        }
    }

    /// Whether the request timed out without an answer.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Transport { timeout: true, .. })
    }

    /// The request line, e.g. `POST /contacts/upsert`.
    #[must_use]
    pub fn request_line(&self) -> &str {
        match self {
            Self::Http { request_line, .. }
            | Self::Transport { request_line, .. }
            | Self::Decode { request_line, .. }
            | Self::InvalidUrl { request_line, .. } => request_line,
        }
    }

    /// The JSON body we sent, if any.
    #[must_use]
    pub fn request_body(&self) -> Option<&str> {
        match self {
            Self::Http { request_body, .. }
            | Self::Transport { request_body, .. }
            | Self::Decode { request_body, .. } => request_body.as_deref(),
            Self::InvalidUrl { .. } => None,
        }
    }

    /// The raw response body, if the server answered.
    #[must_use]
    pub fn response_body(&self) -> Option<&str> {
        match self {
            Self::Http { body, .. } | Self::Decode { body, .. } => Some(body),
            Self::Transport { .. } | Self::InvalidUrl { .. } => None,
        }
    }
}

/// Extract the error messages from a non-2xx body.
///
/// The documented shape is `{"errors":{"code":400,"message":["..."]}}` (spec §8). Also read:
/// `message` as a string, `errors` as a string or an array, and a top-level `message`
/// (the unverified 401 shape `{"login":"failed","message":"..."}`). Anything else: no messages,
/// the caller still has the raw body.
pub(crate) fn error_messages(body: &str) -> Vec<String> {
    let Ok(Value::Object(mut top)) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    match top.remove("errors") {
        Some(Value::Object(mut errors)) => {
            if let Some(message) = errors
                .remove("message")
                .or_else(|| errors.remove("messages"))
            {
                return messages_from_value(message);
            }
        }
        Some(errors @ (Value::String(_) | Value::Array(_))) => {
            return messages_from_value(errors)
                .into_iter()
                .map(|m| unquote_object_message(&m))
                .collect();
        }
        _ => {}
    }
    top.remove("message")
        .or_else(|| top.remove("error"))
        .map(messages_from_value)
        .unwrap_or_default()
}

/// For `errors: [{"message": "..."}]` keep just the message text.
fn unquote_object_message(rendered: &str) -> String {
    match serde_json::from_str::<Value>(rendered) {
        Ok(Value::Object(obj)) => match obj.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => rendered.to_owned(),
        },
        _ => rendered.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_message_shapes() {
        assert_eq!(
            error_messages(r#"{"errors":{"code":400,"message":["Name has already been taken"]}}"#),
            ["Name has already been taken"]
        );
        assert_eq!(
            error_messages(r#"{"errors":{"code":400,"message":"one"}}"#),
            ["one"]
        );
        assert_eq!(
            error_messages(r#"{"errors":{"code":400,"message":[{"field":"x"}]}}"#),
            [r#"{"field":"x"}"#]
        );
        assert_eq!(error_messages(r#"{"errors":"flat"}"#), ["flat"]);
        assert_eq!(
            error_messages(r#"{"errors":[{"message":"a"},"b"]}"#),
            ["a", "b"]
        );
        assert_eq!(
            error_messages(r#"{"login":"failed","message":"Incorrect or expired API key"}"#),
            ["Incorrect or expired API key"]
        );
        assert!(error_messages("<html>Bad gateway</html>").is_empty());
        assert!(error_messages("").is_empty());
        assert!(error_messages(r#"{"errors":{"code":500}}"#).is_empty());
    }

    #[test]
    fn display_falls_back_to_the_body() {
        let err = FreshworksError::Http {
            status: 502,
            messages: Vec::new(),
            body: "<html>Bad gateway</html>".into(),
            retry_after: None,
            rate_limit_remaining: None,
            request_line: "POST /contacts/upsert".into(),
            request_body: None,
        };
        assert_eq!(
            err.to_string(),
            "Freshworks answered HTTP 502 to POST /contacts/upsert: <html>Bad gateway</html>"
        );
    }
}
