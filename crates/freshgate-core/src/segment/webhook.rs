//! Segment → us through the Webhooks destination (spec §6): the `X-Signature` check and the body
//! (one Spec event, or an array of them in batch mode).

use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use sha1::Sha1;
use time::OffsetDateTime;

use super::batch::split_items;
use super::envelope::{Top, parse_top};
use super::normalize::{Shared, Source, normalize};
use super::{ItemOutcome, Limits, ParsedRequest, RequestError};

/// Why a webhook signature is refused. The caller answers 401 for all of them; the variants only
/// make the log line useful.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not a hex string.
    #[error("signature header is not hex")]
    MalformedHeader,
    /// The body is an array whose first element cannot be found (empty or not JSON).
    #[error("webhook body is an empty or malformed JSON array, so no element is signed")]
    UnsignedBody,
    /// The HMAC does not match.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks `X-Signature` = hex(HMAC-SHA1(secret, signed bytes)), in constant time.
///
/// The signed bytes are the whole raw body for an object, and the raw bytes of the **first**
/// element for an array (Segment signs `JSON.stringify(data[0])` in batch mode). The slice is
/// taken from the body as received, never re-serialised: JS and serde_json format numbers and
/// escapes differently.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header_hex: &str,
) -> Result<(), SignatureError> {
    let expected = hex::decode(header_hex.trim()).map_err(|_| SignatureError::MalformedHeader)?;
    let elements: Vec<&RawValue>;
    let signed: &[u8] = if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        elements = serde_json::from_slice(body).map_err(|_| SignatureError::UnsignedBody)?;
        elements
            .first()
            .ok_or(SignatureError::UnsignedBody)?
            .get()
            .as_bytes()
    } else {
        body
    };
    // HMAC takes keys of any length, so this cannot fail; a failure would still only refuse.
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(signed);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Parses a webhook body (signature already checked): one event object, or an array of them.
///
/// Events must carry `type`; `delete` is accepted here (and only here). A single object that is
/// too large or invalid is a [`RequestError`] (400: Segment does not retry it); array items are
/// rejected one by one like batch items. Segment's corrected `timestamp` and its
/// `originalTimestamp` are kept; `receivedAt` becomes ours.
pub fn parse_webhook_request(
    body: &[u8],
    received_at: OffsetDateTime,
    limits: &Limits,
    new_message_id: &mut dyn FnMut() -> String,
) -> Result<ParsedRequest, RequestError> {
    let shared = Shared::new(Source::Webhook, None, received_at);
    let items = match parse_top(body) {
        Err(e) => return Err(RequestError::MalformedJson(e.to_string())),
        Ok(Top::Other) => return Err(RequestError::NotAnObjectOrArray),
        Ok(Top::Object(entries)) => {
            if body.len() > limits.max_event_bytes {
                return Err(RequestError::EventTooLarge {
                    size: body.len(),
                    limit: limits.max_event_bytes,
                });
            }
            let event = normalize(&entries, body.len(), &shared, new_message_id)
                .map_err(|e| RequestError::InvalidEvent(e.to_string()))?;
            vec![ItemOutcome::Accepted(event)]
        }
        Ok(Top::Array(elements)) => split_items(&elements, &shared, limits, new_message_id),
    };
    Ok(ParsedRequest {
        write_key: None,
        items,
    })
}
