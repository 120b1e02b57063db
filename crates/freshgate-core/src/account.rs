//! Segment `group` calls and identify `traits.company` → the spec of a sales account upsert.
//!
//! The traits are resolved and coerced against the account's *sales account* fields by the same
//! code as contact traits ([`crate::mapping::map_traits`] over a
//! [`FieldIndex`] of [`Entity::SalesAccount`]). The account's name is its unique identifier in
//! Freshworks (`unique_identifier.name`): `traits.name`, else the `groupId` (group), or the
//! company's `name` (company). In the store an account is keyed by [`AccountKey`]: the
//! `groupId`, or the company's `id` (else its name), so an unchanged group costs no call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::coalesce::TraitValue;
use crate::fields::FieldType;
use crate::mapping::{Entity, FieldIndex, MappedField, MappingReport, map_traits};
use crate::segment::{EventType, StoredEvent};

/// The identify trait Segment's Freshsales Suite destination reads the account from.
pub const COMPANY_TRAIT: &str = "company";

/// The contact field that associates sales accounts (`[{"id":..,"is_primary":..}]`).
pub const SALES_ACCOUNTS: &str = "sales_accounts";

/// Whether an unmapped trait key is the company trait or one of its members (`company`,
/// `company.name`): not a contact field's business when `company_accounts` delivers it.
#[must_use]
pub fn is_company_key(key: &str) -> bool {
    key == COMPANY_TRAIT
        || key
            .strip_prefix(COMPANY_TRAIT)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The contact's `sales_accounts` value for these account ids, in association order: the
/// first is the primary one. The array replaces the contact's associations (spec/freshworks.md
/// §2.1, INFERRED), so it always carries every account freshgate associated.
#[must_use]
pub fn account_links(account_ids: &[i64]) -> Value {
    Value::Array(
        account_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut link = Map::new();
                link.insert("id".into(), Value::from(*id));
                link.insert("is_primary".into(), Value::Bool(i == 0));
                Value::Object(link)
            })
            .collect(),
    )
}

/// The account ids after associating `account_id` (appended unless already there), or `None`
/// when the contact is already associated with it.
#[must_use]
pub fn with_account(associated: &[i64], account_id: i64) -> Option<Vec<i64>> {
    if associated.contains(&account_id) {
        return None;
    }
    let mut ids = associated.to_vec();
    ids.push(account_id);
    Some(ids)
}

/// The body of the `POST /contacts/upsert` that associates an existing contact (found by its
/// `external_id`, the Segment `userId`) with `account_ids`; no other field is written.
#[must_use]
pub fn association_body(user_id: &str, account_ids: &[i64]) -> Value {
    let mut identifier = Map::new();
    identifier.insert("external_id".into(), Value::String(user_id.to_owned()));
    let mut contact = Map::new();
    contact.insert(SALES_ACCOUNTS.into(), account_links(account_ids));
    let mut body = Map::new();
    body.insert("unique_identifier".into(), Value::Object(identifier));
    body.insert("contact".into(), Value::Object(contact));
    Value::Object(body)
}

/// Where an account comes from, and its key in the store's account shadow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AccountKey {
    /// A group call's `groupId`.
    Group(String),
    /// An identify's `traits.company`: its `id`, else its name.
    Company(String),
}

impl AccountKey {
    /// The stable store key: `group:<groupId>` / `company:<key>` (the two never collide).
    #[must_use]
    pub fn store_key(&self) -> String {
        match self {
            Self::Group(id) => format!("group:{id}"),
            Self::Company(key) => format!("company:{key}"),
        }
    }

    /// The key of a store key; `None` for anything else.
    #[must_use]
    pub fn from_store_key(s: &str) -> Option<Self> {
        if let Some(id) = s.strip_prefix("group:") {
            Some(Self::Group(id.to_owned()))
        } else {
            s.strip_prefix("company:")
                .map(|k| Self::Company(k.to_owned()))
        }
    }
}

/// One sales account to upsert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSpec {
    /// Its key in the store.
    pub key: AccountKey,
    /// `unique_identifier.name` and `sales_account.name`.
    pub name: String,
    /// Field internal name → value (custom ones go under `sales_account.custom_field`).
    pub fields: BTreeMap<String, MappedField>,
    /// Traits not sent, and why.
    pub report: MappingReport,
    /// Timestamp (Unix ms) of the event.
    pub ts_ms: i64,
}

/// Why an event gives no account: the skip reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAccount {
    /// A group call without a `groupId` (validation normally refuses these).
    #[error("group call has no groupId")]
    NoGroupId,
    /// A company trait that names no company.
    #[error("traits.company has no name (expected a string or an object with a \"name\")")]
    NoCompanyName,
    /// Not a group call.
    #[error("{0} calls carry no account")]
    NotAGroup(&'static str),
}

/// The account of a `group` call: named `traits.name`, else the `groupId`.
///
/// # Errors
/// [`NoAccount`] when the call is not a group or has no `groupId`.
pub fn group_account(index: &FieldIndex, event: &StoredEvent) -> Result<AccountSpec, NoAccount> {
    if event.event_type != EventType::Group {
        return Err(NoAccount::NotAGroup(event.event_type.as_str()));
    }
    let group_id = event
        .group_id
        .clone()
        .filter(|g| !g.trim().is_empty())
        .ok_or(NoAccount::NoGroupId)?;
    let name = text_of(event.traits.get("name")).unwrap_or_else(|| group_id.trim().to_owned());
    let ts_ms = unix_ms(event);
    Ok(build(
        index,
        AccountKey::Group(group_id),
        name,
        &event.traits,
        ts_ms,
    ))
}

/// The account of an identify's `traits.company`: `None` when there is no such trait (or it is
/// `null`), else the account named after the company.
///
/// # Errors
/// [`NoAccount::NoCompanyName`] when the trait names no company.
pub fn company_account(
    index: &FieldIndex,
    traits: &Map<String, Value>,
    ts_ms: i64,
) -> Option<Result<AccountSpec, NoAccount>> {
    let company = traits.get(COMPANY_TRAIT)?;
    let (name, members) = match company {
        Value::Null => return None,
        Value::Object(m) => (text_of(m.get("name")), m.clone()),
        other => (text_of(Some(other)), Map::new()),
    };
    let Some(name) = name else {
        return Some(Err(NoAccount::NoCompanyName));
    };
    let key = text_of(members.get("id")).unwrap_or_else(|| name.clone());
    Some(Ok(build(
        index,
        AccountKey::Company(key),
        name,
        &members,
        ts_ms,
    )))
}

/// Keys of a company object that identify it rather than describe it.
const COMPANY_IDENTITY: &[&str] = &["name", "id"];

fn build(
    index: &FieldIndex,
    key: AccountKey,
    name: String,
    traits: &Map<String, Value>,
    ts_ms: i64,
) -> AccountSpec {
    debug_assert_eq!(index.entity(), Entity::SalesAccount);
    let is_company = matches!(key, AccountKey::Company(_));
    let input: BTreeMap<String, TraitValue> = traits
        .iter()
        .filter(|(k, _)| {
            k.as_str() != "name" && !(is_company && COMPANY_IDENTITY.contains(&k.as_str()))
        })
        .map(|(k, v)| {
            (
                k.clone(),
                TraitValue {
                    value: v.clone(),
                    ts_ms,
                    seq: 0,
                },
            )
        })
        .collect();
    let mapped = map_traits(index, &input);
    let mut fields = mapped.fields;
    for (field, mapped) in &mut fields {
        if let Some(def) = index.field(field) {
            choice_ids(def, &mut mapped.value);
        }
    }
    AccountSpec {
        key,
        name,
        fields,
        report: mapped.report,
        ts_ms,
    }
}

/// Built-in account dropdowns named `…_id` (`industry_type_id`, `business_type_id`) take the
/// choice's id, not its text (spec/freshworks.md §7 shows ids); the coerced text is swapped for
/// the id of the choice it matched.
fn choice_ids(def: &crate::fields::FieldDef, value: &mut Value) {
    if !(matches!(def.field_type, FieldType::Dropdown | FieldType::Radio)
        && def.name.ends_with("_id"))
    {
        return;
    }
    let Value::String(text) = value else {
        return;
    };
    if let Some(choice) = def.choices.iter().find(|c| &c.value == text) {
        *value = choice.id.clone();
    }
}

/// A non-blank string, or a number as text.
fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn unix_ms(event: &StoredEvent) -> i64 {
    i64::try_from(event.timestamp.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fields::{Choice, FieldDef};
    use crate::segment::parse_stored_event;
    use serde_json::json;

    fn index() -> FieldIndex {
        let mut industry = FieldDef::new(
            "industry_type_id",
            "Industry type",
            FieldType::Dropdown,
            &[],
        );
        industry.choices = vec![
            Choice {
                id: json!(70000001),
                value: "Software".into(),
            },
            Choice {
                id: json!(70000002),
                value: "Music".into(),
            },
        ];
        FieldIndex::for_entity(
            Entity::SalesAccount,
            &[
                FieldDef::new("name", "Name", FieldType::Text, &[]),
                industry,
                FieldDef::new(
                    "number_of_employees",
                    "Number of employees",
                    FieldType::Number,
                    &[],
                ),
                FieldDef::new("website", "Website", FieldType::Text, &[]),
                FieldDef::new("phone", "Phone", FieldType::Text, &[]),
                FieldDef::new("city", "City", FieldType::Text, &[]),
                FieldDef::new("cf_plan", "Plan", FieldType::Dropdown, &["Free", "Pro"]),
            ],
        )
    }

    fn values(spec: &AccountSpec) -> Value {
        Value::Object(
            spec.fields
                .iter()
                .map(|(k, f)| (k.clone(), f.value.clone()))
                .collect(),
        )
    }

    fn group(v: Value) -> StoredEvent {
        parse_stored_event(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn group_traits_map_to_account_fields() {
        let e = group(json!({
            "type": "group", "messageId": "m", "userId": "u", "groupId": "g-1",
            "timestamp": "2024-01-01T00:00:00.000Z",
            "traits": {"name": "Initech", "industry": "Software", "employees": "120",
                       "website": "initech.example", "phone": "+1 555", "plan": "pro",
                       "address": {"city": "Austin", "planet": "Earth"}, "mood": "grim"}
        }));
        let spec = group_account(&index(), &e).unwrap();
        assert_eq!(spec.key, AccountKey::Group("g-1".into()));
        assert_eq!(spec.name, "Initech");
        assert_eq!(
            values(&spec),
            json!({"industry_type_id": 70000001, "number_of_employees": 120,
                   "website": "initech.example", "phone": "+1 555", "city": "Austin",
                   "cf_plan": "Pro"})
        );
        assert!(spec.fields["cf_plan"].custom);
        assert_eq!(spec.ts_ms, 1_704_067_200_000);
        assert_eq!(spec.report.unmapped, vec!["address.planet", "mood"]);
    }

    #[test]
    fn a_group_without_a_name_is_named_after_its_id_and_bad_values_drop_alone() {
        let e = group(json!({
            "type": "group", "messageId": "m", "userId": "u", "groupId": 42,
            "timestamp": "2024-01-01T00:00:00.000Z",
            "traits": {"employees": "many", "industry": "Farming", "website": "w"}
        }));
        let spec = group_account(&index(), &e).unwrap();
        assert_eq!(spec.name, "42");
        assert_eq!(spec.key.store_key(), "group:42");
        assert_eq!(values(&spec), json!({"website": "w"}));
        assert_eq!(spec.report.coercion_failures.len(), 2);
        let track = group(json!({"type": "track", "messageId": "m", "userId": "u",
            "event": "E", "timestamp": "2024-01-01T00:00:00.000Z"}));
        assert_eq!(
            group_account(&index(), &track).unwrap_err(),
            NoAccount::NotAGroup("track")
        );
    }

    #[test]
    fn company_trait_as_object_or_string() {
        let traits = json!({"email": "a@b.c", "company": {"name": "Acme", "id": "c-9",
            "industry": "Music", "employee_count": 12, "plan": "Free"}});
        let spec = company_account(&index(), traits.as_object().unwrap(), 5)
            .unwrap()
            .unwrap();
        assert_eq!(spec.key, AccountKey::Company("c-9".into()));
        assert_eq!(spec.name, "Acme");
        assert_eq!(
            values(&spec),
            json!({"industry_type_id": 70000002, "number_of_employees": 12, "cf_plan": "Free"})
        );
        assert!(spec.report.is_clean());
        let traits = json!({"company": " Globex "});
        let spec = company_account(&index(), traits.as_object().unwrap(), 5)
            .unwrap()
            .unwrap();
        assert_eq!(
            (spec.key.store_key(), spec.name.as_str()),
            ("company:Globex".to_owned(), "Globex")
        );
        assert!(spec.fields.is_empty());
        assert!(company_account(&index(), json!({"x": 1}).as_object().unwrap(), 5).is_none());
        assert!(
            company_account(&index(), json!({"company": null}).as_object().unwrap(), 5).is_none()
        );
        assert_eq!(
            company_account(
                &index(),
                json!({"company": {"industry": "Music"}})
                    .as_object()
                    .unwrap(),
                5
            )
            .unwrap()
            .unwrap_err(),
            NoAccount::NoCompanyName
        );
    }

    #[test]
    fn associations_append_and_the_first_stays_primary() {
        assert_eq!(with_account(&[], 7), Some(vec![7]));
        assert_eq!(with_account(&[7], 9), Some(vec![7, 9]));
        assert_eq!(with_account(&[7, 9], 9), None);
        insta::assert_json_snapshot!("association_body", association_body("u-1", &[7, 9]));
        assert!(is_company_key("company") && is_company_key("company.name"));
        assert!(!is_company_key("company_size") && !is_company_key("companyName"));
    }

    #[test]
    fn store_keys_round_trip() {
        for key in [
            AccountKey::Group("a:b".into()),
            AccountKey::Company("x".into()),
        ] {
            assert_eq!(AccountKey::from_store_key(&key.store_key()), Some(key));
        }
        assert_eq!(AccountKey::from_store_key("other"), None);
    }
}
