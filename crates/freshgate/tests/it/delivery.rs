//! Identify → Freshworks contact, end to end through the real server into the emulator.

use freshgate_store::{DeliveryFilter, DeliveryStatus};
use freshworks_emulator::Fault;
use serde_json::{Value, json};

use crate::helpers::*;

async fn trace_status(app: &TestApp, message_id: &str) -> (DeliveryStatus, String) {
    let t = app.store.event_traces(message_id).await.unwrap();
    let d = &t[0].deliveries[0];
    let mut text = d.reason.clone().unwrap_or_default();
    for a in &d.attempts {
        text.push_str(" | ");
        text.push_str(&a.outcome);
    }
    (d.status, text)
}

fn upsert_bodies(app: &TestApp) -> Vec<Value> {
    app.emulator
        .state
        .request_log()
        .iter()
        .filter(|r| r.path.ends_with("/contacts/upsert"))
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn new_contact_with_reserved_traits_and_custom_fields_of_every_type() {
    let app = spawn_app().await;
    app.batch(vec![identify(
        "u-1",
        "Jane.Doe@Example.com",
        json!({
            "firstName": "Jane", "last_name": "Doe", "title": "CTO", "phone": "+1 555 0100",
            "address": {"street": "1 Main St", "city": "Austin", "state": "TX", "postalCode": "78701", "country": "US"},
            "Industry": "Music", "employees": "42", "is active": "true", "plan": "pro",
            "Preferred Channel": "sms", "interests": ["music", "Tech"], "signup_date": "2026-01-15T10:00:00Z",
            "favourite_colour": "teal"
        }),
        "2026-11-20T10:00:00.000Z",
        "new-1",
    )])
    .await;
    app.drain().await;
    let c = app
        .contact_by_email("jane.doe@example.com")
        .expect("contact created");
    assert_eq!(c["first_name"], "Jane");
    assert_eq!(c["last_name"], "Doe");
    assert_eq!(c["job_title"], "CTO");
    assert_eq!(c["work_number"], "+1 555 0100");
    assert_eq!(c["city"], "Austin");
    assert_eq!(c["zipcode"], "78701");
    assert_eq!(c["external_id"], "u-1");
    let cf = &c["custom_field"];
    assert_eq!(cf["cf_industry"], "Music");
    assert_eq!(cf["cf_employees"], 42);
    assert_eq!(cf["cf_is_active"], true);
    assert_eq!(cf["cf_plan"], "Pro");
    assert_eq!(cf["cf_preferred_channel"], "SMS");
    assert_eq!(cf["cf_interests"], "Music;Tech");
    assert_eq!(cf["cf_signup_date"], "2026-01-15");
    let (status, text) = trace_status(&app, "new-1").await;
    assert_eq!(status, DeliveryStatus::Delivered);
    assert!(
        text.contains("favourite_colour"),
        "unmapped trait reported: {text}"
    );
    insta::assert_json_snapshot!("new_contact_upsert_body", upsert_bodies(&app)[0]);
    app.stop().await;
}

#[tokio::test]
async fn update_by_user_id_and_changed_email_keep_one_contact() {
    let app = spawn_app().await;
    app.batch(vec![identify(
        "u-2",
        "old@example.com",
        json!({"firstName": "Omar"}),
        "2026-11-20T10:00:00Z",
        "u2-a",
    )])
    .await;
    app.drain().await;
    app.batch(vec![identify(
        "u-2",
        "new@example.com",
        json!({"firstName": "Omar", "lastName": "Haddad"}),
        "2026-11-20T11:00:00Z",
        "u2-b",
    )])
    .await;
    app.drain().await;
    let contacts = app.contacts();
    assert_eq!(contacts.len(), 1, "no duplicate: {contacts:?}");
    assert_eq!(contacts[0]["email"], "new@example.com");
    assert_eq!(contacts[0]["last_name"], "Haddad");
    insta::assert_json_snapshot!("changed_email_upsert_body", upsert_bodies(&app)[1]);
    app.stop().await;
}

#[tokio::test]
async fn a_value_that_cannot_be_coerced_drops_that_field_alone() {
    let app = spawn_app().await;
    app.batch(vec![identify(
        "u-3",
        "c@example.com",
        json!({"employees": "many", "plan": "Platinum", "firstName": "Cy"}),
        "2026-11-20T10:00:00Z",
        "coerce-1",
    )])
    .await;
    app.drain().await;
    let c = app.contact_by_email("c@example.com").unwrap();
    assert_eq!(c["first_name"], "Cy");
    assert!(
        c["custom_field"]
            .get("cf_employees")
            .is_none_or(Value::is_null)
    );
    let (status, text) = trace_status(&app, "coerce-1").await;
    assert_eq!(status, DeliveryStatus::Delivered);
    assert!(
        text.contains("cf_employees") && text.contains("cf_plan"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn identifies_without_user_id_or_email_are_rejected_with_a_reason() {
    let app = spawn_app().await;
    app.batch(vec![
        json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "a@example.com"}, "messageId": "no-user"}),
        json!({"type": "identify", "userId": "u-4", "traits": {"firstName": "No Email"}, "messageId": "no-email"}),
    ])
    .await;
    app.drain().await;
    for id in ["no-user", "no-email"] {
        let (status, text) = trace_status(&app, id).await;
        assert_eq!(status, DeliveryStatus::Skipped);
        assert!(text.starts_with("rejected:"), "{text}");
    }
    assert_eq!(app.calls("/contacts/upsert"), 0);
    app.stop().await;
}

#[tokio::test]
async fn integrations_opt_out_and_engage_audience_traits() {
    let app = spawn_app().await;
    app.batch(vec![
        json!({"type": "identify", "userId": "u-5", "traits": {"email": "out@example.com"}, "integrations": {"Freshmarketer": false}, "messageId": "opt-out"}),
        json!({"type": "identify", "userId": "u-6", "traits": {"email": "aud@example.com", "order_completed_last_30days": "true"},
               "context": {"personas": {"computation_class": "audience", "computation_key": "order_completed_last_30days"}},
               "integrations": {"All": false, "Freshmarketer": true}, "messageId": "audience"}),
    ])
    .await;
    app.drain().await;
    assert!(app.contact_by_email("out@example.com").is_none());
    assert_eq!(
        trace_status(&app, "opt-out").await.0,
        DeliveryStatus::Skipped
    );
    let c = app.contact_by_email("aud@example.com").unwrap();
    assert_eq!(c["custom_field"]["cf_order_completed_last_30days"], true);
    app.stop().await;
}

#[tokio::test]
async fn duplicates_identical_identifies_and_older_events_cost_nothing() {
    let app = spawn_app().await;
    let e = identify(
        "u-7",
        "d@example.com",
        json!({"plan": "Pro"}),
        "2026-11-20T10:00:00Z",
        "dup",
    );
    app.batch(vec![e.clone()]).await;
    app.drain().await;
    app.batch(vec![e]).await; // same messageId: deduplicated
    app.batch(vec![identify(
        "u-7",
        "d@example.com",
        json!({"plan": "Pro"}),
        "2026-11-20T10:05:00Z",
        "same-again",
    )])
    .await;
    app.drain().await;
    assert_eq!(
        app.calls("/contacts/upsert"),
        1,
        "identical identify costs no call"
    );
    assert!(
        trace_status(&app, "same-again")
            .await
            .1
            .contains("unchanged")
    );
    // An older event arriving late changes nothing it should not.
    app.batch(vec![identify(
        "u-7",
        "d@example.com",
        json!({"plan": "Free", "firstName": "Dee"}),
        "2026-11-19T10:00:00Z",
        "older",
    )])
    .await;
    app.drain().await;
    let c = app.contact_by_email("d@example.com").unwrap();
    assert_eq!(
        c["custom_field"]["cf_plan"], "Pro",
        "older event must not overwrite"
    );
    assert_eq!(
        c["first_name"], "Dee",
        "a field the newer event never set is still filled"
    );
    app.stop().await;
}

/// The account's field metadata is kept in the store: a restarted gateway delivers without
/// spending a quota call to learn it again, and a trait with no field costs no refresh either.
#[tokio::test]
async fn a_restart_reuses_the_stored_field_metadata() {
    let app = spawn_app().await;
    app.batch(vec![identify(
        "u-1",
        "one@example.com",
        json!({"plan": "Pro", "favourite_colour": "teal"}),
        "2026-11-20T10:00:00Z",
        "r1",
    )])
    .await;
    app.drain().await;
    assert_eq!(app.calls("/settings/contacts/fields"), 1);
    let app = app.restart().await;
    app.batch(vec![identify(
        "u-2",
        "two@example.com",
        json!({"plan": "Free", "favourite_colour": "red"}),
        "2026-11-20T10:01:00Z",
        "r2",
    )])
    .await;
    app.drain().await;
    let c = app.contact_by_email("two@example.com").unwrap();
    assert_eq!(c["custom_field"]["cf_plan"], "Free");
    assert_eq!(
        app.calls("/settings/contacts/fields"),
        1,
        "the restarted gateway used the stored metadata"
    );
    assert_eq!(app.calls("/contacts/upsert"), 2);
    app.stop().await;
}

#[tokio::test]
async fn missing_traits_keep_and_clear() {
    for (mode, expect_cleared) in [
        (freshgate_core::coalesce::MissingTraits::Keep, false),
        (freshgate_core::coalesce::MissingTraits::Clear, true),
    ] {
        let mut setup = Setup::default();
        setup.destination.missing_traits = mode;
        let app = spawn_app_with(setup).await;
        app.batch(vec![identify(
            "u-8",
            "m@example.com",
            json!({"firstName": "Mo", "plan": "Pro"}),
            "2026-11-20T10:00:00Z",
            "m1",
        )])
        .await;
        app.drain().await;
        app.batch(vec![identify(
            "u-8",
            "m@example.com",
            json!({"firstName": "Mo", "plan": "Free"}),
            "2026-11-20T11:00:00Z",
            "m2",
        )])
        .await;
        app.drain().await;
        app.batch(vec![identify(
            "u-8",
            "m@example.com",
            json!({"plan": "Free"}),
            "2026-11-20T12:00:00Z",
            "m3",
        )])
        .await;
        app.drain().await;
        let c = app.contact_by_email("m@example.com").unwrap();
        assert_eq!(c["custom_field"]["cf_plan"], "Free");
        if expect_cleared {
            assert!(
                c["first_name"].is_null() || c["first_name"] == "",
                "clear mode empties first_name: {c}"
            );
        } else {
            assert_eq!(c["first_name"], "Mo");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn burst_of_identifies_is_coalesced() {
    let app = spawn_app().await;
    // Hold delivery back while the burst arrives: the first call is slow.
    app.emulator.state.inject(Fault::Latency { ms: 300 });
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(identify(
            "u-9",
            "burst@example.com",
            json!({"cf_employees": i}),
            &format!("2026-11-20T10:00:0{i}Z"),
            &format!("burst-{i}"),
        ));
    }
    app.batch(events[..1].to_vec()).await;
    app.batch(events[1..].to_vec()).await;
    app.drain().await;
    let c = app.contact_by_email("burst@example.com").unwrap();
    assert_eq!(c["custom_field"]["cf_employees"], 4);
    assert!(
        app.calls("/contacts/upsert") <= 2,
        "coalesced: {}",
        app.calls("/contacts/upsert")
    );
    app.stop().await;
}

#[tokio::test]
async fn retries_on_5xx() {
    let app = spawn_app().await;
    app.emulator.state.inject(Fault::NextStatus {
        count: 2,
        status: 503,
        path_contains: Some("upsert".into()),
        body: None,
    });
    app.batch(vec![identify(
        "u-10",
        "r@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "retry-5xx",
    )])
    .await;
    app.drain().await;
    assert!(app.contact_by_email("r@example.com").is_some());
    let t = app.store.event_traces("retry-5xx").await.unwrap();
    assert_eq!(t[0].deliveries[0].attempts.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_429_is_obeyed_the_minute_window_is_left_alone_then_delivery_resumes() {
    let app = spawn_app().await;
    app.emulator.state.inject(Fault::NextStatus {
        count: 1,
        status: 429,
        path_contains: Some("upsert".into()),
        body: None,
    });
    app.batch(vec![identify(
        "u-11",
        "r2@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "retry-429",
    )])
    .await;
    app.wait_for("the 429", || async {
        app.emulator
            .state
            .request_log()
            .iter()
            .any(|r| r.status == 429)
    })
    .await;
    let at_429 = app.emulator.state.request_log().len();
    // The account said it is busy: freshgate treats this minute as spent and sends nothing more
    // until it slides (up to 60 s), instead of retrying into the same window.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        app.emulator.state.request_log().len(),
        at_429,
        "no call right after a 429"
    );
    wait_for(
        "delivery after the window",
        std::time::Duration::from_secs(90),
        &mut || async { app.contact_by_email("r2@example.com").is_some() },
    )
    .await;
    app.stop().await;
}

/// Freshworks sometimes answers an upstream 429 as a 400 whose message wraps it (spec §8): it
/// must spend the minute exactly as a plain 429 does, not only be retried.
#[tokio::test]
async fn a_429_wrapped_in_a_400_spends_the_minute_like_a_plain_one() {
    let app = spawn_app().await;
    // A first contact, so the field metadata is read before the fault (it hits any path).
    app.batch(vec![identify(
        "u-12a",
        "r3a@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "warm-up",
    )])
    .await;
    app.drain().await;
    app.emulator.state.inject(Fault::Wrapped429 { count: 1 });
    app.batch(vec![identify(
        "u-12",
        "r3@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "retry-wrapped-429",
    )])
    .await;
    app.wait_for("the wrapped 429", || async {
        app.emulator
            .state
            .request_log()
            .iter()
            .any(|r| r.status == 400)
    })
    .await;
    let at_429 = app.emulator.state.request_log().len();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        app.emulator.state.request_log().len(),
        at_429,
        "no call right after a wrapped 429: the minute counts as spent"
    );
    let t = app.store.event_traces("retry-wrapped-429").await.unwrap();
    let attempt = &t[0].deliveries[0].attempts[0];
    assert_eq!(attempt.status, Some(400));
    assert!(attempt.outcome.starts_with("retry"), "{}", attempt.outcome);
    wait_for(
        "delivery after the window",
        std::time::Duration::from_secs(90),
        &mut || async { app.contact_by_email("r3@example.com").is_some() },
    )
    .await;
    // The next call waited for the minute to slide (a retry would have come within seconds).
    let log = app.emulator.state.request_log();
    let wrapped = log.iter().position(|r| r.status == 400).unwrap();
    let gap = log[wrapped + 1].at - log[wrapped].at;
    assert!(
        gap >= time::Duration::seconds(30),
        "next call {gap} after the wrapped 429"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_400_is_dead_lettered_then_replayed_after_the_cause_is_fixed() {
    let app = spawn_app().await;
    app.batch(vec![identify(
        "owner",
        "owner@example.com",
        json!({"mobile": "+1 555 9999"}),
        "2026-11-20T10:00:00Z",
        "owner-1",
    )])
    .await;
    app.drain().await;
    app.batch(vec![identify(
        "other",
        "other@example.com",
        json!({"mobile": "+1 555 9999"}),
        "2026-11-20T10:00:00Z",
        "clash",
    )])
    .await;
    app.drain().await;
    let (status, text) = trace_status(&app, "clash").await;
    assert_eq!(status, DeliveryStatus::Dead, "{text}");
    assert!(text.contains("not unique"), "{text}");
    let dead = app
        .store
        .dead_letters(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    // The reason is kept as a code beside the words: the filter selects on the code.
    assert_eq!(dead[0].reason_code.as_deref(), Some("conflict"));
    for (code, n) in [("conflict", 1), ("refused", 0)] {
        let filter = DeliveryFilter {
            reason_code: Some(code.to_owned()),
            ..DeliveryFilter::default()
        };
        assert_eq!(
            app.store.dead_letters(&filter).await.unwrap().len(),
            n,
            "{code}"
        );
    }
    // Fix the cause: the first contact gives up the number.
    app.batch(vec![identify(
        "owner",
        "owner@example.com",
        json!({"mobile": "+1 555 0000"}),
        "2026-11-20T11:00:00Z",
        "owner-2",
    )])
    .await;
    app.drain().await;
    let n = app
        .store
        .requeue_dead(&DeliveryFilter::default(), freshgate::pipeline::now_ms())
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.drain().await;
    assert_eq!(
        trace_status(&app, "clash").await.0,
        DeliveryStatus::Delivered
    );
    assert_eq!(
        app.contact_by_email("other@example.com").unwrap()["mobile_number"],
        "+1 555 9999"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_401_pauses_the_destination_and_keeps_its_events_until_the_key_works() {
    let app = spawn_app_with(Setup {
        pause_probe: std::time::Duration::from_secs(3),
        ..Setup::default()
    })
    .await;
    app.emulator.state.inject(Fault::NextStatus {
        count: 1,
        status: 401,
        path_contains: None,
        body: None,
    });
    app.batch(vec![identify(
        "u-12",
        "p@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "paused",
    )])
    .await;
    app.wait_for("a 401 answered", || async {
        app.emulator
            .state
            .request_log()
            .iter()
            .any(|r| r.status == 401)
    })
    .await;
    let t = app.store.event_traces("paused").await.unwrap();
    assert_eq!(t[0].deliveries[0].status, DeliveryStatus::Pending);
    // Recorded in the store, where `queue stats` and the console read it.
    app.wait_for("the pause recorded", || async {
        app.store.pauses().await.unwrap().len() == 1
    })
    .await;
    app.drain().await; // the pause probe finds the key working again
    assert!(app.contact_by_email("p@example.com").is_some());
    assert!(
        app.store.pauses().await.unwrap().is_empty(),
        "the resume clears it"
    );
    app.stop().await;
}

/// Several nodes share the pauses on a PostgreSQL store: a node that starts must not wipe the
/// pause another node recorded (its key may still be refused). It keeps it, probes at once, and
/// its successful delivery clears it; a pause nobody renewed for a whole probe interval is
/// forgotten at start.
#[tokio::test]
async fn a_restart_keeps_another_nodes_pause_until_a_probe_succeeds() {
    let probe = std::time::Duration::from_secs(60);
    let app = spawn_app_with(Setup {
        pause_probe: probe,
        ..Setup::default()
    })
    .await;
    let now = freshgate::pipeline::now_ms();
    let name = freshgate::config::DestinationConfig::default().name;
    let pause = |destination: &str, until_ms| freshgate_store::DestinationPause {
        destination: destination.to_owned(),
        reason: "401: the API key was refused (by another node)".to_owned(),
        since_ms: now - 1_000,
        until_ms,
    };
    app.store
        .set_pause(&name, Some(pause(&name, now + 60_000)))
        .await
        .unwrap();
    app.store
        .set_pause("retired", Some(pause("retired", now - 121_000)))
        .await
        .unwrap();
    let app = app.restart().await;
    assert_eq!(
        app.store.pauses().await.unwrap(),
        [pause(&name, now + 60_000)],
        "the current pause is kept, the one nobody renewed is forgotten"
    );
    app.batch(vec![identify(
        "u-probe",
        "probe@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "probe-1",
    )])
    .await;
    app.drain().await;
    assert!(
        app.contact_by_email("probe@example.com").is_some(),
        "the probe went out at once, not after the other node's 60 s"
    );
    app.wait_for("the successful probe clears the pause", || async {
        app.store.pauses().await.unwrap().is_empty()
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_far_future_timestamp_does_not_freeze_the_contact() {
    let app = spawn_app().await;
    app.batch(vec![identify(
        "u-far",
        "far@example.com",
        json!({"firstName": "Frozen"}),
        "9000-01-01T00:00:00Z",
        "far-1",
    )])
    .await;
    app.drain().await;
    // A later identify (sent now, a normal time) must win.
    let now = freshgate_core::segment::format_timestamp(time::OffsetDateTime::now_utc());
    app.batch(vec![identify(
        "u-far",
        "far@example.com",
        json!({"firstName": "Thawed"}),
        &now,
        "far-2",
    )])
    .await;
    app.drain().await;
    let c = app.contact_by_email("far@example.com").unwrap();
    assert_eq!(c["first_name"], "Thawed");
    let (status, text) = trace_status(&app, "far-1").await;
    assert_eq!(status, DeliveryStatus::Delivered);
    assert!(
        text.contains("more than 24 h after receivedAt"),
        "noted in the trace: {text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn what_ingest_acknowledges_delivery_can_read() {
    let app = spawn_app().await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let too_deep = r#"{"type":"identify","userId":"u-deep","messageId":"deep-1","traits":{"email":"deep@example.com"},"context":{"deep":DEEP}}"#
        .replace("DEEP", &deep);
    let huge = r#"{"type":"identify","userId":"u-huge","messageId":"huge-1","traits":{"email":"huge@example.com","n":1e400}}"#;
    let fine = identify(
        "u-fine",
        "fine@example.com",
        json!({}),
        "2026-11-20T10:00:00Z",
        "fine-1",
    );
    let body = format!(r#"{{"batch":[{too_deep},{huge},{fine}]}}"#);
    let r = app
        .post_raw(
            "/v1/batch",
            body.into_bytes(),
            &[
                ("content-type", "application/json"),
                ("authorization", "Basic dGVzdC13cml0ZS1rZXk6"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    app.drain().await;
    let reasons: Vec<String> = app
        .store
        .rejected(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("nested deeper than 100")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("out of range")),
        "{reasons:?}"
    );
    assert!(app.store.event_traces("deep-1").await.unwrap().is_empty());
    assert!(app.contact_by_email("fine@example.com").is_some());
    let dead = app
        .store
        .dead_letters(&DeliveryFilter::default())
        .await
        .unwrap();
    assert!(
        dead.is_empty(),
        "nothing acknowledged is unreadable: {dead:?}"
    );
    app.stop().await;
}
