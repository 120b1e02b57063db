//! The web console in a real browser: Debian's headless Chromium, driven by `playwright-core`
//! from npm (installed once into the compat cache, like the official Segment clients) running
//! `tests/browser/console.cjs` against the real gateway and emulator.
//!
//! `scripts/screenshots.sh` runs this test with `SCREENSHOT_DIR` set to refresh `docs/console/`.

use std::path::PathBuf;
use std::process::Command;

use freshgate::config::{DestinationConfig, TrackRuleConfig};
use freshgate_store::DeliveryStatus;
use freshworks_emulator::Fault;
use serde_json::json;

use crate::helpers::*;

/// The version the console script is written against (works with Debian's Chromium 156).
const PLAYWRIGHT: &str = "playwright-core@1.64.1";
const TOKEN: &str = "browser-test-token";

fn playwright_dir() -> PathBuf {
    let base = std::env::var_os("FRESHGATE_COMPAT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("freshgate-compat-clients"));
    let dir = base.join("playwright");
    std::fs::create_dir_all(&dir).unwrap();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(PLAYWRIGHT)
            .output()
            .expect("npm");
        assert!(
            out.status.success(),
            "npm install {PLAYWRIGHT}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver (`.ci/run` does, as root)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_headless_chromium() {
    let chromium = chromium();
    let modules = tokio::task::spawn_blocking(playwright_dir).await.unwrap();
    let app = spawn_app_with(Setup {
        admin_token: Some(TOKEN.into()),
        destination: DestinationConfig {
            // A rule whose track waits for its user's identify: the overview's backlog by kind.
            track: vec![TrackRuleConfig {
                event: "Trial Started".into(),
                activity_type: None,
                lifecycle_stage: Some("Customer".into()),
                title: None,
            }],
            identify_wait_secs: 3600,
            ..DestinationConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let open = spawn_app().await;

    app.batch(vec![
        identify(
            "ann",
            "ann@example.com",
            json!({"firstName": "Ann", "Lifetime Value": 12, "favourite": "blue", "Plan": "Pro"}),
            "2026-11-20T10:00:00Z",
            "ann-1",
        ),
        json!({"type": "track", "userId": "ann", "event": "Signed Up", "messageId": "ann-2"}),
        identify("bob", "bob@example.com", json!({"lastName": "Builder"}), "2026-11-20T10:00:00Z", "bob-1"),
        json!({"type": "identify", "traits": {"email": "nobody@example.com"}, "messageId": "no-id"}),
    ])
    .await;
    app.drain().await;
    // A dead letter whose cause (the account refusing the upsert) lasts until the browser test
    // clears it in the emulator.
    app.emulator.state.inject(Fault::NextStatus {
        count: 1000,
        status: 400,
        path_contains: Some("upsert".into()),
        body: Some(r#"{"errors":{"code":400,"message":["Mobile number is invalid"]}}"#.into()),
    });
    app.batch(vec![identify(
        "zed",
        "zed@example.com",
        json!({"mobile": "not a number"}),
        "2026-11-20T10:00:00Z",
        "zed-1",
    )])
    .await;
    app.wait_for("a dead letter", || async {
        app.store.event_traces("zed-1").await.unwrap()[0].deliveries[0].status
            == DeliveryStatus::Dead
    })
    .await;

    // A track of a user whose identify has not come: pending, as a kind of its own.
    app.batch(vec![
        json!({"type": "track", "userId": "cat", "event": "Trial Started", "messageId": "cat-1"}),
    ])
    .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.cjs");
    let mut node = Command::new("node");
    node.arg(script)
        .env("NODE_PATH", modules.join("node_modules"))
        .env("CHROMIUM", &chromium)
        .env("ADMIN_URL", &app.admin_url)
        .env("ADMIN_TOKEN", TOKEN)
        .env("OPEN_URL", &open.admin_url)
        .env("EMULATOR_ADMIN", &app.emulator.admin_url)
        .env("DEAD_MESSAGE_ID", "zed-1");
    let out = tokio::task::spawn_blocking(move || node.output().expect("node"))
        .await
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("console ok"), "{said}");
    assert!(app.contact_by_email("zed@example.com").is_some());
    open.stop().await;
    app.stop().await;
}
