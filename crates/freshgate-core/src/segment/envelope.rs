//! Borrowed top-level view of JSON objects: keys unescaped only when they must be, values as
//! `&RawValue` slices of the input, plus the small writers that copy them back out. This is what
//! keeps the ingest path free of `serde_json::Value`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level members of an object, in input order, duplicates removed (the last one wins,
/// as with `serde_json::Value`).
pub(crate) type Entries<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// What a whole body turned out to be.
pub(crate) enum Top<'a> {
    Object(Entries<'a>),
    Array(Vec<&'a RawValue>),
    Other,
}

/// Splits a body one level deep. Errors are JSON syntax errors (including invalid UTF-8).
pub(crate) fn parse_top(body: &[u8]) -> Result<Top<'_>, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let ObjectEntries(entries) = serde_json::from_slice(body)?;
            Ok(Top::Object(dedup_keep_last(entries)))
        }
        Some(b'[') => Ok(Top::Array(serde_json::from_slice(body)?)),
        _ => {
            // Rare path: only to tell "not an object" from "not JSON".
            serde_json::from_slice::<IgnoredAny>(body)?;
            Ok(Top::Other)
        }
    }
}

/// The members of an already-validated raw value, or `None` when it is not an object.
pub(crate) fn object_entries(raw: &RawValue) -> Option<Entries<'_>> {
    let s = raw.get();
    if !s.starts_with('{') {
        return None;
    }
    let ObjectEntries(entries) = serde_json::from_str(s).ok()?;
    Some(dedup_keep_last(entries))
}

/// The elements of an already-validated raw value, or `None` when it is not an array.
pub(crate) fn array_elements(raw: &RawValue) -> Option<Vec<&RawValue>> {
    let s = raw.get();
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// The value under `key` (entries are deduplicated, so there is at most one).
pub(crate) fn get<'a>(entries: &[(Cow<'a, str>, &'a RawValue)], key: &str) -> Option<&'a RawValue> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// The JSON kind of a raw value, from its first byte (a `RawValue` is trimmed valid JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub(crate) fn kind(raw: &RawValue) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'"') => Kind::String,
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        _ => Kind::Number,
    }
}

/// The unescaped string, borrowed when it has no escapes; `None` when the value is not a string.
pub(crate) fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    if !s.starts_with('"') {
        return None;
    }
    if !s.contains('\\') {
        return s.get(1..s.len() - 1).map(Cow::Borrowed);
    }
    serde_json::from_str::<Key<'_>>(s).ok().map(|k| k.0)
}

/// Whether the value is the literal `false`.
pub(crate) fn is_false(raw: &RawValue) -> bool {
    raw.get() == "false"
}

/// Drops every member that has a later member with the same key. Bodies rarely repeat keys, so
/// the common case is one scan and no allocation beyond the flags.
fn dedup_keep_last(entries: Entries<'_>) -> Entries<'_> {
    let n = entries.len();
    let shadowed: Vec<bool> = if n <= 16 {
        (0..n)
            .map(|i| entries[i + 1..].iter().any(|(k, _)| *k == entries[i].0))
            .collect()
    } else {
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, (k, _)) in entries.iter().enumerate() {
            last.insert(k.as_ref(), i);
        }
        (0..n)
            .map(|i| last.get(entries[i].0.as_ref()) != Some(&i))
            .collect()
    };
    if !shadowed.contains(&true) {
        return entries;
    }
    entries
        .into_iter()
        .zip(shadowed)
        .filter(|(_, s)| !s)
        .map(|(e, _)| e)
        .collect()
}

/// An object key (or string) that borrows from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct ObjectEntries<'a>(Entries<'a>);

impl<'de> Deserialize<'de> for ObjectEntries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = ObjectEntries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16).min(64));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(ObjectEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Writes `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'"' && b != b'\\' && b >= 0x20 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends members to an object being written into a byte buffer.
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    empty: bool,
}

impl<'o> ObjectWriter<'o> {
    pub(crate) fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Starts a member and returns the buffer for its value, which the caller must write.
    pub(crate) fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_json_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// A member whose value is already JSON text.
    pub(crate) fn raw(&mut self, key: &str, json: &str) {
        self.key(key).extend_from_slice(json.as_bytes());
    }

    /// A member whose value is a string to escape.
    pub(crate) fn string(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        write_json_str(out, value);
    }

    pub(crate) fn finish(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn escapes_round_trip_through_serde_json() {
        let s = "a\"b\\c\n\r\t\u{1}\u{1f}é😀/";
        let mut out = Vec::new();
        write_json_str(&mut out, s);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn entries_keep_order_and_last_duplicate() {
        let Top::Object(e) = parse_top(br#" {"b":1,"a\u0041":[1],"b":2} "#).unwrap() else {
            panic!("object expected")
        };
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["aA", "b"]);
        assert_eq!(get(&e, "b").unwrap().get(), "2");
    }

    #[test]
    fn dedup_handles_many_keys() {
        let mut body = String::from("{");
        for i in 0..40 {
            body.push_str(&format!("\"k{}\":{},", i % 20, i));
        }
        body.push_str("\"end\":true}");
        let Top::Object(e) = parse_top(body.as_bytes()).unwrap() else {
            panic!("object expected")
        };
        assert_eq!(e.len(), 21);
        assert_eq!(get(&e, "k3").unwrap().get(), "23");
    }

    #[test]
    fn classifies_bodies() {
        assert!(matches!(parse_top(b"[1, {}]").unwrap(), Top::Array(a) if a.len() == 2));
        assert!(matches!(parse_top(b" 12 ").unwrap(), Top::Other));
        assert!(parse_top(b"{\"a\":").is_err());
        assert!(parse_top(b"").is_err());
        assert!(parse_top(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn string_views() {
        let raw: Box<RawValue> = serde_json::from_str(r#""a\u00e9b""#).unwrap();
        assert_eq!(as_str(&raw).unwrap(), "aéb");
        let raw: Box<RawValue> = serde_json::from_str(r#""plain""#).unwrap();
        assert!(matches!(as_str(&raw), Some(Cow::Borrowed("plain"))));
        let raw: Box<RawValue> = serde_json::from_str("12").unwrap();
        assert!(as_str(&raw).is_none());
        assert_eq!(kind(&raw), Kind::Number);
    }
}
