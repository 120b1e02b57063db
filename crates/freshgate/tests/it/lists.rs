//! Engage audiences → marketing lists (issue 11, `audience_lists = true`), through the real
//! server and the emulator: enter then exit adds then removes the contact, memberships of many
//! contacts travel in one `add_contacts` call, and a list missing in the account is created once
//! even with two nodes on one store racing for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use freshgate::app::{App, AppOptions};
use freshgate::config::{self, DestinationConfig};
use freshworks_emulator::{EmulatorConfig, Fault, RunningEmulator};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::helpers::{Setup, WRITE_KEY, identify, spawn_app_with, test_config, wait_for};

const TS: &str = "2026-03-01T10:00:00.000Z";

fn audiences() -> DestinationConfig {
    DestinationConfig {
        concurrency: 4,
        audience_lists: true,
        ..DestinationConfig::default()
    }
}

fn personas(key: &str) -> Value {
    json!({"personas": {"computation_class": "audience", "computation_key": key,
                        "computation_id": "aud_1", "space_id": "spa_1"}})
}

/// An Engage audience identify: trait `key` = `member`.
fn audience_identify(user: &str, key: &str, member: bool, ts: &str) -> Value {
    let mut e = identify(
        user,
        &format!("{user}@example.com"),
        json!({ key: member }),
        ts,
        &format!("{user}-{key}-{member}-{ts}"),
    );
    e["context"] = personas(key);
    e
}

/// An Engage audience track (`Audience Entered` / `Audience Exited`).
fn audience_track(user: &str, key: &str, member: bool, ts: &str) -> Value {
    json!({
        "type": "track", "userId": user, "timestamp": ts,
        "messageId": format!("{user}-{key}-track-{member}-{ts}"),
        "event": if member { "Audience Entered" } else { "Audience Exited" },
        "properties": { key: member }, "context": personas(key),
    })
}

/// The emulator's lists by name: (id, member contact ids).
fn lists(emu: &RunningEmulator) -> Vec<(String, i64, Vec<i64>)> {
    emu.state.snapshot()["lists"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or("").to_owned(),
                l["id"].as_i64().unwrap_or(0),
                l["contact_ids"]
                    .as_array()
                    .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn members(emu: &RunningEmulator, name: &str) -> Option<Vec<i64>> {
    lists(emu)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, m)| m)
}

/// The emulator's request log read through its admin API: (method, path, body).
async fn requests(emu: &RunningEmulator) -> Vec<(String, String, String)> {
    let log: Value = reqwest::get(format!("{}/requests", emu.admin_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or("").to_owned(),
                r["path"].as_str().unwrap_or("").to_owned(),
                r["body"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn contact_id(emu: &RunningEmulator, email: &str) -> i64 {
    emu.state
        .contacts()
        .into_iter()
        .find(|c| c["email"].as_str() == Some(email))
        .and_then(|c| c["id"].as_i64())
        .unwrap_or_else(|| panic!("no contact {email}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_enter_then_exit_adds_then_removes() {
    let app = spawn_app_with(Setup {
        destination: audiences(),
        ..Setup::default()
    })
    .await;
    app.batch(vec![audience_identify("u1", "vip_users", true, TS)])
        .await;
    app.wait_for("u1 added to vip_users", || async {
        members(&app.emulator, "vip_users").is_some_and(|m| m.len() == 1)
    })
    .await;
    let id = contact_id(&app.emulator, "u1@example.com");
    assert_eq!(members(&app.emulator, "vip_users").unwrap(), vec![id]);

    app.batch(vec![audience_track(
        "u1",
        "vip_users",
        false,
        "2026-03-01T11:00:00.000Z",
    )])
    .await;
    app.wait_for("u1 removed from vip_users", || async {
        members(&app.emulator, "vip_users").is_some_and(|m| m.is_empty())
    })
    .await;
    // The track's trace says where its membership went, then shows the batch call that
    // carried it (recorded right after the call).
    let mid = "u1-vip_users-track-false-2026-03-01T11:00:00.000Z";
    let attempts = || async {
        app.store.event_traces(mid).await.unwrap()[0].deliveries[0]
            .attempts
            .clone()
    };
    app.wait_for("the list call in the trace", || async {
        attempts().await.iter().any(|a| a.status.is_some())
    })
    .await;
    let attempts = attempts().await;
    let handed = attempts.iter().find(|a| a.status.is_none()).unwrap();
    assert!(
        handed.outcome.contains("handed to the list flusher")
            && handed.outcome.contains("remove to 'vip_users'"),
        "{}",
        handed.outcome
    );
    let sent = attempts.iter().find(|a| a.status.is_some()).unwrap();
    assert_eq!(sent.status, Some(200));
    assert!(
        sent.request_line.contains("/remove_contacts")
            && sent.outcome.starts_with("list membership sent"),
        "{sent:?}"
    );
    // One list, created once; one add and one remove; the contact's id came from its upsert.
    let log = requests(&app.emulator).await;
    let count = |m: &str, suffix: &str| {
        log.iter()
            .filter(|(method, p, _)| method == m && p.ends_with(suffix))
            .count()
    };
    assert_eq!(count("POST", "/lists"), 1);
    assert_eq!(count("PUT", "/add_contacts"), 1);
    assert_eq!(count("PUT", "/remove_contacts"), 1);
    assert_eq!(count("GET", "/lookup"), 0);
    // An older enter arriving late does not put the contact back.
    app.batch(vec![audience_track(
        "u1",
        "vip_users",
        true,
        "2026-03-01T10:30:00.000Z",
    )])
    .await;
    app.drain().await;
    // Longer than a flusher round.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        members(&app.emulator, "vip_users").unwrap(),
        Vec::<i64>::new()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_of_many_contacts_share_one_call() {
    // One upsert per contact, so that every contact's id is known from its upsert (bulk job
    // results carry none: those cost one lookup each, see the benchmark).
    let app = spawn_app_with(Setup {
        destination: DestinationConfig {
            bulk_min_contacts: 0,
            ..audiences()
        },
        ..Setup::default()
    })
    .await;
    let users: Vec<String> = (0..60).map(|i| format!("b{i:03}")).collect();
    // The contacts exist first; then Engage computes the audience for all of them at once.
    app.batch(
        users
            .iter()
            .map(|u| {
                identify(
                    u,
                    &format!("{u}@example.com"),
                    json!({}),
                    TS,
                    &format!("{u}-0"),
                )
            })
            .collect(),
    )
    .await;
    app.drain().await;
    app.batch(
        users
            .iter()
            .map(|u| audience_identify(u, "power_users", true, "2026-03-01T10:05:00.000Z"))
            .collect(),
    )
    .await;
    app.wait_for("60 members in power_users", || async {
        members(&app.emulator, "power_users").is_some_and(|m| m.len() == 60)
    })
    .await;
    let log = requests(&app.emulator).await;
    let adds: Vec<usize> = log
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.ends_with("/add_contacts"))
        .map(|(_, _, body)| {
            serde_json::from_str::<Value>(body).unwrap()["ids"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(adds.iter().sum::<usize>(), 60, "{adds:?}");
    // Batched: at most 0.05 calls per membership change (60 changes: 3 calls), and the
    // contacts' ids came from their upserts (no lookup).
    assert!(
        adds.len() * 20 <= 60,
        "{} add_contacts calls: {adds:?}",
        adds.len()
    );
    assert!(adds.iter().any(|n| *n >= 20), "{adds:?}");
    assert_eq!(
        log.iter()
            .filter(|(_, p, _)| p.ends_with("/lookup"))
            .count(),
        0
    );
    app.stop().await;
}

/// A running node: URL and shutdown.
struct Node {
    url: String,
    shutdown: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_list_is_created_once_by_two_nodes_racing() {
    let emu = RunningEmulator::start(EmulatorConfig::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let key = EmulatorConfig::default().api_key;
    // 30 other lists, so that `churn` (which exists) is on page 2 of `GET /lists`.
    for i in 0..31 {
        let name = if i == 30 {
            "churn".to_owned()
        } else {
            format!("other-{i}")
        };
        let r = http
            .post(format!("{}/lists", emu.base_url))
            .header("Authorization", format!("Token token={key}"))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let churn_id = lists(&emu)
        .into_iter()
        .find(|(n, _, _)| n == "churn")
        .unwrap()
        .1;
    // Slow answers spread the contacts' hand-offs over several flusher rounds of both nodes,
    // so that both need the list while one of them is still paging and creating it.
    emu.state.inject(Fault::Latency { ms: 150 });

    // Two nodes on one store, each with its own dispatcher and list flusher.
    let data_dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        destination: audiences(),
        ..Setup::default()
    };
    let cfg = test_config(&emu.base_url, &setup, data_dir.path().to_path_buf());
    let dest = cfg.destinations[0].name.clone();
    let env: BTreeMap<String, String> = [
        ("TEST_WEBHOOK_SECRET".to_owned(), "s".to_owned()),
        ("TEST_FRESHWORKS_KEY".to_owned(), key.clone()),
    ]
    .into();
    let store = freshgate::cli::open_store(data_dir.path(), cfg.store.writer_queue).unwrap();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let resolved = config::resolve(cfg.clone(), "test", &env).unwrap();
        let app = App::build(resolved, Arc::clone(&store), AppOptions::default())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run(listener, async move {
            let _ = rx.await;
        }));
        nodes.push(Node {
            url,
            shutdown: tx,
            handle,
        });
    }
    // Each node ingests half of the users; either node's workers may deliver any of them.
    let post = |url: String, events: Vec<Value>| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{url}/v1/batch"))
                .basic_auth(WRITE_KEY, Some(""))
                .json(&json!({ "batch": events }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let half = |from: usize| -> Vec<Value> {
        (from..from + 20)
            .flat_map(|i| {
                let u = format!("n{i:03}");
                [
                    audience_identify(&u, "vip", true, TS),
                    audience_track(&u, "churn", true, TS),
                ]
            })
            .collect()
    };
    tokio::join!(
        post(nodes[0].url.clone(), half(0)),
        post(nodes[1].url.clone(), half(20))
    );
    wait_for(
        "40 members in vip and churn",
        Duration::from_secs(60),
        &mut || async {
            members(&emu, "vip").is_some_and(|m| m.len() == 40)
                && members(&emu, "churn").is_some_and(|m| m.len() == 40)
        },
    )
    .await;
    let all = lists(&emu);
    assert_eq!(all.iter().filter(|(n, _, _)| n == "vip").count(), 1);
    assert_eq!(all.iter().filter(|(n, _, _)| n == "churn").count(), 1);
    assert_eq!(all.len(), 32, "only vip was created");
    assert_eq!(
        store.list_id(&dest, "churn").await.ok().flatten(),
        Some(churn_id)
    );
    let log = requests(&emu).await;
    let creates = log
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.ends_with("/lists"))
        .count();
    assert_eq!(creates, 31 + 1, "the test's 31 lists and vip once");
    // The emulator holds the members before the nodes read its answers (150 ms late) and
    // settle; wait for the settle rather than reading the counts mid-flight.
    wait_for(
        "the 80 memberships settled",
        Duration::from_secs(30),
        &mut || async {
            store
                .membership_counts(&dest)
                .await
                .is_ok_and(|c| c.pending == 0)
        },
    )
    .await;
    let counts = store.membership_counts(&dest).await.unwrap();
    assert_eq!((counts.done, counts.dead), (80, 0), "{counts:?}");
    for node in nodes {
        let _ = node.shutdown.send(());
        node.handle.await.unwrap().unwrap();
    }
    store.close().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_audiences_are_handled_as_before() {
    let app = spawn_app_with(Setup::default()).await;
    app.batch(vec![
        audience_identify("u9", "vip_users", true, TS),
        audience_track("u9", "vip_users", false, "2026-03-01T11:00:00.000Z"),
    ])
    .await;
    app.drain().await;
    assert!(app.contact_by_email("u9@example.com").is_some());
    let traces = app
        .store
        .event_traces("u9-vip_users-track-false-2026-03-01T11:00:00.000Z")
        .await
        .unwrap();
    assert_eq!(
        traces[0].deliveries[0].reason.as_deref(),
        Some("not handled by this destination: track")
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.calls("/lists"), 0);
    assert!(lists(&app.emulator).is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_gone_from_the_account_is_looked_up_again() {
    let app = spawn_app_with(Setup {
        destination: audiences(),
        ..Setup::default()
    })
    .await;
    // The first membership call meets a 404, as when the list was deleted in the CRM.
    app.emulator.state.inject(Fault::NextStatus {
        count: 1,
        status: 404,
        path_contains: Some("add_contacts".into()),
        body: None,
    });
    app.batch(vec![audience_identify("u2", "trial_users", true, TS)])
        .await;
    app.wait_for("u2 added to trial_users", || async {
        members(&app.emulator, "trial_users").is_some_and(|m| m.len() == 1)
    })
    .await;
    let log = requests(&app.emulator).await;
    let count = |m: &str, suffix: &str| {
        log.iter()
            .filter(|(method, p, _)| method == m && p.ends_with(suffix))
            .count()
    };
    // Created once, found again by name after the 404, then the call went through.
    assert_eq!(count("POST", "/lists"), 1);
    assert_eq!(count("GET", "/lists"), 2);
    assert_eq!(count("PUT", "/add_contacts"), 2);
    app.stop().await;
}
