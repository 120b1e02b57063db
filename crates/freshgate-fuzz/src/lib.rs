//! Fuzz targets: each takes arbitrary bytes, feeds them to one of freshgate's parsers of hostile
//! input, and panics only when an invariant breaks (the parsers themselves must never panic).
//!
//! The same functions run two ways:
//! - under libFuzzer, through the `cargo fuzz` project in `fuzz/` (`scripts/fuzz.sh`, long runs);
//! - on stable Rust in `cargo test` through [`driver`], a small mutation fuzzer over the
//!   committed corpora in `fuzz/corpus/<target>/`, for a bounded time (the CI smoke).
//!
//! Written by hand rather than with bolero: bolero's stable mode is also random-input only, and
//! this keeps the CI build free of fuzzing dependencies.

pub mod driver;

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use freshgate::config::{ResolvedSource, WebhookBatches};
use freshgate_core::coalesce::TraitValue;
use freshgate_core::fields::{FieldDef, FieldType};
use freshgate_core::mapping::{FieldIndex, coerce::coerce, map_traits};
use freshgate_core::segment::{self, Limits};
use secrecy::SecretString;
use serde_json::Value;
use time::OffsetDateTime;

/// A target: bytes in, panics only on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: &[(&str, Target)] = &[
    ("body", body),
    ("webhook", webhook),
    ("timestamp", timestamp),
    ("mapping", mapping),
    ("config", config),
    ("activity", activity),
];

/// Decoded-body limit of the targets (small, so that bombs are found quickly).
const BODY_LIMIT: usize = 64 * 1024;

/// A fixed receive time: runs are reproducible.
fn received_at() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_764_500_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Tracking API ingest: byte 0 picks gzip or not and the endpoint; the rest is the body as
/// received. Decoding never yields more than the limit; parsing never panics.
pub fn body(data: &[u8]) {
    let Some((&selector, raw)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 1 { "gzip" } else { "" };
    let Ok(decoded) =
        freshgate::http::body::decode(encoding, Bytes::copy_from_slice(raw), BODY_LIMIT)
    else {
        return;
    };
    assert!(decoded.len() <= BODY_LIMIT, "decoded past the limit");
    const PATHS: [&str; 8] = [
        "batch", "import", "identify", "track", "page", "screen", "group", "alias",
    ];
    let path = PATHS[usize::from(selector >> 1) % PATHS.len()];
    let Some(endpoint) = segment::endpoint_for_path(path) else {
        return;
    };
    let limits = Limits::default();
    let mut n = 0_u64;
    let mut new_id = || {
        n += 1;
        format!("fuzz-{n}")
    };
    if let Ok(parsed) =
        segment::parse_tracking_request(endpoint, &decoded, received_at(), &limits, &mut new_id)
    {
        // Items past the batch limit are rejected one by one, never dropped silently.
        assert!(parsed.items.len() <= decoded.len());
    }
}

/// Webhook authentication and parsing. Line 1 is `X-Signature`, line 2 the bearer token, the
/// rest the body; byte 0 picks which of secret and token the source has and its batch policy.
/// A request is never authentic with a token other than the configured one.
pub fn webhook(data: &[u8]) {
    const TOKEN: &str = "fuzz-token";
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let signature = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let source = ResolvedSource {
        name: "web".to_owned(),
        write_keys: Vec::new(),
        webhook_secret: (selector & 1 == 1).then(|| SecretString::from("s3cr3t")),
        webhook_token: (selector & 2 == 2).then(|| SecretString::from(TOKEN)),
        webhook_batches: if selector & 4 == 4 {
            WebhookBatches::FirstElementSignature
        } else {
            WebhookBatches::Refuse
        },
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(signature) {
        headers.insert("x-signature", v);
    }
    let mut bearer = b"Bearer ".to_vec();
    bearer.extend_from_slice(token);
    if let Ok(v) = HeaderValue::from_bytes(&bearer) {
        headers.insert("authorization", v);
    }
    let authentic = freshgate::http::webhook::authenticate(&source, &headers, body).is_ok();
    if authentic && source.webhook_token.is_some() {
        assert_eq!(
            token.trim_ascii(),
            TOKEN.as_bytes(),
            "accepted another token"
        );
    }
    if authentic && source.webhook_secret.is_none() && source.webhook_token.is_none() {
        panic!("accepted a source with no secret and no token");
    }
    let mut new_id = || "fuzz".to_owned();
    let _ = segment::parse_webhook_request(body, received_at(), &Limits::default(), &mut new_id);
}

/// Timestamp parsing: whatever parses formats to a string that parses to the same instant (to
/// the millisecond, the precision written), and the skew correction stays in range.
pub fn timestamp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('|').unwrap_or((&text, ""));
    let Some(t) = segment::parse_timestamp(a) else {
        return;
    };
    let written = segment::format_timestamp(t);
    let again = segment::parse_timestamp(&written);
    let ms = |t: OffsetDateTime| t.unix_timestamp_nanos().div_euclid(1_000_000);
    assert_eq!(again.map(ms), Some(ms(t)), "{a:?} -> {written:?}");
    let sent_at = segment::parse_timestamp(b);
    let corrected = segment::corrected_timestamp(received_at(), sent_at, Some(t));
    let _ = segment::format_timestamp(corrected);
}

/// Trait mapping and coercion against a random field set: fields and traits are read from the
/// bytes; every mapped field exists in the account, and coercion never panics.
pub fn mapping(data: &[u8]) {
    let mut r = Reader(data);
    let mut fields = Vec::new();
    for _ in 0..r.byte() % 12 {
        let name = r.text(12);
        let label = r.text(12);
        let kind = match r.byte() % 12 {
            0 => FieldType::Text,
            1 => FieldType::Textarea,
            2 => FieldType::Number,
            3 => FieldType::Checkbox,
            4 => FieldType::Dropdown,
            5 => FieldType::MultiSelectDropdown,
            6 => FieldType::Radio,
            7 => FieldType::Date,
            8 => FieldType::AutoComplete,
            9 => FieldType::GroupField,
            _ => FieldType::Other(r.text(6)),
        };
        let choices: Vec<String> = (0..r.byte() % 4).map(|_| r.text(8)).collect();
        let choices: Vec<&str> = choices.iter().map(String::as_str).collect();
        fields.push(FieldDef::new(&name, &label, kind, &choices));
    }
    let mut traits = BTreeMap::new();
    for seq in 0..i64::from(r.byte() % 16) {
        let key = r.text(16);
        let value = r.value(2);
        let ts_ms = i64::from(r.byte()) * 1000;
        traits.insert(key, TraitValue { value, ts_ms, seq });
    }
    let index = FieldIndex::new(&fields);
    let mapped = map_traits(&index, &traits);
    for name in mapped.fields.keys() {
        assert!(
            index.field(name).is_some(),
            "mapped to unknown field {name:?}"
        );
    }
    for field in &fields {
        for tv in traits.values() {
            let _ = coerce(field, &tv.value);
        }
    }
}

/// Configuration parsing and validation: never a panic, and the redacted form never shows a
/// write key given in the file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(cfg) = freshgate::config::parse(&text, "fuzz.toml") else {
        return;
    };
    // Every write key in the printed form is the placeholder. (Looking for the key's text
    // instead failed on a key that is also part of a source or destination name: not secret.)
    let shown = freshgate::config::redacted_toml(&cfg);
    if let Ok(printed) = shown.parse::<toml::Table>() {
        let sources = printed.get("sources").and_then(toml::Value::as_array);
        for source in sources.into_iter().flatten() {
            let keys = source.get("write_keys").and_then(toml::Value::as_array);
            for key in keys.into_iter().flatten() {
                assert_eq!(key.as_str(), Some("<redacted>"), "write key printed");
            }
        }
    }
    let env: BTreeMap<String, String> = [("FUZZ_KEY", "k"), ("FRESHWORKS_API_KEY", "a")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let _ = freshgate::config::resolve(cfg, "fuzz.toml", &env);
}

/// What a track, page, group or audience event becomes (title template, notes, activity time,
/// account mapping, audience change): byte 0 is the template's length, then the template, then
/// a stored event's JSON. Never a panic; titles and notes stay within their bounds.
pub fn activity(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (template, raw) = rest.split_at(usize::from(len).min(rest.len()));
    let template = String::from_utf8_lossy(template);
    let parsed = freshgate_core::template::TitleTemplate::parse(&template);
    let Ok(event) = segment::parse_stored_event(raw) else {
        return;
    };
    let input = freshgate_core::template::TemplateInput::of(&event);
    let title = match &parsed {
        Ok(t) => t.render(&input),
        Err(_) => freshgate_core::template::default_title(&input),
    };
    assert!(!title.is_empty(), "empty title");
    assert!(
        title.chars().count() <= freshgate_core::template::MAX_TITLE_CHARS,
        "title too long"
    );
    let notes = freshgate_core::notes::notes(&event.properties);
    assert!(
        notes.chars().count() <= freshgate_core::notes::MAX_NOTES_CHARS,
        "notes too long"
    );
    let offset = time::UtcOffset::from_whole_seconds(i32::from(len) * 600 - 72_000)
        .unwrap_or(time::UtcOffset::UTC);
    let at = freshgate_core::activity::activity_time(event.timestamp, offset);
    assert!(
        segment::parse_timestamp(&at).is_some(),
        "unreadable time {at}"
    );
    let _ = freshgate_core::audience::audience_change(&event);
    let index = FieldIndex::for_entity(
        freshgate_core::mapping::Entity::SalesAccount,
        &[
            FieldDef::new("website", "Website", FieldType::Text, &[]),
            FieldDef::new("number_of_employees", "Employees", FieldType::Number, &[]),
            FieldDef::new(
                "industry_type_id",
                "Industry",
                FieldType::Dropdown,
                &["Music"],
            ),
        ],
    );
    let _ = freshgate_core::account::group_account(&index, &event);
    let _ = freshgate_core::account::company_account(&index, &event.traits, 0);
}

/// Reads structure out of fuzzer bytes; past the end it yields zeros.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    fn text(&mut self, max: u8) -> String {
        let n = usize::from(self.byte() % max.max(1));
        let take = n.min(self.0.len());
        let (head, rest) = self.0.split_at(take);
        self.0 = rest;
        String::from_utf8_lossy(head).into_owned()
    }

    fn value(&mut self, depth: u8) -> Value {
        match self.byte() % if depth == 0 { 6 } else { 8 } {
            0 => Value::Null,
            1 => Value::Bool(self.byte() & 1 == 1),
            2 => Value::from(i64::from(i32::from_le_bytes([
                self.byte(),
                self.byte(),
                self.byte(),
                self.byte(),
            ]))),
            3 => serde_json::Number::from_f64(f64::from(self.byte()) / 7.0)
                .map_or(Value::Null, Value::Number),
            4 | 5 => Value::String(self.text(24)),
            6 => Value::Array(
                (0..self.byte() % 4)
                    .map(|_| self.value(depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..self.byte() % 4)
                    .map(|_| (self.text(8), self.value(depth - 1)))
                    .collect(),
            ),
        }
    }
}
