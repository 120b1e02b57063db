//! The typed owned view of a stored (normalised) event, for the delivery side. Not on the hot
//! path, so it may build `serde_json::Value`s.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::EventType;
use super::timestamp::parse_timestamp;

/// A normalised event read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The Spec call type.
    pub event_type: EventType,
    /// The dedupe key.
    pub message_id: String,
    /// `userId`, if any.
    pub user_id: Option<String>,
    /// `anonymousId`, if any.
    pub anonymous_id: Option<String>,
    /// identify/group `traits`; empty when absent or not an object.
    pub traits: Map<String, Value>,
    /// track/page/screen `properties`; empty when absent or not an object.
    pub properties: Map<String, Value>,
    /// track's `event` name.
    pub event: Option<String>,
    /// page/screen `name` (else `properties.name`, which analytics.js also sets).
    pub name: Option<String>,
    /// group's `groupId` (numbers stringified).
    pub group_id: Option<String>,
    /// alias's `previousId` (numbers stringified).
    pub previous_id: Option<String>,
    /// `context`; empty when absent or not an object.
    pub context: Map<String, Value>,
    /// `integrations`; empty when absent or not an object.
    pub integrations: Map<String, Value>,
    /// The corrected event time.
    pub timestamp: OffsetDateTime,
    /// `originalTimestamp` (the client's own time, when it sent one and it parses).
    pub original_timestamp: Option<OffsetDateTime>,
    /// `receivedAt`, when it parses.
    pub received_at: Option<OffsetDateTime>,
}

impl StoredEvent {
    /// Whether the destination named `key` takes this event (see [`crate::routing`]).
    pub fn destination_enabled(&self, key: &str) -> bool {
        crate::routing::destination_enabled_in_map(&self.integrations, key)
    }

    /// For traces: the client's time was too far ahead of receipt and `receivedAt` is the
    /// event time (see [`super::bounded_timestamp`]).
    #[must_use]
    pub fn timestamp_note(&self) -> Option<String> {
        let (original, received) = (self.original_timestamp?, self.received_at?);
        let (_, replaced) = super::bounded_timestamp(received, original);
        (replaced && self.timestamp == received).then(|| {
            format!(
                "timestamp {} is more than 24 h after receivedAt: receivedAt used",
                super::format_timestamp(original)
            )
        })
    }
}

/// Why stored bytes cannot be read back; the delivery side dead-letters such an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredEventError {
    /// Not JSON at all.
    #[error("stored event is not valid JSON: {0}")]
    MalformedJson(String),
    /// JSON, but not an object.
    #[error("stored event is not a JSON object")]
    NotAnObject,
    /// A member normalisation always writes is missing or unusable.
    #[error("stored event has no valid {0:?}")]
    MissingField(&'static str),
}

/// Reads the normalised JSON produced by `parse_tracking_request` / `parse_webhook_request`.
pub fn parse_stored_event(raw: &[u8]) -> Result<StoredEvent, StoredEventError> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|e| StoredEventError::MalformedJson(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(StoredEventError::NotAnObject);
    };
    let event_type = map
        .get("type")
        .and_then(Value::as_str)
        .and_then(EventType::from_name)
        .ok_or(StoredEventError::MissingField("type"))?;
    let message_id = id(map.get("messageId")).ok_or(StoredEventError::MissingField("messageId"))?;
    let timestamp = map
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_timestamp)
        .ok_or(StoredEventError::MissingField("timestamp"))?;
    let time_of = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .and_then(parse_timestamp)
    };
    let original_timestamp = time_of("originalTimestamp");
    let received_at = time_of("receivedAt");
    Ok(StoredEvent {
        event_type,
        message_id,
        user_id: id(map.get("userId")),
        anonymous_id: id(map.get("anonymousId")),
        event: map.get("event").and_then(Value::as_str).map(str::to_owned),
        name: map
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| {
                map.get("properties")
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
            })
            .map(str::to_owned),
        group_id: id(map.get("groupId")),
        previous_id: id(map.get("previousId")),
        traits: object(map.remove("traits")),
        properties: object(map.remove("properties")),
        context: object(map.remove("context")),
        integrations: object(map.remove("integrations")),
        timestamp,
        original_timestamp,
        received_at,
    })
}

fn id(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn object(value: Option<Value>) -> Map<String, Value> {
    match value {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}
