//! Per-account quota: sliding minute and hour, every call counted, time scale, spend, headers.

use std::time::Duration;

use freshworks_emulator::{EmulatorConfig, Switches};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Env, error_body};

#[tokio::test]
async fn the_401st_call_in_a_minute_gets_429_at_default_limits() {
    let env = Env::start().await;
    for i in 0..400 {
        let r = env.get("/selector/owners").await;
        assert_eq!(r.status, 200, "call {i}");
    }
    let r = env.get("/selector/owners").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body, error_body(429, "Too many requests"));
    // Headers are off by default.
    assert!(r.headers.get("retry-after").is_none());
    assert_eq!(env.emu.state.quota_429_count(), 1);
    let log = env.emu.state.request_log();
    assert_eq!(log.len(), 401);
    assert!(log[..400].iter().all(|l| l.counted));
    assert!(!log[400].counted && log[400].status == 429);
    env.emu.stop().await;
}

#[tokio::test]
async fn unauthorized_calls_do_not_count() {
    let config = EmulatorConfig {
        minute_limit: 1,
        ..EmulatorConfig::default()
    };
    let env = Env::with(config).await;
    for _ in 0..3 {
        assert_eq!(
            env.raw(Method::GET, "/lists", Some("Token token=bad"), None)
                .await
                .status,
            401
        );
    }
    assert_eq!(env.get("/lists").await.status, 200);
    assert_eq!(env.get("/lists").await.status, 429);
    env.emu.stop().await;
}

#[tokio::test]
async fn the_hour_window_bites_and_passes_with_a_large_time_scale() {
    let config = EmulatorConfig {
        hourly_limit: 3,
        minute_limit: 100,
        ..EmulatorConfig::default()
    };
    let env = Env::with(config).await;
    for _ in 0..3 {
        assert_eq!(env.get("/lists").await.status, 200);
    }
    assert_eq!(env.get("/lists").await.status, 429);
    // Speed emulated time up so the hour passes within milliseconds of wall time.
    let r = env
        .admin(
            Method::POST,
            "/time_scale",
            Some(json!({"time_scale": 1e9})),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut ok = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if env.get("/lists").await.status == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "quota never recovered");
    assert_eq!(env.emu.state.quota_429_count(), 1);
    env.emu.stop().await;
}

#[tokio::test]
async fn a_configured_time_scale_makes_a_spent_hour_pass_in_wall_seconds() {
    // 3600x: one emulated hour per wall second.
    let config = EmulatorConfig {
        hourly_limit: 5,
        minute_limit: 5,
        time_scale: 3600.0,
        ..EmulatorConfig::default()
    };
    let env = Env::with(config).await;
    env.emu.state.spend(5);
    let mut saw_ok = false;
    for _ in 0..400 {
        if env.get("/lists").await.status == 200 {
            saw_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_ok, "a spent hour never passed at 3600x");
    env.emu.stop().await;
}

#[tokio::test]
async fn spend_and_limit_changes_through_the_admin_api() {
    let env = Env::start().await;
    let r = env
        .admin(Method::POST, "/spend", Some(json!({"calls": 400})))
        .await;
    assert_eq!(r.body["used_minute"], 400);
    assert_eq!(env.get("/lists").await.status, 429);
    let r = env
        .admin(
            Method::POST,
            "/limits",
            Some(json!({"hourly": 5000, "minute": 401})),
        )
        .await;
    assert_eq!(r.body["minute_limit"], 401);
    assert_eq!(env.get("/lists").await.status, 200);
    assert_eq!(env.get("/lists").await.status, 429);
    // Admin calls themselves never count.
    let q = env.admin(Method::GET, "/quota", None).await;
    assert_eq!(q.body["used_minute"], 401);
    assert_eq!(q.body["quota_429_count"], 2);
    env.emu.stop().await;
}

#[tokio::test]
async fn rate_limit_headers_when_switched_on() {
    let sw = Switches {
        rate_limit_headers: true,
        ..Switches::default()
    };
    let env = Env::with(EmulatorConfig {
        minute_limit: 2,
        switches: sw,
        ..EmulatorConfig::default()
    })
    .await;
    let r = env.get("/lists").await;
    assert_eq!(r.headers["x-ratelimit-limit"], "5000");
    assert_eq!(r.headers["x-ratelimit-remaining"], "1");
    env.get("/lists").await;
    let r = env.get("/lists").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    env.emu.stop().await;
}
