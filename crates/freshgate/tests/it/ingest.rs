//! Ingest as each official Segment client sends it, and every refusal with its exact status
//! and body.

use std::io::Write;

use serde_json::{Value, json};

use crate::helpers::*;

async fn stored(app: &TestApp, message_id: &str) -> Vec<freshgate_store::EventTrace> {
    app.store.event_traces(message_id).await.unwrap()
}

pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn analytics_node_3_1_0_basic_and_body_key() {
    let app = spawn_app().await;
    // spec/segment.md §1.9, literally.
    let body = json!({
      "batch": [
        {"type": "identify", "userId": "u-123",
         "traits": {"email": "jane@example.com", "firstName": "Jane", "lastName": "Doe", "phone": "+1 555 0100",
                    "address": {"street": "1 Main St", "city": "Austin", "state": "TX", "postalCode": "78701", "country": "US"}},
         "messageId": "node-next-1762534800000-3f0c1d2e-8b7a-4c5d-9e1f-0a1b2c3d4e5f",
         "timestamp": "2025-11-07T17:00:00.000Z",
         "context": {"library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
         "integrations": {}, "_metadata": {"nodeVersion": "v20.20.2", "jsRuntime": "node"}},
        {"type": "track", "userId": "u-123", "event": "Order Completed",
         "properties": {"revenue": 19.99, "currency": "USD"},
         "messageId": "node-next-1762534800001-9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
         "timestamp": "2025-11-07T17:00:00.001Z",
         "context": {"library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
         "integrations": {}, "_metadata": {"nodeVersion": "v20.20.2", "jsRuntime": "node"}}
      ],
      "writeKey": WRITE_KEY, "sentAt": "2025-11-07T17:00:01.234Z"
    });
    let resp = app
        .client
        .post(format!("{}/v1/batch", app.url))
        .header("Authorization", "Basic dGVzdC13cml0ZS1rZXk6")
        .header("User-Agent", "analytics-node-next/latest")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    let t = stored(
        &app,
        "node-next-1762534800000-3f0c1d2e-8b7a-4c5d-9e1f-0a1b2c3d4e5f",
    )
    .await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].source, "web");
    let raw: Value = serde_json::from_str(&t[0].raw).unwrap();
    assert_eq!(raw["originalTimestamp"], "2025-11-07T17:00:00.000Z");
    assert!(raw["receivedAt"].is_string());
    // The track is kept and marked as not handled by the destination.
    let track = stored(
        &app,
        "node-next-1762534800001-9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    )
    .await;
    assert_eq!(
        track[0].deliveries[0].status,
        freshgate_store::DeliveryStatus::Skipped
    );
    assert!(
        track[0].deliveries[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("not handled")
    );
    app.stop().await;
}

#[tokio::test]
async fn analytics_node_3_0_0_and_python_2_3_send_the_key_in_the_body_only() {
    let app = spawn_app().await;
    for (i, ua) in ["analytics-node-next/latest", "analytics-python/2.3.4"]
        .iter()
        .enumerate()
    {
        let body = json!({"batch": [{"type": "track", "userId": null, "anonymousId": "a-1", "event": "E",
            "messageId": format!("body-key-{i}"), "timestamp": "2025-11-07T17:00:00.000+00:00",
            "context": {"library": {"name": "analytics-python", "version": "2.3.4"}}, "integrations": {}}],
            "writeKey": WRITE_KEY, "sentAt": "2025-11-07T17:00:00.123456+00:00"});
        let resp = app
            .post_raw(
                "/v1/batch",
                serde_json::to_vec(&body).unwrap(),
                &[("content-type", "application/json"), ("user-agent", ua)],
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(stored(&app, &format!("body-key-{i}")).await.len(), 1);
    }
    app.stop().await;
}

#[tokio::test]
async fn analytics_python_2_4_0_gzip() {
    let app = spawn_app().await;
    let body = json!({"batch": [{"type": "identify", "userId": "py-1", "traits": {"email": "py@example.com"},
        "messageId": "py-gzip-1", "timestamp": "2025-11-07T17:00:00.000+00:00",
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}, "integrations": {}}],
        "sentAt": "2025-11-07T17:00:00.500000+00:00", "writeKey": WRITE_KEY});
    let resp = app
        .post_raw(
            "/v1/batch",
            gzip(&serde_json::to_vec(&body).unwrap()),
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
                ("authorization", "Basic dGVzdC13cml0ZS1rZXk6"),
                ("user-agent", "analytics-python/2.4.0"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(stored(&app, "py-gzip-1").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn analytics_go_batch_level_context_without_write_key_in_body() {
    let app = spawn_app().await;
    let body = json!({"messageId": "batch-uuid", "sentAt": "2025-11-07T18:00:00.123456789+01:00",
        "batch": [{"type": "identify", "userId": "go-1", "traits": {"email": "go@example.com"},
                   "messageId": "go-1-msg", "timestamp": "2025-11-07T18:00:00.000000001+01:00"}],
        "context": {"library": {"name": "analytics-go", "version": "3.0.0"}}});
    let resp = app
        .client
        .post(format!("{}/v1/batch", app.url))
        .basic_auth(WRITE_KEY, Some(""))
        .header("User-Agent", "analytics-go (version: 3.0.0)")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t = stored(&app, "go-1-msg").await;
    let raw: Value = serde_json::from_str(&t[0].raw).unwrap();
    assert_eq!(
        raw["context"]["library"]["name"], "analytics-go",
        "batch context merged: {raw}"
    );
    app.stop().await;
}

#[tokio::test]
async fn segment_rust_crate_single_event_without_type_or_message_id() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(format!("{}/v1/identify", app.url))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"userId": "rs-1", "traits": {"email": "rs@example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stats = app.store.stats().await.unwrap();
    assert_eq!(stats.events, 1);
    app.stop().await;
}

#[tokio::test]
async fn short_paths_and_text_plain_like_analytics_js() {
    let app = spawn_app().await;
    for (path, body) in [
        (
            "/v1/t",
            json!({"anonymousId": "a", "event": "Clicked", "writeKey": WRITE_KEY, "messageId": "short-t"}),
        ),
        (
            "/v1/p",
            json!({"anonymousId": "a", "name": "Home", "writeKey": WRITE_KEY, "messageId": "short-p"}),
        ),
        (
            "/v1/b",
            json!({"writeKey": WRITE_KEY, "batch": [{"type": "screen", "anonymousId": "a", "messageId": "short-b"}]}),
        ),
        (
            "/v1/import",
            json!({"writeKey": WRITE_KEY, "batch": [{"type": "alias", "userId": "u", "previousId": "a", "messageId": "short-import"}]}),
        ),
    ] {
        let r = app
            .post_raw(
                path,
                serde_json::to_vec(&body).unwrap(),
                &[("content-type", "text/plain")],
            )
            .await;
        assert_eq!(r.status(), 200, "{path}");
    }
    for id in ["short-t", "short-p", "short-b", "short-import"] {
        assert_eq!(stored(&app, id).await.len(), 1, "{id}");
    }
    app.stop().await;
}

#[tokio::test]
async fn refusals_have_status_code_and_message() {
    let app = spawn_app().await;
    let auth = [("authorization", "Basic dGVzdC13cml0ZS1rZXk6")];
    assert_error(
        app.post_raw("/v1/batch", b"{not json".to_vec(), &auth)
            .await,
        400,
        "malformed_json",
    )
    .await;
    assert_error(
        app.post_raw("/v1/batch", b"{\"events\":[]}".to_vec(), &auth)
            .await,
        400,
        "missing_batch",
    )
    .await;
    let big = format!(
        "{{\"batch\":[{{\"type\":\"track\",\"userId\":\"u\",\"event\":\"{}\"}}]}}",
        "x".repeat(600 * 1024)
    );
    assert_error(
        app.post_raw("/v1/batch", big.into_bytes(), &auth).await,
        400,
        "payload_too_large",
    )
    .await;
    // A gzip bomb: 50 MiB of spaces in ~50 KiB, refused without inflating it all.
    let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
    let mut h = auth.to_vec();
    h.push(("content-encoding", "gzip"));
    assert_error(
        app.post_raw("/v1/batch", bomb, &h).await,
        400,
        "payload_too_large",
    )
    .await;
    // Single event over 32 KiB.
    let big_event =
        json!({"userId": "u", "event": "E", "properties": {"x": "y".repeat(40 * 1024)}});
    assert_error(
        app.post("/v1/track", &big_event).await,
        400,
        "payload_too_large",
    )
    .await;
    // Single invalid event.
    assert_error(
        app.post("/v1/track", &json!({"userId": "u"})).await,
        400,
        "invalid_event",
    )
    .await;
    // Keys.
    assert_error(
        app.post_raw("/v1/batch", b"{\"batch\":[]}".to_vec(), &[])
            .await,
        401,
        "missing_write_key",
    )
    .await;
    let r = app
        .client
        .post(format!("{}/v1/batch", app.url))
        .basic_auth("nope", Some(""))
        .json(&json!({"batch": []}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid_write_key").await;
    let r = app
        .post_raw(
            "/v1/batch",
            br#"{"batch":[],"writeKey":"nope"}"#.to_vec(),
            &[],
        )
        .await;
    assert_error(r, 401, "invalid_write_key").await;
    assert_error(app.post("/v1/nope", &json!({})).await, 404, "not_found").await;
    assert_eq!(app.store.stats().await.unwrap().events, 0);
    app.stop().await;
}

#[tokio::test]
async fn invalid_items_are_dropped_alone_and_kept_with_their_reason() {
    let app = spawn_app().await;
    let mut batch = vec![
        json!({"type": "identify", "traits": {"email": "x@example.com"}, "messageId": "no-ids"}),
        json!({"type": "track", "userId": "u", "messageId": "no-event"}),
        json!({"type": "explode", "userId": "u", "messageId": "bad-type"}),
        json!({"type": "track", "userId": "u", "event": "E", "properties": {"x": "y".repeat(33 * 1024)}, "messageId": "too-big"}),
        json!({"type": "track", "userId": "u", "event": "Good", "messageId": "good-1"}),
    ];
    batch.push(json!("not an object"));
    let r = app.post("/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(stored(&app, "good-1").await.len(), 1);
    let rejected = app.store.rejected(100).await.unwrap();
    assert_eq!(rejected.len(), 5, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|r| r.source.as_deref() == Some("web") && !r.reason.is_empty())
    );
    assert!(rejected.iter().any(|r| r.reason.contains("userId")));
    app.stop().await;
}

#[tokio::test]
async fn more_than_2500_items_keeps_the_first_2500() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..2510)
        .map(
            |i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("m{i}")}),
        )
        .collect();
    let r = app.post("/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(r.status(), 200);
    let stats = app.store.stats().await.unwrap();
    assert_eq!(stats.events, 2500);
    assert_eq!(stats.rejected, 10);
    app.stop().await;
}

#[tokio::test]
async fn duplicates_are_acknowledged_and_stored_once() {
    let app = spawn_app().await;
    let e = json!({"type": "track", "userId": "u", "event": "E", "messageId": "dup-1"});
    for _ in 0..3 {
        app.batch(vec![e.clone(), e.clone()]).await;
    }
    assert_eq!(app.store.stats().await.unwrap().events, 1);
    // Another source may use the same messageId: dedup is per source.
    let r = app
        .client
        .post(format!("{}/v1/batch", app.url))
        .basic_auth(OTHER_WRITE_KEY, Some(""))
        .json(&json!({"batch": [e]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.store.stats().await.unwrap().events, 2);
    app.stop().await;
}

pub const VECTOR_BODY: &str = r#"{"type":"identify","userId":"u123","traits":{"email":"jane@example.com","first_time_shopper":true},"context":{"personas":{"computation_class":"audience","computation_id":"aud_2Xyz","computation_key":"first_time_shopper","namespace":"spa_9Abc","space_id":"spa_9Abc"}},"integrations":{"All":false,"Webhooks (Actions)":true},"messageId":"personas_2p4q8example","timestamp":"2025-11-07T17:00:00.000Z","receivedAt":"2025-11-07T17:00:00.512Z","sentAt":"2025-11-07T17:00:00.000Z","originalTimestamp":"2025-11-07T17:00:00.000Z","version":2}"#;

#[tokio::test]
async fn webhook_signature_vector_single_and_batch() {
    let app = spawn_app().await;
    let sig = "6d5c98d7e3fcf66d9013e465e19e68e4d4513102";
    let h = [
        ("content-type", "application/json"),
        ("user-agent", "Segment (Actions)"),
        ("x-signature", sig),
    ];
    let r = app
        .post_raw("/webhook/web", VECTOR_BODY.as_bytes().to_vec(), &h)
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(stored(&app, "personas_2p4q8example").await.len(), 1);
    // Batches (signed on their first element only) are in hardening.rs.
    // A tampered body.
    let tampered = VECTOR_BODY.replace("jane@", "evil@");
    assert_error(
        app.post_raw("/webhook/web", tampered.into_bytes(), &h)
            .await,
        401,
        "bad_signature",
    )
    .await;
    assert_error(
        app.post_raw("/webhook/web", VECTOR_BODY.as_bytes().to_vec(), &h[..2])
            .await,
        401,
        "missing_signature",
    )
    .await;
    assert_error(
        app.post_raw("/webhook/backend", VECTOR_BODY.as_bytes().to_vec(), &h)
            .await,
        401,
        "webhook_not_configured",
    )
    .await;
    assert_error(
        app.post_raw("/webhook/nope", VECTOR_BODY.as_bytes().to_vec(), &h)
            .await,
        404,
        "not_found",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    app.batch(vec![
        json!({"type": "track", "userId": "u", "event": "E", "messageId": "metric-1"}),
    ])
    .await;
    let get = |p: &str| app.client.get(format!("{}{p}", app.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for name in [
        "freshgate_http_requests_total",
        "freshgate_events_accepted_total",
        "freshgate_store_commit_seconds",
        "freshgate_store_group_commit_events_bucket{le=\"100\"}",
        "freshgate_store_group_commit_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    app.stop().await;
}
