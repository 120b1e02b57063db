//! The account's contact field set (`GET /settings/contacts/fields`) and value validation by field type
//! (spec §4): number, checkbox → bool, dropdown/radio → one of `choices[].value`, date `YYYY-MM-DD`,
//! multi-select `;`-joined, text as string.

use std::collections::HashMap;

use serde_json::Value;

use crate::config::{EmulatorError, Msg, Switches};

/// The embedded default field set: a plausible real account (spec §4.1, §5).
pub(crate) const DEFAULT_FIELDS: &str = include_str!("default_fields.json");

/// Field types the official connector knows (spec §4.2); fixtures with any other type are rejected.
const VERIFIED_TYPES: &[&str] = &[
    "text",
    "textarea",
    "number",
    "checkbox",
    "dropdown",
    "multi_select_dropdown",
    "radio",
    "date",
    "auto_complete",
    "group_field",
];

/// One choice of a dropdown, radio or multi-select field.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub id: Value,
    pub value: String,
}

/// One field definition, as far as validation needs it.
#[derive(Debug, Clone)]
pub(crate) struct FieldDef {
    pub name: String,
    pub label: String,
    pub ftype: String,
    /// `true` for built-in fields (top level of the contact), `false` for custom (`custom_field`).
    pub builtin: bool,
    pub required: bool,
    pub choices: Vec<Choice>,
}

/// The parsed field set plus the JSON served verbatim.
#[derive(Debug, Clone)]
pub(crate) struct FieldSet {
    pub raw: Value,
    pub defs: Vec<FieldDef>,
    by_name: HashMap<String, usize>,
}

impl FieldSet {
    /// Parses and checks a `{"fields":[...]}` document.
    pub(crate) fn parse(raw: Value) -> Result<Self, EmulatorError> {
        let list = raw.get("fields").and_then(Value::as_array).ok_or_else(|| {
            EmulatorError::InvalidFields("expected {\"fields\":[...]}".to_owned())
        })?;
        let mut defs = Vec::with_capacity(list.len());
        let mut by_name = HashMap::new();
        for (i, f) in list.iter().enumerate() {
            let text = |key: &str| {
                f.get(key)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        EmulatorError::InvalidFields(format!("field #{i} lacks string \"{key}\""))
                    })
            };
            let name = text("name")?;
            let label = text("label")?;
            let ftype = text("type")?;
            if !VERIFIED_TYPES.contains(&ftype.as_str()) {
                return Err(EmulatorError::InvalidFields(format!(
                    "field {name} has unverified type {ftype}"
                )));
            }
            let builtin = f
                .get("default")
                .and_then(Value::as_bool)
                .unwrap_or(!name.starts_with("cf_"));
            let required = f.get("required").and_then(Value::as_bool).unwrap_or(false);
            let mut choices = Vec::new();
            if let Some(cs) = f.get("choices").and_then(Value::as_array) {
                for c in cs {
                    let value = match c.get("value") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => {
                            return Err(EmulatorError::InvalidFields(format!(
                                "field {name} has a choice without a value"
                            )));
                        }
                    };
                    choices.push(Choice {
                        id: c.get("id").cloned().unwrap_or(Value::Null),
                        value,
                    });
                }
            }
            if by_name.insert(name.clone(), defs.len()).is_some() {
                return Err(EmulatorError::InvalidFields(format!(
                    "duplicate field {name}"
                )));
            }
            defs.push(FieldDef {
                name,
                label,
                ftype,
                builtin,
                required,
                choices,
            });
        }
        Ok(Self { raw, defs, by_name })
    }

    /// The embedded default account.
    pub(crate) fn default_set() -> Result<Self, EmulatorError> {
        let raw: Value = serde_json::from_str(DEFAULT_FIELDS)
            .map_err(|e| EmulatorError::InvalidFields(format!("embedded default: {e}")))?;
        Self::parse(raw)
    }

    /// Looks a field up by internal name.
    pub(crate) fn get(&self, name: &str) -> Option<&FieldDef> {
        self.by_name.get(name).and_then(|&i| self.defs.get(i))
    }
}

/// Compares a JSON choice id with a submitted value (number or numeric string).
fn id_matches(id: &Value, v: &Value) -> bool {
    match (id, v) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(a), Value::String(b)) => a.to_string() == *b,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::String(a), Value::Number(b)) => *a == b.to_string(),
        _ => false,
    }
}

/// Parses a number the way Rails coerces it: JSON number or numeric string.
fn as_number(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(Value::from(i))
            } else {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::from)
            }
        }
        _ => None,
    }
}

/// Validates one value against its field and returns the stored (normalized) form.
pub(crate) fn validate(def: &FieldDef, v: &Value, sw: &Switches) -> Result<Value, Msg> {
    let invalid = || Msg::Invalid(def.label.clone());
    if v.is_null() {
        return Ok(Value::Null);
    }
    match def.ftype.as_str() {
        "text" | "textarea" | "auto_complete" => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(invalid()),
        },
        "number" => match v {
            Value::String(s) if s.trim().is_empty() => Ok(Value::Null),
            _ => as_number(v).ok_or_else(invalid),
        },
        "checkbox" => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s == "true" => Ok(Value::Bool(true)),
            Value::String(s) if s == "false" => Ok(Value::Bool(false)),
            _ => Err(invalid()),
        },
        "dropdown" | "radio" => {
            if def.builtin {
                // Built-in pick-lists (`*_id`, subscription_status) take the choice id (spec §4.3).
                let n = as_number(v).ok_or_else(invalid)?;
                if def.choices.is_empty() || def.choices.iter().any(|c| id_matches(&c.id, &n)) {
                    Ok(n)
                } else {
                    Err(invalid())
                }
            } else {
                pick_choice(def, v, sw)
                    .map(Value::String)
                    .ok_or_else(invalid)
            }
        }
        "multi_select_dropdown" => {
            let parts: Vec<Value> = match v {
                Value::String(s) if s.is_empty() => return Ok(Value::Null),
                Value::String(s) => s
                    .split(';')
                    .map(|p| Value::String(p.trim().to_owned()))
                    .collect(),
                Value::Array(items) => items.clone(),
                _ => return Err(invalid()),
            };
            let mut out = Vec::with_capacity(parts.len());
            for p in &parts {
                out.push(pick_choice(def, p, sw).ok_or_else(invalid)?);
            }
            Ok(Value::String(out.join(";")))
        }
        "date" => match v {
            Value::String(s) => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                time::Date::parse(s, fmt)
                    .map(|_| v.clone())
                    .map_err(|_| invalid())
            }
            _ => Err(invalid()),
        },
        // group_field is a container, never a value.
        _ => Err(invalid()),
    }
}

/// Resolves a dropdown value to its choice text: the text itself, or (when switched on) the choice id.
fn pick_choice(def: &FieldDef, v: &Value, sw: &Switches) -> Option<String> {
    if let Value::String(s) = v
        && let Some(c) = def.choices.iter().find(|c| c.value == *s)
    {
        return Some(c.value.clone());
    }
    if sw.dropdown_accepts_id {
        return def
            .choices
            .iter()
            .find(|c| id_matches(&c.id, v))
            .map(|c| c.value.clone());
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn default_set_has_every_verified_custom_type_and_the_engage_key() {
        let fs = FieldSet::default_set().unwrap();
        for t in [
            "text",
            "number",
            "checkbox",
            "dropdown",
            "radio",
            "multi_select_dropdown",
            "date",
            "textarea",
        ] {
            assert!(
                fs.defs.iter().any(|d| !d.builtin && d.ftype == t),
                "no custom {t}"
            );
        }
        let engage = fs.get("cf_order_completed_last_30days").unwrap();
        assert_eq!(engage.label, "order_completed_last_30days");
        assert_eq!(engage.ftype, "checkbox");
        assert_eq!(fs.get("cf_plan").unwrap().label, "Plan");
        assert_eq!(fs.get("external_id").unwrap().label, "External ID");
    }

    #[test]
    fn values_are_normalized_or_rejected_by_type() {
        let fs = FieldSet::default_set().unwrap();
        let sw = Switches::default();
        let v = |n: &str, val: Value| validate(fs.get(n).unwrap(), &val, &sw);
        assert_eq!(v("cf_employees", json!("120")).unwrap(), json!(120));
        assert!(v("cf_employees", json!("many")).is_err());
        assert_eq!(v("cf_is_active", json!(true)).unwrap(), json!(true));
        assert!(v("cf_is_active", json!("yes")).is_err());
        assert_eq!(v("cf_plan", json!("Pro")).unwrap(), json!("Pro"));
        assert!(v("cf_plan", json!("pro")).is_err());
        assert!(v("cf_plan", json!(70000002)).is_err());
        assert_eq!(
            v("cf_interests", json!(["Music", "Tech"])).unwrap(),
            json!("Music;Tech")
        );
        assert!(v("cf_interests", json!("Music;Cooking")).is_err());
        assert!(v("cf_signup_date", json!("2024-02-30")).is_err());
        assert_eq!(
            v("cf_signup_date", json!("2024-02-29")).unwrap(),
            json!("2024-02-29")
        );
        assert_eq!(
            v("lifecycle_stage_id", json!("71012139273")).unwrap(),
            json!(71012139273_i64)
        );
        let sw = Switches {
            dropdown_accepts_id: true,
            ..Switches::default()
        };
        assert_eq!(
            validate(fs.get("cf_plan").unwrap(), &json!(70000002), &sw).unwrap(),
            json!("Pro")
        );
    }

    #[test]
    fn unverified_types_are_rejected_in_fixtures() {
        let raw = json!({"fields":[{"name":"cf_x","label":"X","type":"datetime","default":false}]});
        assert!(matches!(
            FieldSet::parse(raw),
            Err(EmulatorError::InvalidFields(_))
        ));
    }
}
