//! Tracking API requests (spec §1): a single-event body or a `{"batch":[...]}` envelope, split
//! into per-item outcomes.

use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::envelope::{Entries, Top, array_elements, as_str, get, object_entries, parse_top};
use super::normalize::{Shared, Source, normalize};
use super::validate::ItemError;
use super::{Endpoint, ItemOutcome, Limits, ParsedRequest, RejectedItem, RequestError};

/// Parses a Tracking API body (already decompressed, already within the request size limit).
///
/// - [`Endpoint::Single`]: the body is one event; its type comes from the path (a body `type`
///   is ignored). A body over [`Limits::max_event_bytes`] is [`RequestError::EventTooLarge`]; an
///   event that fails validation is [`RequestError::InvalidEvent`] (we answer 400 so the client
///   learns; Segment's own status here is UNVERIFIED, spec §1.6).
/// - [`Endpoint::Batch`]: every item must carry its `type`. Items that are invalid, over the size
///   limit, or past [`Limits::max_batch_events`] are [`ItemOutcome::Rejected`] one by one and the
///   request still succeeds. Batch-level `context`/`integrations` are merged into each item
///   (item keys win) and batch-level `sentAt` is used when the item has none.
///
/// `received_at` is our clock; `new_message_id` is called once per accepted event that lacks a
/// `messageId`.
pub fn parse_tracking_request(
    endpoint: Endpoint,
    body: &[u8],
    received_at: OffsetDateTime,
    limits: &Limits,
    new_message_id: &mut dyn FnMut() -> String,
) -> Result<ParsedRequest, RequestError> {
    match endpoint {
        Endpoint::Single(event_type) => {
            if body.len() > limits.max_event_bytes {
                return Err(RequestError::EventTooLarge {
                    size: body.len(),
                    limit: limits.max_event_bytes,
                });
            }
            let entries = body_object(body)?;
            let shared = Shared::new(Source::Tracking, Some(event_type), received_at);
            let event = normalize(&entries, body.len(), &shared, new_message_id)
                .map_err(|e| RequestError::InvalidEvent(e.to_string()))?;
            Ok(ParsedRequest {
                write_key: write_key(&entries),
                items: vec![ItemOutcome::Accepted(event)],
            })
        }
        Endpoint::Batch => {
            let entries = body_object(body)?;
            let items = get(&entries, "batch")
                .and_then(array_elements)
                .ok_or(RequestError::MissingBatch)?;
            let shared =
                Shared::new(Source::Tracking, None, received_at).with_batch_members(&entries);
            Ok(ParsedRequest {
                write_key: write_key(&entries),
                items: split_items(&items, &shared, limits, new_message_id),
            })
        }
    }
}

fn body_object(body: &[u8]) -> Result<Entries<'_>, RequestError> {
    match parse_top(body) {
        Ok(Top::Object(entries)) => Ok(entries),
        Ok(Top::Array(_) | Top::Other) => Err(RequestError::NotAnObject),
        Err(e) => Err(RequestError::MalformedJson(e.to_string())),
    }
}

fn write_key(entries: &Entries<'_>) -> Option<String> {
    get(entries, "writeKey")
        .and_then(as_str)
        .filter(|k| !k.is_empty())
        .map(|k| k.into_owned())
}

/// One outcome per item, in order (shared by batches and webhook arrays).
pub(crate) fn split_items(
    items: &[&RawValue],
    shared: &Shared<'_>,
    limits: &Limits,
    new_message_id: &mut dyn FnMut() -> String,
) -> Vec<ItemOutcome> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let size = item.get().len();
            let result = if index >= limits.max_batch_events {
                Err(ItemError::BatchFull {
                    limit: limits.max_batch_events,
                })
            } else if size > limits.max_event_bytes {
                Err(ItemError::TooLarge {
                    size,
                    limit: limits.max_event_bytes,
                })
            } else {
                match object_entries(item) {
                    Some(entries) => normalize(&entries, size, shared, new_message_id),
                    None => Err(ItemError::NotAnObject),
                }
            };
            match result {
                Ok(event) => ItemOutcome::Accepted(event),
                Err(e) => ItemOutcome::Rejected(RejectedItem {
                    raw: item.get().as_bytes().to_vec(),
                    reason: e.to_string(),
                    code: e.code(),
                }),
            }
        })
        .collect()
}
