//! Typed wire shapes of the Freshworks responses we read (spec/freshworks.md §2–§7), and the
//! lenient deserialisers they need: ids arrive as numbers or numeric strings, `custom_field`
//! may be `null`, a bulk job's `data` may be a JSON-encoded string (spec §3, §9.11).
//! Unknown keys are kept in `other` maps so nothing the server sent is lost.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A contact as returned by upsert, `GET /contacts/{id}` and lookup (spec §2.2, §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact id (an 11-digit integer; accepted as a number or a numeric string).
    #[serde(deserialize_with = "lenient::i64")]
    pub id: i64,
    /// The primary email, if any.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub email: Option<String>,
    /// The external id (we map Segment `userId` here).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub external_id: Option<String>,
    /// Custom field values keyed by internal name (`cf_*`). `null` reads as empty.
    #[serde(default, deserialize_with = "lenient::map_or_null")]
    pub custom_field: Map<String, Value>,
    /// Every other key of the contact, untouched (`emails`, `first_name`, `record_type_id`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `{"contact": {...}}`, the body of upsert and `GET /contacts/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactEnvelope {
    /// The contact.
    pub contact: Contact,
}

/// The body of `GET /lookup?...&entities=contact`: `{"contacts":{"contacts":[...]}}`.
/// A bare `{"contacts":[...]}` is tolerated as well.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LookupResponse {
    #[serde(default)]
    contacts: LookupContacts,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum LookupContacts {
    Nested {
        #[serde(default, deserialize_with = "lenient::vec_or_null")]
        contacts: Vec<Contact>,
    },
    Flat(Vec<Contact>),
    Null(()),
}

impl Default for LookupContacts {
    fn default() -> Self {
        Self::Flat(Vec::new())
    }
}

impl LookupResponse {
    pub(crate) fn into_contacts(self) -> Vec<Contact> {
        match self.contacts {
            LookupContacts::Nested { contacts } | LookupContacts::Flat(contacts) => contacts,
            LookupContacts::Null(()) => Vec::new(),
        }
    }
}

/// The body of `POST /contacts/bulk_upsert` (spec §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkJobAccepted {
    /// Absolute URL to poll with [`crate::FreshworksClient::job_status`].
    pub job_status_url: String,
    /// Any other key (UNVERIFIED which exist).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The body of `GET <job_status_url>` (spec §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// e.g. `IN_PROGRESS`, `SUCCESS`, `FAILED`.
    #[serde(default, deserialize_with = "lenient::string_or_null")]
    pub status: String,
    /// The job's result; arrives as an object or as a JSON-encoded string. Empty until known.
    #[serde(default, deserialize_with = "lenient::json_string_or_object")]
    pub data: JobData,
    /// Other keys (`job_type_name`, `progress`, `created_at`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl JobStatus {
    /// The job finished successfully (the per-record outcome is in `data`).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.status.eq_ignore_ascii_case("SUCCESS")
    }

    /// The job finished as a whole failure (no state names other than `SUCCESS` are verified;
    /// `FAILED` / `FAILURE` are the plausible terminal ones).
    #[must_use]
    pub fn is_failed(&self) -> bool {
        self.status.eq_ignore_ascii_case("FAILED") || self.status.eq_ignore_ascii_case("FAILURE")
    }

    /// Either of the above: polling can stop.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        self.is_done() || self.is_failed()
    }
}

/// A bulk job's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobData {
    /// Counts of succeeded and failed records.
    #[serde(default, deserialize_with = "lenient::default_if_null")]
    pub record_status: RecordStatus,
    /// One entry per failed record.
    #[serde(default, deserialize_with = "lenient::vec_or_null")]
    pub detailed_failure_report: Vec<FailureItem>,
    /// Other keys.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `record_status` of a bulk job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStatus {
    /// Records written.
    #[serde(default, deserialize_with = "lenient::u64_or_null")]
    pub succeeded: u64,
    /// Records refused.
    #[serde(default, deserialize_with = "lenient::u64_or_null")]
    pub failed: u64,
}

/// Which record a failure report entry is about: the identifier key it was sent with and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// `emails`, `mobile_number`, `external_id` or `id`.
    pub key: String,
    /// The value, as text (numbers are rendered in decimal).
    pub value: String,
}

/// One entry of `detailed_failure_report`, e.g. `{"emails":"x@y.z","error_message":["Email is not unique"]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureItem {
    /// The record's identifier, if one of the known keys is present.
    pub identifier: Option<Identifier>,
    /// Error messages (localised; never match on their text).
    pub error_message: Vec<String>,
    /// Other keys of the entry.
    pub other: Map<String, Value>,
}

/// Identifier keys of bulk items, in the order we look for them.
const IDENTIFIER_KEYS: [&str; 4] = ["emails", "mobile_number", "external_id", "id"];

impl<'de> Deserialize<'de> for FailureItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let identifier = IDENTIFIER_KEYS.iter().find_map(|key| {
            let value = match map.remove(*key)? {
                Value::String(s) => s,
                Value::Null => return None,
                other => other.to_string(),
            };
            Some(Identifier {
                key: (*key).to_owned(),
                value,
            })
        });
        let error_message = map
            .remove("error_message")
            .map(messages_from_value)
            .unwrap_or_default();
        Ok(Self {
            identifier,
            error_message,
            other: map,
        })
    }
}

/// The body of `GET /lists` (spec §6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListsPage {
    /// The lists on this page.
    #[serde(default, deserialize_with = "lenient::vec_or_null")]
    pub lists: Vec<MarketingList>,
    /// Paging information, if sent.
    #[serde(default)]
    pub meta: Option<ListsMeta>,
}

/// `meta` of `GET /lists`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListsMeta {
    /// Number of pages.
    #[serde(default, deserialize_with = "lenient::u64_or_null")]
    pub total_pages: u64,
    /// Number of lists.
    #[serde(default, deserialize_with = "lenient::u64_or_null")]
    pub total: u64,
}

/// A marketing list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketingList {
    /// List id.
    #[serde(deserialize_with = "lenient::i64")]
    pub id: i64,
    /// List name (not unique on the server).
    #[serde(default, deserialize_with = "lenient::string_or_null")]
    pub name: String,
    /// Other keys.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `{"list": {...}}`, the body of `POST /lists`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListEnvelope {
    /// The created list.
    pub list: MarketingList,
}

/// A sales account (spec §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesAccount {
    /// Account id.
    #[serde(deserialize_with = "lenient::i64")]
    pub id: i64,
    /// Account name (unique per Freshworks account).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    /// Custom field values keyed by internal name.
    #[serde(default, deserialize_with = "lenient::map_or_null")]
    pub custom_field: Map<String, Value>,
    /// Other keys.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `{"sales_account": {...}}`, the body of `POST /sales_accounts/upsert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesAccountEnvelope {
    /// The account.
    pub sales_account: SalesAccount,
}

/// A sales activity (spec §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesActivity {
    /// Activity id.
    #[serde(deserialize_with = "lenient::i64")]
    pub id: i64,
    /// Other keys (`title`, `targetable_id`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `{"sales_activity": {...}}`, the body of `POST /sales_activities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesActivityEnvelope {
    /// The activity.
    pub sales_activity: SalesActivity,
}

/// A user of `GET /selector/owners` (wrapped as `{"users":[...]}`, spec §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// User id (the `owner_id` of records).
    #[serde(deserialize_with = "lenient::i64")]
    pub id: i64,
    /// Login email.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub email: Option<String>,
    /// Name shown.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub display_name: Option<String>,
    /// Whether the user is active (absent: taken as active).
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_active: Option<bool>,
}

/// `GET /selector/owners`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnersResponse {
    /// The account's users.
    #[serde(default, deserialize_with = "lenient::vec_or_null")]
    pub users: Vec<Owner>,
}

/// A named choice of a selector (`sales_activity_types`, `lifecycle_stages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectorChoice {
    /// Id.
    #[serde(deserialize_with = "lenient::i64")]
    pub id: i64,
    /// Name, matched exactly (case-sensitively) by configuration.
    #[serde(default, deserialize_with = "lenient::string_or_null")]
    pub name: String,
    /// Other keys (`internal_name`, `position`, `disabled`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `GET /selector/sales_activity_types`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SalesActivityTypes {
    /// The types.
    #[serde(default, deserialize_with = "lenient::vec_or_null")]
    pub sales_activity_types: Vec<SelectorChoice>,
}

/// `GET /selector/lifecycle_stages`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleStages {
    /// The stages.
    #[serde(default, deserialize_with = "lenient::vec_or_null")]
    pub lifecycle_stages: Vec<SelectorChoice>,
}

/// Read a message list that should be an array of strings but may be a string, `null`, or
/// anything else (non-strings are rendered as JSON so no information is lost).
pub(crate) fn messages_from_value(value: Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            })
            .collect(),
        other => vec![other.to_string()],
    }
}

/// Deserialisers that accept the shape variations real clients have seen.
mod lenient {
    use super::*;

    fn value_to_i64(value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// An integer id sent as a number or a numeric string.
    pub(super) fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let value = Value::deserialize(d)?;
        value_to_i64(&value).ok_or_else(|| {
            D::Error::custom(format!(
                "expected an integer id (number or numeric string), got {value}"
            ))
        })
    }

    /// A count sent as a number, a numeric string, or `null` (0).
    pub(super) fn u64_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let value = Value::deserialize(d)?;
        match &value {
            Value::Null => Some(0),
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| D::Error::custom(format!("expected a count, got {value}")))
    }

    /// A string; numbers are rendered as text, `null` is `None`.
    pub(super) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(D::Error::custom(format!("expected a string, got {other}"))),
        }
    }

    /// A string where `null` reads as empty.
    pub(super) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(b) => Some(b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            _ => None,
        })
    }

    pub(super) fn string_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(opt_string(d)?.unwrap_or_default())
    }

    /// An object where `null` reads as empty.
    pub(super) fn map_or_null<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Map<String, Value>, D::Error> {
        Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
    }

    /// An array where `null` reads as empty.
    pub(super) fn vec_or_null<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
    }

    /// Any type where `null` reads as its default.
    pub(super) fn default_if_null<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// An object that may arrive JSON-encoded inside a string (bulk job `data`, spec §3).
    /// `null` and the empty string read as the default.
    pub(super) fn json_string_or_object<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + DeserializeOwned,
    {
        match Value::deserialize(d)? {
            Value::Null => Ok(T::default()),
            Value::String(s) if s.trim().is_empty() => Ok(T::default()),
            Value::String(s) => serde_json::from_str(&s).map_err(|e| {
                D::Error::custom(format!("JSON-encoded string could not be read: {e}"))
            }),
            other => serde_json::from_value(other).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn contact_ids_as_strings_and_null_custom_field() {
        let c: Contact = serde_json::from_value(
            json!({"id":"70054866612","email":null,"custom_field":null,"external_id":42,"x":1}),
        )
        .unwrap();
        assert_eq!(c.id, 70_054_866_612);
        assert_eq!(c.email, None);
        assert_eq!(c.external_id.as_deref(), Some("42"));
        assert!(c.custom_field.is_empty());
        assert_eq!(c.other["x"], 1);
        assert!(serde_json::from_value::<Contact>(json!({"id":"abc"})).is_err());
    }

    #[test]
    fn failure_items_pick_the_identifier() {
        let items: Vec<FailureItem> = serde_json::from_value(json!([
            {"emails":"x@y.z","error_message":["Email is not unique"]},
            {"id":70054866612_i64,"error_message":"one string"},
            {"mobile_number":"123","error_message":[{"code":1}, null]},
            {"error_message":null,"row":3}
        ]))
        .unwrap();
        assert_eq!(
            items[0].identifier,
            Some(Identifier {
                key: "emails".into(),
                value: "x@y.z".into()
            })
        );
        assert_eq!(items[0].error_message, ["Email is not unique"]);
        assert_eq!(items[1].identifier.as_ref().unwrap().value, "70054866612");
        assert_eq!(items[1].error_message, ["one string"]);
        assert_eq!(items[2].identifier.as_ref().unwrap().key, "mobile_number");
        assert_eq!(items[2].error_message, [r#"{"code":1}"#]);
        assert_eq!(items[3].identifier, None);
        assert!(items[3].error_message.is_empty());
        assert_eq!(items[3].other["row"], 3);
    }

    #[test]
    fn job_states() {
        let job: JobStatus =
            serde_json::from_value(json!({"status":"IN_PROGRESS","data":null})).unwrap();
        assert!(!job.is_terminal());
        assert_eq!(job.data, JobData::default());
        let job: JobStatus = serde_json::from_value(json!({"status":"FAILED","data":""})).unwrap();
        assert!(job.is_failed() && !job.is_done() && job.is_terminal());
        let job: JobStatus = serde_json::from_value(json!({"status":"SUCCESS"})).unwrap();
        assert!(job.is_done() && !job.is_failed());
    }

    #[test]
    fn lookup_shapes() {
        let nested: LookupResponse =
            serde_json::from_value(json!({"contacts":{"contacts":[{"id":1}]}})).unwrap();
        assert_eq!(nested.into_contacts().len(), 1);
        let flat: LookupResponse = serde_json::from_value(json!({"contacts":[{"id":2}]})).unwrap();
        assert_eq!(flat.into_contacts()[0].id, 2);
        let empty: LookupResponse = serde_json::from_value(json!({})).unwrap();
        assert!(empty.into_contacts().is_empty());
        let null: LookupResponse = serde_json::from_value(json!({"contacts":null})).unwrap();
        assert!(null.into_contacts().is_empty());
    }
}
