//! Turns one event's top-level members into the normalised object we store: validated, ids
//! stringified, `messageId` assigned, timestamps corrected, batch-level `context`/`integrations`
//! merged. Members we do not own are copied byte for byte.

use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::envelope::{Entries, Kind, ObjectWriter, get, kind, object_entries};
use super::timestamp::{
    bounded_timestamp, corrected_timestamp, format_timestamp, parse_timestamp, truncate_to_millis,
};
use super::validate::{self, ItemError};
use super::{EventType, NormalizedEvent};
use crate::segment::envelope::as_str;

/// Where the event came from; decides `delete` and timestamp handling (see the module doc of
/// `segment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Tracking,
    Webhook,
}

/// A batch-level object (`context` or `integrations`): its raw text and its members.
pub(crate) type BatchObject<'a> = (&'a RawValue, Entries<'a>);

/// What every item of one request shares.
pub(crate) struct Shared<'a> {
    pub(crate) source: Source,
    pub(crate) forced_type: Option<EventType>,
    pub(crate) context: Option<BatchObject<'a>>,
    pub(crate) integrations: Option<BatchObject<'a>>,
    pub(crate) sent_at: Option<&'a RawValue>,
    pub(crate) received_at: OffsetDateTime,
    received_at_text: String,
}

impl<'a> Shared<'a> {
    pub(crate) fn new(
        source: Source,
        forced_type: Option<EventType>,
        received_at: OffsetDateTime,
    ) -> Self {
        let received_at = truncate_to_millis(received_at);
        Shared {
            source,
            forced_type,
            context: None,
            integrations: None,
            sent_at: None,
            received_at,
            received_at_text: format_timestamp(received_at),
        }
    }

    /// Takes the batch envelope's `context`, `integrations` (objects only) and `sentAt`.
    pub(crate) fn with_batch_members(mut self, envelope: &Entries<'a>) -> Self {
        let object =
            |key: &str| get(envelope, key).and_then(|raw| object_entries(raw).map(|e| (raw, e)));
        self.context = object("context");
        self.integrations = object("integrations");
        self.sent_at = present(get(envelope, "sentAt"));
        self
    }
}

/// Top-level members we rewrite (or drop: `receivedAt` is ours, `writeKey` is a secret).
fn is_owned(key: &str) -> bool {
    matches!(
        key,
        "type"
            | "messageId"
            | "userId"
            | "anonymousId"
            | "context"
            | "integrations"
            | "timestamp"
            | "originalTimestamp"
            | "sentAt"
            | "receivedAt"
            | "writeKey"
    )
}

#[derive(Default)]
struct Members<'a> {
    event_type: Option<&'a RawValue>,
    message_id: Option<&'a RawValue>,
    user_id: Option<&'a RawValue>,
    anonymous_id: Option<&'a RawValue>,
    context: Option<&'a RawValue>,
    integrations: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    original_timestamp: Option<&'a RawValue>,
    sent_at: Option<&'a RawValue>,
    event: Option<&'a RawValue>,
    group_id: Option<&'a RawValue>,
    previous_id: Option<&'a RawValue>,
    traits: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
}

fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| kind(r) != Kind::Null)
}

/// Validates and normalises one event. `size_hint` is its byte length as received.
pub(crate) fn normalize(
    entries: &Entries<'_>,
    size_hint: usize,
    shared: &Shared<'_>,
    new_message_id: &mut dyn FnMut() -> String,
) -> Result<NormalizedEvent, ItemError> {
    let mut m = Members::default();
    for (key, value) in entries {
        let slot = match key.as_ref() {
            "type" => &mut m.event_type,
            "messageId" => &mut m.message_id,
            "userId" => &mut m.user_id,
            "anonymousId" => &mut m.anonymous_id,
            "context" => &mut m.context,
            "integrations" => &mut m.integrations,
            "timestamp" => &mut m.timestamp,
            "originalTimestamp" => &mut m.original_timestamp,
            "sentAt" => &mut m.sent_at,
            "event" => &mut m.event,
            "groupId" => &mut m.group_id,
            "previousId" => &mut m.previous_id,
            "traits" => &mut m.traits,
            "name" => &mut m.name,
            _ => continue,
        };
        *slot = Some(*value);
    }

    let event_type = validate::event_type(
        shared.forced_type,
        m.event_type,
        shared.source == Source::Webhook,
    )?;
    let user_id = validate::id_value("userId", m.user_id)?;
    let anonymous_id = validate::id_value("anonymousId", m.anonymous_id)?;
    let contact_key = user_id
        .as_deref()
        .or(anonymous_id.as_deref())
        .ok_or(ItemError::MissingIds)?
        .to_owned();
    match event_type {
        EventType::Track if !validate::has_event_name(m.event) => {
            return Err(ItemError::MissingEvent);
        }
        EventType::Group if !validate::has_reference(m.group_id) => {
            return Err(ItemError::MissingGroupId);
        }
        EventType::Alias if !validate::has_reference(m.previous_id) => {
            return Err(ItemError::MissingPreviousId);
        }
        _ => {}
    }
    let message_id = match validate::message_id(m.message_id)? {
        Some(id) => id.into_owned(),
        None => new_message_id(),
    };

    let client_timestamp = present(m.timestamp);
    let original = client_timestamp
        .and_then(as_str)
        .and_then(|s| parse_timestamp(&s));
    let (timestamp, original_out, sent_out) = match shared.source {
        Source::Tracking => {
            let sent_raw = present(m.sent_at).or(shared.sent_at);
            let sent = sent_raw.and_then(as_str).and_then(|s| parse_timestamp(&s));
            (
                corrected_timestamp(shared.received_at, sent, original),
                client_timestamp,
                sent_raw,
            )
        }
        // Segment already corrected it; keep its originalTimestamp when it sent one.
        Source::Webhook => (
            original.unwrap_or(shared.received_at),
            present(m.original_timestamp).or(client_timestamp),
            present(m.sent_at),
        ),
    };
    // A time far ahead of receipt (after the sentAt correction) would win over every later
    // event: receipt is used, and the client's value is kept as `originalTimestamp`.
    let (timestamp, replaced) = bounded_timestamp(shared.received_at, timestamp);
    let original_out = if replaced {
        client_timestamp.or(original_out)
    } else {
        original_out
    };
    let timestamp = truncate_to_millis(timestamp);

    let mut integrations = Vec::new();
    write_merged(
        &mut integrations,
        m.integrations,
        shared.integrations.as_ref(),
    );

    let mut raw = Vec::with_capacity(size_hint + 160);
    let mut w = ObjectWriter::new(&mut raw);
    w.string("type", event_type.as_str());
    for (key, value) in entries {
        if !is_owned(key) {
            w.raw(key, value.get());
        }
    }
    w.string("messageId", &message_id);
    if let Some(id) = &user_id {
        w.string("userId", id);
    }
    if let Some(id) = &anonymous_id {
        w.string("anonymousId", id);
    }
    write_merged(w.key("context"), m.context, shared.context.as_ref());
    w.key("integrations").extend_from_slice(&integrations);
    w.string("timestamp", &format_timestamp(timestamp));
    if let Some(original) = original_out {
        w.raw("originalTimestamp", original.get());
    }
    if let Some(sent) = sent_out {
        w.raw("sentAt", sent.get());
    }
    w.string("receivedAt", &shared.received_at_text);
    w.finish();
    // What is acknowledged must be deliverable: the delivery side reads these very bytes.
    validate::readable(&raw)?;

    // An empty object enables everything, so routing needs nothing; the conversion cannot fail
    // (the bytes are valid JSON assembled from valid pieces), and failing open means "All".
    let integrations_raw = if is_empty_object(&integrations) {
        None
    } else {
        String::from_utf8(integrations)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
    };

    let email = match event_type {
        EventType::Identify => m.traits.and_then(trait_email),
        _ => None,
    };
    // What track and page rules match on, read here once rather than from `raw` per destination.
    let name = match event_type {
        EventType::Track => m.event,
        EventType::Page | EventType::Screen => m.name,
        _ => None,
    }
    .and_then(as_str)
    .map(std::borrow::Cow::into_owned);

    Ok(NormalizedEvent {
        event_type,
        contact_key,
        email,
        name,
        user_id: user_id.map(|c| c.into_owned()),
        anonymous_id: anonymous_id.map(|c| c.into_owned()),
        message_id,
        timestamp,
        received_at: shared.received_at,
        integrations_raw,
        raw,
    })
}

/// An identify's `traits.email` when it is a non-empty string (anything else is left to the
/// mapping, which reports it).
fn trait_email(traits: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Traits<'a> {
        #[serde(borrow)]
        email: Option<&'a RawValue>,
    }
    let email = serde_json::from_str::<Traits<'_>>(traits.get())
        .ok()?
        .email?;
    serde_json::from_str::<String>(email.get())
        .ok()
        .filter(|e| !e.is_empty())
}

/// Writes the item's object merged over the batch-level one (shallow; item members win). A
/// non-object item value (webhook deletes send `[]`) counts as an empty object.
fn write_merged(out: &mut Vec<u8>, item: Option<&RawValue>, batch: Option<&BatchObject<'_>>) {
    let item = item.filter(|r| kind(r) == Kind::Object);
    match (item, batch) {
        (None, None) => out.extend_from_slice(b"{}"),
        (None, Some((batch_raw, _))) => out.extend_from_slice(batch_raw.get().as_bytes()),
        (Some(item_raw), None) => out.extend_from_slice(item_raw.get().as_bytes()),
        (Some(item_raw), Some((_, batch_entries))) => {
            let item_entries = match object_entries(item_raw) {
                Some(e) if !batch_entries.is_empty() => e,
                _ => return out.extend_from_slice(item_raw.get().as_bytes()),
            };
            let mut w = ObjectWriter::new(out);
            for (key, value) in &item_entries {
                w.raw(key, value.get());
            }
            for (key, value) in batch_entries {
                if get(&item_entries, key).is_none() {
                    w.raw(key, value.get());
                }
            }
            w.finish();
        }
    }
}

fn is_empty_object(json: &[u8]) -> bool {
    match json {
        [b'{', inner @ .., b'}'] => inner.iter().all(u8::is_ascii_whitespace),
        _ => false,
    }
}
