//! Tests of the Segment wire model against the literal request shapes of the official clients
//! (spec §1.9, §4) and the webhook vector (spec §6.3).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;

const RECEIVED: OffsetDateTime = datetime!(2025-11-07 17:00:02 UTC);

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("gen-{n}")
    }
}

fn track(endpoint: Endpoint, body: &[u8]) -> Result<ParsedRequest, RequestError> {
    parse_tracking_request(endpoint, body, RECEIVED, &Limits::default(), &mut ids())
}

fn accepted(req: &ParsedRequest) -> Vec<&NormalizedEvent> {
    req.items
        .iter()
        .filter_map(|o| match o {
            ItemOutcome::Accepted(e) => Some(e),
            ItemOutcome::Rejected(_) => None,
        })
        .collect()
}

fn rejected(req: &ParsedRequest) -> Vec<&RejectedItem> {
    req.items
        .iter()
        .filter_map(|o| match o {
            ItemOutcome::Rejected(r) => Some(r),
            ItemOutcome::Accepted(_) => None,
        })
        .collect()
}

fn raw_str(e: &NormalizedEvent) -> &str {
    std::str::from_utf8(&e.raw).unwrap()
}

fn raw_json(e: &NormalizedEvent) -> Value {
    serde_json::from_slice(&e.raw).unwrap()
}

/// One-item batch outcome for an item given as JSON.
fn batch_of(item: Value) -> ItemOutcome {
    let body = json!({ "batch": [item] }).to_string();
    let mut req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    req.items.pop().unwrap()
}

fn rejection(item: Value) -> (String, &'static str) {
    match batch_of(item) {
        ItemOutcome::Rejected(r) => (r.reason, r.code),
        ItemOutcome::Accepted(e) => panic!("accepted: {}", raw_str(&e)),
    }
}

// ---------------------------------------------------------------- official clients

const NODE_BATCH: &str = r#"{
  "batch": [
    {
      "type": "identify",
      "userId": "u-123",
      "traits": {
        "email": "jane@example.com",
        "firstName": "Jane",
        "lastName": "Doe",
        "phone": "+1 555 0100",
        "address": {"street": "1 Main St", "city": "Austin", "state": "TX", "postalCode": "78701", "country": "US"}
      },
      "messageId": "node-next-1762534800000-3f0c1d2e-8b7a-4c5d-9e1f-0a1b2c3d4e5f",
      "timestamp": "2025-11-07T17:00:00.000Z",
      "context": {"library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
      "integrations": {},
      "_metadata": {"nodeVersion": "v20.20.2", "jsRuntime": "node"}
    },
    {
      "type": "track",
      "userId": "u-123",
      "event": "Order Completed",
      "properties": {"revenue": 19.99, "currency": "USD"},
      "messageId": "node-next-1762534800001-9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
      "timestamp": "2025-11-07T17:00:00.001Z",
      "context": {"library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
      "integrations": {},
      "_metadata": {"nodeVersion": "v20.20.2", "jsRuntime": "node"}
    }
  ],
  "writeKey": "WRITEKEY",
  "sentAt": "2025-11-07T17:00:01.234Z"
}"#;

#[test]
fn node_3_1_0_batch() {
    let req = track(Endpoint::Batch, NODE_BATCH.as_bytes()).unwrap();
    assert_eq!(req.write_key.as_deref(), Some("WRITEKEY"));
    let events = accepted(&req);
    assert_eq!(events.len(), 2);
    let (identify, order) = (events[0], events[1]);
    assert_eq!(identify.event_type, EventType::Identify);
    assert_eq!(identify.user_id.as_deref(), Some("u-123"));
    assert_eq!(identify.contact_key, "u-123");
    assert_eq!(
        identify.message_id,
        "node-next-1762534800000-3f0c1d2e-8b7a-4c5d-9e1f-0a1b2c3d4e5f"
    );
    // received 17:00:02.000, client clock sent at 17:00:01.234: skew 0.766 s
    assert_eq!(identify.timestamp, datetime!(2025-11-07 17:00:00.766 UTC));
    assert_eq!(order.timestamp, datetime!(2025-11-07 17:00:00.767 UTC));
    assert_eq!(identify.received_at, RECEIVED);
    assert!(identify.integrations_raw.is_none());
    assert!(identify.destination_enabled("Freshmarketer"));
    insta::assert_snapshot!("node_identify", raw_str(identify));
    insta::assert_snapshot!("node_track", raw_str(order));

    let stored = parse_stored_event(&order.raw).unwrap();
    assert_eq!(stored.event.as_deref(), Some("Order Completed"));
    assert_eq!(stored.properties["currency"], "USD");
    assert_eq!(stored.timestamp, order.timestamp);
}

#[test]
fn python_2_batch_with_null_user_id_and_offsets() {
    let body = r#"{"batch": [{"integrations": {}, "anonymousId": "anon-7", "properties": {"plan": "pro"}, "timestamp": "2025-11-07T17:00:00.000+00:00", "event": "Signed Up", "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}, "userId": null, "type": "track", "messageId": "5f1c4a8e-2f0b-4c1e-9d6a-7b8c9d0e1f2a"}, {"integrations": {}, "anonymousId": null, "timestamp": "2025-11-07T17:00:00.500+00:00", "traits": {"email": "py@example.com"}, "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}, "userId": "u-9", "type": "identify", "messageId": "6a2d5b9f-3a1c-4d2f-8e7b-8c9d0e1f2a3b"}], "sentAt": "2025-11-07T17:00:01.123456+00:00", "writeKey": "PYKEY"}"#;
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    assert_eq!(req.write_key.as_deref(), Some("PYKEY"));
    let events = accepted(&req);
    assert_eq!(events.len(), 2, "{:?}", rejected(&req));
    assert_eq!(events[0].user_id, None);
    assert_eq!(events[0].contact_key, "anon-7");
    assert_eq!(events[0].timestamp, datetime!(2025-11-07 17:00:00.876 UTC));
    assert_eq!(events[1].anonymous_id, None);
    assert_eq!(events[1].contact_key, "u-9");
    let json = raw_json(events[0]);
    assert!(json.get("userId").is_none(), "null userId is dropped");
    assert_eq!(json["originalTimestamp"], "2025-11-07T17:00:00.000+00:00");
    assert_eq!(json["sentAt"], "2025-11-07T17:00:01.123456+00:00");
    insta::assert_snapshot!("python_track", raw_str(events[0]));
}

#[test]
fn go_batch_with_batch_level_context_and_no_write_key() {
    let body = r#"{"messageId":"e3b0c442-98fc-4c14-9afb-f4c8996fb924","sentAt":"2025-11-07T18:00:01.5+01:00","batch":[{"type":"identify","messageId":"a1b2c3d4-0000-4000-8000-000000000001","userId":"42","timestamp":"2025-11-07T18:00:00.123456789+01:00","traits":{"email":"go@example.com"}},{"type":"track","messageId":"a1b2c3d4-0000-4000-8000-000000000002","userId":"42","event":"Logged In","timestamp":"2025-11-07T18:00:01+01:00","context":{"ip":"10.0.0.1"}}],"context":{"library":{"name":"analytics-go","version":"3.0.0"}}}"#;
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    assert_eq!(req.write_key, None);
    let events = accepted(&req);
    assert_eq!(events.len(), 2);
    // received 17:00:02, sent 17:00:01.5 (client), event 17:00:00.123456789 -> 17:00:00.623
    assert_eq!(events[0].timestamp, datetime!(2025-11-07 17:00:00.623 UTC));
    let identify = raw_json(events[0]);
    assert_eq!(
        identify["context"],
        json!({"library": {"name": "analytics-go", "version": "3.0.0"}})
    );
    let tracked = raw_json(events[1]);
    assert_eq!(
        tracked["context"],
        json!({"ip": "10.0.0.1", "library": {"name": "analytics-go", "version": "3.0.0"}})
    );
    insta::assert_snapshot!("go_identify", raw_str(events[0]));
}

#[test]
fn rust_crate_single_identify_without_type_message_id_or_sent_at() {
    let body = r#"{"userId":"u-rs","traits":{"email":"rs@example.com","name":"Ferris"}}"#;
    let req = track(Endpoint::Single(EventType::Identify), body.as_bytes()).unwrap();
    assert_eq!(req.write_key, None);
    let events = accepted(&req);
    assert_eq!(events.len(), 1);
    let e = events[0];
    assert_eq!(e.event_type, EventType::Identify);
    assert_eq!(e.message_id, "gen-1");
    assert_eq!(e.timestamp, RECEIVED, "no timestamp: receivedAt");
    let json = raw_json(e);
    assert!(json.get("originalTimestamp").is_none());
    insta::assert_snapshot!("rust_identify", raw_str(e));

    // the batcher fills timestamp (rfc3339, nanoseconds) and still sends no sentAt
    let body = r#"{"userId":"u-rs","traits":{},"timestamp":"2025-11-07T16:59:59.123456789Z"}"#;
    let req = track(endpoint_for_path("i").unwrap(), body.as_bytes()).unwrap();
    assert_eq!(
        accepted(&req)[0].timestamp,
        datetime!(2025-11-07 16:59:59.123 UTC)
    );
}

// ---------------------------------------------------------------- envelope rules

#[test]
fn endpoint_paths() {
    for (path, want) in [
        ("identify", Some(Endpoint::Single(EventType::Identify))),
        ("i", Some(Endpoint::Single(EventType::Identify))),
        ("track", Some(Endpoint::Single(EventType::Track))),
        ("t", Some(Endpoint::Single(EventType::Track))),
        ("page", Some(Endpoint::Single(EventType::Page))),
        ("p", Some(Endpoint::Single(EventType::Page))),
        ("screen", Some(Endpoint::Single(EventType::Screen))),
        ("s", Some(Endpoint::Single(EventType::Screen))),
        ("group", Some(Endpoint::Single(EventType::Group))),
        ("g", Some(Endpoint::Single(EventType::Group))),
        ("alias", Some(Endpoint::Single(EventType::Alias))),
        ("a", Some(Endpoint::Single(EventType::Alias))),
        ("batch", Some(Endpoint::Batch)),
        ("b", Some(Endpoint::Batch)),
        ("import", Some(Endpoint::Batch)),
        ("delete", None),
        ("Identify", None),
        ("", None),
    ] {
        assert_eq!(endpoint_for_path(path), want, "{path}");
    }
    for t in [
        EventType::Identify,
        EventType::Track,
        EventType::Page,
        EventType::Screen,
        EventType::Group,
        EventType::Alias,
        EventType::Delete,
    ] {
        assert_eq!(EventType::from_name(t.as_str()), Some(t));
        assert_eq!(t.to_string(), t.as_str());
    }
}

#[test]
fn single_endpoint_path_wins_over_body_type() {
    let body = br#"{"type":"track","userId":"u","traits":{"a":1},"writeKey":"K"}"#;
    let req = track(Endpoint::Single(EventType::Identify), body).unwrap();
    assert_eq!(req.write_key.as_deref(), Some("K"));
    let e = accepted(&req)[0];
    assert_eq!(e.event_type, EventType::Identify);
    let json = raw_json(e);
    assert_eq!(json["type"], "identify");
    assert!(
        json.get("writeKey").is_none(),
        "the write key is not stored"
    );
}

#[test]
fn request_errors_and_codes() {
    let cases: [(Endpoint, &[u8], &str); 7] = [
        (Endpoint::Batch, b"{\"batch\":[", "malformed_json"),
        (Endpoint::Batch, b"", "malformed_json"),
        (Endpoint::Batch, b"[{}]", "invalid_request"),
        (Endpoint::Batch, br#"{"writeKey":"k"}"#, "missing_batch"),
        (
            Endpoint::Batch,
            br#"{"batch":{"type":"track"}}"#,
            "missing_batch",
        ),
        (
            Endpoint::Single(EventType::Track),
            b"\"hi\"",
            "invalid_request",
        ),
        (
            Endpoint::Single(EventType::Track),
            br#"{"userId":"u"}"#,
            "invalid_event",
        ),
    ];
    for (endpoint, body, code) in cases {
        let err = track(endpoint, body).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
    let err = track(Endpoint::Single(EventType::Identify), br#"{"traits":{}}"#).unwrap_err();
    assert_eq!(
        err,
        RequestError::InvalidEvent("missing userId and anonymousId".into())
    );
    assert_eq!(
        err.to_string(),
        "invalid event: missing userId and anonymousId"
    );
    // an empty batch is a valid envelope
    assert!(
        track(Endpoint::Batch, br#"{"batch":[]}"#)
            .unwrap()
            .items
            .is_empty()
    );
}

#[test]
fn each_rejection_reason() {
    let long_id = "m".repeat(101);
    let cases = [
        (json!(7), "event is not a JSON object", "not_an_object"),
        (json!({"userId": "u"}), "missing type", "invalid_type"),
        (
            json!({"type": "purchase", "userId": "u"}),
            "unknown type \"purchase\"",
            "invalid_type",
        ),
        (
            json!({"type": "delete", "userId": "u"}),
            "unknown type \"delete\"",
            "invalid_type",
        ),
        (
            json!({"type": 3, "userId": "u"}),
            "unknown type \"3\"",
            "invalid_type",
        ),
        (
            json!({"type": "identify"}),
            "missing userId and anonymousId",
            "no_user_anon_id",
        ),
        (
            json!({"type": "identify", "userId": null, "anonymousId": ""}),
            "missing userId and anonymousId",
            "no_user_anon_id",
        ),
        (
            json!({"type": "identify", "userId": true}),
            "userId must be a string or a number",
            "invalid_id",
        ),
        (
            json!({"type": "identify", "userId": "u", "anonymousId": {}}),
            "anonymousId must be a string or a number",
            "invalid_id",
        ),
        (
            json!({"type": "track", "userId": "u"}),
            "track event without a non-empty \"event\" name",
            "missing_event",
        ),
        (
            json!({"type": "track", "userId": "u", "event": ""}),
            "track event without a non-empty \"event\" name",
            "missing_event",
        ),
        (
            json!({"type": "track", "userId": "u", "event": 5}),
            "track event without a non-empty \"event\" name",
            "missing_event",
        ),
        (
            json!({"type": "group", "userId": "u"}),
            "group event without \"groupId\"",
            "missing_group_id",
        ),
        (
            json!({"type": "group", "userId": "u", "groupId": ""}),
            "group event without \"groupId\"",
            "missing_group_id",
        ),
        (
            json!({"type": "alias", "userId": "u"}),
            "alias event without \"previousId\"",
            "missing_previous_id",
        ),
        (
            json!({"type": "identify", "userId": "u", "messageId": long_id}),
            "messageId longer than 100 characters",
            "message_id_too_long",
        ),
        (
            json!({"type": "identify", "userId": "u", "messageId": ["x"]}),
            "messageId must be a string or a number",
            "invalid_id",
        ),
    ];
    for (item, reason, code) in cases {
        let label = item.to_string();
        assert_eq!(rejection(item), (reason.to_owned(), code), "{label}");
    }
}

#[test]
fn accepted_edge_values() {
    let ok = |item: Value| match batch_of(item.clone()) {
        ItemOutcome::Accepted(e) => e,
        ItemOutcome::Rejected(r) => panic!("{item} rejected: {}", r.reason),
    };
    // 100 characters (multi-byte) is still fine
    let e = ok(json!({"type": "identify", "userId": "u", "messageId": "é".repeat(100)}));
    assert_eq!(e.message_id.chars().count(), 100);
    // numeric ids are stringified
    let e = ok(json!({"type": "identify", "userId": 42, "anonymousId": 1.5}));
    assert_eq!(e.user_id.as_deref(), Some("42"));
    assert_eq!(e.anonymous_id.as_deref(), Some("1.5"));
    assert_eq!(raw_json(&e)["userId"], "42");
    let e = ok(json!({"type": "group", "anonymousId": "a", "groupId": 7}));
    assert_eq!(
        parse_stored_event(&e.raw).unwrap().group_id.as_deref(),
        Some("7")
    );
    let e = ok(json!({"type": "alias", "userId": "new", "previousId": "old"}));
    assert_eq!(
        parse_stored_event(&e.raw).unwrap().previous_id.as_deref(),
        Some("old")
    );
    ok(json!({"type": "page", "anonymousId": "a"}));
    ok(json!({"type": "screen", "anonymousId": "a", "name": "Home"}));
    // escaped ids are unescaped in the view and re-escaped in the JSON
    let e = ok(json!({"type": "identify", "userId": "u\"1\u{e9}\n"}));
    assert_eq!(e.user_id.as_deref(), Some("u\"1\u{e9}\n"));
    assert_eq!(raw_json(&e)["userId"], "u\"1\u{e9}\n");
    // arrays where objects belong (webhook deletes do it) count as empty objects
    let e = ok(json!({"type": "identify", "userId": "u", "context": [], "integrations": []}));
    let json = raw_json(&e);
    assert_eq!(json["context"], json!({}));
    assert_eq!(json["integrations"], json!({}));
    assert!(e.integrations_raw.is_none());
    // client-sent receivedAt is replaced by ours
    let e = ok(json!({"type": "identify", "userId": "u", "receivedAt": "1999-01-01T00:00:00Z"}));
    assert_eq!(raw_json(&e)["receivedAt"], "2025-11-07T17:00:02.000Z");
}

#[test]
fn batch_level_context_and_integrations_merge_item_wins() {
    let body = json!({
        "batch": [
            {"type": "identify", "userId": "u1", "context": {"ip": "2.2.2.2", "locale": "fr-FR"},
             "integrations": {"Freshmarketer": true}},
            {"type": "identify", "userId": "u2"},
            {"type": "identify", "userId": "u3", "integrations": {"All": true}}
        ],
        "context": {"ip": "1.1.1.1", "library": {"name": "lib"}},
        "integrations": {"All": false, "Amplitude": {"session_id": 1}}
    })
    .to_string();
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    let events = accepted(&req);
    let first = raw_json(events[0]);
    assert_eq!(
        first["context"],
        json!({"ip": "2.2.2.2", "locale": "fr-FR", "library": {"name": "lib"}})
    );
    assert_eq!(
        first["integrations"],
        json!({"Freshmarketer": true, "All": false, "Amplitude": {"session_id": 1}})
    );
    assert!(events[0].destination_enabled("Freshmarketer"));
    assert!(events[0].destination_enabled("Amplitude"));
    assert!(!events[0].destination_enabled("Salesforce"));
    let second = raw_json(events[1]);
    assert_eq!(
        second["context"],
        json!({"ip": "1.1.1.1", "library": {"name": "lib"}})
    );
    assert!(!events[1].destination_enabled("Freshmarketer"));
    assert!(
        events[2].destination_enabled("Freshmarketer"),
        "item All:true wins"
    );
    let stored = parse_stored_event(&events[1].raw).unwrap();
    assert!(!stored.destination_enabled("Freshmarketer"));
}

#[test]
fn timestamps_sent_at_precedence_and_garbage() {
    let body = json!({
        "batch": [
            // item sentAt wins over the batch one: skew 10 s
            {"type": "identify", "userId": "u", "timestamp": "2025-11-07T17:00:05Z",
             "sentAt": "2025-11-07T17:00:10Z"},
            // batch sentAt: skew -2 s (client clock slow)
            {"type": "identify", "userId": "u", "timestamp": "2025-11-07T16:59:59Z"},
            // unparsable: keep the raw text in originalTimestamp, use receivedAt
            {"type": "identify", "userId": "u", "timestamp": "last tuesday"},
            {"type": "identify", "userId": "u", "timestamp": 1762534800},
            // lenient forms
            {"type": "identify", "userId": "u", "timestamp": "2015-2-02T00:30:08.276Z", "sentAt": null},
        ],
        "sentAt": "2025-11-07T17:00:00Z"
    })
    .to_string();
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    let e = accepted(&req);
    assert_eq!(e[0].timestamp, datetime!(2025-11-07 16:59:57 UTC));
    assert_eq!(raw_json(e[0])["sentAt"], "2025-11-07T17:00:10Z");
    assert_eq!(e[1].timestamp, datetime!(2025-11-07 17:00:01 UTC));
    assert_eq!(raw_json(e[1])["sentAt"], "2025-11-07T17:00:00Z");
    assert_eq!(e[2].timestamp, RECEIVED);
    assert_eq!(raw_json(e[2])["originalTimestamp"], "last tuesday");
    assert_eq!(raw_json(e[2])["timestamp"], "2025-11-07T17:00:02.000Z");
    assert_eq!(e[3].timestamp, RECEIVED);
    assert_eq!(raw_json(e[3])["originalTimestamp"], 1762534800);
    // 2015 event sent "now" per batch sentAt: shifted by the 2 s skew
    assert_eq!(e[4].timestamp, datetime!(2015-02-02 00:30:10.276 UTC));
}

#[test]
fn more_than_2500_items_reject_only_the_excess() {
    let item = json!({"type": "track", "userId": "u", "event": "E"});
    let body = json!({ "batch": vec![item; 2502] }).to_string();
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    assert_eq!(req.items.len(), 2502);
    assert_eq!(accepted(&req).len(), 2500);
    let r = rejected(&req);
    assert_eq!(r.len(), 2);
    assert!(
        r.iter()
            .all(|r| r.reason == "batch has more than 2500 events")
    );
    assert!(matches!(req.items[2499], ItemOutcome::Accepted(_)));
    assert!(matches!(req.items[2500], ItemOutcome::Rejected(_)));
    // every generated id is distinct
    let mut ids: Vec<_> = accepted(&req)
        .iter()
        .map(|e| e.message_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2500);
}

#[test]
fn oversized_items() {
    let big = "x".repeat(32 * 1024);
    let body = json!({"batch": [
        {"type": "identify", "userId": "u", "traits": {"blob": big}},
        {"type": "identify", "userId": "v"}
    ]})
    .to_string();
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    let r = rejected(&req);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code, "event_too_large");
    assert!(r[0].reason.contains("32768 byte limit"), "{}", r[0].reason);
    assert_eq!(accepted(&req)[0].user_id.as_deref(), Some("v"));

    let single = json!({"userId": "u", "traits": {"blob": big}}).to_string();
    let err = track(Endpoint::Single(EventType::Identify), single.as_bytes()).unwrap_err();
    assert!(matches!(
        err,
        RequestError::EventTooLarge { limit: 32768, .. }
    ));
    assert_eq!(err.code(), "payload_too_large");
}

// ---------------------------------------------------------------- webhooks

const WEBHOOK_BODY: &str = r#"{"type":"identify","userId":"u123","traits":{"email":"jane@example.com","first_time_shopper":true},"context":{"personas":{"computation_class":"audience","computation_id":"aud_2Xyz","computation_key":"first_time_shopper","namespace":"spa_9Abc","space_id":"spa_9Abc"}},"integrations":{"All":false,"Webhooks (Actions)":true},"messageId":"personas_2p4q8example","timestamp":"2025-11-07T17:00:00.000Z","receivedAt":"2025-11-07T17:00:00.512Z","sentAt":"2025-11-07T17:00:00.000Z","originalTimestamp":"2025-11-07T17:00:00.000Z","version":2}"#;
const WEBHOOK_SIG: &str = "6d5c98d7e3fcf66d9013e465e19e68e4d4513102";

#[test]
fn signature_vector_single_and_array() {
    assert_eq!(
        verify_signature(b"s3cr3t", WEBHOOK_BODY.as_bytes(), WEBHOOK_SIG),
        Ok(())
    );
    assert_eq!(
        verify_signature(
            b"s3cr3t",
            WEBHOOK_BODY.as_bytes(),
            &WEBHOOK_SIG.to_uppercase()
        ),
        Ok(())
    );
    // batch mode: only the first element's bytes are signed, exactly as they appear
    let array = format!("[{WEBHOOK_BODY},{{\"type\":\"track\",\"userId\":\"x\",\"event\":\"E\"}}]");
    assert_eq!(
        verify_signature(b"s3cr3t", array.as_bytes(), WEBHOOK_SIG),
        Ok(())
    );
    let spaced = format!(" [\n {WEBHOOK_BODY} ]");
    assert_eq!(
        verify_signature(b"s3cr3t", spaced.as_bytes(), WEBHOOK_SIG),
        Ok(())
    );

    assert_eq!(
        verify_signature(b"wrong", WEBHOOK_BODY.as_bytes(), WEBHOOK_SIG),
        Err(SignatureError::Mismatch)
    );
    let tampered = WEBHOOK_BODY.replace("u123", "u124");
    assert_eq!(
        verify_signature(b"s3cr3t", tampered.as_bytes(), WEBHOOK_SIG),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(b"s3cr3t", WEBHOOK_BODY.as_bytes(), "6d5c98"),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(b"s3cr3t", WEBHOOK_BODY.as_bytes(), "zz"),
        Err(SignatureError::MalformedHeader)
    );
    assert_eq!(
        verify_signature(b"s3cr3t", b"[]", WEBHOOK_SIG),
        Err(SignatureError::UnsignedBody)
    );
    assert_eq!(
        verify_signature(b"s3cr3t", b"[{", WEBHOOK_SIG),
        Err(SignatureError::UnsignedBody)
    );
}

#[test]
fn webhook_events_are_normalised_without_a_second_correction() {
    let mut next_id = ids();
    let req = parse_webhook_request(
        WEBHOOK_BODY.as_bytes(),
        RECEIVED,
        &Limits::default(),
        &mut next_id,
    )
    .unwrap();
    assert_eq!(req.write_key, None);
    let e = accepted(&req)[0];
    assert_eq!(e.message_id, "personas_2p4q8example");
    assert_eq!(e.timestamp, datetime!(2025-11-07 17:00:00 UTC));
    assert!(!e.destination_enabled("Freshmarketer"));
    assert!(e.destination_enabled("Webhooks (Actions)"));
    let json = raw_json(e);
    assert_eq!(json["originalTimestamp"], "2025-11-07T17:00:00.000Z");
    assert_eq!(json["receivedAt"], "2025-11-07T17:00:02.000Z");
    assert_eq!(json["version"], 2);
    insta::assert_snapshot!("webhook_identify", raw_str(e));
}

#[test]
fn webhook_arrays_and_deletes() {
    let body = r#"[{"type":"delete","userId":"gone","channel":"server","context":[],"integrations":[],"messageId":"delete-1","projectId":"p1","timestamp":"2025-11-07T16:00:00.000Z","version":2},{"type":"track","userId":"u"},42]"#;
    let req =
        parse_webhook_request(body.as_bytes(), RECEIVED, &Limits::default(), &mut ids()).unwrap();
    let events = accepted(&req);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, EventType::Delete);
    assert_eq!(events[0].timestamp, datetime!(2025-11-07 16:00:00 UTC));
    let stored = parse_stored_event(&events[0].raw).unwrap();
    assert_eq!(stored.event_type, EventType::Delete);
    assert!(stored.context.is_empty());
    let codes: Vec<_> = rejected(&req).iter().map(|r| r.code).collect();
    assert_eq!(codes, ["missing_event", "not_an_object"]);

    let lim = Limits::default();
    let err = parse_webhook_request(b"12", RECEIVED, &lim, &mut ids()).unwrap_err();
    assert_eq!(err, RequestError::NotAnObjectOrArray);
    let err = parse_webhook_request(b"{", RECEIVED, &lim, &mut ids()).unwrap_err();
    assert_eq!(err.code(), "malformed_json");
    let err = parse_webhook_request(br#"{"userId":"u"}"#, RECEIVED, &lim, &mut ids()).unwrap_err();
    assert_eq!(err, RequestError::InvalidEvent("missing type".into()));
    let tiny = Limits {
        max_event_bytes: 10,
        max_batch_events: 1,
    };
    let err =
        parse_webhook_request(WEBHOOK_BODY.as_bytes(), RECEIVED, &tiny, &mut ids()).unwrap_err();
    assert_eq!(err.code(), "payload_too_large");
}

// ---------------------------------------------------------------- stored events

#[test]
fn stored_event_errors() {
    assert!(matches!(
        parse_stored_event(b"{"),
        Err(StoredEventError::MalformedJson(_))
    ));
    assert_eq!(
        parse_stored_event(b"[]"),
        Err(StoredEventError::NotAnObject)
    );
    assert_eq!(
        parse_stored_event(br#"{"type":"nope"}"#),
        Err(StoredEventError::MissingField("type"))
    );
    assert_eq!(
        parse_stored_event(br#"{"type":"track","messageId":"m"}"#),
        Err(StoredEventError::MissingField("timestamp"))
    );
    let e = parse_stored_event(
        br#"{"type":"identify","messageId":"m","timestamp":"2025-11-07T17:00:00Z","traits":[1],"userId":5}"#,
    )
    .unwrap();
    assert!(e.traits.is_empty());
    assert_eq!(e.user_id.as_deref(), Some("5"));
}

// ---------------------------------------------------------------- properties

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z\"\\\\ é]{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("identify"),
            Just("track"),
            Just("group"),
            Just("alias"),
            Just("delete")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
        Just(json!("2025-11-07T17:00:00.000Z")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("userId".to_owned()),
                    Just("anonymousId".to_owned()),
                    Just("event".to_owned()),
                    Just("context".to_owned()),
                    Just("integrations".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("sentAt".to_owned()),
                    Just("messageId".to_owned()),
                    Just("groupId".to_owned()),
                    "[a-z]{1,3}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_no_panic(body: &[u8]) {
    let lim = Limits {
        max_event_bytes: 512,
        max_batch_events: 3,
    };
    let _ = parse_tracking_request(Endpoint::Batch, body, RECEIVED, &lim, &mut ids());
    let _ = parse_tracking_request(
        Endpoint::Single(EventType::Track),
        body,
        RECEIVED,
        &lim,
        &mut ids(),
    );
    let _ = parse_webhook_request(body, RECEIVED, &lim, &mut ids());
    let _ = verify_signature(b"k", body, "00");
    let _ = parse_stored_event(body);
    // whatever we accept, we can read back
    for parsed in [
        parse_tracking_request(Endpoint::Batch, body, RECEIVED, &lim, &mut ids()),
        parse_webhook_request(body, RECEIVED, &lim, &mut ids()),
    ]
    .into_iter()
    .flatten()
    {
        for e in accepted(&parsed) {
            let stored = parse_stored_event(&e.raw).unwrap();
            assert_eq!(stored.message_id, e.message_id);
            assert_eq!(stored.user_id, e.user_id);
        }
    }
}

proptest! {
    #[test]
    fn any_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_no_panic(&body);
    }

    #[test]
    fn any_json_never_panics(item in arb_json(), batch_ctx in arb_json()) {
        check_no_panic(item.to_string().as_bytes());
        let body = json!({"batch": [item.clone(), item], "context": batch_ctx.clone(), "integrations": batch_ctx, "sentAt": "2025-11-07T18:00:00Z"});
        check_no_panic(body.to_string().as_bytes());
    }

    #[test]
    fn valid_batches_round_trip(
        items in prop::collection::vec(
            (
                prop_oneof![Just("identify"), Just("track"), Just("page"), Just("screen"), Just("group"), Just("alias")],
                "[a-zA-Z0-9_\"\\\\é-]{1,20}",
                prop::option::of("[a-z0-9-]{1,36}"),
                prop::option::of((0i64..4_000_000_000, 0i64..100_000)),
            ),
            1..20,
        ),
    ) {
        let batch: Vec<Value> = items
            .iter()
            .map(|(t, user, msg, ts)| {
                let mut v = json!({"type": t, "userId": user, "event": "E", "groupId": "g", "previousId": "p",
                                   "traits": {"email": "a@b.c"}, "properties": {"n": 1}});
                if let Some(m) = msg { v["messageId"] = json!(m); }
                if let Some((secs, ms)) = ts {
                    let t = OffsetDateTime::from_unix_timestamp(*secs).unwrap() + time::Duration::milliseconds(*ms);
                    v["timestamp"] = json!(format_timestamp(t));
                }
                v
            })
            .collect();
        let body = json!({"batch": batch, "sentAt": "2025-11-07T17:00:01Z", "writeKey": "k"}).to_string();
        let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
        prop_assert_eq!(req.items.len(), items.len());
        for (outcome, (t, user, msg, _)) in req.items.iter().zip(&items) {
            let ItemOutcome::Accepted(e) = outcome else { panic!("rejected: {outcome:?}") };
            let stored = parse_stored_event(&e.raw).unwrap();
            prop_assert_eq!(stored.event_type.as_str(), *t);
            prop_assert_eq!(stored.user_id.as_deref(), Some(user.as_str()));
            prop_assert_eq!(&stored.message_id, &e.message_id);
            if let Some(m) = msg { prop_assert_eq!(&stored.message_id, m); }
            prop_assert_eq!(stored.timestamp, e.timestamp);
            prop_assert_eq!(&stored.traits["email"], "a@b.c");
        }
    }
}

#[test]
fn a_timestamp_far_ahead_of_receipt_is_replaced_by_received_at() {
    // No sentAt: the client's time would be taken as is, and win over every later identify.
    let ItemOutcome::Accepted(e) = batch_of(json!({
        "type": "identify", "userId": "u-far", "traits": {"email": "far@example.com"},
        "timestamp": "9000-01-01T00:00:00Z"
    })) else {
        panic!("accepted")
    };
    assert_eq!(e.timestamp, RECEIVED);
    let json = raw_json(&e);
    assert_eq!(json["timestamp"], "2025-11-07T17:00:02.000Z");
    assert_eq!(json["originalTimestamp"], "9000-01-01T00:00:00Z");
    let stored = parse_stored_event(&e.raw).unwrap();
    assert_eq!(stored.timestamp, RECEIVED);
    let note = stored.timestamp_note().unwrap();
    assert!(note.contains("9000-01-01"), "{note}");

    // Within a day of receipt (a client clock a little fast): kept, no note.
    let ItemOutcome::Accepted(e) = batch_of(json!({
        "type": "identify", "userId": "u-near", "traits": {},
        "timestamp": "2025-11-08T16:00:00Z"
    })) else {
        panic!("accepted")
    };
    assert_eq!(e.timestamp, datetime!(2025-11-08 16:00:00 UTC));
    assert_eq!(parse_stored_event(&e.raw).unwrap().timestamp_note(), None);

    // With sentAt, the correction comes first: a client clock years ahead is fine.
    let body = json!({"batch": [{"type": "identify", "userId": "u-skew", "traits": {},
        "timestamp": "9000-01-01T00:00:00Z"}], "sentAt": "9000-01-01T00:00:01Z"})
    .to_string();
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    assert_eq!(
        accepted(&req)[0].timestamp,
        datetime!(2025-11-07 17:00:01 UTC)
    );

    // A webhook event (Segment already corrected it) is bounded too.
    let body = WEBHOOK_BODY.replace(
        r#""timestamp":"2025-11-07T17:00:00.000Z""#,
        r#""timestamp":"9000-01-01T00:00:00.000Z""#,
    );
    let req =
        parse_webhook_request(body.as_bytes(), RECEIVED, &Limits::default(), &mut ids()).unwrap();
    let e = accepted(&req)[0];
    assert_eq!(e.timestamp, RECEIVED);
    assert_eq!(raw_json(e)["originalTimestamp"], "9000-01-01T00:00:00.000Z");
}

/// `depth` nested arrays around `1`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn whatever_ingest_accepts_delivery_can_read() {
    // The event object is level 1, `context` level 2, its member level 3.
    let at_limit = nested(MAX_NESTING - 2);
    let too_deep = nested(MAX_NESTING - 1);
    let item = |deep: &str, n: &str| {
        format!(
            r#"{{"type":"identify","userId":"u","traits":{{"email":"a@b.c","n":{n}}},"context":{{"deep":{deep}}}}}"#
        )
    };
    let body = format!(
        r#"{{"batch":[{},{},{},{}]}}"#,
        item(&at_limit, "1e300"),
        item(&too_deep, "1"),
        item("1", "1e400"),
        item("1", &format!("1{}", "0".repeat(400))),
    );
    let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
    let events = accepted(&req);
    assert_eq!(events.len(), 1, "{:?}", rejected(&req));
    parse_stored_event(&events[0].raw).expect("the accepted event reads back");
    let reasons: Vec<(&str, &str)> = rejected(&req)
        .iter()
        .map(|r| (r.code, r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons[0],
        ("too_deep", "JSON nested deeper than 100 levels")
    );
    assert_eq!(reasons[1].0, "number_out_of_range");
    assert_eq!(reasons[2].0, "number_out_of_range");
    // Strings that look like numbers or brackets are not counted.
    let tricky = item(&format!("\"{}\\\" 1e999\"", "[".repeat(300)), "1");
    let req = track(
        Endpoint::Batch,
        format!(r#"{{"batch":[{tricky}]}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(accepted(&req).len(), 1, "{:?}", rejected(&req));
}

proptest! {
    #[test]
    fn every_accepted_nesting_reads_back(depth in 0usize..140) {
        let body = format!(
            r#"{{"batch":[{{"type":"track","userId":"u","event":"E","properties":{{"x":{}}}}}]}}"#,
            nested(depth)
        );
        let req = track(Endpoint::Batch, body.as_bytes()).unwrap();
        for e in accepted(&req) {
            prop_assert!(parse_stored_event(&e.raw).is_ok());
        }
        prop_assert_eq!(accepted(&req).len(), usize::from(depth + 2 <= MAX_NESTING));
    }
}

// ---------------------------------------------------------------- the email an event carries

/// An identify's `traits.email` (a non-empty string, escapes decoded) is recorded for the
/// listing's email search; other types, other values and a missing one give none.
#[test]
fn identify_email_is_taken_from_its_traits() {
    let email = |item: Value| match batch_of(item) {
        ItemOutcome::Accepted(e) => e.email,
        ItemOutcome::Rejected(r) => panic!("rejected: {}", r.reason),
    };
    assert_eq!(
        email(
            json!({"type": "identify", "userId": "u", "traits": {"email": "Ann\u{e9}@Example.com"}})
        ),
        Some("Ann\u{e9}@Example.com".to_owned())
    );
    assert_eq!(
        email(
            json!({"type": "identify", "userId": "u", "traits": {"name": "x", "email": "a\"b@x.io"}})
        ),
        Some("a\"b@x.io".to_owned())
    );
    assert_eq!(
        email(json!({"type": "identify", "userId": "u", "traits": {"email": 42}})),
        None
    );
    assert_eq!(
        email(json!({"type": "identify", "userId": "u", "traits": {"email": ""}})),
        None
    );
    assert_eq!(
        email(json!({"type": "identify", "userId": "u", "traits": []})),
        None
    );
    assert_eq!(email(json!({"type": "identify", "userId": "u"})), None);
    assert_eq!(
        email(json!({"type": "track", "userId": "u", "event": "E", "traits": {"email": "a@b.c"}})),
        None
    );
}

/// The name rules match on comes from a track's `event` or a page's or screen's `name`, and
/// only when it is a string.
#[test]
fn call_names_come_from_event_or_name() {
    let name = |item: Value| match batch_of(item) {
        ItemOutcome::Accepted(e) => e.name,
        ItemOutcome::Rejected(r) => panic!("rejected: {}", r.reason),
    };
    assert_eq!(
        name(json!({"type": "track", "userId": "u", "event": "Signed Up", "name": "x"})).as_deref(),
        Some("Signed Up")
    );
    assert_eq!(
        name(json!({"type": "page", "userId": "u", "event": "Signed Up", "name": "x"})).as_deref(),
        Some("x")
    );
    assert_eq!(
        name(json!({"type": "identify", "userId": "u", "name": "x"})),
        None
    );
    assert_eq!(
        name(json!({"type": "page", "userId": "u", "name": 3})),
        None
    );
}
