//! Contact routes and the enforcement rules: auth, uniqueness, required fields, field types, unknown fields.

use freshworks_emulator::{EmulatorConfig, Locale, Switches, UnknownFieldPolicy};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Env, error_body};

#[tokio::test]
async fn upsert_creates_a_contact_that_lookup_finds_and_a_second_upsert_updates_it() {
    let env = Env::start().await;
    let c = env
        .upsert_email(
            "Jane@Example.com",
            json!({"emails": "Jane@Example.com", "first_name": "Jane"}),
        )
        .await;
    let id = c["id"].as_i64().unwrap();
    assert!(id > 70_000_000_000 && id < 80_000_000_000);
    assert_eq!(c["created_at"], c["updated_at"]);
    assert_eq!(c["email"], "Jane@Example.com");
    assert_eq!(c["display_name"], "Jane");

    let found = env
        .get("/lookup?q=jane%40example.com&f=email&entities=contact")
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["contacts"]["contacts"][0]["id"], id);

    // Email match is case-insensitive by default: same contact, updated.
    let again = env
        .upsert_email("jane@example.com", json!({"last_name": "Doe"}))
        .await;
    assert_eq!(again["id"], id);
    assert_eq!(again["display_name"], "Jane Doe");
    assert_eq!(env.emu.state.contacts().len(), 1);
    env.emu.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_key_gets_401_and_bare_token_needs_the_switch() {
    let env = Env::start().await;
    let body = json!({"unique_identifier": {"emails": "a@b.c"}, "contact": {}});
    let wrong = env
        .raw(
            Method::POST,
            "/contacts/upsert",
            Some("Token token=nope"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let none = env.raw(Method::GET, "/selector/owners", None, None).await;
    assert_eq!(none.status, 401);
    let bare = env
        .raw(
            Method::GET,
            "/selector/owners",
            Some("Token emulator-key"),
            None,
        )
        .await;
    assert_eq!(bare.status, 401);
    assert!(env.emu.state.contacts().is_empty());
    env.emu.stop().await;

    let sw = Switches {
        accept_bare_token: true,
        ..Switches::default()
    };
    let env = Env::with(EmulatorConfig {
        switches: sw,
        ..EmulatorConfig::default()
    })
    .await;
    let bare = env
        .raw(
            Method::GET,
            "/selector/owners",
            Some("Token emulator-key"),
            None,
        )
        .await;
    assert_eq!(bare.status, 200);
    env.emu.stop().await;
}

#[tokio::test]
async fn upsert_by_mobile_number_and_external_id() {
    let env = Env::start().await;
    let r = env
        .post("/contacts/upsert", json!({"unique_identifier": {"mobile_number": "1-926-555-9504"}, "contact": {"first_name": "M"}}))
        .await;
    assert_eq!(r.status, 200);
    let id = r.body["contact"]["id"].clone();
    assert_eq!(r.body["contact"]["mobile_number"], "1-926-555-9504");
    let r = env
        .post("/contacts/upsert", json!({"unique_identifier": {"mobile_number": "1-926-555-9504"}, "contact": {"external_id": "u-1"}}))
        .await;
    assert_eq!(r.body["contact"]["id"], id);
    let r = env
        .post(
            "/contacts/upsert",
            json!({"unique_identifier": {"external_id": "u-1"}, "contact": {"job_title": "CTO"}}),
        )
        .await;
    assert_eq!(r.body["contact"]["id"], id);
    assert_eq!(r.body["contact"]["job_title"], "CTO");
    let r = env
        .get("/lookup?q=u-1&f=external_id&entities=contact")
        .await;
    assert_eq!(r.body["contacts"]["contacts"][0]["id"], id);
    env.emu.stop().await;
}

#[tokio::test]
async fn email_and_mobile_number_are_unique_across_contacts() {
    let env = Env::start().await;
    env.upsert_email("a@x.io", json!({"mobile_number": "111"}))
        .await;
    env.upsert_email("b@x.io", json!({})).await;
    let r = env
        .post(
            "/contacts/upsert",
            json!({"unique_identifier": {"emails": "b@x.io"}, "contact": {"mobile_number": "111"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, error_body(400, "MobileNumber is not unique"));
    let r = env
        .post(
            "/contacts/upsert",
            json!({"unique_identifier": {"mobile_number": "222"}, "contact": {"emails": "A@x.io"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, error_body(400, "Email is not unique"));
    let r = env
        .post("/contacts", json!({"contact": {"emails": "a@x.io"}}))
        .await;
    assert_eq!(r.body, error_body(400, "Email is not unique"));
    assert_eq!(env.emu.state.contacts().len(), 2);
    env.emu.stop().await;
}

#[tokio::test]
async fn email_case_sensitivity_is_switchable() {
    let sw = Switches {
        email_case_insensitive: false,
        ..Switches::default()
    };
    let env = Env::with(EmulatorConfig {
        switches: sw,
        ..EmulatorConfig::default()
    })
    .await;
    let a = env.upsert_email("Case@x.io", json!({})).await;
    let b = env.upsert_email("case@x.io", json!({})).await;
    assert_ne!(a["id"], b["id"]);
    env.emu.stop().await;
}

#[tokio::test]
async fn required_fields_are_enforced_on_create_only() {
    let mut fields: serde_json::Value =
        serde_json::from_str(include_str!("../../src/default_fields.json")).unwrap();
    for f in fields["fields"].as_array_mut().unwrap() {
        if f["name"] == "last_name" {
            f["required"] = json!(true);
        }
    }
    let env = Env::with(EmulatorConfig {
        fields: Some(fields),
        ..EmulatorConfig::default()
    })
    .await;
    let body = json!({"unique_identifier": {"emails": "r@x.io"}, "contact": {"first_name": "R"}});
    let r = env.post("/contacts/upsert", body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, error_body(400, "Last name can't be blank"));
    let c = env
        .upsert_email("r@x.io", json!({"last_name": "Required"}))
        .await;
    // Updating without the required field is fine.
    let r = env
        .put(
            &format!("/contacts/{}", c["id"]),
            json!({"contact": {"first_name": "R"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["contact"]["last_name"], "Required");
    env.emu.stop().await;
}

#[tokio::test]
async fn custom_field_values_are_checked_by_type() {
    let env = Env::start().await;
    let c = env
        .upsert_email(
            "t@x.io",
            json!({"custom_field": {
                "cf_employees": "120", "cf_is_active": true, "cf_plan": "Pro", "cf_preferred_channel": "SMS",
                "cf_interests": ["Music", "Tech"], "cf_signup_date": "2024-02-29", "cf_notes": "long\ntext",
                "cf_order_completed_last_30days": false, "cf_lifetime_value": 12.5
            }}),
        )
        .await;
    let cf = &c["custom_field"];
    assert_eq!(cf["cf_employees"], 120);
    assert_eq!(cf["cf_is_active"], true);
    assert_eq!(cf["cf_plan"], "Pro");
    assert_eq!(cf["cf_interests"], "Music;Tech");
    assert_eq!(cf["cf_signup_date"], "2024-02-29");
    assert_eq!(cf["cf_order_completed_last_30days"], false);
    assert_eq!(cf["cf_lifetime_value"], 12.5);
    for (field, value, label) in [
        ("cf_employees", json!("many"), "Employees"),
        ("cf_is_active", json!("yes"), "Is active"),
        ("cf_plan", json!("Gold"), "Plan"),
        ("cf_plan", json!(70000002), "Plan"),
        ("cf_preferred_channel", json!("Fax"), "Preferred channel"),
        ("cf_interests", json!("Music;Cooking"), "Interests"),
        ("cf_signup_date", json!("29/02/2024"), "Signup date"),
    ] {
        let r = env
            .post("/contacts/upsert", json!({"unique_identifier": {"emails": "t@x.io"}, "contact": {"custom_field": {field: value}}}))
            .await;
        assert_eq!(r.status, 400, "{field}");
        assert_eq!(r.body, error_body(400, &format!("{label} is invalid")));
    }
    env.emu.stop().await;
}

#[tokio::test]
async fn unknown_custom_fields_are_ignored_or_rejected_by_switch() {
    let env = Env::start().await;
    let c = env
        .upsert_email(
            "u@x.io",
            json!({"custom_field": {"Industry": "Retail", "cf_industry": "Retail"}}),
        )
        .await;
    assert_eq!(c["custom_field"], json!({"cf_industry": "Retail"}));
    env.emu.stop().await;

    let sw = Switches {
        unknown_fields: UnknownFieldPolicy::Reject,
        ..Switches::default()
    };
    let env = Env::with(EmulatorConfig {
        switches: sw,
        ..EmulatorConfig::default()
    })
    .await;
    let r = env
        .post("/contacts/upsert", json!({"unique_identifier": {"emails": "u@x.io"}, "contact": {"custom_field": {"Industry": "Retail"}}}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, error_body(400, "Unknown field Industry"));
    env.emu.stop().await;
}

#[tokio::test]
async fn create_status_and_locale_are_switchable() {
    let sw = Switches {
        create_status: 201,
        locale: Locale::Nl,
        ..Switches::default()
    };
    let env = Env::with(EmulatorConfig {
        switches: sw,
        ..EmulatorConfig::default()
    })
    .await;
    let body = json!({"unique_identifier": {"emails": "s@x.io"}, "contact": {}});
    assert_eq!(env.post("/contacts/upsert", body.clone()).await.status, 201);
    assert_eq!(env.post("/contacts/upsert", body).await.status, 200);
    let r = env
        .post("/contacts", json!({"contact": {"emails": "s@x.io"}}))
        .await;
    assert_eq!(r.body, error_body(400, "E-mail is niet uniek"));
    env.emu.stop().await;
}

#[tokio::test]
async fn upsert_without_unique_identifier_is_400() {
    let env = Env::start().await;
    let r = env
        .post("/contacts/upsert", json!({"contact": {"emails": "x@y.z"}}))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["errors"]["message"].is_array());
    let r = env
        .post(
            "/contacts/upsert",
            json!({"unique_identifier": {"emails": "x@y.z", "mobile_number": "1"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    env.emu.stop().await;
}

#[tokio::test]
async fn get_put_delete_and_forget() {
    let env = Env::start().await;
    let c = env.upsert_email("g@x.io", json!({"first_name": "G"})).await;
    let path = format!("/contacts/{}", c["id"]);
    let r = env.get(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["contact"]["first_name"], "G");
    let r = env
        .put(
            &path,
            json!({"contact": {"city": "Ghent", "custom_field": {"cf_plan": "Free"}}}),
        )
        .await;
    assert_eq!(r.body["contact"]["city"], "Ghent");
    assert_eq!(r.body["contact"]["custom_field"]["cf_plan"], "Free");
    let r = env.delete(&path).await;
    assert_eq!((r.status, r.body), (200, json!(true)));
    assert_eq!(env.get(&path).await.status, 404);
    assert_eq!(env.delete(&path).await.status, 404);

    let c = env.upsert_email("f@x.io", json!({})).await;
    let r = env.delete(&format!("/contacts/{}/forget", c["id"])).await;
    assert_eq!((r.status, r.body), (200, json!(true)));
    assert!(env.emu.state.contacts().is_empty());
    assert_eq!(env.get("/contacts/notanumber").await.status, 404);
    env.emu.stop().await;
}

#[tokio::test]
async fn second_emails_and_array_form() {
    let env = Env::start().await;
    let c = env
        .upsert_email(
            "p@x.io",
            json!({"emails": [{"value": "p@x.io", "is_primary": true}, {"value": "q@x.io", "is_primary": false, "label": "Other"}]}),
        )
        .await;
    assert_eq!(c["emails"].as_array().unwrap().len(), 2);
    // Lookup by the secondary address finds the same contact.
    let r = env.get("/lookup?q=q@x.io&f=email&entities=contact").await;
    assert_eq!(r.body["contacts"]["contacts"][0]["id"], c["id"]);
    // Taking someone else's secondary address fails.
    let r = env
        .post("/contacts", json!({"contact": {"emails": "q@x.io"}}))
        .await;
    assert_eq!(r.body, error_body(400, "Email is not unique"));
    env.emu.stop().await;
}
