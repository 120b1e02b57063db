//! Why an item is refused (spec §1.4, §1.7, §2.1, §2.3), and the field readers that decide it.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::EventType;
use super::envelope::{Kind, as_str, kind};

/// Longest accepted `messageId`, in characters (spec §1.4).
pub(crate) const MAX_MESSAGE_ID_CHARS: usize = 100;

/// Deepest nesting of arrays and objects in a stored event (the event object itself is level
/// 1). The delivery side reads stored events with serde_json, whose parser stops at 128 levels;
/// anything ingest acknowledges must stay readable there.
pub const MAX_NESTING: usize = 100;

/// One item's rejection. `Display` is the human reason, [`ItemError::code`] the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ItemError {
    #[error("event is not a JSON object")]
    NotAnObject,
    #[error("missing type")]
    MissingType,
    #[error("unknown type {0:?}")]
    UnknownType(String),
    #[error("missing userId and anonymousId")]
    MissingIds,
    #[error("{0} must be a string or a number")]
    InvalidId(&'static str),
    #[error("track event without a non-empty \"event\" name")]
    MissingEvent,
    #[error("group event without \"groupId\"")]
    MissingGroupId,
    #[error("alias event without \"previousId\"")]
    MissingPreviousId,
    #[error("messageId longer than {MAX_MESSAGE_ID_CHARS} characters")]
    MessageIdTooLong,
    #[error("event is {size} bytes, more than the {limit} byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("batch has more than {limit} events")]
    BatchFull { limit: usize },
    #[error("JSON nested deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("number {0} is out of range")]
    NumberOutOfRange(String),
}

impl ItemError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ItemError::NotAnObject => "not_an_object",
            ItemError::MissingType | ItemError::UnknownType(_) => "invalid_type",
            // Segment's documented name for this error (HTTP API doc, spec §1.6).
            ItemError::MissingIds => "no_user_anon_id",
            ItemError::InvalidId(_) => "invalid_id",
            ItemError::MissingEvent => "missing_event",
            ItemError::MissingGroupId => "missing_group_id",
            ItemError::MissingPreviousId => "missing_previous_id",
            ItemError::MessageIdTooLong => "message_id_too_long",
            ItemError::TooLarge { .. } => "event_too_large",
            ItemError::BatchFull { .. } => "batch_too_large",
            ItemError::TooDeep => "too_deep",
            ItemError::NumberOutOfRange(_) => "number_out_of_range",
        }
    }
}

/// The item's type: forced by the path, else its `type` member. `delete` only when allowed.
pub(crate) fn event_type(
    forced: Option<EventType>,
    member: Option<&RawValue>,
    allow_delete: bool,
) -> Result<EventType, ItemError> {
    if let Some(t) = forced {
        return Ok(t);
    }
    let raw = member.ok_or(ItemError::MissingType)?;
    let name = as_str(raw).ok_or_else(|| ItemError::UnknownType(raw.get().to_owned()))?;
    match EventType::from_name(&name) {
        Some(EventType::Delete) if !allow_delete => Err(ItemError::UnknownType(name.into_owned())),
        Some(t) => Ok(t),
        None => Err(ItemError::UnknownType(name.into_owned())),
    }
}

/// An id member: strings as they are, numbers stringified (python and Go users pass integers);
/// absent, `null` and `""` all mean "no id".
pub(crate) fn id_value<'a>(
    name: &'static str,
    member: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, ItemError> {
    let Some(raw) = member else { return Ok(None) };
    match kind(raw) {
        Kind::Null => Ok(None),
        Kind::String => {
            let s = as_str(raw).ok_or(ItemError::InvalidId(name))?;
            Ok((!s.is_empty()).then_some(s))
        }
        Kind::Number => Ok(Some(Cow::Borrowed(raw.get()))),
        Kind::Bool | Kind::Array | Kind::Object => Err(ItemError::InvalidId(name)),
    }
}

/// A required reference member (`groupId`, `previousId`): a non-empty string or a number.
pub(crate) fn has_reference(member: Option<&RawValue>) -> bool {
    member.is_some_and(|raw| match kind(raw) {
        Kind::String => as_str(raw).is_some_and(|s| !s.is_empty()),
        Kind::Number => true,
        _ => false,
    })
}

/// Track's `event`: a non-empty string.
pub(crate) fn has_event_name(member: Option<&RawValue>) -> bool {
    member.and_then(as_str).is_some_and(|s| !s.is_empty())
}

/// The client's `messageId` when usable; `None` means "generate one".
pub(crate) fn message_id(member: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, ItemError> {
    let id = id_value("messageId", member)?;
    if let Some(id) = &id {
        // Byte length bounds char count from above: only count chars when it could matter.
        if id.len() > MAX_MESSAGE_ID_CHARS && id.chars().count() > MAX_MESSAGE_ID_CHARS {
            return Err(ItemError::MessageIdTooLong);
        }
    }
    Ok(id)
}

/// Whether the delivery side can read `raw` (a normalised event) back with
/// [`super::parse_stored_event`]: nesting within [`MAX_NESTING`], every number finite as an
/// `f64` (serde_json refuses `1e400`). One pass over the bytes; the ingest path builds no
/// `Value`. The bytes are valid JSON already (assembled from parsed pieces).
pub(crate) fn readable(raw: &[u8]) -> Result<(), ItemError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < raw.len() && raw[i] != b'"' {
                    i += if raw[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ItemError::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < raw.len()
                    && matches!(raw[i + 1], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &raw[start..=i];
                // Short plain integers always fit; only parse what might not.
                if token.len() > 15 || token.iter().any(|b| matches!(b, b'e' | b'E')) {
                    let text = String::from_utf8_lossy(token);
                    if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                        let shown: String = text.chars().take(40).collect();
                        return Err(ItemError::NumberOutOfRange(shown));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}
