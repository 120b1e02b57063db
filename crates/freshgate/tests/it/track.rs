//! track → sales activity and lifecycle stage, end to end through the real server into the
//! emulator: routing by the rules, the wait for the user's identify, newest-wins on the stage,
//! unknown names dead-lettered, and no duplicate activity after a `kill -9`.

use std::time::Duration;

use freshgate::config::{DestinationConfig, PageRuleConfig, TrackRuleConfig};
use freshgate_store::DeliveryStatus;
use serde_json::{Value, json};

use crate::helpers::*;

const CUSTOMER: i64 = 71_012_139_275;
const PURCHASE: i64 = 70_000_612_901;
const FIRST_ACTIVE_OWNER: i64 = 70_000_012_345;

fn rule(
    event: &str,
    activity_type: Option<&str>,
    stage: Option<&str>,
    title: Option<&str>,
) -> TrackRuleConfig {
    TrackRuleConfig {
        event: event.into(),
        activity_type: activity_type.map(str::to_owned),
        lifecycle_stage: stage.map(str::to_owned),
        title: title.map(str::to_owned),
    }
}

fn rules() -> Vec<TrackRuleConfig> {
    vec![
        rule(
            "Order Completed",
            Some("Purchase"),
            None,
            Some("Order {{properties.order_id}}"),
        ),
        rule("Became Customer", None, Some("Customer"), None),
        rule("Bad Type", Some("No Such Type"), None, None),
        rule("Bad Stage", None, Some("No Such Stage"), None),
    ]
}

async fn app_with(wait_secs: u64) -> TestApp {
    spawn_app_with(Setup {
        destination: DestinationConfig {
            concurrency: 4,
            track: rules(),
            identify_wait_secs: wait_secs,
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await
}

fn track(user: &str, event: &str, properties: Value, ts: &str, message_id: &str) -> Value {
    json!({
        "type": "track", "userId": user, "event": event, "properties": properties,
        "timestamp": ts, "messageId": message_id
    })
}

fn activities(app: &TestApp) -> Vec<Value> {
    app.emulator.state.snapshot()["sales_activities"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn contact_of(app: &TestApp, user: &str) -> Value {
    app.contacts()
        .into_iter()
        .find(|c| c["external_id"].as_str() == Some(user))
        .unwrap_or_else(|| panic!("no contact for {user}"))
}

async fn delivery(app: &TestApp, message_id: &str) -> (DeliveryStatus, String, String) {
    let t = app.store.event_traces(message_id).await.unwrap();
    let d = &t[0].deliveries[0];
    let mut calls = String::new();
    for a in &d.attempts {
        calls.push_str(&format!("{} -> {}; ", a.request_line, a.outcome));
    }
    (d.status, d.reason.clone().unwrap_or_default(), calls)
}

#[tokio::test]
async fn a_track_with_a_rule_becomes_one_activity_and_one_without_stays_not_handled() {
    let app = app_with(3600).await;
    app.batch(vec![
        identify(
            "u-1",
            "one@example.com",
            json!({}),
            "2026-03-01T10:00:00Z",
            "i-1",
        ),
        track(
            "u-1",
            "Order Completed",
            json!({"order_id": "A-17", "total": 42.5, "items": ["x", "y"]}),
            "2026-03-01T10:05:00Z",
            "t-1",
        ),
        track("u-1", "Signed Up", json!({}), "2026-03-01T10:06:00Z", "t-2"),
    ])
    .await;
    app.drain().await;

    let contact = contact_of(&app, "u-1");
    let made = activities(&app);
    assert_eq!(made.len(), 1, "{made:?}");
    let a = &made[0];
    assert_eq!(a["title"], "Order A-17");
    assert_eq!(a["targetable_type"], "Contact");
    assert_eq!(a["targetable_id"], contact["id"]);
    assert_eq!(a["sales_activity_type_id"], PURCHASE);
    assert_eq!(a["owner_id"], FIRST_ACTIVE_OWNER);
    // In the account's offset (the emulator's is -04:00), learnt from its answers.
    assert_eq!(a["start_date"], "2026-03-01T06:05:00-04:00");
    assert_eq!(a["end_date"], a["start_date"]);
    let notes = a["notes"].as_str().unwrap();
    assert!(notes.contains("order_id: A-17"), "{notes}");
    assert!(notes.contains("total: 42.5"), "{notes}");
    assert!(
        !notes.trim_start().starts_with('{'),
        "notes are not a JSON blob: {notes}"
    );

    let (status, _, calls) = delivery(&app, "t-1").await;
    assert_eq!(status, DeliveryStatus::Delivered);
    assert!(calls.contains("POST /sales_activities"), "{calls}");
    assert!(calls.contains("created sales activity"), "{calls}");

    let (status, reason, calls) = delivery(&app, "t-2").await;
    assert_eq!(status, DeliveryStatus::Skipped);
    assert_eq!(reason, "no track rule matches 'Signed Up'");
    assert!(calls.is_empty());
    // The contact id came from the upsert's answer: no lookup.
    assert_eq!(app.calls("/lookup"), 0);
    // The skip's code is stored beside its words: once a rule takes the event, a replay of
    // that code (`replay --reason-code no_rule`) delivers it.
    let app = app
        .restart_with(|cfg| {
            cfg.destinations[0]
                .track
                .push(rule("Signed Up", Some("Meeting"), None, None));
        })
        .await;
    let no_rule = freshgate_store::DeliveryFilter {
        reason_code: Some("no_rule".into()),
        ..Default::default()
    };
    let finished = app
        .store
        .finished_deliveries(&no_rule, 0, 100)
        .await
        .unwrap();
    let ids = finished.iter().map(|f| f.delivery_id).collect();
    assert_eq!(
        app.store
            .reopen(ids, freshgate_store::Reopen::Replay, 0)
            .await
            .unwrap(),
        1
    );
    app.drain().await;
    assert_eq!(delivery(&app, "t-2").await.0, DeliveryStatus::Delivered);
    let made = activities(&app);
    assert_eq!(made.len(), 2);
    assert_eq!(made[1]["title"], "Signed Up");
    app.stop().await;
}

#[tokio::test]
async fn a_track_before_its_users_identify_is_delivered_after_it() {
    let app = app_with(3600).await;
    app.batch(vec![
        track(
            "u-2",
            "Order Completed",
            json!({"order_id": 1}),
            "2026-03-01T09:00:00Z",
            "t-early",
        ),
        identify(
            "u-2",
            "two@example.com",
            json!({}),
            "2026-03-01T09:00:01Z",
            "i-2",
        ),
    ])
    .await;
    app.drain().await;
    let made = activities(&app);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["targetable_id"], contact_of(&app, "u-2")["id"]);
    let log = app.emulator.state.request_log();
    let upsert = log
        .iter()
        .position(|r| r.path.ends_with("/contacts/upsert"));
    let activity = log
        .iter()
        .position(|r| r.path.ends_with("/sales_activities"));
    assert!(upsert < activity, "the identify's upsert goes first");
    app.stop().await;
}

#[tokio::test]
async fn a_track_after_an_identify_waits_for_its_upsert_even_through_a_retry() {
    let app = app_with(3600).await;
    app.emulator
        .state
        .inject(freshworks_emulator::Fault::NextStatus {
            count: 1,
            status: 503,
            path_contains: Some("contacts/upsert".into()),
            body: None,
        });
    app.batch(vec![
        identify(
            "u-6",
            "six@example.com",
            json!({}),
            "2026-03-01T09:00:00Z",
            "i-6",
        ),
        track(
            "u-6",
            "Order Completed",
            json!({"order_id": 6}),
            "2026-03-01T09:00:01Z",
            "t-6",
        ),
    ])
    .await;
    app.drain().await;
    let paths: Vec<String> = app
        .emulator
        .state
        .request_log()
        .iter()
        .filter(|r| r.path.contains("contacts/upsert") || r.path.contains("sales_activities"))
        .map(|r| {
            format!(
                "{} {}",
                r.status,
                r.path.rsplit('/').next().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(paths, ["503 upsert", "200 upsert", "200 sales_activities"]);
    assert_eq!(
        activities(&app)[0]["targetable_id"],
        contact_of(&app, "u-6")["id"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_track_of_a_user_never_identified_waits_then_is_skipped_with_the_reason() {
    let app = app_with(1).await;
    app.batch(vec![track(
        "ghost",
        "Order Completed",
        json!({}),
        "2026-03-01T09:00:00Z",
        "t-ghost",
    )])
    .await;
    app.wait_for("the wait to end", || async {
        delivery(&app, "t-ghost").await.0 == DeliveryStatus::Skipped
    })
    .await;
    let (_, reason, _) = delivery(&app, "t-ghost").await;
    assert!(
        reason.contains("no valid identify for this user within 1 s"),
        "{reason}"
    );
    app.batch(vec![json!({
        "type": "track", "anonymousId": "anon-1", "event": "Order Completed",
        "timestamp": "2026-03-01T09:00:00Z", "messageId": "t-anon"
    })])
    .await;
    app.drain().await;
    let (status, reason, _) = delivery(&app, "t-anon").await;
    assert_eq!(status, DeliveryStatus::Skipped);
    assert!(reason.contains("no userId"), "{reason}");
    assert!(activities(&app).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_lifecycle_stage_is_set_and_an_older_identify_does_not_overwrite_it() {
    let app = app_with(3600).await;
    app.batch(vec![identify(
        "u-3",
        "three@example.com",
        json!({}),
        "2026-03-01T08:00:00Z",
        "i-3a",
    )])
    .await;
    app.drain().await;
    app.batch(vec![track(
        "u-3",
        "Became Customer",
        json!({}),
        "2026-03-01T10:00:00Z",
        "t-stage",
    )])
    .await;
    app.drain().await;
    assert_eq!(contact_of(&app, "u-3")["lifecycle_stage_id"], CUSTOMER);
    let (status, _, calls) = delivery(&app, "t-stage").await;
    assert_eq!(status, DeliveryStatus::Delivered, "{calls}");

    // An identify from before the track, arriving after it: its stage is older, kept out.
    app.batch(vec![identify(
        "u-3",
        "three@example.com",
        json!({"lifecycle_stage_id": "Lead", "first_name": "Tri"}),
        "2026-03-01T09:00:00Z",
        "i-3b",
    )])
    .await;
    app.drain().await;
    let contact = contact_of(&app, "u-3");
    assert_eq!(contact["first_name"], "Tri");
    assert_eq!(contact["lifecycle_stage_id"], CUSTOMER);

    // An older track does not write it again either.
    app.batch(vec![track(
        "u-3",
        "Became Customer",
        json!({}),
        "2026-03-01T09:30:00Z",
        "t-old",
    )])
    .await;
    app.drain().await;
    assert_eq!(contact_of(&app, "u-3")["lifecycle_stage_id"], CUSTOMER);
    let (status, reason, _) = delivery(&app, "t-old").await;
    assert_eq!(status, DeliveryStatus::Skipped);
    assert!(
        reason.contains("a newer event already set lifecycle_stage_id"),
        "{reason}"
    );
    app.stop().await;
}

#[tokio::test]
async fn missing_traits_clear_does_not_blank_a_stage_a_track_set() {
    let app = spawn_app_with(Setup {
        destination: DestinationConfig {
            concurrency: 4,
            track: rules(),
            missing_traits: freshgate_core::coalesce::MissingTraits::Clear,
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await;
    app.batch(vec![
        identify(
            "u-7",
            "seven@example.com",
            json!({"first_name": "Sev"}),
            "2026-03-01T08:00:00Z",
            "i-7a",
        ),
        track(
            "u-7",
            "Became Customer",
            json!({}),
            "2026-03-01T09:00:00Z",
            "t-7",
        ),
    ])
    .await;
    app.drain().await;
    app.batch(vec![identify(
        "u-7",
        "seven@example.com",
        json!({"last_name": "Enth"}),
        "2026-03-01T10:00:00Z",
        "i-7b",
    )])
    .await;
    app.drain().await;
    let contact = contact_of(&app, "u-7");
    assert_eq!(contact["last_name"], "Enth");
    assert_eq!(
        contact["first_name"],
        Value::Null,
        "a trait's field is cleared"
    );
    assert_eq!(
        contact["lifecycle_stage_id"], CUSTOMER,
        "the track's stage is not"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_type_and_stage_names_are_dead_lettered_with_the_reason() {
    let app = app_with(3600).await;
    app.batch(vec![
        identify(
            "u-4",
            "four@example.com",
            json!({}),
            "2026-03-01T08:00:00Z",
            "i-4",
        ),
        track(
            "u-4",
            "Bad Type",
            json!({}),
            "2026-03-01T08:01:00Z",
            "t-bad-type",
        ),
        track(
            "u-4",
            "Bad Stage",
            json!({}),
            "2026-03-01T08:02:00Z",
            "t-bad-stage",
        ),
    ])
    .await;
    app.drain().await;
    let (status, reason, _) = delivery(&app, "t-bad-type").await;
    assert_eq!(status, DeliveryStatus::Dead);
    assert!(
        reason.contains("sales activity type 'No Such Type' does not exist"),
        "{reason}"
    );
    let (status, reason, _) = delivery(&app, "t-bad-stage").await;
    assert_eq!(status, DeliveryStatus::Dead);
    assert!(
        reason.contains("lifecycle stage 'No Such Stage' does not exist"),
        "{reason}"
    );
    let dead = app
        .store
        .dead_letters(&freshgate_store::DeliveryFilter {
            reason_code: Some("unknown_name".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(app.calls("/sales_activities"), 0);
    // The selectors were read once each, not per event.
    assert_eq!(app.calls("/selector/sales_activity_types"), 1);
    assert_eq!(app.calls("/selector/lifecycle_stages"), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.calls("/sales_activities"), 0, "never retried");
    app.stop().await;
}

#[tokio::test]
async fn pages_become_activities_and_ids_unknown_after_bulk_are_looked_up_once() {
    let app = spawn_app_with(Setup {
        destination: DestinationConfig {
            concurrency: 4,
            bulk_min_contacts: 2,
            track: rules(),
            page: vec![PageRuleConfig {
                name: "*".into(),
                activity_type: Some("Website visit".into()),
                ..PageRuleConfig::default()
            }],
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let users = ["b-1", "b-2", "b-3"];
    app.batch(
        users
            .iter()
            .map(|u| {
                identify(
                    u,
                    &format!("{u}@example.com"),
                    json!({}),
                    "2026-03-01T08:00:00Z",
                    &format!("{u}-i"),
                )
            })
            .collect(),
    )
    .await;
    app.drain().await;
    assert!(
        app.calls("/bulk_upsert") >= 1,
        "the identifies went by bulk"
    );
    let page = |u: &str, n: u32| {
        json!({"type": "page", "userId": u, "name": "Pricing", "properties": {"path": "/pricing"},
               "timestamp": "2026-03-01T09:00:00Z", "messageId": format!("{u}-p{n}")})
    };
    app.batch(users.iter().map(|u| page(u, 1)).collect()).await;
    app.drain().await;
    // Bulk answers carry no ids: one lookup per contact, then recorded.
    assert_eq!(app.calls("/lookup"), users.len());
    app.batch(users.iter().map(|u| page(u, 2)).collect()).await;
    app.drain().await;
    assert_eq!(app.calls("/lookup"), users.len(), "ids are kept");
    let made = activities(&app);
    assert_eq!(made.len(), 2 * users.len());
    for u in users {
        let id = &contact_of(&app, u)["id"];
        let theirs: Vec<&Value> = made.iter().filter(|a| &a["targetable_id"] == id).collect();
        assert_eq!(theirs.len(), 2, "{u}");
        assert_eq!(theirs[0]["title"], "Pricing");
        assert!(
            theirs[0]["notes"]
                .as_str()
                .unwrap()
                .contains("path: /pricing")
        );
    }
    let (_, _, calls) = delivery(&app, "b-1-p1").await;
    assert!(calls.contains("found by external_id"), "{calls}");
    app.stop().await;
}

#[tokio::test]
async fn an_activity_call_answered_with_an_error_is_retried_and_made_once() {
    let app = app_with(3600).await;
    app.batch(vec![identify(
        "u-5",
        "five@example.com",
        json!({}),
        "2026-03-01T08:00:00Z",
        "i-5",
    )])
    .await;
    app.drain().await;
    app.emulator
        .state
        .inject(freshworks_emulator::Fault::NextStatus {
            count: 1,
            status: 503,
            path_contains: Some("sales_activities".into()),
            body: None,
        });
    app.batch(vec![track(
        "u-5",
        "Order Completed",
        json!({"order_id": 5}),
        "2026-03-01T08:01:00Z",
        "t-5",
    )])
    .await;
    app.drain().await;
    let (status, _, calls) = delivery(&app, "t-5").await;
    assert_eq!(status, DeliveryStatus::Delivered, "{calls}");
    assert_eq!(app.calls("/sales_activities"), 2, "{calls}");
    assert_eq!(activities(&app).len(), 1);
    app.stop().await;
}

/// The destination's rule, as the config file writes it.
const CRASH_RULES: &str = "concurrency = 2\n\n[[destinations.track]]\nevent = \"Order Completed\"\nactivity_type = \"Purchase\"\n";

/// `freshgate events show <message_id> --json` (run while no server holds the store): the
/// first delivery's status, reason and reason code.
fn shown(site: &crate::procs::Site, message_id: &str) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_freshgate"))
        .args(["events", "show", message_id, "--json", "--config"])
        .arg(site.config())
        .arg("--data-dir")
        .arg(site.data())
        .env(crate::procs::KEY_VAR, crate::procs::KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let traces: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    traces[0]["event"]["deliveries"][0].clone()
}

#[tokio::test]
async fn a_kill_9_between_an_activity_call_and_its_settle_creates_no_duplicate() {
    use crate::procs::{Site, emulator, post_batch, wait_until};
    let emu = emulator(1_000_000, 100_000, 1.0);
    let site = Site::new(&emu, CRASH_RULES);
    let (server, url) = site.serve(1.0);
    let ts = 1_790_000_000_000i64;
    let order = |n: i64, mid: &str| {
        let at = time::OffsetDateTime::from_unix_timestamp(ts / 1000 + n)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        track("k-1", "Order Completed", json!({"n": n}), &at, mid)
    };
    let count = || async {
        emu.get("state").await["sales_activities"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // The contact, and a first activity (the selectors are read and cached).
    post_batch(
        &url,
        &[
            crate::procs::identify("k-1", "k1@example.com", json!({}), ts, "k-i"),
            order(1, "k-a"),
        ],
    )
    .await
    .unwrap();
    wait_until("the first activity", Duration::from_secs(30), || async {
        if count().await == 1 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    // The next activity is written, its answer held back: the process dies before settling.
    emu.post("faults", json!({"kind": "slow_answer", "ms": 5000}))
        .await;
    post_batch(&url, &[order(2, "k-b")]).await.unwrap();
    wait_until(
        "the second activity written",
        Duration::from_secs(30),
        || async {
            if count().await == 2 {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;
    server.kill9();
    emu.clear_faults().await;

    // Restarted: the in-doubt activity is not sent again; a later one is.
    let (server, url) = site.serve(1.0);
    post_batch(&url, &[order(3, "k-c")]).await.unwrap();
    wait_until("the third activity", Duration::from_secs(30), || async {
        if count().await >= 3 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    // Per-contact order: k-b was settled before k-c was sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill9();
    assert_eq!(count().await, 3, "no duplicate activity");
    let b = shown(&site, "k-b");
    assert_eq!(b["status"], "skipped", "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(reason.contains("not sent again"), "{reason}");
    assert_eq!(shown(&site, "k-c")["status"], "delivered");

    // `queue stats` counts deliveries per call type and state.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_freshgate"))
        .args(["queue", "stats", "--json", "--config"])
        .arg(site.config())
        .arg("--data-dir")
        .arg(site.data())
        .env(crate::procs::KEY_VAR, crate::procs::KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |t: &str, status: &str| {
        stats["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["event_type"] == t && k["status"] == status)
            .map_or(0, |k| k["count"].as_u64().unwrap())
    };
    assert_eq!(count("track", "delivered"), 2, "{stats}");
    assert_eq!(count("track", "skipped"), 1, "{stats}");
    assert_eq!(count("identify", "delivered"), 1, "{stats}");
}

/// A group names its account before the user's first identify: the account is written and kept
/// for the contact (a shadow with only the pending association). A track queued after the group
/// and before that identify must still wait for the identify, not take the contact for written
/// (found by the mixed-workload bench: the track's id lookup failed, was retried with backoff,
/// and held the identify behind it).
#[tokio::test]
async fn a_track_after_a_group_waits_for_the_users_first_identify() {
    let app = spawn_app_with(Setup {
        destination: DestinationConfig {
            concurrency: 4,
            track: rules(),
            group_accounts: true,
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await;
    app.batch(vec![json!({
        "type": "group", "userId": "u-g", "groupId": "g-1", "traits": {"name": "Stark"},
        "timestamp": "2026-11-20T10:00:00.000Z", "messageId": "grp-1"
    })])
    .await;
    app.drain().await;
    app.batch(vec![
        track(
            "u-g",
            "Order Completed",
            json!({"order_id": "7"}),
            "2026-11-20T10:01:00.000Z",
            "t-g",
        ),
        identify(
            "u-g",
            "g@example.com",
            json!({}),
            "2026-11-20T10:02:00.000Z",
            "id-g",
        ),
    ])
    .await;
    app.drain().await;
    assert_eq!(delivery(&app, "t-g").await.0, DeliveryStatus::Delivered);
    assert_eq!(activities(&app).len(), 1);
    app.stop().await;
}
