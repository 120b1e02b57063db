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
            ev(
                1,
                100,
                json!({"address": {"street": "1 Main", "city": "Oslo"}}),
            ),
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

    mod equivalence {
        //! Coalescing N identifies and sending once must leave the contact as sending each of
        //! them in order would. "In order" is the newest-wins order the shadow enforces:
        //! events are applied by (timestamp, seq), each planned against the shadow the
        //! previous one left. What is compared is the end state of the shadow, i.e. what
        //! freshgate has written to the CRM: in `Keep` mode value and timestamp of every
        //! field must be identical; in `Clear` mode values must be identical once a field that
        //! was never written and a field written as empty (`null`) count as the same thing
        //! (sending one by one may set then blank a field the coalesced send never touches).
        //! Generated values are always valid for their field: a value that fails coercion
        //! hides an older value of the same key, which sending one by one would have written.
        use super::super::*;
        use crate::fields::{FieldDef, FieldType};
        use crate::mapping::{FieldIndex, map_traits};
        use crate::model::{ModelEvent, expected_state};
        use crate::shadow::{ContactShadow, ShadowField, apply, plan};
        use proptest::prelude::*;
        use serde_json::{Value, json};

        fn index() -> FieldIndex {
            FieldIndex::new(&[
                FieldDef::new("first_name", "First name", FieldType::Text, &[]),
                FieldDef::new("last_name", "Last name", FieldType::Text, &[]),
                FieldDef::new("work_number", "Work", FieldType::Text, &[]),
                FieldDef::new("job_title", "Job title", FieldType::Text, &[]),
                FieldDef::new("address", "Address", FieldType::Textarea, &[]),
                FieldDef::new("city", "City", FieldType::Text, &[]),
                FieldDef::new("zipcode", "Zipcode", FieldType::Text, &[]),
                FieldDef::new("cf_plan", "Plan", FieldType::Dropdown, &["Free", "Pro"]),
                FieldDef::new("cf_seats", "Seats", FieldType::Number, &[]),
                FieldDef::new("cf_active", "Active", FieldType::Checkbox, &[]),
                FieldDef::new(
                    "cf_colors",
                    "Colors",
                    FieldType::MultiSelectDropdown,
                    &["Red", "Blue"],
                ),
                FieldDef::new("cf_renewal", "Renewal", FieldType::Date, &[]),
            ])
        }

        const FIELDS: &[&str] = &[
            "first_name",
            "last_name",
            "work_number",
            "job_title",
            "address",
            "city",
            "zipcode",
            "cf_plan",
            "cf_seats",
            "cf_active",
            "cf_colors",
            "cf_renewal",
        ];

        fn text() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(json!("a")),
                Just(json!("b c")),
                Just(json!("Dd")),
                Just(Value::Null)
            ]
        }

        /// A trait key and a value valid for every field it can reach. Several keys alias
        /// one field (`first_name`, `firstName`, `First Name`, `name`) on purpose.
        fn trait_kv() -> impl Strategy<Value = (String, Value)> {
            let address = prop_oneof![
                text(),
                (
                    proptest::option::of(text()),
                    proptest::option::of(text()),
                    proptest::option::of(text())
                )
                    .prop_map(|(street, city, zip)| {
                        let mut m = serde_json::Map::new();
                        if let Some(v) = street {
                            m.insert("street".into(), v);
                        }
                        if let Some(v) = city {
                            m.insert("city".into(), v);
                        }
                        if let Some(v) = zip {
                            m.insert("postalCode".into(), v);
                        }
                        Value::Object(m)
                    }),
            ];
            prop_oneof![
                (
                    "first_name|firstName|First Name|lastName|phone|title|city|name|unknown_trait",
                    text()
                )
                    .prop_map(|(k, v)| (k, v)),
                Just("address".to_owned())
                    .prop_flat_map(move |k| address.clone().prop_map(move |v| (k.clone(), v))),
                (
                    "cf_plan|Plan",
                    prop_oneof![Just(json!("free")), Just(json!("Pro")), Just(Value::Null)]
                ),
                (
                    "cfSeats|Seats",
                    prop_oneof![Just(json!(3)), Just(json!("4")), Just(Value::Null)]
                ),
                (
                    "cf_active",
                    prop_oneof![Just(json!(true)), Just(json!("no")), Just(Value::Null)]
                ),
                (
                    "Colors",
                    prop_oneof![
                        Just(json!(["red"])),
                        Just(json!("blue;red")),
                        Just(Value::Null)
                    ]
                ),
                (
                    "cf_renewal",
                    prop_oneof![
                        Just(json!("2024-01-02")),
                        Just(json!(1_700_000_000)),
                        Just(Value::Null)
                    ]
                ),
            ]
        }

        fn events() -> impl Strategy<Value = Vec<IdentifyInput>> {
            let one = (
                0i64..4,
                prop_oneof![Just("a@x.io"), Just("A@X.io"), Just("b@x.io")],
                proptest::collection::vec(trait_kv(), 0..6),
            );
            proptest::collection::vec(one, 1..7).prop_map(|evs| {
                evs.into_iter()
                    .enumerate()
                    .map(|(i, (ts, email, kvs))| {
                        let mut traits: serde_json::Map<String, Value> = kvs.into_iter().collect();
                        // Every identify carries its email (Freshmarketer requires it).
                        traits.insert("email".into(), json!(email));
                        IdentifyInput {
                            seq: i64::try_from(i).unwrap_or(0) + 1,
                            ts_ms: ts * 1000,
                            traits,
                        }
                    })
                    .collect()
            })
        }

        fn shadow0() -> impl Strategy<Value = Option<ContactShadow>> {
            let field = (
                0usize..FIELDS.len(),
                0i64..5,
                prop_oneof![Just(json!("old")), Just(Value::Null)],
            );
            proptest::option::of(proptest::collection::vec(field, 0..6).prop_map(|fs| {
                ContactShadow {
                    in_doubt: false,
                    confirmed_at_ms: None,
                    account_ids: Vec::new(),
                    pending_account_ids: Vec::new(),
                    not_from_traits: std::collections::BTreeSet::new(),
                    email_ts_ms: None,
                    contact_id: Some(1),
                    email: Some("a@x.io".into()),
                    external_id: Some("u1".into()),
                    fields: fs
                        .into_iter()
                        .map(|(i, ts, value)| {
                            (
                                FIELDS[i].to_owned(),
                                ShadowField {
                                    value,
                                    ts_ms: ts * 1000,
                                    custom: FIELDS[i].starts_with("cf_"),
                                },
                            )
                        })
                        .collect(),
                }
            }))
        }

        fn send(
            ix: &FieldIndex,
            shadow: Option<&ContactShadow>,
            evs: &[IdentifyInput],
            mode: MissingTraits,
        ) -> ContactShadow {
            let mapped = map_traits(ix, &coalesce(evs, mode));
            let p = plan(shadow, &mapped, mode);
            let email = mapped.email.clone().unwrap_or_default();
            apply(shadow, "u1", &email, &p, Some(1))
        }

        fn effective(s: &ContactShadow) -> BTreeMap<String, Value> {
            s.fields
                .iter()
                .filter(|(_, f)| !f.value.is_null())
                .map(|(k, f)| (k.clone(), f.value.clone()))
                .collect()
        }

        fn check(
            shadow: Option<ContactShadow>,
            evs: &[IdentifyInput],
            mode: MissingTraits,
        ) -> Result<(), TestCaseError> {
            let ix = index();
            let at_once = send(&ix, shadow.as_ref(), evs, mode);
            let mut ordered: Vec<&IdentifyInput> = evs.iter().collect();
            ordered.sort_by_key(|e| (e.ts_ms, e.seq));
            let mut one_by_one = shadow;
            for e in ordered {
                one_by_one = Some(send(
                    &ix,
                    one_by_one.as_ref(),
                    std::slice::from_ref(e),
                    mode,
                ));
            }
            let one_by_one = one_by_one.unwrap_or_default();
            prop_assert_eq!(&at_once.email, &one_by_one.email);
            match mode {
                MissingTraits::Keep => prop_assert_eq!(&at_once.fields, &one_by_one.fields),
                MissingTraits::Clear => {
                    prop_assert_eq!(effective(&at_once), effective(&one_by_one))
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn coalesce_then_plan_equals_applying_in_order_keep(s in shadow0(), evs in events()) {
                check(s, &evs, MissingTraits::Keep)?;
            }

            #[test]
            fn coalesce_then_plan_equals_applying_in_order_clear(s in shadow0(), evs in events()) {
                check(s, &evs, MissingTraits::Clear)?;
            }

            #[test]
            fn coalesce_agrees_with_the_reference_model(evs in events(), clear in any::<bool>()) {
                let mode = if clear { MissingTraits::Clear } else { MissingTraits::Keep };
                let model_events: Vec<ModelEvent> = evs
                    .iter()
                    .map(|e| ModelEvent { user_id: "u1".into(), seq: e.seq, ts_ms: e.ts_ms, traits: e.traits.clone() })
                    .collect();
                let expected = expected_state(&model_events, mode);
                let contact = &expected["u1"];
                prop_assert_eq!(&contact.traits, &coalesce(&evs, mode));
                // From an empty CRM, what freshgate writes is what the model expects.
                let written = send(&index(), None, &evs, mode);
                let want: BTreeMap<String, Value> = contact
                    .expected_fields(&index())
                    .into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .collect();
                prop_assert_eq!(effective(&written), want);
                prop_assert_eq!(written.email, contact.email.clone());
            }
        }
    }

    #[test]
    fn mode_serialises_lowercase_and_defaults_to_keep() {
        assert_eq!(
            serde_json::to_string(&MissingTraits::Clear).unwrap(),
            "\"clear\""
        );
        assert_eq!(MissingTraits::default(), MissingTraits::Keep);
    }
}
