//! Segment wire model: what the Tracking API and the Segment webhook destination send us, and the
//! normalised event we store.
//!
//! The hot path never builds a `serde_json::Value`: a body is split into its top-level keys as
//! borrowed [`RawValue`]s ([`envelope`]), only the keys we own are rewritten (ids, `messageId`,
//! timestamps, merged `context`/`integrations`), and every other key is copied byte for byte into
//! the normalised object. See `spec/segment.md` §1–§4 and §6.
//!
//! Decisions recorded here (the spec leaves them open):
//! - Single-event endpoints: the path decides the type. A body `type` that disagrees is ignored
//!   (the Rust client never sends one; analytics.js short paths always agree).
//! - Single-event endpoints answer an invalid event with [`RequestError::InvalidEvent`] (the HTTP
//!   layer turns it into a 400). Segment's status here is UNVERIFIED (spec §1.6); we choose 400 so
//!   the client learns. Inside a batch an invalid item is [`ItemOutcome::Rejected`] alone and the
//!   request still succeeds (spec §1.7).
//! - Webhook events come from Segment, which already corrected `timestamp`: it is kept as sent
//!   (no second clock correction), `originalTimestamp` is kept when present, `receivedAt` is ours.

mod batch;
pub(crate) mod envelope;
mod normalize;
mod stored;
mod timestamp;
mod validate;
mod webhook;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::value::RawValue;
use time::OffsetDateTime;

pub use batch::parse_tracking_request;
pub use stored::{StoredEvent, StoredEventError, parse_stored_event};
pub use timestamp::{
    MAX_AHEAD, bounded_timestamp, corrected_timestamp, format_timestamp, parse_timestamp,
};
pub use validate::MAX_NESTING;
pub use webhook::{SignatureError, parse_webhook_request, verify_signature};

/// A Segment Spec call type. `Delete` only arrives from the webhook destination (user deletion
/// notifications, spec §2.3); the Tracking API rejects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `identify`: who the user is, with `traits`.
    Identify,
    /// `track`: an action, with `event` and `properties`.
    Track,
    /// `page`: a web page view.
    Page,
    /// `screen`: a mobile screen view.
    Screen,
    /// `group`: ties the user to a `groupId`, with group `traits`.
    Group,
    /// `alias`: merges `previousId` into `userId`.
    Alias,
    /// `delete`: a user deletion notification (webhooks only).
    Delete,
}

impl EventType {
    /// The wire name (`"identify"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
            EventType::Delete => "delete",
        }
    }

    /// The type for a wire name; exact, lowercase match (Segment's clients all send lowercase).
    pub fn from_name(name: &str) -> Option<EventType> {
        Some(match name {
            "identify" => EventType::Identify,
            "track" => EventType::Track,
            "page" => EventType::Page,
            "screen" => EventType::Screen,
            "group" => EventType::Group,
            "alias" => EventType::Alias,
            "delete" => EventType::Delete,
            _ => return None,
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a Tracking API path accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/<type>` or its one-letter form: one event object, type taken from the path.
    Single(EventType),
    /// `/v1/batch`, `/v1/b`, `/v1/import`: `{"batch":[...]}`.
    Batch,
}

/// The endpoint for the last path segment after `/v1/` (`"identify"`, `"i"`, `"batch"`, ...);
/// `None` for anything else, including `delete` (webhooks only).
pub fn endpoint_for_path(segment: &str) -> Option<Endpoint> {
    Some(match segment {
        "identify" | "i" => Endpoint::Single(EventType::Identify),
        "track" | "t" => Endpoint::Single(EventType::Track),
        "page" | "p" => Endpoint::Single(EventType::Page),
        "screen" | "s" => Endpoint::Single(EventType::Screen),
        "group" | "g" => Endpoint::Single(EventType::Group),
        "alias" | "a" => Endpoint::Single(EventType::Alias),
        "batch" | "b" | "import" => Endpoint::Batch,
        _ => return None,
    })
}

/// Per-event limits applied here. The 500 KiB request limit is the HTTP layer's (after gzip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted event, in bytes of its JSON as received (Segment: 32 KB).
    pub max_event_bytes: usize,
    /// Items after this many in one batch are rejected one by one (Segment: 2,500).
    pub max_batch_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 32 * 1024,
            max_batch_events: 2500,
        }
    }
}

/// An accepted, normalised event ready to be stored.
#[derive(Debug, Clone)]
pub struct NormalizedEvent {
    /// The Spec call type.
    pub event_type: EventType,
    /// The client's `messageId`, or a generated one when it had none.
    pub message_id: String,
    /// `userId` (numbers stringified; null and `""` mean absent).
    pub user_id: Option<String>,
    /// `anonymousId` (numbers stringified; null and `""` mean absent).
    pub anonymous_id: Option<String>,
    /// The ordering key: `userId`, else `anonymousId`.
    pub contact_key: String,
    /// An identify's `traits.email`, when it is a non-empty string.
    pub email: Option<String>,
    /// The call's name track and page rules match on: a track's `event`, a page's or screen's
    /// `name`, when it is a string.
    pub name: Option<String>,
    /// The corrected event time (millisecond precision, as serialised in `raw`).
    pub timestamp: OffsetDateTime,
    /// When we received the request (millisecond precision, as serialised in `raw`).
    pub received_at: OffsetDateTime,
    /// The merged `integrations` object, `None` when it is empty (everything enabled). Pass it
    /// to [`crate::routing::destination_enabled`] without reparsing the event.
    pub integrations_raw: Option<Box<RawValue>>,
    /// The normalised JSON object: the bytes to store, replay and deliver.
    pub raw: Vec<u8>,
}

impl NormalizedEvent {
    /// Whether the destination named `key` (case-sensitive, e.g. `"Freshmarketer"`) takes this
    /// event according to its `integrations` object.
    pub fn destination_enabled(&self, key: &str) -> bool {
        crate::routing::destination_enabled(self.integrations_raw.as_deref(), key)
    }
}

/// A batch item we refuse; the rest of the batch is unaffected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedItem {
    /// The item's bytes as received (for logs and the dead-letter view).
    pub raw: Vec<u8>,
    /// Why, for humans (e.g. `"missing userId and anonymousId"`).
    pub reason: String,
    /// Why, as a stable label for metrics (e.g. `"no_user_anon_id"`).
    pub code: &'static str,
}

/// The fate of one item of a request.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    /// Valid: store it.
    Accepted(NormalizedEvent),
    /// Invalid: drop (and log) it.
    Rejected(RejectedItem),
}

/// A request whose envelope was valid; its items may still be rejected one by one.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    /// The top-level `writeKey` of the body, when it is a string. The HTTP layer also checks Basic.
    pub write_key: Option<String>,
    /// One outcome per event, in request order.
    pub items: Vec<ItemOutcome>,
}

/// The whole request is refused; the HTTP layer answers 400 with `{"code": code(), "message": to_string()}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is JSON but not an object (Tracking API).
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// The webhook body is JSON but neither an object nor an array.
    #[error("request body must be a JSON object or an array of objects")]
    NotAnObjectOrArray,
    /// A batch body without a `batch` array.
    #[error("request body has no \"batch\" array")]
    MissingBatch,
    /// A single-event body larger than [`Limits::max_event_bytes`].
    #[error("event is {size} bytes, more than the {limit} byte limit")]
    EventTooLarge {
        /// Size of the body in bytes.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// A single-event body that fails validation (see the module doc for why this is a 400).
    #[error("invalid event: {0}")]
    InvalidEvent(String),
}

impl RequestError {
    /// Stable machine-readable code for the 400 body.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::MalformedJson(_) => "malformed_json",
            RequestError::NotAnObject | RequestError::NotAnObjectOrArray => "invalid_request",
            RequestError::MissingBatch => "missing_batch",
            RequestError::EventTooLarge { .. } => "payload_too_large",
            RequestError::InvalidEvent(_) => "invalid_event",
        }
    }
}
