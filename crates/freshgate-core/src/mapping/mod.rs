//! Segment identify traits → Freshworks contact fields and request bodies.
//!
//! `resolve` finds the field a trait key goes to, `coerce` formats the value for the field's
//! type, `contact` builds the upsert and bulk bodies. This module ties the first two together:
//! [`map_traits`] turns coalesced traits into a [`MappedContact`] plus a report of what was not
//! sent and why.

pub mod coerce;
pub mod contact;
pub mod resolve;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::coalesce::{TraitValue, flatten_trait};
pub use contact::{Identity, bulk_item, identifier, upsert_body};
pub use resolve::{Entity, FieldIndex, Level, Resolution};

/// One contact field to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappedField {
    /// The coerced value (`null` clears the field).
    pub value: Value,
    /// Timestamp (Unix ms) of the event that set it.
    pub ts_ms: i64,
    /// Goes under `contact.custom_field`.
    pub custom: bool,
}

/// Why one trait was not sent although it named a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoercionFailure {
    /// The trait key as received (flattened: `address.city`).
    pub trait_key: String,
    /// The field's internal name.
    pub field: String,
    /// What was wrong with the value.
    pub reason: String,
}

/// Everything the mapping left out, for traces and the console.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingReport {
    /// Trait keys that match no field.
    pub unmapped: Vec<String>,
    /// Trait keys that match several fields at one precedence level, with those fields.
    pub ambiguous: Vec<(String, Vec<String>)>,
    /// Values that could not be coerced to their field's type.
    pub coercion_failures: Vec<CoercionFailure>,
}

impl MappingReport {
    /// Nothing was left out.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.unmapped.is_empty() && self.ambiguous.is_empty() && self.coercion_failures.is_empty()
    }
}

/// A contact's traits resolved to fields of one account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MappedContact {
    /// The `email` trait, normalised by [`crate::email::normalize`] (the unique identifier).
    pub email: Option<String>,
    /// Timestamp of the event that set `email` (newest event wins for the email too).
    #[serde(default)]
    pub email_ts_ms: Option<i64>,
    /// Field internal name → value to write.
    pub fields: BTreeMap<String, MappedField>,
    /// What was left out.
    pub report: MappingReport,
    /// Newest timestamp among the input traits: the time `MissingTraits::Clear` blanks fields
    /// at. `None` when there were no traits; a caller that knows the newest event's timestamp
    /// anyway (an identify with empty traits) may set it.
    pub ts_ms: Option<i64>,
}

struct Candidate {
    value: Value,
    ts_ms: i64,
    seq: i64,
    level: Level,
    key: String,
}

impl Candidate {
    /// Newest event first; inside one event the stronger level, then the smaller key, so the
    /// choice never depends on map iteration order.
    fn beats(&self, other: &Self) -> bool {
        (
            self.ts_ms,
            self.seq,
            std::cmp::Reverse(self.level),
            std::cmp::Reverse(&self.key),
        ) > (
            other.ts_ms,
            other.seq,
            std::cmp::Reverse(other.level),
            std::cmp::Reverse(&other.key),
        )
    }
}

/// Resolve and coerce coalesced traits.
///
/// Several keys may target one field (`firstName`, `first name`, the `name` split): the value
/// of the newest event wins, and inside one event the strongest precedence level. `email` is
/// taken out as the identifier. `address` objects are flattened as in [`crate::coalesce`].
#[must_use]
pub fn map_traits(index: &FieldIndex, traits: &BTreeMap<String, TraitValue>) -> MappedContact {
    let mut out = MappedContact::default();
    let mut candidates: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    let mut email: Option<(i64, i64, String)> = None;

    for (raw_key, tv) in traits {
        out.ts_ms = Some(out.ts_ms.map_or(tv.ts_ms, |t| t.max(tv.ts_ms)));
        for (key, value) in flatten_trait(raw_key, &tv.value) {
            let push = |candidates: &mut BTreeMap<String, Vec<Candidate>>,
                        name: &str,
                        value: Value,
                        level| {
                candidates
                    .entry(name.to_owned())
                    .or_default()
                    .push(Candidate {
                        value,
                        ts_ms: tv.ts_ms,
                        seq: tv.seq,
                        level,
                        key: key.clone(),
                    });
            };
            if key == "email" && index.entity() == resolve::Entity::Contact {
                match &value {
                    Value::String(s) if !s.trim().is_empty() => {
                        let e = (tv.ts_ms, tv.seq, crate::email::normalize(s));
                        if email.as_ref().is_none_or(|cur| (e.0, e.1) > (cur.0, cur.1)) {
                            email = Some(e);
                        }
                    }
                    // The identifier cannot be cleared; a null email just names no address.
                    Value::Null => {}
                    other => out.report.coercion_failures.push(CoercionFailure {
                        trait_key: key.clone(),
                        field: "emails".into(),
                        reason: format!("expected an email address, got {other}"),
                    }),
                }
                continue;
            }
            match index.resolve(&key) {
                Resolution::Field { name, level } => push(&mut candidates, &name, value, level),
                Resolution::NameSplit => match split_name(&value) {
                    Ok((first, last)) => {
                        for (name, part) in [("first_name", first), ("last_name", last)] {
                            if index.field(name).is_some() {
                                push(&mut candidates, name, part, Level::Derived);
                            }
                        }
                    }
                    Err(reason) => out.report.coercion_failures.push(CoercionFailure {
                        trait_key: key.clone(),
                        field: "first_name".into(),
                        reason,
                    }),
                },
                Resolution::Ambiguous(names) => out.report.ambiguous.push((key.clone(), names)),
                Resolution::Unmapped => out.report.unmapped.push(key.clone()),
            }
        }
    }

    for (name, list) in candidates {
        let Some(def) = index.field(&name) else {
            continue;
        };
        let Some(winner) = list
            .into_iter()
            .reduce(|best, c| if c.beats(&best) { c } else { best })
        else {
            continue;
        };
        match coerce::coerce(def, &winner.value) {
            Ok(value) => {
                out.fields.insert(
                    name,
                    MappedField {
                        value,
                        ts_ms: winner.ts_ms,
                        custom: def.is_custom(),
                    },
                );
            }
            Err(reason) => out.report.coercion_failures.push(CoercionFailure {
                trait_key: winner.key,
                field: name,
                reason,
            }),
        }
    }
    out.email_ts_ms = email.as_ref().map(|(ts, _, _)| *ts);
    out.email = email.map(|(_, _, e)| e);
    out
}

/// `name` → (first, last): the first word and the rest. One word clears the last name (the
/// whole name is that word); `null` or blank clears both. Always both halves, so the split's
/// targets never depend on the value (which keeps coalescing equal to sending one by one).
fn split_name(value: &Value) -> Result<(Value, Value), String> {
    match value {
        Value::Null => Ok((Value::Null, Value::Null)),
        Value::String(s) => {
            let t = s.trim();
            match t.split_once(char::is_whitespace) {
                _ if t.is_empty() => Ok((Value::Null, Value::Null)),
                Some((first, last)) => Ok((
                    Value::String(first.to_owned()),
                    Value::String(last.trim().to_owned()),
                )),
                None => Ok((Value::String(t.to_owned()), Value::Null)),
            }
        }
        other => Err(format!("expected a name, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fields::{FieldDef, FieldType};
    use serde_json::json;

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
            FieldDef::new("cf_a", "Dup", FieldType::Text, &[]),
            FieldDef::new("cf_b", "dup", FieldType::Text, &[]),
        ])
    }

    fn traits(ts: i64, v: Value) -> BTreeMap<String, TraitValue> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    TraitValue {
                        value: v.clone(),
                        ts_ms: ts,
                        seq: 1,
                    },
                )
            })
            .collect()
    }

    fn values(m: &MappedContact) -> Value {
        Value::Object(
            m.fields
                .iter()
                .map(|(k, f)| (k.clone(), f.value.clone()))
                .collect(),
        )
    }

    #[test]
    fn maps_every_rule_and_reports_the_rest() {
        let m = map_traits(
            &index(),
            &traits(
                7,
                json!({
                    "email": " Derek@Example.ORG ",
                    "firstName": "Derek",
                    "phone": "+47 1",
                    "title": "CTO",
                    "Plan": "pro",
                    "cfSeats": "12",
                    "address": {"street": "1 Main", "city": "Oslo", "postalCode": "0150", "country": "NO"},
                    "industry": "Music",
                    "dup": "x",
                    "createdAt": "2024-01-01"
                }),
            ),
        );
        assert_eq!(m.email.as_deref(), Some("derek@example.org"));
        assert_eq!(
            values(&m),
            json!({"first_name": "Derek", "work_number": "+47 1", "job_title": "CTO",
                   "cf_plan": "Pro", "cf_seats": 12, "address": "1 Main", "city": "Oslo",
                   "zipcode": "0150"})
        );
        assert!(m.fields["cf_plan"].custom);
        assert!(!m.fields["city"].custom);
        assert_eq!(m.fields["city"].ts_ms, 7);
        assert_eq!(m.ts_ms, Some(7));
        assert_eq!(
            m.report.unmapped,
            vec!["address.country", "createdAt", "industry"]
        );
        assert_eq!(
            m.report.ambiguous,
            vec![("dup".to_owned(), vec!["cf_a".to_owned(), "cf_b".to_owned()])]
        );
    }

    #[test]
    fn name_split_fills_only_what_first_and_last_do_not() {
        let m = map_traits(&index(), &traits(1, json!({"name": "Derek Sivers"})));
        assert_eq!(
            values(&m),
            json!({"first_name": "Derek", "last_name": "Sivers"})
        );
        let m = map_traits(
            &index(),
            &traits(1, json!({"name": "Derek van Sivers", "first_name": "D."})),
        );
        assert_eq!(
            values(&m),
            json!({"first_name": "D.", "last_name": "van Sivers"})
        );
        let m = map_traits(&index(), &traits(1, json!({"name": "Cher"})));
        assert_eq!(values(&m), json!({"first_name": "Cher", "last_name": null}));
    }

    #[test]
    fn newest_key_wins_when_several_target_one_field() {
        let mut t = traits(1, json!({"first_name": "Old"}));
        t.insert(
            "First Name".into(),
            TraitValue {
                value: json!("New"),
                ts_ms: 2,
                seq: 0,
            },
        );
        let m = map_traits(&index(), &t);
        assert_eq!(m.fields["first_name"].value, json!("New"));
        assert_eq!(m.fields["first_name"].ts_ms, 2);
        // Same event: the stronger level wins (internal name over label).
        let m = map_traits(
            &index(),
            &traits(1, json!({"first_name": "A", "First Name": "B"})),
        );
        assert_eq!(m.fields["first_name"].value, json!("A"));
    }

    #[test]
    fn a_bad_value_drops_its_field_alone() {
        let m = map_traits(
            &index(),
            &traits(
                1,
                json!({"cf_plan": "Gold", "cf_seats": "many", "city": "Oslo", "first_name": {"x": 1}}),
            ),
        );
        assert_eq!(values(&m), json!({"city": "Oslo"}));
        let failed: Vec<_> = m
            .report
            .coercion_failures
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(failed, vec!["cf_plan", "cf_seats", "first_name"]);
    }

    #[test]
    fn null_is_kept_as_clear() {
        let m = map_traits(
            &index(),
            &traits(1, json!({"cf_seats": null, "email": null})),
        );
        assert_eq!(values(&m), json!({"cf_seats": null}));
        assert_eq!(m.email, None);
    }

    #[test]
    fn flattened_address_keys_map_like_the_object() {
        let m = map_traits(
            &index(),
            &traits(1, json!({"address.city": "Oslo", "address": "str"})),
        );
        assert_eq!(values(&m), json!({"city": "Oslo", "address": "str"}));
    }
}
