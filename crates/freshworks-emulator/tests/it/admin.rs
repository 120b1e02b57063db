//! The admin API: state, request log, reset, switches, deleting a contact; plus the CLI entry.

use clap::Parser;
use freshworks_emulator::{EmulatorArgs, EmulatorConfig, EmulatorState, run_cli};
use reqwest::Method;
use serde_json::json;

use crate::helpers::Env;

#[tokio::test]
async fn state_log_and_reset() {
    let env = Env::start().await;
    let c = env
        .upsert_email("s@a.io", json!({"custom_field": {"cf_plan": "Pro"}}))
        .await;
    let list = env.post("/lists", json!({"name": "L"})).await.body["list"]["id"].clone();
    env.put(
        &format!("/lists/{list}/add_contacts"),
        json!({"ids": [c["id"]]}),
    )
    .await;
    env.post(
        "/sales_accounts/upsert",
        json!({"unique_identifier": {"name": "Acme"}}),
    )
    .await;

    let s = env.admin(Method::GET, "/state", None).await.body;
    assert_eq!(s["contacts"][0]["custom_field"]["cf_plan"], "Pro");
    assert_eq!(s["lists"][0]["contact_ids"], json!([c["id"]]));
    assert_eq!(s["sales_accounts"][0]["name"], "Acme");
    assert!(s["sales_activities"].is_array());

    let log = env.admin(Method::GET, "/requests", None).await.body;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0]["method"], "POST");
    assert_eq!(log[0]["path"], "/crm/sales/api/contacts/upsert");
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["counted"], true);
    assert!(log[0]["body"].as_str().unwrap().contains("s@a.io"));
    assert!(log[0]["at"].is_string());

    env.admin(Method::POST, "/reset", None).await;
    let s = env.admin(Method::GET, "/state", None).await.body;
    assert_eq!(s["contacts"], json!([]));
    assert!(env.emu.state.request_log().is_empty());
    assert_eq!(
        env.admin(Method::GET, "/quota", None).await.body["used_hour"],
        0
    );
    env.emu.stop().await;
}

/// A contact deleted as a person in the CRM would: gone from the state and its lists, not a
/// counted call; the next upsert by the same email creates a new contact with a new id.
#[tokio::test]
async fn a_contact_deleted_through_the_admin_api_is_created_anew_by_the_next_upsert() {
    let env = Env::start().await;
    let c = env
        .upsert_email("d@a.io", json!({"first_name": "Ada"}))
        .await;
    let list = env.post("/lists", json!({"name": "L"})).await.body["list"]["id"].clone();
    env.put(
        &format!("/lists/{list}/add_contacts"),
        json!({"ids": [c["id"]]}),
    )
    .await;
    let used = env.admin(Method::GET, "/quota", None).await.body["used_hour"].clone();
    let deleted = env
        .admin(Method::DELETE, &format!("/contacts/{}", c["id"]), None)
        .await;
    assert_eq!(deleted.status, 200);
    let s = env.admin(Method::GET, "/state", None).await.body;
    assert_eq!(s["contacts"], json!([]));
    assert_eq!(s["lists"][0]["contact_ids"], json!([]));
    assert_eq!(
        env.admin(Method::GET, "/quota", None).await.body["used_hour"],
        used,
        "not a counted call"
    );
    assert_eq!(
        env.admin(Method::DELETE, &format!("/contacts/{}", c["id"]), None)
            .await
            .status,
        404
    );
    let again = env
        .upsert_email("d@a.io", json!({"last_name": "Lee"}))
        .await;
    assert_ne!(again["id"], c["id"]);
    assert_eq!(again["first_name"], json!(null));
    env.emu.stop().await;
}

#[tokio::test]
async fn switches_change_at_run_time() {
    let env = Env::start().await;
    let mut sw = env.admin(Method::GET, "/switches", None).await.body;
    assert_eq!(sw["create_status"], 200);
    sw["create_status"] = json!(201);
    assert_eq!(
        env.admin(Method::PUT, "/switches", Some(sw.clone()))
            .await
            .status,
        200
    );
    let r = env
        .post(
            "/contacts/upsert",
            json!({"unique_identifier": {"emails": "n@a.io"}}),
        )
        .await;
    assert_eq!(r.status, 201);
    sw["create_status"] = json!(204);
    assert_eq!(
        env.admin(Method::PUT, "/switches", Some(sw)).await.status,
        400
    );
    env.emu.stop().await;
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
}

#[tokio::test]
async fn cli_args_and_run_cli() {
    let cli = Cli::try_parse_from([
        "x",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        "k",
        "--minute-limit",
        "3",
        "--create-status",
        "201",
        "--unknown-fields",
        "reject",
        "--bulk-data",
        "object",
        "--utc-offset-minutes",
        "-300",
    ])
    .unwrap();
    let config = cli.args.to_config().unwrap();
    assert_eq!(config.minute_limit, 3);
    assert_eq!(config.hourly_limit, 5000);
    assert_eq!(config.switches.create_status, 201);
    assert!(Cli::try_parse_from(["x", "--create-status", "204"]).is_err());
    assert!(EmulatorState::new(config).is_ok());
    // Serves until the shutdown future completes.
    run_cli(cli.args, async {}).await.unwrap();

    let bad = Cli::try_parse_from(["x", "--fields", "/nonexistent/fields.json"]).unwrap();
    assert!(bad.args.to_config().is_err());
    assert!(
        EmulatorState::new(EmulatorConfig {
            time_scale: 0.0,
            ..EmulatorConfig::default()
        })
        .is_err()
    );
}
