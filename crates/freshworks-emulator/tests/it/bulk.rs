//! Bulk upsert end to end: POST, absolute job_status_url, async job, record_status and failure report.

use std::time::Duration;

use freshworks_emulator::{BulkDataFormat, EmulatorConfig, Switches};
use serde_json::{Value, json};

use crate::helpers::{Env, error_body};

/// Polls a job until it reports SUCCESS (bounded).
async fn wait_job(env: &Env, url: &str) -> Value {
    for _ in 0..500 {
        let r = env.get(url).await;
        assert_eq!(r.status, 200);
        if r.body["status"] == "SUCCESS" {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("bulk job never finished");
}

#[tokio::test]
async fn bulk_upsert_runs_asynchronously_and_reports_failures() {
    let env = Env::start().await;
    env.upsert_email("owner@x.io", json!({"mobile_number": "555"}))
        .await;
    let r = env
        .post(
            "/contacts/bulk_upsert",
            json!({"contacts": [
                {"emails": "a@example.com", "data": {"first_name": "A", "custom_field": {"cf_employees": "120"}}},
                {"emails": "b@example.com", "data": {"mobile_number": "555"}},
                {"emails": "OWNER@x.io", "data": {"custom_field": {"cf_plan": "Enterprise"}}},
                {"data": {"first_name": "no identifier"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let url = r.body["job_status_url"].as_str().unwrap().to_owned();
    let host = env
        .emu
        .base_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with(&format!("http://{host}/crm/sales/api/job_statuses/")),
        "{url}"
    );

    let job = wait_job(&env, &url).await;
    assert_eq!(job["progress"], 100);
    for key in ["job_type_name", "created_at", "status_updated_at"] {
        assert!(job[key].is_string(), "{key}");
    }
    // `data` is a JSON string by default, as production clients json.loads it.
    let data: Value = serde_json::from_str(job["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["record_status"], json!({"succeeded": 2, "failed": 2}));
    let report = data["detailed_failure_report"].as_array().unwrap();
    assert!(report.contains(
        &json!({"emails": "b@example.com", "error_message": ["MobileNumber is not unique"]})
    ));
    assert!(report.iter().all(|f| f["error_message"].is_array()));

    let contacts = env.emu.state.contacts();
    assert_eq!(contacts.len(), 2);
    let a = contacts
        .iter()
        .find(|c| c["email"] == "a@example.com")
        .unwrap();
    assert_eq!(a["custom_field"]["cf_employees"], 120);
    let owner = contacts
        .iter()
        .find(|c| c["email"] == "owner@x.io")
        .unwrap();
    assert_eq!(owner["custom_field"]["cf_plan"], "Enterprise");

    // Polls count against the quota like every other call.
    let log = env.emu.state.request_log();
    assert!(
        log.iter()
            .any(|l| l.path.contains("/job_statuses/") && l.counted)
    );
    env.emu.stop().await;
}

#[tokio::test]
async fn bulk_size_cap_and_object_data_switch() {
    let sw = Switches {
        bulk_data: BulkDataFormat::Object,
        max_bulk_size: 2,
        ..Switches::default()
    };
    let env = Env::with(EmulatorConfig {
        switches: sw,
        ..EmulatorConfig::default()
    })
    .await;
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"emails": format!("{i}@x.io"), "data": {}}))
        .collect();
    let r = env
        .post("/contacts/bulk_upsert", json!({"contacts": items}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        error_body(400, "You can upsert at most 2 records at a time")
    );
    let r = env
        .post("/contacts/bulk_upsert", json!({"contacts": items[..2]}))
        .await;
    let job = wait_job(&env, r.body["job_status_url"].as_str().unwrap()).await;
    assert_eq!(
        job["data"]["record_status"],
        json!({"succeeded": 2, "failed": 0})
    );
    assert_eq!(job["data"]["detailed_failure_report"], json!([]));
    assert_eq!(
        env.post("/contacts/bulk_upsert", json!({"nope": []}))
            .await
            .status,
        400
    );
    env.emu.stop().await;
}

#[tokio::test]
async fn default_bulk_cap_is_100() {
    let env = Env::start().await;
    let items: Vec<Value> = (0..101)
        .map(|i| json!({"emails": format!("{i}@x.io"), "data": {}}))
        .collect();
    assert_eq!(
        env.post("/contacts/bulk_upsert", json!({"contacts": items}))
            .await
            .status,
        400
    );
    let r = env
        .post("/contacts/bulk_upsert", json!({"contacts": items[..100]}))
        .await;
    assert_eq!(r.status, 200);
    let job = wait_job(&env, r.body["job_status_url"].as_str().unwrap()).await;
    let data: Value = serde_json::from_str(job["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["record_status"]["succeeded"], 100);
    env.emu.stop().await;
}
