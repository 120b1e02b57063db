//! group → sales account and identify `traits.company` → sales account, end to end through the
//! real server into the emulator: fields mapped, the contact associated, an unchanged group
//! costing no call (counted through the emulator's admin API), newest event wins per field.

use freshgate::config::DestinationConfig;
use freshgate_store::{DeliveryFilter, DeliveryStatus};
use freshworks_emulator::Fault;
use serde_json::{Value, json};

use crate::helpers::*;

fn accounts_setup() -> Setup {
    Setup {
        destination: DestinationConfig {
            concurrency: 4,
            group_accounts: true,
            company_accounts: true,
            ..DestinationConfig::default()
        },
        ..Setup::default()
    }
}

fn group(user: &str, group_id: &str, traits: Value, ts: &str, message_id: &str) -> Value {
    json!({
        "type": "group", "userId": user, "groupId": group_id, "traits": traits,
        "timestamp": ts, "messageId": message_id
    })
}

/// The Freshworks API calls the emulator logged, read through its admin API.
async fn api_calls(app: &TestApp) -> Vec<Value> {
    app.client
        .get(format!("{}/requests", app.emulator.admin_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn account_named(app: &TestApp, name: &str) -> Value {
    app.emulator.state.snapshot()["sales_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no account {name}"))
}

/// The contact's `sales_accounts` links as `(account id, primary)`.
fn links_of(app: &TestApp, email: &str) -> Vec<(i64, bool)> {
    let snapshot = app.emulator.state.snapshot();
    let contact = snapshot["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["email"] == email)
        .cloned()
        .unwrap_or_else(|| panic!("no contact {email}"));
    contact["sales_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_i64().unwrap(),
                l["is_primary"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn trace(app: &TestApp, message_id: &str) -> (DeliveryStatus, String) {
    let t = app.store.event_traces(message_id).await.unwrap();
    let d = &t[0].deliveries[0];
    let mut text = d.reason.clone().unwrap_or_default();
    for a in &d.attempts {
        text.push_str(" | ");
        text.push_str(&a.outcome);
    }
    (d.status, text)
}

#[tokio::test]
async fn a_group_becomes_an_account_with_mapped_fields_and_the_contact_associated() {
    let app = spawn_app_with(accounts_setup()).await;
    // The group arrives in the same batch as the identify it follows: it waits for it.
    app.batch(vec![
        identify(
            "u-1",
            "ann@example.com",
            json!({}),
            "2026-11-20T10:00:00.000Z",
            "id-1",
        ),
        group(
            "u-1",
            "g-1",
            json!({"name": "Initech", "industry": "Software", "employees": "120",
                   "website": "initech.example", "plan": "pro", "mood": "grim"}),
            "2026-11-20T10:01:00.000Z",
            "grp-1",
        ),
    ])
    .await;
    app.drain().await;
    let account = account_named(&app, "Initech");
    assert_eq!(account["industry_type_id"], 70_000_300_012_i64);
    assert_eq!(account["number_of_employees"], 120);
    assert_eq!(account["website"], "initech.example");
    assert_eq!(account["custom_field"]["cf_plan"], "Pro");
    let account_id = account["id"].as_i64().unwrap();
    assert_eq!(links_of(&app, "ann@example.com"), vec![(account_id, true)]);
    let (status, text) = trace(&app, "grp-1").await;
    assert_eq!(status, DeliveryStatus::Delivered, "{text}");
    assert!(text.contains("associated"), "{text}");
    assert!(
        text.contains("mood"),
        "unmapped account trait reported: {text}"
    );

    // The same group again (a later event, same values): no call at all.
    let before = api_calls(&app).await.len();
    app.batch(vec![group(
        "u-1",
        "g-1",
        json!({"name": "Initech", "industry": "Software", "employees": 120,
               "website": "initech.example", "plan": "Pro"}),
        "2026-11-20T11:00:00.000Z",
        "grp-2",
    )])
    .await;
    app.drain().await;
    let after = api_calls(&app).await;
    assert_eq!(
        after.len(),
        before,
        "an unchanged group costs no call: {:?}",
        &after[before..]
    );
    assert_eq!(trace(&app, "grp-2").await.0, DeliveryStatus::Skipped);

    // A second group: a second account, the first stays primary.
    app.batch(vec![group(
        "u-1",
        "g-2",
        json!({"name": "Globex"}),
        "2026-11-20T12:00:00.000Z",
        "grp-3",
    )])
    .await;
    app.drain().await;
    let second = account_named(&app, "Globex")["id"].as_i64().unwrap();
    assert_eq!(
        links_of(&app, "ann@example.com"),
        vec![(account_id, true), (second, false)]
    );
    // Account fields were fetched once, through the call path.
    assert_eq!(app.calls("/settings/sales_accounts/fields"), 1);
    app.stop().await;
}

#[tokio::test]
async fn traits_company_becomes_an_account_on_the_identifys_own_upsert() {
    let app = spawn_app_with(accounts_setup()).await;
    app.batch(vec![identify(
        "u-2",
        "bob@example.com",
        json!({"firstName": "Bob",
               "company": {"name": "Acme", "id": "c-9", "industry": "Music", "plan": "Free"}}),
        "2026-11-20T10:00:00.000Z",
        "co-1",
    )])
    .await;
    app.drain().await;
    let account = account_named(&app, "Acme");
    assert_eq!(account["industry_type_id"], 70_000_300_010_i64);
    assert_eq!(account["custom_field"]["cf_plan"], "Free");
    let account_id = account["id"].as_i64().unwrap();
    assert_eq!(links_of(&app, "bob@example.com"), vec![(account_id, true)]);
    let (status, text) = trace(&app, "co-1").await;
    assert_eq!(status, DeliveryStatus::Delivered, "{text}");
    assert!(
        !text.contains("unmapped"),
        "company is not reported as an unmapped trait: {text}"
    );
    assert!(text.contains("upserted (traits.company)"), "{text}");
    // One account upsert, and the association travelled on the contact's own upsert.
    assert_eq!(app.calls("/sales_accounts/upsert"), 1);
    assert_eq!(app.calls("/contacts/upsert"), 1);

    // The same identify again: nothing changed, no call.
    let before = api_calls(&app).await.len();
    app.batch(vec![identify(
        "u-2",
        "bob@example.com",
        json!({"firstName": "Bob",
               "company": {"name": "Acme", "id": "c-9", "industry": "Music", "plan": "Free"}}),
        "2026-11-20T10:05:00.000Z",
        "co-2",
    )])
    .await;
    app.drain().await;
    assert_eq!(api_calls(&app).await.len(), before);
    assert_eq!(trace(&app, "co-2").await.0, DeliveryStatus::Skipped);
    app.stop().await;
}

#[tokio::test]
async fn many_contacts_of_one_company_cost_one_account_call_each_company() {
    let app = spawn_app_with(accounts_setup()).await;
    // Held back so the contacts are delivered together, concurrently (and in bulk).
    app.emulator.state.inject(Fault::Latency { ms: 200 });
    let events: Vec<Value> = (0..150)
        .map(|i| {
            identify(
                &format!("m-{i}"),
                &format!("m{i}@example.com"),
                json!({"company": {"name": format!("Company {}", i % 2), "plan": "Pro"}}),
                "2026-11-20T10:00:00.000Z",
                &format!("m-msg-{i}"),
            )
        })
        .collect();
    for chunk in events.chunks(100) {
        app.batch(chunk.to_vec()).await;
    }
    app.emulator.state.clear_faults();
    app.drain().await;
    assert_eq!(app.calls("/sales_accounts/upsert"), 2);
    assert!(
        app.calls("/contacts/bulk_upsert") >= 1,
        "the bulk path carries the association too"
    );
    for i in [0, 1, 99, 148, 149] {
        let id = account_named(&app, &format!("Company {}", i % 2))["id"]
            .as_i64()
            .unwrap();
        assert_eq!(
            links_of(&app, &format!("m{i}@example.com")),
            vec![(id, true)]
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_older_group_does_not_overwrite_a_newer_account_field() {
    let app = spawn_app_with(accounts_setup()).await;
    app.batch(vec![
        identify(
            "u-3",
            "cy@example.com",
            json!({}),
            "2026-11-20T09:00:00.000Z",
            "id-3",
        ),
        group(
            "u-3",
            "g-3",
            json!({"name": "Umbrella", "website": "new.example"}),
            "2026-11-20T12:00:00.000Z",
            "new-3",
        ),
    ])
    .await;
    app.drain().await;
    // Arrives later, happened earlier: its website is stale, its phone is new.
    app.batch(vec![group(
        "u-3",
        "g-3",
        json!({"name": "Umbrella", "website": "old.example", "phone": "+1 555 0100"}),
        "2026-11-20T11:00:00.000Z",
        "old-3",
    )])
    .await;
    app.drain().await;
    let account = account_named(&app, "Umbrella");
    assert_eq!(account["website"], "new.example");
    assert_eq!(account["phone"], "+1 555 0100");
    let bodies: Vec<Value> = api_calls(&app)
        .await
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap()
                .ends_with("/sales_accounts/upsert")
        })
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2);
    assert!(
        bodies[1]["sales_account"].get("website").is_none(),
        "the stale value is not sent: {}",
        bodies[1]
    );
    insta::assert_json_snapshot!("group_account_upsert_body", bodies[0]);
    app.stop().await;
}

#[tokio::test]
async fn a_group_before_its_users_first_identify_is_associated_by_that_identify() {
    let app = spawn_app_with(accounts_setup()).await;
    app.batch(vec![group(
        "u-5",
        "g-5",
        json!({"name": "Stark"}),
        "2026-11-20T10:00:00.000Z",
        "grp-5",
    )])
    .await;
    app.drain().await;
    let (status, text) = trace(&app, "grp-5").await;
    assert_eq!(status, DeliveryStatus::Delivered, "{text}");
    assert!(text.contains("no contact with this userId yet"), "{text}");
    assert_eq!(app.calls("/lookup"), 1, "one lookup by external_id");
    app.batch(vec![identify(
        "u-5",
        "dee@example.com",
        json!({}),
        "2026-11-20T10:05:00.000Z",
        "id-5",
    )])
    .await;
    app.drain().await;
    let account_id = account_named(&app, "Stark")["id"].as_i64().unwrap();
    assert_eq!(links_of(&app, "dee@example.com"), vec![(account_id, true)]);
    // The association travelled on the identify's own upsert.
    assert_eq!(app.calls("/contacts/upsert"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_refused_account_is_dead_lettered_with_the_call_and_a_5xx_is_retried() {
    let app = spawn_app_with(accounts_setup()).await;
    app.batch(vec![identify(
        "u-6",
        "eve@example.com",
        json!({}),
        "2026-11-20T10:00:00.000Z",
        "id-6",
    )])
    .await;
    app.drain().await;
    app.emulator.state.inject(Fault::NextStatus {
        count: 1,
        status: 400,
        path_contains: Some("sales_accounts/upsert".into()),
        body: None,
    });
    app.batch(vec![group(
        "u-6",
        "g-6",
        json!({"name": "Wayne"}),
        "2026-11-20T10:01:00.000Z",
        "bad-6",
    )])
    .await;
    app.drain().await;
    let t = app.store.event_traces("bad-6").await.unwrap();
    let d = &t[0].deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Dead);
    let dead = app
        .store
        .dead_letters(&DeliveryFilter {
            reason_code: Some("refused".into()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].event_type.as_str()),
        ("bad-6", "group")
    );
    let call = d.attempts.last().unwrap();
    assert!(
        call.request_line.contains("/sales_accounts/upsert"),
        "{}",
        call.request_line
    );
    assert!(call.request_body.as_deref().unwrap().contains("Wayne"));
    assert_eq!(call.status, Some(400));

    // A 503 is retried, then the account is written and the contact associated.
    app.emulator.state.inject(Fault::NextStatus {
        count: 1,
        status: 503,
        path_contains: Some("sales_accounts/upsert".into()),
        body: None,
    });
    app.batch(vec![group(
        "u-6",
        "g-7",
        json!({"name": "Oscorp"}),
        "2026-11-20T10:02:00.000Z",
        "retry-6",
    )])
    .await;
    app.drain().await;
    let (status, text) = trace(&app, "retry-6").await;
    assert_eq!(status, DeliveryStatus::Delivered, "{text}");
    assert!(text.contains("retry in"), "{text}");
    let account_id = account_named(&app, "Oscorp")["id"].as_i64().unwrap();
    assert_eq!(links_of(&app, "eve@example.com"), vec![(account_id, true)]);
    app.stop().await;
}

#[tokio::test]
async fn without_group_accounts_a_group_is_not_handled_as_before() {
    let app = spawn_app().await;
    app.batch(vec![group(
        "u-4",
        "g-4",
        json!({"name": "Hooli"}),
        "2026-11-20T12:00:00.000Z",
        "grp-4",
    )])
    .await;
    app.drain().await;
    let (status, text) = trace(&app, "grp-4").await;
    assert_eq!(status, DeliveryStatus::Skipped);
    assert_eq!(text, "not handled by this destination: group");
    assert_eq!(app.calls("/sales_accounts"), 0);
    app.stop().await;
}
