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

/// One list call: many contacts added to (or removed from) one list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListBatch {
    /// The list's name.
    pub list: String,
    /// `add_contacts` or `remove_contacts`.
    pub membership: Membership,
    /// Contact ids, ascending, at most the `max_ids` given to [`batch_changes`].
    pub ids: Vec<i64>,
}

/// Membership changes (in arrival order) → the fewest list calls with the same end state: per
/// (contact, list) only the last change counts, then the contacts of one list and direction go
/// in one call of at most `max_ids` ids (`0` is taken as 1). Batches come out ordered by list,
/// removals before additions.
#[must_use]
pub fn batch_changes(
    changes: impl IntoIterator<Item = (i64, AudienceChange)>,
    max_ids: usize,
) -> Vec<ListBatch> {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<(String, i64), Membership> = BTreeMap::new();
    for (contact, change) in changes {
        last.insert((change.list, contact), change.membership);
    }
    let mut grouped: BTreeMap<(String, std::cmp::Reverse<Membership>), Vec<i64>> = BTreeMap::new();
    for ((list, contact), membership) in last {
        grouped
            .entry((list, std::cmp::Reverse(membership)))
            .or_default()
            .push(contact);
    }
    let mut out = Vec::new();
    for ((list, std::cmp::Reverse(membership)), ids) in grouped {
        for chunk in ids.chunks(max_ids.max(1)) {
            out.push(ListBatch {
                list: list.clone(),
                membership,
                ids: chunk.to_vec(),
            });
        }
    }
    out
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
    fn changes_batch_per_list_and_the_last_change_of_a_contact_wins() {
        let c = |list: &str, m| AudienceChange {
            list: list.into(),
            membership: m,
        };
        let batches = batch_changes(
            vec![
                (3, c("vip", Membership::Add)),
                (1, c("vip", Membership::Add)),
                (2, c("vip", Membership::Add)),
                (2, c("vip", Membership::Remove)),
                (1, c("churn", Membership::Remove)),
                (4, c("vip", Membership::Add)),
            ],
            2,
        );
        let got: Vec<(&str, Membership, Vec<i64>)> = batches
            .iter()
            .map(|b| (b.list.as_str(), b.membership, b.ids.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("churn", Membership::Remove, vec![1]),
                ("vip", Membership::Remove, vec![2]),
                ("vip", Membership::Add, vec![1, 3]),
                ("vip", Membership::Add, vec![4]),
            ]
        );
    }

    proptest::proptest! {
        // Model: applying the changes one by one to a set of (list, contact) memberships ends
        // where applying the batches does, starting from any membership state, and no batch
        // is larger than asked.
        #[test]
        fn batches_end_where_one_by_one_ends(
            start in proptest::collection::btree_set((0u8..3, 0i64..6), 0..10),
            changes in proptest::collection::vec((0i64..6, 0u8..3, proptest::bool::ANY), 0..40),
            max_ids in 1usize..4,
        ) {
            use std::collections::BTreeSet;
            let lists = ["a", "b", "c"];
            let mut model: BTreeSet<(String, i64)> =
                start.iter().map(|(l, c)| (lists[*l as usize].to_owned(), *c)).collect();
            let mut batched = model.clone();
            let input: Vec<(i64, AudienceChange)> = changes
                .iter()
                .map(|(contact, list, add)| {
                    let membership = if *add { Membership::Add } else { Membership::Remove };
                    (*contact, AudienceChange { list: lists[*list as usize].to_owned(), membership })
                })
                .collect();
            for (contact, change) in &input {
                match change.membership {
                    Membership::Add => { model.insert((change.list.clone(), *contact)); }
                    Membership::Remove => { model.remove(&(change.list.clone(), *contact)); }
                }
            }
            for batch in batch_changes(input, max_ids) {
                proptest::prop_assert!(!batch.ids.is_empty() && batch.ids.len() <= max_ids);
                for id in batch.ids {
                    match batch.membership {
                        Membership::Add => { batched.insert((batch.list.clone(), id)); }
                        Membership::Remove => { batched.remove(&(batch.list.clone(), id)); }
                    }
                }
            }
            proptest::prop_assert_eq!(batched, model);
        }
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
