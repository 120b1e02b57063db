//! Freshworks contact field metadata, as returned by `GET /settings/contacts/fields`.
//!
//! This is the wire shape (spec/freshworks.md §4.1) and the domain type at once: the client
//! deserialises it, the mapping reads it. Unknown field types are kept as `Other` and passed
//! through untouched, never a crash (spec §4.2).

use serde::{Deserialize, Deserializer, Serialize};

/// The body of `GET /settings/contacts/fields`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldsResponse {
    /// Every contact field of the account, built-in and custom.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

/// One contact field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    /// Field id: an integer in every sample, a string for some custom fields (UNVERIFIED), so both.
    #[serde(default)]
    pub id: serde_json::Value,
    /// Internal name, e.g. `first_name` or `cf_plan`.
    pub name: String,
    /// Label shown in the UI, e.g. `First name` or `Plan`.
    #[serde(default)]
    pub label: String,
    /// Field type.
    #[serde(rename = "type", default)]
    pub field_type: FieldType,
    /// `true` for built-in fields, `false` for custom ones (sent under `custom_field`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub default: bool,
    /// Required on create (per account).
    #[serde(default, deserialize_with = "null_as_default")]
    pub required: bool,
    /// Choices of dropdown / radio / multi-select fields.
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<Choice>,
}

impl FieldDef {
    /// A field definition, e.g. for fixtures: built-in unless the name starts with `cf_`; the
    /// choices' ids are their texts.
    #[must_use]
    pub fn new(name: &str, label: &str, field_type: FieldType, choices: &[&str]) -> Self {
        Self {
            id: serde_json::Value::String(name.to_owned()),
            name: name.to_owned(),
            label: label.to_owned(),
            field_type,
            default: !name.starts_with("cf_"),
            required: false,
            choices: choices
                .iter()
                .map(|v| Choice {
                    id: serde_json::Value::String((*v).to_owned()),
                    value: (*v).to_owned(),
                })
                .collect(),
        }
    }

    /// Whether values of this field go under `contact.custom_field`.
    #[must_use]
    pub fn is_custom(&self) -> bool {
        !self.default || self.name.starts_with("cf_")
    }
}

/// One choice of a dropdown-like field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Choice id (integer or string).
    #[serde(default)]
    pub id: serde_json::Value,
    /// The choice text, which is what is written (spec §4.3).
    pub value: String,
}

/// Field types (spec/freshworks.md §4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// Single-line text.
    #[default]
    Text,
    /// Multi-line text.
    Textarea,
    /// Number.
    Number,
    /// Boolean.
    Checkbox,
    /// One of `choices`.
    Dropdown,
    /// Several of `choices`, `;`-joined.
    MultiSelectDropdown,
    /// One of `choices`.
    Radio,
    /// `YYYY-MM-DD`.
    Date,
    /// Text with suggestions.
    AutoComplete,
    /// A container, not a value.
    GroupField,
    /// Anything else, passed through untouched.
    Other(String),
}

impl FieldType {
    /// The wire name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Text => "text",
            Self::Textarea => "textarea",
            Self::Number => "number",
            Self::Checkbox => "checkbox",
            Self::Dropdown => "dropdown",
            Self::MultiSelectDropdown => "multi_select_dropdown",
            Self::Radio => "radio",
            Self::Date => "date",
            Self::AutoComplete => "auto_complete",
            Self::GroupField => "group_field",
            Self::Other(s) => s,
        }
    }

    /// Parse a wire name; unknown names become `Other`.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "text" => Self::Text,
            "textarea" => Self::Textarea,
            "number" => Self::Number,
            "checkbox" => Self::Checkbox,
            "dropdown" => Self::Dropdown,
            "multi_select_dropdown" => Self::MultiSelectDropdown,
            "radio" => Self::Radio,
            "date" => Self::Date,
            "auto_complete" => Self::AutoComplete,
            "group_field" => Self::GroupField,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl Serialize for FieldType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FieldType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_spec_sample() {
        let body = r#"{ "fields": [
          { "id": 70000123456, "name": "first_name", "label": "First name", "type": "text", "default": true,
            "actionable": true, "position": 1, "required": false, "choices": [], "base_model": "Contact",
            "visible": true, "field_group_id": null },
          { "id": 70000123999, "name": "cf_plan", "label": "Plan", "type": "dropdown", "default": false,
            "actionable": true, "position": 40, "required": false, "base_model": "Contact",
            "choices": [ { "id": 70000001, "value": "Free" }, { "id": 70000002, "value": "Pro" } ] },
          { "id": "abc", "name": "cf_odd", "label": "Odd", "type": "formula", "default": null, "choices": null }
        ] }"#;
        let parsed: FieldsResponse = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.fields.len(), 3);
        assert_eq!(parsed.fields[1].field_type, FieldType::Dropdown);
        assert_eq!(parsed.fields[1].choices[1].value, "Pro");
        assert!(parsed.fields[1].is_custom());
        assert!(!parsed.fields[0].is_custom());
        assert_eq!(
            parsed.fields[2].field_type,
            FieldType::Other("formula".into())
        );
    }
}
