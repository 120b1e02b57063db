//! Fields metadata, filtered search, lists membership, sales accounts, activities and unknown paths.

use serde_json::{Value, json};

use crate::helpers::Env;

#[tokio::test]
async fn fields_look_like_a_real_account() {
    let env = Env::start().await;
    let r = env.get("/settings/contacts/fields").await;
    assert_eq!(r.status, 200);
    let fields = r.body["fields"].as_array().unwrap();
    let label = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["label"].clone())
    };
    assert_eq!(label("first_name"), Some(json!("First name")));
    assert_eq!(label("work_number"), Some(json!("Work")));
    assert_eq!(label("mobile_number"), Some(json!("Mobile")));
    assert_eq!(label("external_id"), Some(json!("External ID")));
    assert_eq!(label("cf_signup_date"), Some(json!("Signup date")));
    assert_eq!(
        label("cf_order_completed_last_30days"),
        Some(json!("order_completed_last_30days"))
    );
    let plan = fields.iter().find(|f| f["name"] == "cf_plan").unwrap();
    let choices: Vec<_> = plan["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].clone())
        .collect();
    assert_eq!(
        choices,
        vec![json!("Free"), json!("Pro"), json!("Enterprise")]
    );
    for f in fields {
        for key in [
            "id",
            "name",
            "label",
            "type",
            "default",
            "required",
            "choices",
            "base_model",
            "position",
        ] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
    }
    let r = env
        .get("/settings/contacts/fields?include=field_group")
        .await;
    assert!(r.body["field_groups"].is_array());
    env.emu.stop().await;
}

#[tokio::test]
async fn filtered_search_finds_by_email_without_custom_fields() {
    let env = Env::start().await;
    env.upsert_email("a@b.c", json!({"custom_field": {"cf_plan": "Pro"}}))
        .await;
    env.upsert_email("d@e.f", json!({})).await;
    let r = env
        .post(
            "/filtered_search/contact",
            json!({"filter_rule":[{"attribute":"contact_email.email","operator":"is_in","value":"A@b.c"}],"page":1,"per_page":100}),
        )
        .await;
    assert_eq!(r.status, 200);
    let contacts = r.body["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["email"], "a@b.c");
    assert!(contacts[0].get("custom_field").is_none());
    assert_eq!(r.body["meta"]["total"], 1);
    let r = env
        .post("/filtered_search/contact", json!({"filter_rule":[{"attribute":"cf_plan","operator":"is_in","value":["Pro","Free"]}]}))
        .await;
    assert_eq!(r.body["contacts"].as_array().unwrap().len(), 1);
    assert_eq!(
        env.post("/filtered_search/contact", json!({})).await.status,
        400
    );
    env.emu.stop().await;
}

#[tokio::test]
async fn list_membership_by_contact_ids() {
    let env = Env::start().await;
    let a = env.upsert_email("a@l.io", json!({})).await;
    let b = env.upsert_email("b@l.io", json!({})).await;
    let list = env.post("/lists", json!({"name": "Newsletter"})).await.body["list"]["id"].clone();
    let r = env
        .put(
            &format!("/lists/{list}/add_contacts"),
            json!({"ids": [a["id"], b["id"], 1, a["id"]]}),
        )
        .await;
    assert_eq!((r.status, r.body), (200, json!({})));
    let members = env.get(&format!("/contacts/lists/{list}")).await;
    assert_eq!(members.body["contacts"].as_array().unwrap().len(), 2);
    env.put(
        &format!("/lists/{list}/remove_contacts"),
        json!({"ids": [a["id"]]}),
    )
    .await;
    let state = env.emu.state.snapshot();
    assert_eq!(state["lists"][0]["contact_ids"], json!([b["id"]]));
    env.put(
        &format!("/lists/{list}/remove_contacts"),
        json!({"all": true}),
    )
    .await;
    assert_eq!(
        env.emu.state.snapshot()["lists"][0]["contact_ids"],
        json!([])
    );
    assert_eq!(
        env.put("/lists/123/add_contacts", json!({"ids": [a["id"]]}))
            .await
            .status,
        404
    );
    assert_eq!(
        env.put(&format!("/lists/{list}/add_contacts"), json!({}))
            .await
            .status,
        400
    );
    assert_eq!(env.post("/lists", json!({})).await.status, 400);
    // Names are not unique keys: a second list with the same name is another list.
    let again = env
        .post("/lists", json!({"list": {"name": "Newsletter"}}))
        .await;
    assert_ne!(again.body["list"]["id"], list);
    env.emu.stop().await;
}

#[tokio::test]
async fn sales_account_upsert_updates_by_name() {
    let env = Env::start().await;
    let r = env
        .post("/sales_accounts/upsert", json!({"unique_identifier": {"name": "Acme"}, "sales_account": {"city": "Paris", "custom_field": {"cf_tier": "A"}}}))
        .await;
    assert_eq!(r.status, 200);
    let id = r.body["sales_account"]["id"].clone();
    let r = env
        .post("/sales_accounts/upsert", json!({"unique_identifier": {"name": "Acme"}, "sales_account": {"website": "acme.test"}}))
        .await;
    assert_eq!(r.body["sales_account"]["id"], id);
    assert_eq!(r.body["sales_account"]["city"], "Paris");
    assert_eq!(r.body["sales_account"]["custom_field"]["cf_tier"], "A");
    assert_eq!(
        env.post("/sales_accounts/upsert", json!({"sales_account": {}}))
            .await
            .status,
        400
    );
    env.emu.stop().await;
}

#[tokio::test]
async fn sales_activities_require_their_fields_and_target() {
    let env = Env::start().await;
    let base = json!({"title": "t", "start_date": "2021-10-04T14:45:00-04:00", "end_date": "2021-10-04T15:45:00-04:00",
        "sales_activity_type_id": 70000612898_i64, "targetable_type": "Contact", "targetable_id": 1});
    assert_eq!(
        env.post("/sales_activities", json!({"sales_activity": base}))
            .await
            .status,
        400
    );
    let c = env.upsert_email("t@a.io", json!({})).await;
    let mut ok = base.clone();
    ok["targetable_id"] = c["id"].clone();
    let mut no_title = ok.clone();
    no_title.as_object_mut().unwrap().remove("title");
    let r = env
        .post("/sales_activities", json!({"sales_activity": no_title}))
        .await;
    assert_eq!(
        r.body,
        crate::helpers::error_body(400, "Title can't be blank")
    );
    let r = env
        .post("/sales_activities", json!({"sales_activity": ok}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["sales_activity"]["targetable_id"], c["id"]);
    // The type and the owner must exist; a missing type is refused, a missing owner is not.
    for (key, value, message) in [
        (
            "sales_activity_type_id",
            json!(1),
            "Sales activity type is invalid",
        ),
        (
            "sales_activity_type_id",
            Value::Null,
            "Sales activity type can't be blank",
        ),
        ("owner_id", json!(2), "Owner is invalid"),
    ] {
        let mut bad = ok.clone();
        bad[key] = value;
        let r = env
            .post("/sales_activities", json!({"sales_activity": bad}))
            .await;
        assert_eq!(r.body, crate::helpers::error_body(400, message), "{key}");
    }
    let mut owned = ok.clone();
    owned["owner_id"] = json!(70000012346_i64);
    let r = env
        .post("/sales_activities", json!({"sales_activity": owned}))
        .await;
    assert_eq!(r.body["sales_activity"]["owner_id"], json!(70000012346_i64));
    assert_eq!(
        env.emu.state.snapshot()["sales_activities"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    env.emu.stop().await;
}

#[tokio::test]
async fn account_fields_have_the_contact_fields_shape() {
    let env = Env::start().await;
    let r = env.get("/settings/sales_accounts/fields").await;
    assert_eq!(r.status, 200);
    let fields = r.body["fields"].as_array().unwrap();
    let names: Vec<&str> = fields.iter().filter_map(|f| f["name"].as_str()).collect();
    for name in [
        "name",
        "website",
        "industry_type_id",
        "number_of_employees",
        "cf_plan",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(fields.iter().all(|f| f["base_model"] == "SalesAccount"));
    env.emu.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_bad_json() {
    let env = Env::start().await;
    let r = env.get("/deals/1").await;
    assert_eq!(r.status, 404);
    assert!(r.body["errors"]["message"].is_array());
    let r = env
        .http
        .post(format!("{}/contacts/upsert", env.emu.base_url))
        .header("Authorization", "Token token=emulator-key")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    env.emu.stop().await;
}
