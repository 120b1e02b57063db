//! The bulk path: a backlog goes out through `bulk_upsert`, 100 contacts a call, and each
//! record's failure in the job report reaches its own events.

use freshgate_store::DeliveryFilter;
use freshworks_emulator::Fault;
use serde_json::json;

use crate::helpers::*;

fn users(range: std::ops::Range<usize>, ts: &str) -> Vec<serde_json::Value> {
    range
        .map(|i| {
            identify(
                &format!("bulk-{i}"),
                &format!("bulk{i}@example.com"),
                json!({"firstName": format!("B{i}"), "plan": "Pro", "employees": i}),
                ts,
                &format!("bulk-msg-{i}"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_backlog_goes_out_in_bulk_and_record_failures_are_dead_lettered_alone() {
    let app = spawn_app().await;
    // Hold the first deliveries back so the whole backlog is waiting together.
    app.emulator.state.inject(Fault::Latency { ms: 200 });
    let mut events = users(0..250, "2026-11-20T10:00:00Z");
    // Two contacts claiming one mobile number: the job reports the second as failed.
    events.push(identify(
        "clash-a",
        "clash-a@example.com",
        json!({"mobile": "+1 555 7777"}),
        "2026-11-20T10:00:00Z",
        "clash-a",
    ));
    events.push(identify(
        "clash-b",
        "clash-b@example.com",
        json!({"mobile": "+1 555 7777"}),
        "2026-11-20T10:00:00Z",
        "clash-b",
    ));
    for chunk in events.chunks(100) {
        app.batch(chunk.to_vec()).await;
    }
    app.emulator.state.clear_faults();
    app.drain().await;
    for i in [0, 99, 100, 249] {
        let c = app
            .contact_by_email(&format!("bulk{i}@example.com"))
            .unwrap();
        assert_eq!(c["first_name"], format!("B{i}"));
        assert_eq!(c["custom_field"]["cf_employees"], i);
        assert_eq!(c["external_id"], format!("bulk-{i}"));
    }
    let bulk_calls = app.calls("/contacts/bulk_upsert");
    let single_calls = app.calls("/contacts/upsert");
    assert!(bulk_calls >= 1, "the backlog used bulk_upsert");
    assert!(
        bulk_calls + single_calls < 252 / 4,
        "bulk saves calls: {bulk_calls} bulk + {single_calls} single for 252 contacts"
    );
    let dead = app
        .store
        .dead_letters(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("not unique"), "{}", dead[0].reason);
    assert_eq!(app.contacts().len(), 251);
    app.stop().await;
}

#[tokio::test]
async fn a_405_from_bulk_upsert_is_retried_and_a_changed_email_keeps_the_contact() {
    let app = spawn_app().await;
    app.emulator.state.inject(Fault::NextStatus {
        count: 1,
        status: 405,
        path_contains: Some("bulk_upsert".into()),
        body: None,
    });
    app.batch(users(0..60, "2026-11-20T10:00:00Z")).await;
    app.drain().await;
    assert_eq!(app.contacts().len(), 60);
    let log: Vec<(String, u16)> = app
        .emulator
        .state
        .request_log()
        .iter()
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert!(log.iter().any(|r| r.1 == 405), "{log:?}");
    // Bulk-created contacts are known by external_id: a changed email updates the same one.
    app.batch(vec![identify(
        "bulk-7",
        "renamed7@example.com",
        json!({}),
        "2026-11-20T11:00:00Z",
        "rename-7",
    )])
    .await;
    app.drain().await;
    assert_eq!(
        app.contacts().len(),
        60,
        "no duplicate after the email change"
    );
    assert_eq!(
        app.contact_by_email("renamed7@example.com").unwrap()["external_id"],
        "bulk-7"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_backlog_runs_at_most_bulk_jobs_jobs_at_once() {
    // Jobs stay in progress for ten minutes: none ends while the test looks, so every job the
    // dispatcher starts shows as one `bulk_upsert` and none of them frees its slot.
    let mut setup = Setup::default();
    setup.emulator.switches.bulk_job_delay_ms = 600_000;
    setup.destination.concurrency = 8;
    setup.destination.bulk_jobs = 2;
    let app = spawn_app_with(setup).await;
    // Hold the first deliveries back so the whole backlog (five jobs' worth) waits together.
    app.emulator.state.inject(Fault::Latency { ms: 300 });
    let events = users(0..500, "2026-11-20T10:00:00Z");
    for chunk in events.chunks(100) {
        app.batch(chunk.to_vec()).await;
    }
    app.emulator.state.clear_faults();
    app.wait_for("two bulk jobs posted", || async {
        app.calls("/contacts/bulk_upsert") >= 2
    })
    .await;
    // With a job per free permit (the old way) the other three jobs went out at once beside
    // the first two; give them a second to show up.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        app.calls("/contacts/bulk_upsert"),
        2,
        "no more than bulk_jobs jobs in flight"
    );
    app.stop().await;
}
