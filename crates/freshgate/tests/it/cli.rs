//! The real binary's commands, as an operator runs them.

use std::process::Command;

fn freshgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_freshgate"))
}

#[test]
fn config_check_lists_every_problem_with_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[sources]]\nname = \"web\"\nwrite_keys = [\"k\"]\n\n[[destinations]]\nname = \"crm\"\ndomain = \"bad domain\"\nplan = \"gold\"\n",
    )
    .unwrap();
    let out = freshgate()
        .args(["config", "check", "--json", "--config"])
        .arg(&path)
        .env_remove("FRESHWORKS_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    let keys: Vec<&str> = problems
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"destinations[0].domain"), "{keys:?}");
    assert!(keys.contains(&"destinations[0].plan"), "{keys:?}");
    assert!(keys.contains(&"destinations[0].api_key_env"), "{keys:?}");
    assert!(
        problems
            .iter()
            .all(|p| p["file"].as_str().unwrap().ends_with("bad.toml"))
    );
}

#[test]
fn help_teaches_the_quick_start() {
    let out = freshgate().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve --emulator"), "{text}");
    for cmd in [
        "serve", "emulator", "send", "queue", "dlq", "events", "replay", "doctor",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from --help");
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn read_only_commands_never_create_a_store_and_say_where_they_looked() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["doctor"][..],
        &["queue", "stats"],
        &["events", "list"],
        &["events", "rejected"],
        &["dlq", "list"],
    ] {
        let out = freshgate()
            .args(args)
            .current_dir(dir.path())
            .env("FRESHGATE_WRITE_KEY", "k")
            .env_remove("FRESHGATE_DATA_DIR")
            .env_remove("FRESHGATE_CONFIG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded on no store");
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(said.contains("no store at"), "{args:?}: {said}");
        assert!(
            said.contains("freshgate-data/freshgate.db"),
            "{args:?}: {said}"
        );
        assert!(
            !dir.path().join("freshgate-data").exists(),
            "{args:?} created a store"
        );
    }
    let data = dir.path().join("data");
    let migrate = |data: &std::path::Path| {
        freshgate()
            .args(["migrate", "--data-dir"])
            .arg(data)
            .output()
            .unwrap()
    };
    let out = migrate(&data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("created a new sqlite store at"),
        "{}",
        stdout(&out)
    );
    let out = migrate(&data);
    assert!(
        stdout(&out).contains("is at the current schema"),
        "{}",
        stdout(&out)
    );
    let out = freshgate()
        .args(["doctor", "--data-dir"])
        .arg(&data)
        .env("FRESHGATE_WRITE_KEY", "k")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!(
            "store: {}: integrity ok",
            data.join("freshgate.db").display()
        )),
        "{}",
        stdout(&out)
    );
    let out = freshgate()
        .args(["events", "rejected", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("no rejected input"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn config_check_places_type_errors_and_suggests_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fg.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[destinations]]\nname = \"crm\"\nconcurrency = \"eight\"\nheadrom = 0.5\n",
    )
    .unwrap();
    let out = freshgate()
        .args(["config", "check", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{v}");
    assert_eq!(problems[0]["key"], "destinations[0].concurrency", "{v}");
    assert_eq!(problems[0]["line"], 6, "{v}");
    assert_eq!(problems[0]["column"], 15, "{v}");
    assert_eq!(problems[1]["key"], "destinations[0].headrom", "{v}");
    assert!(
        problems[1]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `headroom`?"),
        "{v}"
    );
    let out = freshgate()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("fg.toml:6:15: destinations[0].concurrency:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn destinations_test_without_a_destination_says_so() {
    let out = freshgate()
        .args(["destinations", "test"])
        .env("FRESHGATE_WRITE_KEY", "k")
        .env_remove("FRESHWORKS_DOMAIN")
        .env_remove("FRESHWORKS_BASE_URL")
        .env_remove("FRESHGATE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no destination is configured"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = freshgate().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("freshgate"), "{shell}");
        assert!(stdout(&out).contains("events"), "{shell}");
    }
}

#[test]
fn send_to_a_stopped_gateway_says_connection_refused_and_where() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.ndjson");
    std::fs::write(
        &file,
        "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\"}\n",
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let out = freshgate()
        .arg("send")
        .arg(&file)
        .args(["--write-key", "k", "--max-attempts", "1", "--url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("connection refused"), "{said}");
    assert!(said.contains(&url), "{said}");
}

#[test]
fn emulator_help_cites_no_spec_and_shows_a_fault() {
    let out = freshgate().args(["emulator", "--help"]).output().unwrap();
    let text = stdout(&out);
    assert!(!text.contains('§'), "{text}");
    assert!(!text.to_lowercase().contains("spec"), "{text}");
    assert!(text.contains("__emulator/faults"), "{text}");
    assert!(text.contains("\"kind\""), "{text}");
}

/// A store with one destination's ledger, a pause, and events, as a gateway would leave it.
async fn seeded_store(data: &std::path::Path, base_url: &str) {
    use freshgate_store::{AppendBatch, DestinationPause, NewDelivery, NewEvent};
    let store = freshgate::cli::open_store(data, 16).unwrap();
    let now = freshgate::pipeline::now_ms();
    store
        .record_calls(base_url, now - 120_000, 10)
        .await
        .unwrap();
    store.record_calls(base_url, now - 1_000, 3).await.unwrap();
    store
        .set_pause(
            "crm",
            Some(DestinationPause {
                destination: "crm".into(),
                reason: "401: the API key was refused".into(),
                since_ms: now - 5_000,
                until_ms: now + 55_000,
            }),
        )
        .await
        .unwrap();
    let event = |mid: &str, user: &str, kind: &str, raw: serde_json::Value| NewEvent {
        source: "web".into(),
        message_id: mid.into(),
        event_type: kind.into(),
        contact_key: user.into(),
        timestamp_ms: now,
        received_at_ms: now,
        raw: serde_json::to_vec(&raw).unwrap(),
        deliveries: vec![NewDelivery {
            destination: "crm".into(),
            skip_reason: None,
            skip_code: None,
        }],
    };
    store
        .append(AppendBatch {
            events: vec![
                event(
                    "m-ann-1",
                    "ann",
                    "identify",
                    serde_json::json!({"type": "identify", "userId": "ann", "traits": {"email": "Ann@Example.com"}}),
                ),
                event("m-bob-1", "bob", "track", serde_json::json!({"type": "track", "userId": "bob", "event": "E"})),
                event("m-ann-2", "ann", "track", serde_json::json!({"type": "track", "userId": "ann", "event": "E"})),
            ],
            rejected: Vec::new(),
            dedup_window_ms: 60_000,
        })
        .await
        .unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_shows_quota_with_headroom_and_the_pause() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base_url = "http://127.0.0.1:9/crm/sales/api";
    seeded_store(&data, base_url).await;
    let path = dir.path().join("fg.toml");
    std::fs::write(
        &path,
        format!("[[destinations]]\nname = \"crm\"\nbase_url = \"{base_url}\"\nhourly_limit = 1000\nheadroom = 0.9\n"),
    )
    .unwrap();
    let run = move |json: bool| {
        let mut c = freshgate();
        c.args(["queue", "stats", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(&data);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (run(true), run(false)))
        .await
        .unwrap();
    assert!(out.0.status.success(), "{}", stderr(&out.0));
    let v: serde_json::Value = serde_json::from_slice(&out.0.stdout).unwrap();
    let crm = &v["destinations"][0];
    assert_eq!(crm["destination"], "crm");
    assert_eq!(crm["budget"]["calls_last_hour"], 13, "{v}");
    assert_eq!(
        crm["budget"]["left_this_hour"], 887,
        "900 = 1000 x 0.9, less 13: {v}"
    );
    assert_eq!(
        crm["budget"]["left_this_minute"], 357,
        "360 = 400 x 0.9, less 3: {v}"
    );
    assert_eq!(
        crm["paused"]["reason"], "401: the API key was refused",
        "{v}"
    );
    assert_eq!(crm["pending"], 3, "{v}");
    let text = stdout(&out.1);
    assert!(text.contains("PAUSED since"), "{text}");
    assert!(text.contains("887 left this hour"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_finds_events_without_their_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    seeded_store(&data, "http://127.0.0.1:9/crm/sales/api").await;
    let list = move |args: &[&str]| {
        let out = freshgate()
            .args(["events", "list", "--json", "--data-dir"])
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let found = tokio::task::spawn_blocking(move || {
        (
            list(&["--user", "ann"]),
            list(&["--email", "ann@example.com"]),
            list(&["--type", "track"]),
            list(&["--status", "pending", "--limit", "1"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(found.0, ["m-ann-2", "m-ann-1"]);
    assert_eq!(found.1, ["m-ann-2", "m-ann-1"]);
    assert_eq!(found.2, ["m-ann-2", "m-bob-1"]);
    assert_eq!(found.3, ["m-ann-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_show_on_a_live_event_says_it_is_not_dead() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    seeded_store(&data, "http://127.0.0.1:9/crm/sales/api").await;
    let out = tokio::task::spawn_blocking(move || {
        freshgate()
            .args(["dlq", "show", "m-ann-1", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has no dead letter: crm pending"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_test_says_what_is_wrong_in_words() {
    let emulator =
        freshworks_emulator::RunningEmulator::start(freshworks_emulator::EmulatorConfig::default())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fg.toml");
    std::fs::write(
        &path,
        format!(
            "[[sources]]\nname = \"web\"\nwrite_keys = [\"k\"]\n\n[[destinations]]\nname = \"crm\"\nbase_url = \"{}\"\n",
            emulator.base_url
        ),
    )
    .unwrap();
    for (key, ok, needle) in [
        ("emulator-key", true, "the key works"),
        ("wrong-key", false, "401"),
    ] {
        let path = path.clone();
        let data_dir = dir.path().join("data");
        if !data_dir.exists() {
            // The test enters its calls in an existing store's ledger; it never creates one.
            let store = freshgate::cli::open_store(&data_dir, 16).unwrap();
            store.close().await;
        }
        let out = tokio::task::spawn_blocking(move || {
            freshgate()
                .args(["destinations", "test", "--json", "--config"])
                .arg(&path)
                .arg("--data-dir")
                .arg(&data_dir)
                .env("FRESHWORKS_API_KEY", key)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            out.status.success(),
            ok,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["ok"], ok);
        assert!(v[0]["message"].as_str().unwrap().contains(needle), "{v}");
    }
    // Both calls spent the account's quota and are in the ledger; the good one left the field
    // list for the gateway.
    let store = freshgate::cli::open_store(&dir.path().join("data"), 16).unwrap();
    assert_eq!(store.calls_since(&emulator.base_url, 0).await.unwrap(), 2);
    let stored = store.field_metadata(&emulator.base_url).await.unwrap();
    let fields: Vec<serde_json::Value> = serde_json::from_slice(&stored.unwrap().body).unwrap();
    assert!(
        fields.iter().any(|f| f["name"] == "first_name"),
        "{fields:?}"
    );
    store.close().await;
    emulator.stop().await;
}

#[test]
fn serve_refuses_a_public_console_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = freshgate()
        .args([
            "serve",
            "--emulator",
            "--listen",
            "127.0.0.1:0",
            "--emulator-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("FRESHGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a loopback address and FRESHGATE_ADMIN_TOKEN is not set"),
        "{}",
        stderr(&out)
    );
}
