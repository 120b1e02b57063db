//! Freshworks contact request bodies: `POST /contacts/upsert` and one item of
//! `POST /contacts/bulk_upsert` (spec/freshworks.md §2.1, §3).
//!
//! The identifier is the lower-cased email, except when the shadow shows that this contact
//! (known id, `external_id` = this `userId`) was written under another email: then the
//! `external_id` identifies it, so the new email lands on the same contact instead of creating
//! a duplicate.

use serde_json::{Map, Value, json};

use crate::email::normalize as normalize_email;
use crate::shadow::{ContactShadow, UpsertPlan};

/// The body of `POST /crm/sales/api/contacts/upsert`.
///
/// `{"unique_identifier":{"emails":…},"contact":{"emails":…,"external_id":userId,…built-in
/// fields…,"custom_field":{"cf_…":…}}}`, `custom_field` omitted when empty.
#[must_use]
pub fn upsert_body(
    user_id: &str,
    email: &str,
    plan: &UpsertPlan,
    shadow: Option<&ContactShadow>,
) -> Value {
    let (key, value) = identifier(user_id, email, shadow);
    json!({
        "unique_identifier": { key: value },
        "contact": contact_object(user_id, email, plan),
    })
}

/// One item of `POST /crm/sales/api/contacts/bulk_upsert`:
/// `{"emails": …, "data": {…contact fields…}}`, or `{"external_id": userId, "data": …}` when
/// the email changed (see the module comment).
#[must_use]
pub fn bulk_item(
    user_id: &str,
    email: &str,
    plan: &UpsertPlan,
    shadow: Option<&ContactShadow>,
) -> Value {
    let (key, value) = identifier(user_id, email, shadow);
    json!({ key: value, "data": contact_object(user_id, email, plan) })
}

/// Whether the shadow shows the same contact under a different email, written with
/// `external_id` = this `userId`. The contact id is not required: a contact written by a bulk
/// job is known by its `external_id` only.
#[must_use]
pub fn email_changed(user_id: &str, email: &str, shadow: Option<&ContactShadow>) -> bool {
    shadow.is_some_and(|s| {
        s.external_id.as_deref() == Some(user_id)
            && s.email
                .as_deref()
                .is_some_and(|old| old != normalize_email(email))
    })
}

fn identifier(
    user_id: &str,
    email: &str,
    shadow: Option<&ContactShadow>,
) -> (&'static str, String) {
    if email_changed(user_id, email, shadow) {
        ("external_id", user_id.to_owned())
    } else {
        ("emails", normalize_email(email))
    }
}

fn contact_object(user_id: &str, email: &str, plan: &UpsertPlan) -> Value {
    let mut contact = Map::new();
    let mut custom = Map::new();
    contact.insert("emails".into(), Value::String(normalize_email(email)));
    contact.insert("external_id".into(), Value::String(user_id.to_owned()));
    for (name, field) in &plan.send {
        let target = if field.custom {
            &mut custom
        } else {
            &mut contact
        };
        target.insert(name.clone(), field.value.clone());
    }
    if !custom.is_empty() {
        contact.insert("custom_field".into(), Value::Object(custom));
    }
    Value::Object(contact)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::coalesce::{IdentifyInput, MissingTraits, coalesce};
    use crate::fields::{FieldDef, FieldType};
    use crate::mapping::{FieldIndex, map_traits};
    use crate::shadow::{apply, plan};

    fn index() -> FieldIndex {
        FieldIndex::new(&[
            FieldDef::new("first_name", "First name", FieldType::Text, &[]),
            FieldDef::new("last_name", "Last name", FieldType::Text, &[]),
            FieldDef::new("work_number", "Work", FieldType::Text, &[]),
            FieldDef::new("mobile_number", "Mobile", FieldType::Text, &[]),
            FieldDef::new("job_title", "Job title", FieldType::Text, &[]),
            FieldDef::new("address", "Address", FieldType::Textarea, &[]),
            FieldDef::new("city", "City", FieldType::Text, &[]),
            FieldDef::new("zipcode", "Zipcode", FieldType::Text, &[]),
            FieldDef::new("emails", "Email", FieldType::Text, &[]),
            FieldDef::new("cf_notes", "Notes", FieldType::Textarea, &[]),
            FieldDef::new("cf_nickname", "Nickname", FieldType::AutoComplete, &[]),
            FieldDef::new("cf_seats", "Seats", FieldType::Number, &[]),
            FieldDef::new("cf_is_active", "Is active", FieldType::Checkbox, &[]),
            FieldDef::new("cf_plan", "Plan", FieldType::Dropdown, &["Free", "Pro"]),
            FieldDef::new("cf_tier", "Tier", FieldType::Radio, &["Gold", "Silver"]),
            FieldDef::new(
                "cf_colors",
                "Colors",
                FieldType::MultiSelectDropdown,
                &["Red", "Green", "Blue"],
            ),
            FieldDef::new("cf_renewal", "Renewal", FieldType::Date, &[]),
            FieldDef::new("cf_score", "Score", FieldType::Other("formula".into()), &[]),
            FieldDef::new("cf_group", "Group", FieldType::GroupField, &[]),
        ])
    }

    fn event(seq: i64, ts: i64, traits: Value) -> IdentifyInput {
        IdentifyInput {
            seq,
            ts_ms: ts,
            traits: traits.as_object().unwrap().clone(),
        }
    }

    /// Map, plan and build both bodies, as the pipeline does.
    fn bodies(
        user: &str,
        events: &[IdentifyInput],
        shadow: Option<&ContactShadow>,
        mode: MissingTraits,
    ) -> (Value, Value, UpsertPlan) {
        let mapped = map_traits(&index(), &coalesce(events, mode));
        let p = plan(shadow, &mapped, mode);
        let email = mapped
            .email
            .clone()
            .or_else(|| shadow.and_then(|s| s.email.clone()))
            .unwrap();
        (
            upsert_body(user, &email, &p, shadow),
            bulk_item(user, &email, &p, shadow),
            p,
        )
    }

    #[test]
    fn new_contact() {
        let (upsert, bulk, _) = bodies(
            "u-123",
            &[event(
                1,
                1_000,
                json!({"email": "Derek@Example.org", "name": "Derek Sivers", "phone": "+1 555",
                       "title": "Founder", "industry": "Music"}),
            )],
            None,
            MissingTraits::Keep,
        );
        insta::assert_json_snapshot!("new_contact_upsert", upsert);
        insta::assert_json_snapshot!("new_contact_bulk", bulk);
        assert!(upsert["contact"].get("custom_field").is_none());
    }

    #[test]
    fn update_with_custom_fields_of_every_type() {
        let shadow = ContactShadow {
            email_ts_ms: None,
            contact_id: Some(70_054_866_612),
            email: Some("derek@example.org".into()),
            external_id: Some("u-123".into()),
            fields: BTreeMap::new(),
        };
        let (upsert, bulk, p) = bodies(
            "u-123",
            &[
                event(
                    1,
                    1_000,
                    json!({"email": "derek@example.org", "Plan": "free"}),
                ),
                event(
                    2,
                    2_000,
                    json!({
                        "email": "derek@example.org",
                        "firstName": "Derek",
                        "address": {"street": "1 Main St", "city": "Oslo", "postal_code": "0150"},
                        "Notes": "line one\nline two",
                        "cfNickname": 42,
                        "cf_seats": "12",
                        "Is Active": "yes",
                        "plan": "PRO",
                        "tier": "gold",
                        "colors": ["blue", "red"],
                        "renewal": "2025-01-31T10:00:00Z",
                        "cf_score": {"raw": 7},
                        "Group": "ignored",
                    }),
                ),
            ],
            Some(&shadow),
            MissingTraits::Keep,
        );
        insta::assert_json_snapshot!("update_custom_fields_upsert", upsert);
        insta::assert_json_snapshot!("update_custom_fields_bulk", bulk);
        assert_eq!(
            upsert["unique_identifier"],
            json!({"emails": "derek@example.org"})
        );
        assert_eq!(p.send.len(), 13);
    }

    #[test]
    fn changed_email_updates_the_same_contact_by_external_id() {
        let mut shadow = ContactShadow {
            email_ts_ms: None,
            contact_id: Some(70_054_866_612),
            email: Some("old@example.org".into()),
            external_id: Some("u-123".into()),
            fields: BTreeMap::new(),
        };
        let evs = [event(
            3,
            3_000,
            json!({"email": "New@Example.org", "lastName": "Sivers"}),
        )];
        let (upsert, bulk, _) = bodies("u-123", &evs, Some(&shadow), MissingTraits::Keep);
        insta::assert_json_snapshot!("changed_email_upsert", upsert);
        insta::assert_json_snapshot!("changed_email_bulk", bulk);
        assert_eq!(upsert["unique_identifier"], json!({"external_id": "u-123"}));
        // Written under another userId: the external id proves nothing, use the email.
        shadow.external_id = Some("someone-else".into());
        let (upsert, _, _) = bodies("u-123", &evs, Some(&shadow), MissingTraits::Keep);
        assert_eq!(
            upsert["unique_identifier"],
            json!({"emails": "new@example.org"})
        );
        // No known contact id (written by a bulk job): the external id still identifies it.
        shadow.external_id = Some("u-123".into());
        shadow.contact_id = None;
        let (upsert, _, _) = bodies("u-123", &evs, Some(&shadow), MissingTraits::Keep);
        assert_eq!(upsert["unique_identifier"], json!({"external_id": "u-123"}));
        // No shadow at all: nothing is known, the email identifies.
        let (upsert, _, _) = bodies("u-123", &evs, None, MissingTraits::Keep);
        assert_eq!(
            upsert["unique_identifier"],
            json!({"emails": "new@example.org"})
        );
    }

    #[test]
    fn clear_mode_blanks_what_the_newest_identify_lacks() {
        let first = [event(
            1,
            1_000,
            json!({"email": "derek@example.org", "first_name": "Derek", "last_name": "Sivers",
                   "cf_plan": "Pro", "cf_seats": 3, "city": "Oslo"}),
        )];
        let (_, _, p1) = bodies("u-123", &first, None, MissingTraits::Clear);
        let shadow = apply(None, "u-123", "derek@example.org", &p1, Some(7));
        let (upsert, bulk, p2) = bodies(
            "u-123",
            &[event(
                2,
                2_000,
                json!({"email": "derek@example.org", "first_name": "Derek"}),
            )],
            Some(&shadow),
            MissingTraits::Clear,
        );
        insta::assert_json_snapshot!("clear_mode_upsert", upsert);
        insta::assert_json_snapshot!("clear_mode_bulk", bulk);
        assert_eq!(p2.cleared, vec!["cf_plan", "cf_seats", "city", "last_name"]);
    }
}
