//! An event's properties as the readable `notes` of a sales activity: one `key: value` line per
//! leaf, nested objects flattened with dotted keys (`cart.total: 9.5`), arrays of plain values
//! joined with `, `, arrays of objects indexed (`items[0].sku: A1`). The text is bounded
//! ([`MAX_NOTES_CHARS`]); what does not fit is counted in a last line, never silently cut.

use serde_json::{Map, Value};

/// Longest notes text, in characters.
pub const MAX_NOTES_CHARS: usize = 4000;
/// Longest single value shown, in characters.
pub const MAX_VALUE_CHARS: usize = 500;
/// Deepest nesting followed; deeper values are shown as compact JSON.
const MAX_DEPTH: usize = 8;

/// A value as text in a title or a note: strings as they are, numbers and booleans as written,
/// `null` empty, arrays of plain values joined with `, `, anything else compact JSON.
#[must_use]
pub fn display_value(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) if items.iter().all(is_plain) => items
            .iter()
            .map(display_value)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn is_plain(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
#[must_use]
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The notes of an activity: the properties as `key: value` lines (see the module comment).
/// Empty properties give an empty string.
#[must_use]
pub fn notes(properties: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    for (key, value) in sorted(properties) {
        leaves(key, value, 0, &mut lines);
    }
    let mut out = String::new();
    let mut used = 0;
    for (i, line) in lines.iter().enumerate() {
        let len = line.chars().count() + usize::from(i > 0);
        let left = lines.len() - i;
        // Keep room for the trailer that counts what did not fit.
        let trailer = format!("… ({left} more)");
        let room = if left > 1 {
            MAX_NOTES_CHARS.saturating_sub(trailer.chars().count() + 1)
        } else {
            MAX_NOTES_CHARS
        };
        if used + len > room {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&trailer);
            return out;
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line);
        used += len;
    }
    out
}

fn leaves(key: &str, value: &Value, depth: usize, out: &mut Vec<String>) {
    let key = one_line(key);
    match value {
        Value::Object(members) if depth < MAX_DEPTH && !members.is_empty() => {
            for (sub, v) in sorted(members) {
                leaves(&format!("{key}.{sub}"), v, depth + 1, out);
            }
        }
        Value::Array(items) if depth < MAX_DEPTH && !items.iter().all(is_plain) => {
            for (i, v) in items.iter().enumerate() {
                leaves(&format!("{key}[{i}]"), v, depth + 1, out);
            }
        }
        other => out.push(format!(
            "{key}: {}",
            truncate_chars(&one_line(&display_value(other)), MAX_VALUE_CHARS)
        )),
    }
}

/// Members in key order, whatever order the map keeps (notes read the same for every event).
fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|a, b| a.0.cmp(b.0));
    members
}

/// A key or value on one line: line breaks become spaces (a value must not forge a line).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn properties_become_readable_lines() {
        let n = notes(&obj(json!({
            "order_id": "50314b8e",
            "total": 27.5,
            "paid": true,
            "coupon": null,
            "tags": ["new", "gift"],
            "shipping": {"city": "Oslo", "zip": {"code": "0150"}},
            "products": [{"sku": "A1", "qty": 2}, {"sku": "B2"}],
            "note": "two\nlines"
        })));
        assert_eq!(
            n,
            "coupon: \nnote: two lines\norder_id: 50314b8e\npaid: true\nproducts[0].qty: 2\nproducts[0].sku: A1\nproducts[1].sku: B2\nshipping.city: Oslo\nshipping.zip.code: 0150\ntags: new, gift\ntotal: 27.5"
        );
        assert_eq!(notes(&Map::new()), "");
    }

    #[test]
    fn long_notes_are_bounded_and_say_what_was_left_out() {
        let many: Map<String, Value> = (0..500)
            .map(|i| (format!("key{i:03}"), json!("x".repeat(40))))
            .collect();
        let n = notes(&many);
        assert!(n.chars().count() <= MAX_NOTES_CHARS, "{}", n.len());
        let last = n.lines().last().unwrap();
        assert!(
            last.starts_with("… (") && last.ends_with(" more)"),
            "{last}"
        );
        let shown = n.lines().count() - 1;
        assert_eq!(last, format!("… ({} more)", 500 - shown));
        let one = notes(&obj(json!({"big": "y".repeat(2000)})));
        assert_eq!(one.chars().count(), "big: ".len() + MAX_VALUE_CHARS);
    }

    proptest! {
        #[test]
        fn notes_are_bounded_for_any_input(
            entries in proptest::collection::btree_map(".{0,12}", ".{0,300}", 0..60),
            depth in 0usize..10,
        ) {
            let mut nested = json!("leaf");
            for _ in 0..depth {
                nested = json!({"a": nested.clone(), "b": [nested, 1]});
            }
            let mut map: Map<String, Value> =
                entries.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            map.insert("deep".into(), nested);
            let n = notes(&map);
            prop_assert!(n.chars().count() <= MAX_NOTES_CHARS);
        }
    }
}
