//! The operator's ways past the shadow with the real binary: `replay --force`, `shadow forget`,
//! `serve --emulator` restarted over the same data dir, and `replay --since` for events accepted
//! before their destination existed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::procs::{Proc, Site, emulator, http, identify, post_batch, wait_until};

fn cli(site: &Site, args: &[&str]) -> String {
    site.cli(args)
}

/// Wait until the event's delivery is recorded as delivered (the shadow is written before).
async fn settled(site: &Site, message_id: &str, limit: Duration) {
    wait_until("delivery settled", limit, || async {
        let out = cli(site, &["events", "show", message_id, "--json"]);
        let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let delivered = v[0]["event"]["deliveries"][0]["status"] == "delivered";
        if delivered { Ok(()) } else { Err(out) }
    })
    .await;
}

async fn has_contact(contacts: Vec<Value>, user: &str) -> Result<(), String> {
    if contacts.iter().any(|c| c["external_id"] == user) {
        Ok(())
    } else {
        Err(format!("no contact for {user}: {contacts:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_force_and_shadow_forget_write_contacts_the_crm_lost() {
    let emu = emulator(100_000, 10_000, 1.0);
    let site = Site::new(&emu, "");
    let (server, url) = site.serve(1.0);
    let limit = Duration::from_secs(60);
    let event = |user: &str, n: u32| {
        identify(
            user,
            &format!("{user}@example.com"),
            json!({"firstName": "Al"}),
            1_790_000_000_000,
            &format!("{user}-{n}"),
        )
    };
    post_batch(&url, &[event("u-a", 1)]).await.unwrap();
    wait_until("u-a delivered", limit, || async {
        has_contact(emu.contacts().await, "u-a").await
    })
    .await;
    settled(&site, "u-a-1", limit).await;
    let between = freshgate_core::segment::format_timestamp(time::OffsetDateTime::now_utc());
    tokio::time::sleep(Duration::from_millis(20)).await;
    post_batch(&url, &[event("u-b", 1)]).await.unwrap();
    wait_until("u-b delivered", limit, || async {
        has_contact(emu.contacts().await, "u-b").await
    })
    .await;
    // The contact exists once the call is answered; its shadow is written just after. Stopping
    // the server before that would leave nothing to forget.
    settled(&site, "u-b-1", limit).await;
    drop(server);
    // The CRM loses every contact; the shadows still say both were written a moment ago.
    emu.post("reset", json!({})).await;

    // u-a: its stored event replayed with --force (without it, skipped as unchanged).
    let out = cli(
        &site,
        &[
            "replay",
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            &between,
            "--force",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["requeued"].as_u64(), v["forced_contacts"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    // u-b: its shadow forgotten, then the same identify again (without it, skipped).
    let out = cli(&site, &["shadow", "forget", "--contact", "u-b"]);
    assert!(out.starts_with("1 contact shadows forgotten"), "{out}");

    let (_server, url) = site.serve(1.0);
    post_batch(&url, &[event("u-b", 2)]).await.unwrap();
    for user in ["u-a", "u-b"] {
        wait_until("written again", limit, || async {
            has_contact(emu.contacts().await, user).await
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_deleted_in_the_crm_comes_back_with_every_newest_field() {
    let emu = emulator(100_000, 10_000, 1.0);
    let site = Site::new(&emu, "");
    let (_server, url) = site.serve(1.0);
    let limit = Duration::from_secs(60);
    let contact_of = |contacts: Vec<Value>| {
        contacts
            .into_iter()
            .find(|c| c["external_id"] == "u-d")
            .ok_or_else(|| "no contact for u-d".to_owned())
    };
    post_batch(
        &url,
        &[identify(
            "u-d",
            "d@example.com",
            json!({"firstName": "Ada", "plan": "Pro"}),
            1_790_000_000_000,
            "d-1",
        )],
    )
    .await
    .unwrap();
    wait_until("u-d written", limit, || async {
        contact_of(emu.contacts().await).map(|_| ())
    })
    .await;
    let first = contact_of(emu.contacts().await).unwrap();
    // Someone deletes the contact in the CRM; the shadow still says it holds Ada and Pro.
    let deleted = http()
        .delete(format!("{}/contacts/{}", emu.admin, first["id"]))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    assert!(contact_of(emu.contacts().await).is_err());

    // A later identify carries only a new last name: the CRM creates the contact anew, and
    // freshgate completes it with every value it knows as newest.
    post_batch(
        &url,
        &[identify(
            "u-d",
            "d@example.com",
            json!({"lastName": "Lee"}),
            1_790_000_060_000,
            "d-2",
        )],
    )
    .await
    .unwrap();
    wait_until("u-d back whole", limit, || async {
        let c = contact_of(emu.contacts().await)?;
        let whole = c["first_name"] == "Ada"
            && c["last_name"] == "Lee"
            && c["custom_field"]["cf_plan"] == "Pro"
            && c["id"] != first["id"];
        whole.then_some(()).ok_or(format!("{c}"))
    })
    .await;
    // The shadow learnt the new contact: an unchanged identify now costs no call.
    let writes = |log: Vec<crate::procs::Logged>| {
        log.iter()
            .filter(|l| l.path.ends_with("/contacts/upsert"))
            .count()
    };
    let before = writes(emu.log().await);
    post_batch(
        &url,
        &[identify(
            "u-d",
            "d@example.com",
            json!({"lastName": "Lee"}),
            1_790_000_120_000,
            "d-3",
        )],
    )
    .await
    .unwrap();
    let site_ref = &site;
    wait_until("d-3 settled", limit, || async move {
        let out = cli(site_ref, &["events", "show", "d-3", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let d = &v[0]["event"]["deliveries"][0];
        (d["status"] == "skipped")
            .then_some(())
            .ok_or(format!("{d}"))
    })
    .await;
    assert_eq!(writes(emu.log().await), before);
    assert_eq!(
        emu.contacts()
            .await
            .iter()
            .filter(|c| c["external_id"] == "u-d")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_since_delivers_events_accepted_before_the_destination_existed() {
    let emu = emulator(100_000, 10_000, 1.0);
    let site = Site::new(&emu, "");
    // A source and no destination: events are accepted and stored, nothing is delivered.
    std::fs::write(
        site.config(),
        format!(
            "[[sources]]\nname = \"web\"\nwrite_keys = [\"{}\"]\n",
            crate::procs::WRITE_KEY
        ),
    )
    .unwrap();
    let (server, url) = site.serve(1.0);
    let ready = http().get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let details = ready.text().await.unwrap().to_lowercase();
    assert!(details.contains("stored but not delivered"), "{details}");
    let mut opted_out = identify(
        "u-out",
        "out@example.com",
        json!({}),
        1_790_000_000_000,
        "o-1",
    );
    opted_out["integrations"] = json!({"All": false});
    let events = [
        identify(
            "u-a",
            "a@example.com",
            json!({"firstName": "Al"}),
            1_790_000_000_000,
            "a-1",
        ),
        opted_out,
    ];
    post_batch(&url, &events).await.unwrap();
    drop(server);
    let stats = cli(&site, &["queue", "stats"]);
    assert!(
        stats.to_lowercase().contains("stored but not delivered"),
        "{stats}"
    );

    // The destination is added; a restart alone does not create deliveries for old events,
    // `replay --since` does, for the events its routing takes.
    site.rewrite(&emu, "");
    let out = cli(
        &site,
        &["replay", "--since", "2000-01-01T00:00:00Z", "--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["requeued"].as_u64(),
            v["created"].as_u64(),
            v["skipped"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{out}"
    );
    let (server, _url) = site.serve(1.0);
    wait_until("u-a delivered", Duration::from_secs(60), || async {
        has_contact(emu.contacts().await, "u-a").await
    })
    .await;
    assert!(has_contact(emu.contacts().await, "u-out").await.is_err());
    drop(server);
    // A second replay finds every event with a delivery: nothing more is created.
    let out = cli(
        &site,
        &["replay", "--since", "2000-01-01T00:00:00Z", "--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["created"].as_u64(), Some(0), "{out}");
}

/// `serve --emulator` on free ports over `data`: the process, the gateway URL and the
/// emulator's state URL (both printed at start).
fn serve_emulator(data: &std::path::Path) -> (Proc, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshgate"))
        .args(["serve", "--emulator", "--listen", "127.0.0.1:0"])
        .args(["--emulator-listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .env_remove("FRESHGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let proc = Proc(Arc::new(Mutex::new(child)));
    let url_in = |line: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_owned)
    };
    let (mut gateway, mut state) = (None, None);
    while gateway.is_none() || state.is_none() {
        let line = lines.next().expect("serve printed its URLs").unwrap();
        if line.starts_with("freshgate listening on") {
            gateway = url_in(&line);
        } else if line.trim_start().starts_with("emulator:") && line.contains("/__emulator/state") {
            state = line
                .split_whitespace()
                .find(|w| w.contains("/__emulator/state"))
                .map(|w| w.trim_end_matches(')').to_owned());
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (proc, gateway.unwrap(), state.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_emulator_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, state) = serve_emulator(dir.path());
    post_batch_with_dev_key(&url, "u-q", "q@example.com").await;
    let limit = Duration::from_secs(60);
    wait_until("delivered", limit, || async {
        has_contact(state_contacts(&state).await, "u-q").await
    })
    .await;
    drop(server);
    // A new, empty emulator: the stored events are delivered to it again.
    let (_server, _url, state) = serve_emulator(dir.path());
    wait_until(
        "the new emulator holds the contact again",
        limit,
        || async { has_contact(state_contacts(&state).await, "u-q").await },
    )
    .await;
}

async fn state_contacts(url: &str) -> Vec<Value> {
    let v: Value = http().get(url).send().await.unwrap().json().await.unwrap();
    v["contacts"].as_array().cloned().unwrap_or_default()
}

async fn post_batch_with_dev_key(url: &str, user: &str, email: &str) {
    let r = http()
        .post(format!("{url}/v1/batch"))
        .basic_auth("freshgate-dev", Some(""))
        .json(&json!({"batch": [{"type": "identify", "userId": user, "traits": {"email": email}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn serve_without_a_destination_says_loudly_that_nothing_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("freshgate.toml");
    std::fs::write(
        &config,
        "[[sources]]\nname = \"web\"\nwrite_keys = [\"k\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("FRESHWORKS_API_KEY")
        .env_remove("FRESHWORKS_DOMAIN")
        .env_remove("FRESHWORKS_BASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let proc = Proc(Arc::new(Mutex::new(child)));
    // Without the warning the banner just ends and the server keeps running: stop it after a
    // while so its stdout closes and the assertion below reports.
    let watchdog = Arc::clone(&proc.0);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = watchdog.lock().unwrap().kill();
    });
    let mut banner = Vec::new();
    for line in lines.map_while(Result::ok) {
        let done = line.contains("WARNING");
        banner.push(line);
        if done {
            break;
        }
    }
    drop(proc);
    assert!(
        banner
            .iter()
            .any(|l| l.contains("WARNING") && l.contains("STORED BUT NOT DELIVERED")),
        "{banner:#?}"
    );
}
