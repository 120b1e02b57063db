//! Which destination takes an event: Segment's `integrations` rule (spec §3). Keys are destination
//! names, case-sensitive; `"All"` applies when the destination has no key of its own; the default
//! is everything enabled.
//!
//! `enabled = match integrations.get(key) { Some(false) => false, Some(_) => true,
//! None => integrations.get("All") != Some(false) }`: any value other than the literal `false`
//! (`true`, an options object, even `null`) enables. An `integrations` that is not an object
//! (webhook deletes send `[]`) counts as absent.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::segment::envelope::{get, is_false, object_entries};

/// The rule over the raw `integrations` JSON (the hot form kept by `NormalizedEvent`), without
/// building a `Value`.
pub fn destination_enabled(integrations: Option<&RawValue>, key: &str) -> bool {
    let Some(entries) = integrations.and_then(object_entries) else {
        return true;
    };
    match get(&entries, key) {
        Some(value) => !is_false(value),
        None => get(&entries, "All").is_none_or(|all| !is_false(all)),
    }
}

/// The same rule over a parsed map (the form kept by `StoredEvent`).
pub fn destination_enabled_in_map(integrations: &Map<String, Value>, key: &str) -> bool {
    match integrations.get(key) {
        Some(value) => *value != Value::Bool(false),
        None => integrations.get("All") != Some(&Value::Bool(false)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: &str = "Freshmarketer";

    #[test]
    fn rule_table() {
        // (integrations JSON, expected for "Freshmarketer")
        let table = [
            ("{}", true),
            (r#"{"All":true}"#, true),
            (r#"{"All":false}"#, false),
            (r#"{"All":false,"Freshmarketer":true}"#, true),
            (r#"{"All":true,"Freshmarketer":false}"#, false),
            (r#"{"Freshmarketer":false}"#, false),
            (r#"{"Freshmarketer":{"option":1}}"#, true),
            (r#"{"All":false,"Freshmarketer":{}}"#, true),
            (r#"{"All":false,"Freshmarketer":null}"#, true),
            (r#"{"Salesforce":false}"#, true),
            (r#"{"All":false,"freshmarketer":true}"#, false),
            (r#"{"All":"false"}"#, true),
            (r#"{"Freshmarketer":true,"Freshmarketer":false}"#, false),
            ("[]", true),
            (r#"[{"All":false}]"#, true),
            ("false", true),
            ("null", true),
            (r#"{ "All" : false , "Freshmarketer" : false }"#, false),
        ];
        for (json, want) in table {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            assert_eq!(destination_enabled(Some(&raw), KEY), want, "raw {json}");
            let map_result = match serde_json::from_str::<Value>(json).unwrap() {
                Value::Object(map) => destination_enabled_in_map(&map, KEY),
                _ => destination_enabled_in_map(&Map::new(), KEY),
            };
            assert_eq!(map_result, want, "map {json}");
        }
        assert!(destination_enabled(None, KEY));
    }
}
