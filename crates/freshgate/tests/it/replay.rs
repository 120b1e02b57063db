//! `replay` with the real binary: what a delivery did first stays in its history (trace and
//! figures), and a replay never delivers an event whose routing does not take it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::procs::{Site, emulator, identify, post_batch, wait_until};

fn cli_json(site: &Site, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    serde_json::from_str(&cli_text(site, &with_json)).unwrap()
}

fn cli_text(site: &Site, args: &[&str]) -> String {
    site.cli(args)
}

/// The one delivery of the event `message_id` as `events show --json` gives it.
fn delivery(site: &Site, message_id: &str) -> Value {
    cli_json(site, &["events", "show", message_id])[0]["event"]["deliveries"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_keeps_the_first_outcome_and_never_delivers_an_opted_out_event() {
    let emu = emulator(100_000, 10_000, 1.0);
    let site = Site::new(&emu, "");
    let (server, url) = site.serve(1.0);
    let mut opted_out = identify(
        "u-out",
        "out@example.com",
        json!({}),
        1_790_000_000_000,
        "o-1",
    );
    opted_out["integrations"] = json!({"All": false});
    let delivered = identify(
        "u-a",
        "a@example.com",
        json!({"firstName": "Al"}),
        1_790_000_000_000,
        "a-1",
    );
    post_batch(&url, &[delivered, opted_out]).await.unwrap();
    let limit = Duration::from_secs(60);
    wait_until("a-1 delivered", limit, || async {
        let d = delivery(&site, "a-1");
        (d["status"] == "delivered")
            .then_some(())
            .ok_or(format!("{d}"))
    })
    .await;
    drop(server);
    assert_eq!(delivery(&site, "o-1")["status"], "skipped");

    // The opted-out event's delivery is finished too, but its routing does not deliver it:
    // the replay leaves it as it is.
    let out = cli_json(&site, &["replay", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(
        (out["requeued"].as_u64(), out["not_routed"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    let (server, _url) = site.serve(1.0);
    wait_until("a-1 settled again", limit, || async {
        let d = delivery(&site, "a-1");
        (d["status"] != "pending")
            .then_some(())
            .ok_or(format!("{d}"))
    })
    .await;
    drop(server);

    // Unchanged since it was written, so skipped this time; the first delivery is still there.
    let a = delivery(&site, "a-1");
    assert_eq!(a["status"], "skipped", "{a}");
    let history = a["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{a}");
    assert_eq!(
        (&history[0]["status"], &history[0]["reopened_by"]),
        (&json!("delivered"), &json!("replay"))
    );
    assert_eq!(a["attempts"].as_array().unwrap().len(), 1, "the first call");
    let shown = cli_text(&site, &["events", "show", "a-1"]);
    assert!(
        shown.contains("-> crm: skipped (unchanged")
            && shown.contains("earlier: delivered ")
            && shown.contains("by replay"),
        "{shown}"
    );
    let o = delivery(&site, "o-1");
    assert_eq!(o["status"], "skipped", "{o}");
    assert!(o["history"].as_array().unwrap().is_empty(), "{o}");
    assert!(
        emu.contacts()
            .await
            .iter()
            .all(|c| c["external_id"] != "u-out"),
        "an opted-out event is never delivered"
    );

    // The figures count outcomes: the first delivery, and the two skips.
    let stats = cli_json(&site, &["queue", "stats"]);
    let crm = stats["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "crm")
        .unwrap()
        .clone();
    assert_eq!(
        (
            crm["delivered"].as_u64(),
            crm["skipped"].as_u64(),
            crm["reopened"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{crm}"
    );
    let text = cli_text(&site, &["queue", "stats"]);
    assert!(
        text.contains(
            "outcomes kept: delivered 1, skipped 2, dead-lettered 0; 1 put back by replay"
        ),
        "{text}"
    );
}
