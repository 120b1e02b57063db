//! Fault injection: next-N statuses (path-scoped), wrapped 429, failure rate, latency, dropped connections.

use std::time::{Duration, Instant};

use freshworks_emulator::{EmulatorConfig, Fault};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Env, error_body};

#[tokio::test]
async fn next_status_faults_answer_then_expire() {
    let env = Env::start().await;
    env.emu.state.inject(Fault::NextStatus {
        count: 2,
        status: 503,
        path_contains: None,
        body: None,
    });
    assert_eq!(env.get("/lists").await.status, 503);
    let r = env.get("/lists").await;
    assert_eq!(r.body, error_body(503, "Service Unavailable"));
    assert_eq!(env.get("/lists").await.status, 200);
    env.emu.stop().await;
}

#[tokio::test]
async fn a_405_only_on_bulk_upsert_with_a_custom_body() {
    let env = Env::start().await;
    env.emu.state.inject(Fault::NextStatus {
        count: 1,
        status: 405,
        path_contains: Some("bulk_upsert".into()),
        body: Some("{\"message\":\"busy\"}".into()),
    });
    assert_eq!(env.get("/lists").await.status, 200);
    let items = json!({"contacts": [{"emails": "a@b.c", "data": {}}]});
    let r = env.post("/contacts/bulk_upsert", items.clone()).await;
    assert_eq!((r.status, r.body), (405, json!({"message": "busy"})));
    assert_eq!(env.post("/contacts/bulk_upsert", items).await.status, 200);
    env.emu.stop().await;
}

#[tokio::test]
async fn a_429_wrapped_in_a_400() {
    let env = Env::start().await;
    env.emu.state.inject(Fault::Wrapped429 { count: 1 });
    let r = env.get("/lists").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        error_body(
            400,
            "UCR contact fetch failure :: response_code :: 429 :: response :: Too many requests"
        )
    );
    // Injected answers are not quota 429s.
    assert_eq!(env.emu.state.quota_429_count(), 0);
    env.emu.stop().await;
}

#[tokio::test]
async fn failure_rate_and_clear() {
    let env = Env::with(EmulatorConfig {
        seed: 7,
        ..EmulatorConfig::default()
    })
    .await;
    env.emu.state.inject(Fault::FailureRate { rate: 1.0 });
    assert_eq!(env.get("/lists").await.status, 500);
    env.emu.state.clear_faults();
    assert_eq!(env.get("/lists").await.status, 200);
    // A partial rate fails some and passes some of many calls (seeded, so reproducible).
    env.emu.state.inject(Fault::FailureRate { rate: 0.5 });
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(env.get("/lists").await.status);
    }
    assert!(statuses.contains(&500) && statuses.contains(&200));
    env.emu.stop().await;
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let env = Env::start().await;
    env.emu.state.inject(Fault::Latency { ms: 60 });
    let started = Instant::now();
    assert_eq!(env.get("/lists").await.status, 200);
    // A sleep never ends early, so this lower bound cannot flake.
    assert!(started.elapsed() >= Duration::from_millis(60));
    env.emu.stop().await;
}

#[tokio::test]
async fn dropped_connections_give_no_response() {
    let env = Env::start().await;
    env.emu.state.inject(Fault::DropConnections { count: 1 });
    let url = format!("{}/lists", env.emu.base_url);
    let err = env
        .http
        .get(&url)
        .header("Authorization", "Token token=emulator-key")
        .send()
        .await;
    assert!(err.is_err(), "expected a transport error, got {err:?}");
    assert_eq!(env.get("/lists").await.status, 200);
    let log = env.emu.state.request_log();
    assert_eq!(log[0].status, 0);
    assert!(!log[0].counted);
    env.emu.stop().await;
}

#[tokio::test]
async fn faults_through_the_admin_api() {
    let env = Env::start().await;
    let r = env
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"kind": "next_status", "count": 1, "status": 502})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.get("/lists").await.status, 502);
    env.admin(
        Method::POST,
        "/faults",
        Some(json!({"kind": "wrapped429", "count": 5})),
    )
    .await;
    env.admin(Method::DELETE, "/faults", None).await;
    assert_eq!(env.get("/lists").await.status, 200);
    env.emu.stop().await;
}
