//! Reference model of what the CRM should hold after a set of accepted identify events.
//!
//! Written deliberately without [`crate::coalesce`]'s code (no sorting, no shared flattening
//! helper) so tests can check the real pipeline against it: per contact (`userId`), per trait
//! leaf, the value of the event with the newest `(timestamp, arrival seq)` wins; with
//! `MissingTraits::Clear` only the newest event's traits survive and every other field is
//! empty. A changed email keeps the contact (the contact is the `userId`), and the contact
//! carries the newest email.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::coalesce::{MissingTraits, TraitValue};
use crate::mapping::{FieldIndex, map_traits};

/// One accepted identify event.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEvent {
    /// The Segment `userId` (the contact).
    pub user_id: String,
    /// Arrival order.
    pub seq: i64,
    /// Event timestamp, Unix ms.
    pub ts_ms: i64,
    /// The `traits` object (its `email` is the contact's email).
    pub traits: Map<String, Value>,
}

/// The expected end state of one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedContact {
    /// The newest email (lower-cased).
    pub email: Option<String>,
    /// Trait leaf (`address` objects split into `address.<member>`) → winning value.
    pub traits: BTreeMap<String, TraitValue>,
    /// `true` in `Clear` mode: every field not set from `traits` must be empty.
    pub exhaustive: bool,
}

impl ExpectedContact {
    /// The expected field values in one account: field internal name → value (`null` =
    /// empty). With `exhaustive`, fields absent here must be empty in the CRM; otherwise they
    /// hold whatever they held before.
    #[must_use]
    pub fn expected_fields(&self, index: &FieldIndex) -> BTreeMap<String, Value> {
        map_traits(index, &self.traits)
            .fields
            .into_iter()
            .map(|(name, f)| (name, f.value))
            .collect()
    }
}

/// The expected end state of every contact the events name.
#[must_use]
pub fn expected_state(
    events: &[ModelEvent],
    mode: MissingTraits,
) -> BTreeMap<String, ExpectedContact> {
    let mut newest_event: BTreeMap<&str, &ModelEvent> = BTreeMap::new();
    let mut by_leaf: BTreeMap<&str, BTreeMap<String, TraitValue>> = BTreeMap::new();
    let mut email: BTreeMap<&str, (i64, i64, String)> = BTreeMap::new();

    for e in events {
        let user = e.user_id.as_str();
        let is_newer = |ts: i64, seq: i64| (e.ts_ms, e.seq) > (ts, seq);
        match newest_event.get(user) {
            Some(cur) if !is_newer(cur.ts_ms, cur.seq) => {}
            _ => {
                newest_event.insert(user, e);
            }
        }
        if let Some(Value::String(addr)) = e.traits.get("email")
            && email
                .get(user)
                .is_none_or(|(ts, seq, _)| is_newer(*ts, *seq))
        {
            email.insert(user, (e.ts_ms, e.seq, crate::email::normalize(addr)));
        }
        let leaves = by_leaf.entry(user).or_default();
        for (key, value) in leaves_of(&e.traits) {
            let newer = leaves
                .get(&key)
                .is_none_or(|cur| is_newer(cur.ts_ms, cur.seq));
            if newer {
                leaves.insert(
                    key,
                    TraitValue {
                        value,
                        ts_ms: e.ts_ms,
                        seq: e.seq,
                    },
                );
            }
        }
    }

    newest_event
        .into_iter()
        .map(|(user, newest)| {
            let traits = match mode {
                MissingTraits::Keep => by_leaf.remove(user).unwrap_or_default(),
                MissingTraits::Clear => leaves_of(&newest.traits)
                    .into_iter()
                    .map(|(k, value)| {
                        (
                            k,
                            TraitValue {
                                value,
                                ts_ms: newest.ts_ms,
                                seq: newest.seq,
                            },
                        )
                    })
                    .collect(),
            };
            let contact = ExpectedContact {
                email: email.remove(user).map(|(_, _, e)| e),
                traits,
                exhaustive: mode == MissingTraits::Clear,
            };
            (user.to_owned(), contact)
        })
        .collect()
}

/// The trait leaves of one event: `address` objects become `address.<member>`.
fn leaves_of(traits: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, value) in traits {
        if let ("address", Value::Object(members)) = (key.as_str(), value) {
            for (member, v) in members {
                out.push((format!("address.{member}"), v.clone()));
            }
        } else {
            out.push((key.clone(), value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ev(user: &str, seq: i64, ts: i64, traits: Value) -> ModelEvent {
        ModelEvent {
            user_id: user.into(),
            seq,
            ts_ms: ts,
            traits: traits.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn newest_timestamp_wins_per_leaf_and_email_change_keeps_the_contact() {
        let events = [
            ev("u1", 1, 300, json!({"email": "New@x.io", "plan": "Pro"})),
            ev(
                "u1",
                2,
                100,
                json!({"email": "old@x.io", "plan": "Free", "city": "Oslo",
                                    "address": {"street": "1 Main"}}),
            ),
            ev("u2", 3, 100, json!({"email": "b@x.io"})),
        ];
        let keep = expected_state(&events, MissingTraits::Keep);
        assert_eq!(keep.len(), 2);
        let u1 = &keep["u1"];
        assert_eq!(u1.email.as_deref(), Some("new@x.io"));
        assert_eq!(u1.traits["plan"].value, json!("Pro"));
        assert_eq!(u1.traits["city"].value, json!("Oslo"));
        assert_eq!(u1.traits["address.street"].value, json!("1 Main"));
        assert!(!u1.exhaustive);
        let clear = expected_state(&events, MissingTraits::Clear);
        assert_eq!(
            clear["u1"].traits.keys().collect::<Vec<_>>(),
            vec!["email", "plan"]
        );
        assert!(clear["u1"].exhaustive);
    }

    #[test]
    fn timestamp_ties_go_to_the_later_arrival() {
        let events = [
            ev("u1", 2, 100, json!({"plan": "second"})),
            ev("u1", 1, 100, json!({"plan": "first"})),
        ];
        let s = expected_state(&events, MissingTraits::Keep);
        assert_eq!(s["u1"].traits["plan"].value, json!("second"));
    }
}
