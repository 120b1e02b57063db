//! Response shapes checked against the spec's literal samples (§2.2, §3, §6, §7, §8): every key of a
//! sample must exist in ours with the same JSON type (null sample values only require the key).

use serde_json::{Value, json};

use crate::helpers::{Env, error_body};

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Asserts that `ours` has every key of `sample` (recursively into objects and first array items).
fn assert_shape(sample: &Value, ours: &Value, at: &str) {
    match (sample, ours) {
        (Value::Null, _) => {}
        (Value::Object(s), Value::Object(o)) => {
            for (k, sv) in s {
                if k == "..." {
                    continue;
                }
                let ov = o
                    .get(k)
                    .unwrap_or_else(|| panic!("missing key {at}.{k} in {ours}"));
                assert_shape(sv, ov, &format!("{at}.{k}"));
            }
        }
        (Value::Array(s), Value::Array(o)) => {
            if let (Some(sf), Some(of)) = (s.first(), o.first()) {
                assert_shape(sf, of, &format!("{at}[0]"));
            }
        }
        _ => assert_eq!(
            kind(sample),
            kind(ours),
            "type of {at}: sample {sample}, ours {ours}"
        ),
    }
}

/// Spec §2.2, literally.
const UPSERT_SAMPLE: &str = r#"{ "contact": {
  "id": 70054866612, "first_name": null, "last_name": null,
  "display_name": "jamessampleton120@gmail.com", "avatar": null, "job_title": null,
  "city": null, "state": null, "zipcode": null, "country": null,
  "email": "jamessampleton120@gmail.com",
  "emails": [ { "id": 70047409219, "value": "jamessampleton120@gmail.com",
                "is_primary": true, "label": null, "_destroy": false } ],
  "time_zone": null, "work_number": null, "mobile_number": null, "address": null,
  "last_seen": null, "lead_score": 0, "last_contacted": null,
  "open_deals_amount": null, "won_deals_amount": null,
  "links": { "conversations": "/crm/sales/contacts/70054866612/conversations/all?...",
             "timeline_feeds": "/crm/sales/contacts/70054866612/timeline_feeds", "...": "..." },
  "custom_field": {},
  "created_at": "2022-10-11T08:42:15-04:00", "updated_at": "2022-10-11T08:42:15-04:00",
  "keyword": null, "medium": null, "tags": [], "facebook": null, "twitter": null, "linkedin": null,
  "is_deleted": false, "team_user_ids": null, "external_id": null, "work_email": null,
  "subscription_status": 1, "subscription_types": "2;3;4;5;1", "customer_fit": 0,
  "record_type_id": "71012139284", "whatsapp_subscription_status": 2, "sms_subscription_status": 2,
  "locale": null, "total_sessions": null, "phone_numbers": [],
  "web_form_ids": null, "last_assigned_at": null
} }"#;

#[tokio::test]
async fn upsert_response_matches_the_spec_sample() {
    let env = Env::start().await;
    let r = env
        .post(
            "/contacts/upsert",
            json!({"unique_identifier": {"emails": "jamessampleton120@gmail.com"}, "contact": {}}),
        )
        .await;
    let sample: Value = serde_json::from_str(UPSERT_SAMPLE).unwrap();
    assert_shape(&sample, &r.body, "");
    let c = &r.body["contact"];
    // Same values as the sample for a bare email-only contact.
    for key in [
        "display_name",
        "email",
        "custom_field",
        "tags",
        "is_deleted",
        "subscription_status",
        "subscription_types",
        "customer_fit",
        "lead_score",
        "whatsapp_subscription_status",
        "phone_numbers",
    ] {
        let expected = if key == "display_name" || key == "email" {
            json!("jamessampleton120@gmail.com")
        } else {
            sample["contact"][key].clone()
        };
        assert_eq!(c[key], expected, "{key}");
    }
    assert_eq!(c["emails"][0]["is_primary"], true);
    assert_eq!(c["emails"][0]["_destroy"], false);
    let ts = c["created_at"].as_str().unwrap();
    assert_eq!(ts.len(), "2022-10-11T08:42:15-04:00".len());
    assert!(ts.ends_with("-04:00"), "{ts}");
    assert!(
        c["links"]["timeline_feeds"]
            .as_str()
            .unwrap()
            .contains(&c["id"].to_string())
    );
    env.emu.stop().await;
}

#[tokio::test]
async fn include_sales_accounts_matches_the_spec_sample() {
    let env = Env::start().await;
    let a = env
        .post("/sales_accounts/upsert", json!({"unique_identifier": {"name": "div-quer"}, "sales_account": {"website": "div.example"}}))
        .await;
    let aid = a.body["sales_account"]["id"].clone();
    let r = env
        .post(
            "/contacts/upsert?include=sales_accounts",
            json!({"unique_identifier": {"emails": "s@x.io"}, "contact": {"sales_accounts": [{"id": aid, "is_primary": true}]}}),
        )
        .await;
    let sample = json!({"sales_accounts": [{"partial": true, "id": 70003771198_i64, "name": "div-quer", "avatar": null,
        "website": null, "last_contacted": null, "record_type_id": "71010794477", "is_primary": true}]});
    assert_shape(&sample, &r.body["contact"], "contact");
    assert_eq!(r.body["contact"]["sales_accounts"][0]["name"], "div-quer");
    // Without include there is no sales_accounts key.
    let r = env
        .get(&format!("/contacts/{}", r.body["contact"]["id"]))
        .await;
    assert!(r.body["contact"].get("sales_accounts").is_none());
    env.emu.stop().await;
}

#[tokio::test]
async fn job_status_matches_the_spec_sample() {
    let env = Env::start().await;
    let r = env
        .post(
            "/contacts/bulk_upsert",
            json!({"contacts": [{"emails": "a@example.com", "data": {}}]}),
        )
        .await;
    let url = r.body["job_status_url"].as_str().unwrap().to_owned();
    let mut job = Value::Null;
    for _ in 0..500 {
        job = env.get(&url).await.body;
        if job["status"] == "SUCCESS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let sample = json!({ "status": "SUCCESS", "job_type_name": "…", "created_at": "…", "status_updated_at": "…",
        "progress": 100, "data": "string" });
    assert_shape(&sample, &job, "job");
    let data: Value = serde_json::from_str(job["data"].as_str().unwrap()).unwrap();
    let data_sample = json!({ "record_status": { "succeeded": 99, "failed": 1 },
        "detailed_failure_report": [ { "emails": "x@y.z", "error_message": ["Email is not unique"] } ] });
    assert_shape(
        &json!({"record_status": data_sample["record_status"]}),
        &data,
        "data",
    );
    assert!(data["detailed_failure_report"].is_array());
    env.emu.stop().await;
}

#[tokio::test]
async fn lists_match_the_spec_samples() {
    let env = Env::start().await;
    let r = env.post("/lists", json!({"name": "Sample list"})).await;
    assert_eq!(r.status, 200);
    assert_shape(&json!({"list": {"id": 1, "name": "x"}}), &r.body, "");
    let r = env.get("/lists").await;
    let sample = json!({"lists":[{"id":70000053624_i64,"name":"Sample list"}],"meta":{"total_pages":1,"total":5}});
    assert_shape(&sample, &r.body, "");
    assert_eq!(r.body["meta"], json!({"total_pages": 1, "total": 1}));
    env.emu.stop().await;
}

#[tokio::test]
async fn selectors_accounts_and_activities_match_the_spec_samples() {
    let env = Env::start().await;
    let r = env.get("/selector/lifecycle_stages").await;
    assert_shape(
        &json!({"lifecycle_stages":[{"id":71012139273_i64,"name":"Lead","position":2,"disabled":false,"default":true,"type":"Lead","contact_status_ids":[1]}]}),
        &r.body,
        "",
    );
    let r = env.get("/selector/sales_activity_types").await;
    assert_shape(
        &json!({"sales_activity_types":[{"partial":true,"id":70000612898_i64,"name":"Phone","internal_name":"phone","show_in_conversation":true,"position":7,"is_default":true,"is_checkedin":false}]}),
        &r.body,
        "",
    );
    let r = env.get("/selector/owners").await;
    assert_shape(
        &json!({"users":[{"id":1,"display_name":"x","email":"x"}]}),
        &r.body,
        "",
    );
    let r = env.get("/selector/contact_statuses").await;
    assert!(r.body["contact_statuses"][0]["id"].is_i64());
    assert_eq!(env.get("/selector/nope").await.status, 404);

    let r = env.post("/sales_accounts/upsert", json!({"unique_identifier": {"name": "postman2.0"}, "sales_account": {"name": "postman2.0"}})).await;
    assert_shape(
        &json!({"sales_account":{"id":70003771396_i64,"name":"postman2.0","custom_field":{},"record_type_id":"71010794477"}}),
        &r.body,
        "",
    );
    let c = env.upsert_email("act@x.io", json!({})).await;
    let r = env
        .post(
            "/sales_activities",
            json!({"sales_activity": {"title": "Order Completed", "start_date": "2021-10-04T14:45:00-04:00",
                "end_date": "2021-10-04T14:45:00-04:00", "sales_activity_type_id": 70000612900_i64,
                "targetable_id": c["id"], "targetable_type": "Contact", "notes": "n"}}),
        )
        .await;
    assert_shape(
        &json!({"sales_activity":{"id":1,"title":"t","creater_id":1,"updater_id":1}}),
        &r.body,
        "",
    );
    env.emu.stop().await;
}

#[tokio::test]
async fn error_body_matches_the_spec_sample() {
    let env = Env::start().await;
    env.post(
        "/sales_accounts/upsert",
        json!({"unique_identifier": {"name": "A"}, "sales_account": {}}),
    )
    .await;
    env.post(
        "/sales_accounts/upsert",
        json!({"unique_identifier": {"name": "B"}, "sales_account": {}}),
    )
    .await;
    // Renaming B to A collides with the unique name.
    let r = env
        .post(
            "/sales_accounts/upsert",
            json!({"unique_identifier": {"name": "B"}, "sales_account": {"name": "A"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let sample: Value = serde_json::from_str(
        r#"{"errors":{"code":400,"message":["Name has already been taken"]}}"#,
    )
    .unwrap();
    assert_eq!(r.body, sample);
    assert_eq!(r.body, error_body(400, "Name has already been taken"));
    env.emu.stop().await;
}
