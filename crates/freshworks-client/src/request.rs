//! Typed request bodies of the endpoints beyond contact upserts: sales activities, sales
//! account upserts and list membership (spec/freshworks.md §6–§7). Each serialises to exactly
//! the wire shape; the insta snapshots below pin it.

use freshgate_core::activity::ActivityBody;
use freshgate_core::mapping::MappedField;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a sales activity is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetableType {
    /// A contact.
    Contact,
    /// A sales account.
    SalesAccount,
    /// A deal.
    Deal,
}

/// `POST /sales_activities`: `{"sales_activity": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesActivityRequest {
    /// The activity.
    pub sales_activity: NewSalesActivity,
}

/// The fields of a new sales activity (RudderStack requires title, start_date, end_date,
/// owner_id and targetable_type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSalesActivity {
    /// Title.
    pub title: String,
    /// Start, in the account's offset (`2021-10-04T14:45:00-04:00`).
    pub start_date: String,
    /// End, same format.
    pub end_date: String,
    /// Id of a type from `/selector/sales_activity_types`.
    pub sales_activity_type_id: i64,
    /// What it is attached to.
    pub targetable_type: TargetableType,
    /// Id of the contact (account, deal).
    pub targetable_id: i64,
    /// Id of an owner from `/selector/owners`.
    pub owner_id: i64,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Id from `/selector/sales_activity_outcomes`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_activity_outcome_id: Option<i64>,
}

/// `POST /sales_accounts/upsert`: `{"unique_identifier":{"name":..},"sales_account":{..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesAccountUpsert {
    /// The key the account is found by: its name (account names are unique).
    pub unique_identifier: AccountIdentifier,
    /// The values to write.
    pub sales_account: AccountValues,
}

/// `unique_identifier` of an account upsert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountIdentifier {
    /// The account name.
    pub name: String,
}

/// `sales_account` of an account upsert: the name, built-in fields and custom fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountValues {
    /// The account name (also the identifier).
    pub name: String,
    /// Built-in fields by internal name (`website`, `number_of_employees`, …).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
    /// Custom fields by internal name (`cf_*`).
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub custom_field: Map<String, Value>,
}

impl SalesAccountUpsert {
    /// An upsert of the account `name` writing `fields` (built-in) and `custom_field`.
    #[must_use]
    pub fn new(name: &str, fields: Map<String, Value>, custom_field: Map<String, Value>) -> Self {
        let mut fields = fields;
        // The name is written from the identifier, never from a field of the same name.
        fields.remove("name");
        fields.remove("custom_field");
        Self {
            unique_identifier: AccountIdentifier {
                name: name.to_owned(),
            },
            sales_account: AccountValues {
                name: name.to_owned(),
                fields,
                custom_field,
            },
        }
    }
}

impl SalesAccountUpsert {
    /// The upsert of a planned account: `fields` (from `AccountPlan::send`) split into built-in
    /// and `custom_field` values.
    #[must_use]
    pub fn of_fields<'a>(
        name: &str,
        fields: impl IntoIterator<Item = (&'a String, &'a MappedField)>,
    ) -> Self {
        let mut builtin = Map::new();
        let mut custom = Map::new();
        for (field, mapped) in fields {
            let target = if mapped.custom {
                &mut custom
            } else {
                &mut builtin
            };
            target.insert(field.clone(), mapped.value.clone());
        }
        Self::new(name, builtin, custom)
    }
}

impl SalesActivityRequest {
    /// A contact's activity from its spec and the resolved ids (type, contact, owner).
    #[must_use]
    pub fn for_contact(body: &ActivityBody, type_id: i64, contact_id: i64, owner_id: i64) -> Self {
        Self {
            sales_activity: NewSalesActivity {
                title: body.title.clone(),
                start_date: body.at.clone(),
                end_date: body.at.clone(),
                sales_activity_type_id: type_id,
                targetable_type: TargetableType::Contact,
                targetable_id: contact_id,
                owner_id,
                notes: Some(body.notes.clone()).filter(|n| !n.is_empty()),
                sales_activity_outcome_id: None,
            },
        }
    }
}

/// `PUT /lists/{id}/add_contacts` and `remove_contacts`: `{"ids":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMembership {
    /// Contact ids (not emails).
    pub ids: Vec<i64>,
}

/// `POST /lists`: `{"name": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewList {
    /// The list name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn sales_activity_body() {
        let body = SalesActivityRequest {
            sales_activity: NewSalesActivity {
                title: "Order 50314b8e".into(),
                start_date: "2021-10-04T14:45:00-04:00".into(),
                end_date: "2021-10-04T14:45:00-04:00".into(),
                sales_activity_type_id: 70_000_612_898,
                targetable_type: TargetableType::Contact,
                targetable_id: 70_001_234_567,
                owner_id: 70_000_000_001,
                notes: Some("order_id: 50314b8e\ntotal: 27.5".into()),
                sales_activity_outcome_id: None,
            },
        };
        insta::assert_json_snapshot!("sales_activity", body);
    }

    #[test]
    fn sales_account_upsert_body() {
        let fields = json!({"website": "initech.example", "number_of_employees": 120,
                            "industry_type_id": 70000001, "name": "ignored"});
        let custom = json!({"cf_plan": "Pro"});
        let body = SalesAccountUpsert::new(
            "Initech",
            fields.as_object().unwrap().clone(),
            custom.as_object().unwrap().clone(),
        );
        insta::assert_json_snapshot!("sales_account_upsert", body);
        let bare = SalesAccountUpsert::new("Globex", Map::new(), Map::new());
        insta::assert_json_snapshot!("sales_account_upsert_name_only", bare);
    }

    #[test]
    fn bodies_from_the_core_specs() {
        let fields: std::collections::BTreeMap<String, MappedField> = [
            ("website", json!("initech.example"), false),
            ("cf_plan", json!("Pro"), true),
            ("city", Value::Null, false),
        ]
        .into_iter()
        .map(|(k, value, custom)| {
            (
                k.to_owned(),
                MappedField {
                    value,
                    ts_ms: 1,
                    custom,
                },
            )
        })
        .collect();
        insta::assert_json_snapshot!(
            "sales_account_upsert_of_fields",
            SalesAccountUpsert::of_fields("Initech", &fields)
        );
        let body = ActivityBody {
            type_name: "Purchase".into(),
            title: "Order 7".into(),
            notes: String::new(),
            at: "2024-03-01T08:00:00-04:00".into(),
        };
        insta::assert_json_snapshot!(
            "sales_activity_for_contact",
            SalesActivityRequest::for_contact(
                &body,
                70_000_612_901,
                70_054_866_612,
                70_000_012_345
            )
        );
    }

    #[test]
    fn list_bodies() {
        insta::assert_json_snapshot!(
            "list_membership",
            ListMembership {
                ids: vec![70_000_000_001, 70_000_000_002]
            }
        );
        insta::assert_json_snapshot!(
            "new_list",
            NewList {
                name: "vip_users".into()
            }
        );
    }
}
