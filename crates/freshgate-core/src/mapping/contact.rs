//! Freshworks contact request bodies: `POST /contacts/upsert` and one item of
//! `POST /contacts/bulk_upsert` (spec/freshworks.md §2.1, §3), and the identity rule that
//! picks their `unique_identifier`.
//!
//! Every write sets `external_id` = the Segment `userId`, so a contact freshgate ever wrote can
//! be found by it whatever its email became. The email (the verified identifier) is used only
//! when the shadow *confirms* the contact under this very email: the last write to it was
//! settled (nothing in doubt), under this `userId`. In every other case (no shadow, a write in
//! doubt after a crash or a timeout, an email change) the contact may already exist under
//! another email, and only the `external_id` finds it; a contact created elsewhere (a web form)
//! has no `external_id`, and the pipeline falls back to the email when no contact has it.

use serde_json::{Map, Value, json};

use crate::email::normalize as normalize_email;
use crate::shadow::{ContactShadow, UpsertPlan};

/// Which `unique_identifier` a write uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `{"emails": <normalised email>}`: the shadow confirms this contact under this email, or
    /// no contact has the `external_id` (a contact created elsewhere).
    Email(String),
    /// `{"external_id": <userId>}`: the contact's state is not confirmed under this email.
    ExternalId(String),
}

impl Identity {
    /// The identifier key as Freshworks names it.
    #[must_use]
    pub fn key(&self) -> &'static str {
        match self {
            Self::Email(_) => "emails",
            Self::ExternalId(_) => "external_id",
        }
    }

    /// The identifier value.
    #[must_use]
    pub fn value(&self) -> &str {
        match self {
            Self::Email(v) | Self::ExternalId(v) => v,
        }
    }
}

/// The body of `POST /crm/sales/api/contacts/upsert`.
///
/// `{"unique_identifier":{<identity>},"contact":{"emails":…,"external_id":userId,…built-in
/// fields…,"custom_field":{"cf_…":…}}}`, `custom_field` omitted when empty.
#[must_use]
pub fn upsert_body(user_id: &str, email: &str, plan: &UpsertPlan, identity: &Identity) -> Value {
    json!({
        "unique_identifier": { identity.key(): identity.value() },
        "contact": contact_object(user_id, email, plan),
    })
}

/// One item of `POST /crm/sales/api/contacts/bulk_upsert`:
/// `{<identity key>: <value>, "data": {…contact fields…}}`.
#[must_use]
pub fn bulk_item(user_id: &str, email: &str, plan: &UpsertPlan, identity: &Identity) -> Value {
    json!({ identity.key(): identity.value(), "data": contact_object(user_id, email, plan) })
}

/// The identity rule (see the module comment): the email only when the shadow confirms the
/// contact under it, else the `external_id`.
#[must_use]
pub fn identifier(user_id: &str, email: &str, shadow: Option<&ContactShadow>) -> Identity {
    let email = normalize_email(email);
    if shadow.is_some_and(|s| s.confirms(user_id, &email)) {
        Identity::Email(email)
    } else {
        Identity::ExternalId(user_id.to_owned())
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
    use crate::shadow::{apply, in_doubt, plan};

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
        let identity = identifier(user, &email, shadow);
        (
            upsert_body(user, &email, &p, &identity),
            bulk_item(user, &email, &p, &identity),
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
            in_doubt: false,
            confirmed_at_ms: None,
            account_ids: Vec::new(),
            pending_account_ids: Vec::new(),
            not_from_traits: std::collections::BTreeSet::new(),
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
            in_doubt: false,
            confirmed_at_ms: None,
            account_ids: Vec::new(),
            pending_account_ids: Vec::new(),
            not_from_traits: std::collections::BTreeSet::new(),
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
        // No known contact id (written by a bulk job): the external id still identifies it.
        shadow.contact_id = None;
        let (upsert, _, _) = bodies("u-123", &evs, Some(&shadow), MissingTraits::Keep);
        assert_eq!(upsert["unique_identifier"], json!({"external_id": "u-123"}));
    }

    #[test]
    fn only_a_confirmed_shadow_lets_the_email_identify() {
        let confirmed = ContactShadow {
            email: Some("new@example.org".into()),
            external_id: Some("u-123".into()),
            ..ContactShadow::default()
        };
        let evs = [event(3, 3_000, json!({"email": " New@Example.org "}))];
        let key = |shadow: Option<&ContactShadow>| {
            bodies("u-123", &evs, shadow, MissingTraits::Keep).0["unique_identifier"].clone()
        };
        assert_eq!(key(Some(&confirmed)), json!({"emails": "new@example.org"}));
        // No shadow: a crash may have lost what a write did (a bulk job created the contact
        // under an older email): only the external id finds it.
        assert_eq!(key(None), json!({"external_id": "u-123"}));
        // A write in doubt may have moved the contact to another email.
        assert_eq!(
            key(in_doubt(Some(&confirmed)).as_ref()),
            json!({"external_id": "u-123"})
        );
        // Written under another userId: the shadow confirms nothing about this one.
        let other = ContactShadow {
            external_id: Some("someone-else".into()),
            ..confirmed.clone()
        };
        assert_eq!(key(Some(&other)), json!({"external_id": "u-123"}));
        assert_eq!(
            identifier("u-123", "NEW@example.org", Some(&confirmed)),
            Identity::Email("new@example.org".into())
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
