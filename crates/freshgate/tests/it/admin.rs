//! The admin API on its own listener, against the real gateway and the emulator: every route of
//! the OpenAPI document answers, the token guards it, and its figures are the store's.

use freshgate::admin::api::ROUTES;
use freshgate::config::{DestinationConfig, TrackRuleConfig};
use freshgate_store::DeliveryStatus;
use freshworks_emulator::Fault;
use serde_json::{Value, json};

use crate::helpers::*;

async fn get(app: &TestApp, path: &str) -> Value {
    let r = app
        .client
        .get(format!("{}{path}", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn post(app: &TestApp, path: &str, body: &Value) -> Value {
    let r = app
        .client
        .post(format!("{}{path}", app.admin_url))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_on_the_real_router() {
    let app = spawn_app().await;
    app.batch(vec![identify(
        "u-1",
        "one@example.com",
        json!({"firstName": "One"}),
        "2026-11-20T10:00:00Z",
        "doc-1",
    )])
    .await;
    app.drain().await;
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{message_id}", "doc-1")
            .replace("{name}", "freshworks");
        let url = format!("{}{concrete}", app.admin_url);
        let r = match *method {
            "get" => app.client.get(&url).send().await.unwrap(),
            "post" => app
                .client
                .post(&url)
                .json(&json!({"traits": {"email": "p@example.com"}}))
                .send()
                .await
                .unwrap(),
            other => panic!("method {other}"),
        };
        assert_eq!(
            r.status(),
            200,
            "{method} {concrete}: {}",
            r.text().await.unwrap()
        );
    }
    let r = app
        .client
        .get(format!("{}/api/v1/nope", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "undocumented routes do not exist");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_api_and_the_console() {
    let app = spawn_app_with(Setup {
        admin_token: Some("s3cret-token".into()),
        ..Setup::default()
    })
    .await;
    let overview = format!("{}/api/v1/overview", app.admin_url);
    let r = app.client.get(&overview).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = app
        .client
        .get(&overview)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(&overview)
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .get(format!("{}/", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let login = format!("{}/login", app.admin_url);
    let r = browser
        .post(&login)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("That is not the admin token.")
    );
    let r = browser
        .post(&login)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(
        !cookie.contains("s3cret-token"),
        "the cookie is not the token"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let r = browser
        .get(format!("{}/", app.admin_url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_what_the_store_and_the_emulator_saw() {
    let app = spawn_app().await;
    app.batch(vec![
        identify(
            "u-1",
            "one@example.com",
            json!({}),
            "2026-11-20T10:00:00Z",
            "ov-1",
        ),
        identify(
            "u-2",
            "two@example.com",
            json!({}),
            "2026-11-20T10:00:00Z",
            "ov-2",
        ),
        json!({"type": "track", "userId": "u-1", "event": "Signed Up", "messageId": "ov-3"}),
    ])
    .await;
    app.drain().await;
    let o = get(&app, "/api/v1/overview").await;
    let ingested: u64 = o["ingest_per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["count"].as_u64().unwrap())
        .sum();
    assert_eq!(ingested, 3, "{o}");
    let calls: u64 = o["calls_per_minute"][0]["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["count"].as_u64().unwrap())
        .sum();
    let emulator_calls = app.emulator.state.request_log().len() as u64;
    assert_eq!(calls, emulator_calls, "{o}");
    let d = &o["destinations"][0];
    assert_eq!(d["pending"], 0);
    assert_eq!(d["budget"]["calls_last_hour"], emulator_calls);
    assert_eq!(
        d["budget"]["left_this_hour"].as_u64().unwrap(),
        d["budget"]["hour_cap"].as_u64().unwrap() - emulator_calls
    );
    app.stop().await;
}

/// The overview's backlog per kind: how many of each call type wait and how old the oldest is,
/// in the API and on the page (read from the store's counters and the pending index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_the_backlog_per_kind() {
    let app = spawn_app_with(Setup {
        destination: DestinationConfig {
            track: vec![TrackRuleConfig {
                event: "Became Customer".into(),
                activity_type: None,
                lifecycle_stage: Some("Customer".into()),
                title: None,
            }],
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await;
    // Freshworks answers 503 to everything: the identifies wait for a retry, the track for
    // its identify.
    app.emulator.state.inject(Fault::NextStatus {
        count: 10_000,
        status: 503,
        path_contains: None,
        body: None,
    });
    app.batch(vec![
        identify(
            "u-1",
            "one@example.com",
            json!({}),
            "2026-11-20T10:00:00Z",
            "k-1",
        ),
        identify(
            "u-2",
            "two@example.com",
            json!({}),
            "2026-11-20T10:00:00Z",
            "k-2",
        ),
        json!({"type": "track", "userId": "u-1", "event": "Became Customer", "messageId": "k-3"}),
        json!({"type": "track", "userId": "u-1", "event": "Unruled", "messageId": "k-4"}),
    ])
    .await;
    let o = get(&app, "/api/v1/overview").await;
    let d = &o["destinations"][0];
    let kinds: Vec<(&str, u64)> = d["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["event_type"].as_str().unwrap(),
                k["pending"].as_u64().unwrap(),
            )
        })
        .collect();
    // The track without a rule was skipped at ingest: it is no backlog.
    assert_eq!(kinds, [("identify", 2), ("track", 1)], "{o}");
    assert_eq!(d["pending"], 3, "{o}");
    let ages: Vec<i64> = d["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["oldest_pending_age_secs"].as_i64().unwrap())
        .collect();
    assert_eq!(
        d["oldest_pending_age_secs"].as_i64(),
        ages.iter().copied().max(),
        "{o}"
    );
    let html = app
        .client
        .get(format!("{}/", app.admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(
            r#"<tr data-kind="track"><td>track</td><td data-field="kind_pending">1</td>"#
        ),
        "{html}"
    );
    assert!(
        html.contains(r#"<td data-field="kind_pending">2</td>"#),
        "{html}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_trace_and_the_mapping_report() {
    let app = spawn_app().await;
    // One batch: both identifies of u-7 are pending together and go out in one call.
    app.batch(vec![
        identify(
            "u-7",
            "seven@example.com",
            json!({"firstName": "Sev", "Lifetime Value": 12, "favourite": "blue"}),
            "2026-11-20T10:00:00Z",
            "tr-1",
        ),
        identify(
            "u-7",
            "seven@example.com",
            json!({"lastName": "En"}),
            "2026-11-20T10:00:01Z",
            "tr-2",
        ),
        identify(
            "u-8",
            "eight@example.com",
            json!({}),
            "2026-11-20T10:00:00Z",
            "tr-3",
        ),
    ])
    .await;
    app.drain().await;
    let page = get(&app, "/api/v1/events?user=u-7").await;
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tr-2", "tr-1"]);
    let page = get(&app, "/api/v1/events?email=SEVEN@example.com&limit=1").await;
    assert_eq!(page["events"][0]["message_id"], "tr-2");
    let before = page["next_before"].as_i64().unwrap();
    let page = get(
        &app,
        &format!("/api/v1/events?email=seven@example.com&limit=1&before={before}"),
    )
    .await;
    assert_eq!(page["events"][0]["message_id"], "tr-1");

    let traces = get(&app, "/api/v1/events/tr-1").await;
    let t = &traces[0];
    assert_eq!(t["event"]["deliveries"][0]["status"], "delivered");
    let traits = t["mapping"][0]["traits"].as_array().unwrap();
    let outcome = |key: &str| {
        traits
            .iter()
            .find(|x| x["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {traits:?}"))
            .clone()
    };
    assert_eq!(outcome("firstName")["field"], "first_name");
    assert_eq!(outcome("Lifetime Value")["field"], "cf_lifetime_value");
    assert_eq!(outcome("Lifetime Value")["matched_by"], "label");
    assert_eq!(outcome("favourite")["outcome"], "unmapped");
    assert_eq!(outcome("email")["outcome"], "identifier");
    // The call that delivered tr-1 also carried tr-2: the trace says so.
    let merged: Vec<&str> = t["merged"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(merged, ["tr-2"], "{t}");

    // Workers write the unmapped keys they saw to the store every few seconds.
    let mut unmapped = get(&app, "/api/v1/unmapped-traits").await;
    for _ in 0..100 {
        if unmapped[0]["key"] == "favourite" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        unmapped = get(&app, "/api/v1/unmapped-traits").await;
    }
    assert_eq!(unmapped[0]["key"], "favourite", "{unmapped}");
    assert_eq!(unmapped[0]["count"], 1);
    let r = app
        .client
        .get(format!("{}/api/v1/events/nope", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_after_its_cause_is_fixed() {
    let app = spawn_app().await;
    app.emulator.state.inject(Fault::NextStatus {
        count: 1,
        status: 400,
        path_contains: Some("upsert".into()),
        body: Some(r#"{"errors":{"code":400,"message":["Email is invalid"]}}"#.into()),
    });
    app.batch(vec![identify(
        "u-9",
        "nine@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "dl-1",
    )])
    .await;
    app.drain().await;
    let dead = get(&app, "/api/v1/dead-letters?destination=freshworks").await;
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    let count = get(&app, "/api/v1/dead-letters/count?reason=400").await;
    assert_eq!(count["count"], 1);
    let r = post(
        &app,
        "/api/v1/dead-letters/replay",
        &json!({"delivery_ids": [dead[0]["delivery_id"]]}),
    )
    .await;
    assert_eq!(r["requeued"], 1);
    app.drain().await;
    let t = app.store.event_traces("dl-1").await.unwrap();
    assert_eq!(t[0].deliveries[0].status, DeliveryStatus::Delivered);
    assert!(app.contact_by_email("nine@example.com").is_some());
    app.stop().await;
}

/// The connection test resolves the rules' type and stage names and the owner against the
/// account, and names what the account lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_test_names_rule_names_the_account_lacks() {
    let rule = |event: &str, activity: &str, stage: Option<&str>| TrackRuleConfig {
        event: event.into(),
        activity_type: Some(activity.into()),
        lifecycle_stage: stage.map(str::to_owned),
        title: None,
    };
    let app = spawn_app_with(Setup {
        destination: DestinationConfig {
            concurrency: 4,
            owner_email: Some("nobody@example.com".into()),
            track: vec![
                rule("Order Completed", "Purchase", Some("Customer")),
                rule("*", "Telepathy", Some("VIP")),
            ],
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let t = post(&app, "/api/v1/destinations/freshworks/test", &json!({})).await;
    assert_eq!(t["ok"], false, "{t}");
    assert_eq!(
        t["unknown_names"],
        json!([
            "sales activity type 'Telepathy' does not exist in the account (names match exactly, case included)",
            "lifecycle stage 'VIP' does not exist in the account (names match exactly, case included)",
            "owner_email \"nobody@example.com\" is not an active user of the account (GET /selector/owners)"
        ]),
        "{t}"
    );
    app.stop().await;

    // Names the account has: the test passes.
    let app = spawn_app_with(Setup {
        destination: DestinationConfig {
            concurrency: 4,
            owner_email: Some("Ben.Owner@example.com".into()),
            track: vec![rule("Order Completed", "Purchase", Some("Customer"))],
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let t = post(&app, "/api/v1/destinations/freshworks/test", &json!({})).await;
    assert_eq!(t["ok"], true, "{t}");
    assert!(t.get("unknown_names").is_none(), "{t}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_test_and_preview_a_label_keyed_custom_field() {
    let app = spawn_app().await;
    let list = get(&app, "/api/v1/destinations").await;
    assert!(list[0]["settings"].get("api_key").is_none());
    assert_eq!(list[0]["settings"]["api_key_env"], "TEST_FRESHWORKS_KEY");
    let t = post(&app, "/api/v1/destinations/freshworks/test", &json!({})).await;
    assert_eq!(t["ok"], true, "{t}");
    let list = get(&app, "/api/v1/destinations").await;
    let ltv = list[0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "cf_lifetime_value")
        .unwrap()
        .clone();
    assert!(
        ltv["matched_by"]
            .as_array()
            .unwrap()
            .contains(&json!("Lifetime value")),
        "{ltv}"
    );
    let p = post(
        &app,
        "/api/v1/destinations/freshworks/preview",
        &json!({"user_id": "u-p", "traits": {"email": "P@Example.com", "Lifetime Value": "42", "Plan": "Pro"}}),
    )
    .await;
    // A contact freshgate has not written yet is keyed by its userId (the identity rule).
    assert_eq!(p["body"]["unique_identifier"]["external_id"], "u-p", "{p}");
    assert_eq!(p["body"]["contact"]["emails"], "p@example.com", "{p}");
    assert_eq!(
        p["body"]["contact"]["custom_field"]["cf_lifetime_value"], 42,
        "{p}"
    );
    assert_eq!(
        p["body"]["contact"]["custom_field"]["cf_plan"], "Pro",
        "{p}"
    );
    let r = app
        .client
        .post(format!(
            "{}/api/v1/destinations/nope/preview",
            app.admin_url
        ))
        .json(&json!({"traits": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}
