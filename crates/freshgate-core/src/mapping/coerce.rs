//! Coercion of a trait value to the format its contact field's type wants (spec/freshworks.md
//! §4.2–4.3). `null` always passes as "clear this field"; a value that cannot be coerced is an
//! error with a reason, which drops that field alone.

use serde_json::{Number, Value};
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::fields::{Choice, FieldDef, FieldType};

/// Coerce `value` for `field`. `Err` carries a human-readable reason for the mapping report.
pub fn coerce(field: &FieldDef, value: &Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    match &field.field_type {
        FieldType::Number => to_number(value),
        FieldType::Checkbox => to_bool(value).map(Value::Bool),
        FieldType::Dropdown | FieldType::Radio => {
            let text = scalar_text(value)
                .ok_or_else(|| format!("expected one choice, got {}", kind(value)))?;
            match_choice(&field.choices, &text).map(Value::String)
        }
        FieldType::MultiSelectDropdown => to_multi(&field.choices, value).map(Value::String),
        FieldType::Date => to_date(value).map(Value::String),
        FieldType::Text | FieldType::Textarea | FieldType::AutoComplete => scalar_text(value)
            .map(Value::String)
            .ok_or_else(|| format!("expected text, got {}", kind(value))),
        // Never a target (the index leaves them out); kept total rather than panicking.
        FieldType::GroupField => Err("group fields take no value".to_owned()),
        FieldType::Other(_) => Ok(value.clone()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Strings as is, numbers and booleans as their JSON text; arrays and objects have none.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn to_number(value: &Value) -> Result<Value, String> {
    match value {
        Value::Number(_) => Ok(value.clone()),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::Number(i.into()));
            }
            t.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{s:?} is not a number"))
        }
        other => Err(format!("expected a number, got {}", kind(other))),
    }
}

fn to_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Ok(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(false),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(format!("{s:?} is not a boolean")),
        },
        other => Err(format!("expected a boolean, got {other}")),
    }
}

/// The choice whose text equals `text` ignoring case (and surrounding blanks), in its exact
/// spelling. A field whose metadata lists no choices cannot be checked: the text goes as is.
fn match_choice(choices: &[Choice], text: &str) -> Result<String, String> {
    let wanted = text.trim();
    if choices.is_empty() {
        return Ok(wanted.to_owned());
    }
    choices
        .iter()
        .find(|c| c.value.trim().to_lowercase() == wanted.to_lowercase())
        .map(|c| c.value.clone())
        .ok_or_else(|| format!("{wanted:?} is not one of the field's choices"))
}

fn to_multi(choices: &[Choice], value: &Value) -> Result<String, String> {
    let items: Vec<String> = match value {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                scalar_text(v).ok_or_else(|| format!("expected choices, got {} inside", kind(v)))
            })
            .collect::<Result<_, _>>()?,
        Value::String(s) => s.split([';', ',']).map(str::to_owned).collect(),
        other => return Err(format!("expected choices, got {}", kind(other))),
    };
    let mut picked: Vec<String> = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let choice = match_choice(choices, item)?;
        if !picked.contains(&choice) {
            picked.push(choice);
        }
    }
    Ok(picked.join(";"))
}

/// Unix seconds below this, milliseconds from it (1e11 s is the year 5138, 1e11 ms is 1973).
const MS_THRESHOLD: f64 = 1e11;

fn to_date(value: &Value) -> Result<String, String> {
    let date = match value {
        Value::Number(n) => n.as_f64().and_then(date_from_unix),
        Value::String(s) => {
            let t = s.trim();
            parse_date_text(t).or_else(|| t.parse::<f64>().ok().and_then(date_from_unix))
        }
        other => return Err(format!("expected a date, got {}", kind(other))),
    };
    let date = date.ok_or_else(|| format!("{value} is not a date"))?;
    Ok(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// `YYYY-MM-DD`, or an ISO-8601 / RFC 3339 date-time: the calendar date as written (in the
/// sender's offset, which is the day they meant).
fn parse_date_text(t: &str) -> Option<Date> {
    let ymd = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = Date::parse(t, ymd) {
        return Some(d);
    }
    if let Ok(dt) = OffsetDateTime::parse(t, &Rfc3339) {
        return Some(dt.date());
    }
    if let Ok(dt) = OffsetDateTime::parse(t, &Iso8601::DEFAULT) {
        return Some(dt.date());
    }
    PrimitiveDateTime::parse(t, &Iso8601::DEFAULT)
        .ok()
        .map(PrimitiveDateTime::date)
}

fn date_from_unix(n: f64) -> Option<Date> {
    if !n.is_finite() {
        return None;
    }
    let secs = if n.abs() >= MS_THRESHOLD {
        n / 1000.0
    } else {
        n
    };
    // Truncation to whole seconds is intended: only the date is kept.
    #[allow(clippy::cast_possible_truncation)]
    let secs = secs.floor() as i64;
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .map(OffsetDateTime::date)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn field(ty: FieldType, choices: &[&str]) -> FieldDef {
        FieldDef {
            id: json!(1),
            name: "cf_x".into(),
            label: "X".into(),
            field_type: ty,
            default: false,
            required: false,
            choices: choices
                .iter()
                .enumerate()
                .map(|(i, v)| Choice {
                    id: json!(i),
                    value: (*v).to_owned(),
                })
                .collect(),
        }
    }

    fn ok(ty: FieldType, choices: &[&str], v: Value) -> Value {
        coerce(&field(ty, choices), &v).unwrap()
    }

    fn fails(ty: FieldType, choices: &[&str], v: Value) -> String {
        coerce(&field(ty, choices), &v).unwrap_err()
    }

    #[test]
    fn null_clears_every_type() {
        for ty in [
            FieldType::Number,
            FieldType::Checkbox,
            FieldType::Date,
            FieldType::Dropdown,
            FieldType::Text,
            FieldType::Other("formula".into()),
        ] {
            assert_eq!(ok(ty, &[], Value::Null), Value::Null);
        }
    }

    #[test]
    fn number() {
        assert_eq!(ok(FieldType::Number, &[], json!(42)), json!(42));
        assert_eq!(ok(FieldType::Number, &[], json!(" 42 ")), json!(42));
        assert_eq!(ok(FieldType::Number, &[], json!("4.5")), json!(4.5));
        assert!(fails(FieldType::Number, &[], json!("lots")).contains("not a number"));
        assert!(fails(FieldType::Number, &[], json!(true)).contains("boolean"));
        assert!(fails(FieldType::Number, &[], json!("NaN")).contains("not a number"));
    }

    #[test]
    fn checkbox() {
        for (v, want) in [
            (json!(true), true),
            (json!("TRUE"), true),
            (json!("Yes"), true),
            (json!("1"), true),
            (json!(1), true),
            (json!("false"), false),
            (json!("no"), false),
            (json!(0), false),
            (json!("0"), false),
        ] {
            assert_eq!(ok(FieldType::Checkbox, &[], v), json!(want));
        }
        fails(FieldType::Checkbox, &[], json!("maybe"));
        fails(FieldType::Checkbox, &[], json!(2));
        fails(FieldType::Checkbox, &[], json!([true]));
    }

    #[test]
    fn dropdown_and_radio_match_choice_text_ignoring_case() {
        let c = ["Free", "Pro"];
        assert_eq!(ok(FieldType::Dropdown, &c, json!("pro")), json!("Pro"));
        assert_eq!(ok(FieldType::Radio, &c, json!(" FREE ")), json!("Free"));
        assert_eq!(
            ok(FieldType::Dropdown, &["10", "20"], json!(10)),
            json!("10")
        );
        assert!(fails(FieldType::Dropdown, &c, json!("Gold")).contains("choices"));
        fails(FieldType::Radio, &c, json!({"a": 1}));
        // No choices in the metadata: nothing to check against.
        assert_eq!(ok(FieldType::Dropdown, &[], json!("Any")), json!("Any"));
    }

    #[test]
    fn multi_select() {
        let c = ["Red", "Green", "Blue"];
        let m = FieldType::MultiSelectDropdown;
        assert_eq!(ok(m.clone(), &c, json!(["red", "BLUE"])), json!("Red;Blue"));
        assert_eq!(ok(m.clone(), &c, json!("green; red")), json!("Green;Red"));
        assert_eq!(
            ok(m.clone(), &c, json!("green,red,green")),
            json!("Green;Red")
        );
        assert_eq!(ok(m.clone(), &c, json!([])), json!(""));
        assert!(fails(m.clone(), &c, json!(["red", "pink"])).contains("pink"));
        fails(m.clone(), &c, json!([{"a": 1}]));
        fails(m, &c, json!(true));
    }

    #[test]
    fn date() {
        let d = FieldType::Date;
        assert_eq!(ok(d.clone(), &[], json!("2024-03-05")), json!("2024-03-05"));
        assert_eq!(
            ok(d.clone(), &[], json!("2024-03-05T23:30:00-05:00")),
            json!("2024-03-05")
        );
        assert_eq!(
            ok(d.clone(), &[], json!("2024-03-05T10:00:00.000Z")),
            json!("2024-03-05")
        );
        assert_eq!(
            ok(d.clone(), &[], json!("2024-03-05T10:00:00")),
            json!("2024-03-05")
        );
        assert_eq!(
            ok(d.clone(), &[], json!(1_709_596_800)),
            json!("2024-03-05")
        );
        assert_eq!(
            ok(d.clone(), &[], json!(1_709_596_800_000_i64)),
            json!("2024-03-05")
        );
        assert_eq!(ok(d.clone(), &[], json!("1709596800")), json!("2024-03-05"));
        assert!(fails(d.clone(), &[], json!("next tuesday")).contains("not a date"));
        fails(d.clone(), &[], json!("2024-13-40"));
        fails(d, &[], json!(false));
    }

    #[test]
    fn text_like() {
        for ty in [
            FieldType::Text,
            FieldType::Textarea,
            FieldType::AutoComplete,
        ] {
            assert_eq!(ok(ty.clone(), &[], json!("as is ")), json!("as is "));
            assert_eq!(ok(ty.clone(), &[], json!(12.5)), json!("12.5"));
            assert_eq!(ok(ty.clone(), &[], json!(true)), json!("true"));
            assert!(fails(ty.clone(), &[], json!({"a": 1})).contains("object"));
            assert!(fails(ty, &[], json!([1])).contains("array"));
        }
    }

    #[test]
    fn unknown_types_pass_through() {
        let v = json!({"nested": [1, 2]});
        assert_eq!(ok(FieldType::Other("lookup".into()), &[], v.clone()), v);
    }
}
