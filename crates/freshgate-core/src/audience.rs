//! Segment Engage (Personas) audience membership → a marketing list change.
//!
//! Engage sends an audience's membership as an identify (trait `K` = true/false) or a track
//! (`Audience Entered` / `Audience Exited`, property `K` = true/false), each with
//! `context.personas.computation_class = "audience"` and `computation_key = K`
//! (spec/segment.md §8). The list is named `K`: true adds the contact, false removes it. A
//! track whose property is missing or not a boolean falls back to its event name.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::segment::{EventType, StoredEvent};

/// Add to or remove from a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// `PUT /lists/{id}/add_contacts`.
    Add,
    /// `PUT /lists/{id}/remove_contacts`.
    Remove,
}

impl Membership {
    /// Stable name, as stored (`add`, `remove`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }
}

/// One membership change of one contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceChange {
    /// The audience's `computation_key`: the list's name.
    pub list: String,
    /// In or out.
    pub membership: Membership,
}

/// The track event Engage sends when a user enters an audience.
pub const AUDIENCE_ENTERED: &str = "Audience Entered";
/// The track event Engage sends when a user leaves an audience.
pub const AUDIENCE_EXITED: &str = "Audience Exited";

/// The membership change an event carries, if it is an Engage audience event.
///
/// `None` for anything else, and for an identify whose trait `K` is not a boolean (the trait
/// still maps to a field as any other).
#[must_use]
pub fn audience_change(event: &StoredEvent) -> Option<AudienceChange> {
    let personas = event.context.get("personas")?.as_object()?;
    if personas.get("computation_class").and_then(Value::as_str) != Some("audience") {
        return None;
    }
    let key = personas
        .get("computation_key")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|k| !k.is_empty())?;
    let membership = match event.event_type {
        EventType::Identify => flag(event.traits.get(key))?,
        EventType::Track => flag(event.properties.get(key)).or(match event.event.as_deref() {
            Some(AUDIENCE_ENTERED) => Some(Membership::Add),
            Some(AUDIENCE_EXITED) => Some(Membership::Remove),
            _ => None,
        })?,
        _ => return None,
    };
    Some(AudienceChange {
        list: key.to_owned(),
        membership,
    })
}

fn flag(value: Option<&Value>) -> Option<Membership> {
    match value? {
        Value::Bool(true) => Some(Membership::Add),
        Value::Bool(false) => Some(Membership::Remove),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::segment::parse_stored_event;
    use serde_json::json;

    fn event(v: Value) -> StoredEvent {
        let mut v = v;
        v["messageId"] = json!("m");
        v["userId"] = json!("u");
        v["timestamp"] = json!("2024-01-01T00:00:00.000Z");
        parse_stored_event(v.to_string().as_bytes()).unwrap()
    }

    fn personas(key: &str) -> Value {
        json!({"personas": {"computation_class": "audience", "computation_key": key,
                            "computation_id": "aud_1", "space_id": "spa_1"}})
    }

    fn change(list: &str, membership: Membership) -> Option<AudienceChange> {
        Some(AudienceChange {
            list: list.into(),
            membership,
        })
    }

    #[test]
    fn identify_trait_gives_add_or_remove() {
        let e = event(json!({"type": "identify", "traits": {"vip_users": true},
                             "context": personas("vip_users")}));
        assert_eq!(audience_change(&e), change("vip_users", Membership::Add));
        let e = event(json!({"type": "identify", "traits": {"vip_users": false},
                             "context": personas("vip_users")}));
        assert_eq!(audience_change(&e), change("vip_users", Membership::Remove));
        let e = event(json!({"type": "identify", "traits": {"vip_users": "yes"},
                             "context": personas("vip_users")}));
        assert_eq!(audience_change(&e), None);
    }

    #[test]
    fn track_property_or_event_name() {
        let e = event(json!({"type": "track", "event": "Audience Entered",
                             "properties": {"churn_risk": true}, "context": personas("churn_risk")}));
        assert_eq!(audience_change(&e), change("churn_risk", Membership::Add));
        let e = event(json!({"type": "track", "event": "Audience Exited",
                             "properties": {}, "context": personas("churn_risk")}));
        assert_eq!(
            audience_change(&e),
            change("churn_risk", Membership::Remove)
        );
        let e = event(json!({"type": "track", "event": "Order Completed",
                             "properties": {}, "context": personas("churn_risk")}));
        assert_eq!(audience_change(&e), None);
    }

    #[test]
    fn computed_traits_and_plain_events_are_not_audiences() {
        let e = event(json!({"type": "identify", "traits": {"ltv": true},
            "context": {"personas": {"computation_class": "trait", "computation_key": "ltv"}}}));
        assert_eq!(audience_change(&e), None);
        let e = event(json!({"type": "identify", "traits": {"vip": true}}));
        assert_eq!(audience_change(&e), None);
        let e = event(json!({"type": "identify", "traits": {"": true}, "context": personas(" ")}));
        assert_eq!(audience_change(&e), None);
        let e = event(
            json!({"type": "group", "groupId": "g", "traits": {"vip": true},
                             "context": personas("vip")}),
        );
        assert_eq!(audience_change(&e), None);
    }
}
