//! Folding a contact's pending identify events into one set of traits.
//!
//! Owns the merge order (event timestamp, then arrival `seq`), the `MissingTraits` mode and the
//! flattening of nested reserved traits (`address`) into per-leaf keys. The leaf flattening is what
//! makes "coalesce then send once" equal "send each event in order": two events that set different
//! parts of `address` must not hide each other, so each leaf (`address.city`, …) keeps its own
//! value and timestamp.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What an update does to fields that a newer identify no longer carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingTraits {
    /// Leave them as they are (Freshworks upsert semantics).
    #[default]
    Keep,
    /// Blank them: the newest identify is the whole truth (Segment's documented Freshmarketer
    /// behaviour, "that trait will be set as empty").
    Clear,
}

/// One accepted identify of a contact, as the coalescer needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifyInput {
    /// Arrival order (the store's sequence number); breaks timestamp ties.
    pub seq: i64,
    /// The event's timestamp, Unix ms.
    pub ts_ms: i64,
    /// The event's `traits` object.
    pub traits: Map<String, Value>,
}

/// The value a trait key ends up with and the event that set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    /// The trait value as sent (`null` means "clear").
    pub value: Value,
    /// Timestamp (Unix ms) of the event that set it.
    pub ts_ms: i64,
    /// Arrival `seq` of the event that set it. The mapping needs it when two different keys of
    /// different events with the same timestamp target one field (e.g. `firstName` then
    /// `first_name`): the later arrival wins, as it would have when sent one by one.
    #[serde(default)]
    pub seq: i64,
}

/// Trait keys whose object values are split into `key.sub` leaves.
pub const NESTED_TRAITS: &[&str] = &["address"];

/// Split one trait into the keys the mapping resolves: a nested reserved trait whose value is an
/// object becomes one `key.sub` entry per member; anything else is returned as is.
#[must_use]
pub fn flatten_trait(key: &str, value: &Value) -> Vec<(String, Value)> {
    match value {
        Value::Object(members) if NESTED_TRAITS.contains(&key) => members
            .iter()
            .map(|(sub, v)| (format!("{key}.{sub}"), v.clone()))
            .collect(),
        _ => vec![(key.to_owned(), value.clone())],
    }
}

/// Fold a contact's pending identifies into one trait map.
///
/// Events are taken in `(ts_ms, seq)` order. `Keep`: every key keeps the value of the newest
/// event that carried it, with that event's timestamp. `Clear`: only the newest event's traits
/// (the planner then blanks every field previously sent and absent now). `address` objects are
/// flattened into `address.<member>` keys first (see the module comment).
#[must_use]
pub fn coalesce(events: &[IdentifyInput], mode: MissingTraits) -> BTreeMap<String, TraitValue> {
    let mut order: Vec<&IdentifyInput> = events.iter().collect();
    order.sort_by_key(|e| (e.ts_ms, e.seq));
    let chosen: Vec<&IdentifyInput> = match mode {
        MissingTraits::Keep => order,
        MissingTraits::Clear => order.last().map(|e| vec![*e]).unwrap_or_default(),
    };
    let mut out = BTreeMap::new();
    for event in chosen {
        for (key, value) in &event.traits {
            for (leaf, v) in flatten_trait(key, value) {
                out.insert(
                    leaf,
                    TraitValue {
                        value: v,
                        ts_ms: event.ts_ms,
                        seq: event.seq,
                    },
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ev(seq: i64, ts_ms: i64, traits: Value) -> IdentifyInput {
        IdentifyInput {
            seq,
            ts_ms,
            traits: traits.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn keep_merges_in_timestamp_order_with_seq_breaking_ties() {
        let events = [
            ev(3, 200, json!({"plan": "late", "a": 1})),
            ev(1, 100, json!({"plan": "early", "b": 2})),
            ev(2, 200, json!({"plan": "tie-earlier-arrival"})),
        ];
        let out = coalesce(&events, MissingTraits::Keep);
        assert_eq!(out["plan"].value, json!("late"));
        assert_eq!(out["plan"].ts_ms, 200);
        assert_eq!(out["plan"].seq, 3);
        assert_eq!(out["b"].ts_ms, 100);
        assert_eq!(out["a"].value, json!(1));
    }

    #[test]
    fn clear_keeps_only_the_newest_event() {
        let events = [
            ev(1, 300, json!({"plan": "newest"})),
            ev(2, 100, json!({"plan": "old", "b": 2})),
        ];
        let out = coalesce(&events, MissingTraits::Clear);
        assert_eq!(out.len(), 1);
        assert_eq!(out["plan"].value, json!("newest"));
    }

    #[test]
    fn address_objects_merge_per_leaf() {
        let events = [
            ev(1, 100, json!({"address": {"street": "1 Main", "city": "Oslo"}})),
            ev(2, 200, json!({"address": {"city": "Bergen"}})),
        ];
        let out = coalesce(&events, MissingTraits::Keep);
        assert_eq!(out["address.street"].value, json!("1 Main"));
        assert_eq!(out["address.city"].value, json!("Bergen"));
        assert!(!out.contains_key("address"));
    }

    #[test]
    fn empty_input_gives_nothing() {
        assert!(coalesce(&[], MissingTraits::Keep).is_empty());
        assert!(coalesce(&[], MissingTraits::Clear).is_empty());
    }

    #[test]
    fn mode_serialises_lowercase_and_defaults_to_keep() {
        assert_eq!(serde_json::to_string(&MissingTraits::Clear).unwrap(), "\"clear\"");
        assert_eq!(MissingTraits::default(), MissingTraits::Keep);
    }
}
