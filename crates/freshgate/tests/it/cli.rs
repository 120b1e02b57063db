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

#[test]
fn doctor_and_queue_stats_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = freshgate()
        .args(["doctor", "--json", "--data-dir"])
        .arg(dir.path())
        .env("FRESHGATE_WRITE_KEY", "k")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["store_ok"], true, "{v}");
    let out = freshgate()
        .args(["queue", "stats", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"], 0);
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
