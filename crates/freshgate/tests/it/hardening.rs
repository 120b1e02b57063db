//! Hostile input: forged webhook batches, unauthenticated bodies, client-made metric labels,
//! slow clients, refusals without a body, a store that cannot write, a closed stdout.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::ingest::{VECTOR_BODY, assert_error};

const VECTOR_SIGNATURE: &str = "6d5c98d7e3fcf66d9013e465e19e68e4d4513102";
const WEBHOOK_TOKEN: &str = "hook-token-0123456789";

fn signed_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("content-type", "application/json"),
        ("x-signature", VECTOR_SIGNATURE),
    ]
}

/// The signed vector body followed by an element nobody signed.
fn forged_batch() -> String {
    let forged = r#"{"type":"identify","userId":"evil","messageId":"forged-1","traits":{"email":"evil@example.com"}}"#;
    format!("[{VECTOR_BODY},{forged}]")
}

async fn stored_count(app: &TestApp, message_id: &str) -> usize {
    app.store.event_traces(message_id).await.unwrap().len()
}

#[tokio::test]
async fn a_forged_element_in_a_signed_batch_is_refused() {
    let app = spawn_app().await;
    let r = app
        .post_raw(
            "/webhook/web",
            forged_batch().into_bytes(),
            &signed_headers(),
        )
        .await;
    assert_error(r, 401, "unauthenticated_batch").await;
    assert_eq!(stored_count(&app, "forged-1").await, 0);
    assert_eq!(stored_count(&app, "personas_2p4q8example").await, 0);
    // A single signed object still goes in.
    let r = app
        .post_raw(
            "/webhook/web",
            VECTOR_BODY.as_bytes().to_vec(),
            &signed_headers(),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn a_bearer_token_covers_a_whole_batch_and_the_opt_in_accepts_first_element_signatures() {
    let app = spawn_app_with(Setup {
        tweak: |cfg| {
            let web = cfg.sources.iter_mut().find(|s| s.name == "web").unwrap();
            web.webhook_token_env = Some("TEST_WEBHOOK_TOKEN".into());
            let backend = cfg
                .sources
                .iter_mut()
                .find(|s| s.name == "backend")
                .unwrap();
            backend.webhook_secret_env = Some("TEST_WEBHOOK_SECRET".into());
            backend.webhook_batches = freshgate::config::WebhookBatches::FirstElementSignature;
        },
        env: vec![("TEST_WEBHOOK_TOKEN", WEBHOOK_TOKEN)],
        ..Setup::default()
    })
    .await;
    let bearer = format!("Bearer {WEBHOOK_TOKEN}");
    let mut h = signed_headers();
    h.push(("authorization", bearer.as_str()));
    let r = app
        .post_raw("/webhook/web", forged_batch().into_bytes(), &h)
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(stored_count(&app, "forged-1").await, 1);
    // Without the token, or with another one: refused, even with a good signature.
    let r = app
        .post_raw(
            "/webhook/web",
            VECTOR_BODY.as_bytes().to_vec(),
            &signed_headers(),
        )
        .await;
    assert_error(r, 401, "missing_token").await;
    let mut wrong = signed_headers();
    wrong.push(("authorization", "Bearer hook-token-0123456780"));
    let r = app
        .post_raw("/webhook/web", VECTOR_BODY.as_bytes().to_vec(), &wrong)
        .await;
    assert_error(r, 401, "bad_token").await;
    // The operator's opt-in: the first element's signature is enough.
    let body = forged_batch().replace("forged-1", "opted-in-1");
    let r = app
        .post_raw("/webhook/backend", body.into_bytes(), &signed_headers())
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(stored_count(&app, "opted-in-1").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_body_with_a_bad_signature_is_not_stored() {
    let app = spawn_app().await;
    // 45 such requests filled a 20 MB disk before: each body was kept.
    let tampered = VECTOR_BODY.replace("jane@", "evil@");
    for _ in 0..45 {
        let r = app
            .post_raw(
                "/webhook/web",
                tampered.clone().into_bytes(),
                &signed_headers(),
            )
            .await;
        assert_error(r, 401, "bad_signature").await;
    }
    let r = app
        .post_raw("/webhook/web", tampered.into_bytes(), &[])
        .await;
    assert_error(r, 401, "missing_signature").await;
    assert!(app.store.rejected(100).await.unwrap().is_empty());
    assert_eq!(app.store.stats().await.unwrap().rejected, 0);
    app.stop().await;
}

#[tokio::test]
async fn rejected_inputs_are_bounded_in_bytes_oldest_first() {
    let app = spawn_app_with(Setup {
        tweak: |cfg| cfg.server.rejected_max_bytes = 20_000,
        ..Setup::default()
    })
    .await;
    // 40 invalid items of ~2 KB (no userId/anonymousId): 80 KB, four times the bound.
    for round in 0..4 {
        let batch: Vec<_> = (0..10)
            .map(|i| json!({"type": "track", "event": "E", "messageId": format!("bad-{round}-{i}"), "properties": {"pad": "x".repeat(2000)}}))
            .collect();
        let r = app.post("/v1/batch", &json!({"batch": batch})).await;
        assert_eq!(r.status(), 200);
    }
    app.wait_for("the rejected table back under its bound", || async {
        let rows = app.store.rejected(1000).await.unwrap();
        rows.iter().map(|r| r.raw.len()).sum::<usize>() <= 20_000
    })
    .await;
    let rows = app.store.rejected(1000).await.unwrap();
    assert!(!rows.is_empty());
    // The newest were kept.
    assert!(rows.iter().any(|r| r.raw.contains("bad-3-9")), "{rows:?}");
    assert!(!rows.iter().any(|r| r.raw.contains("bad-0-0")));
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_single_event_is_kept_in_rejected_whichever_way_its_key_came() {
    let app = spawn_app().await;
    // A track without `event`: Basic header, then the body's writeKey.
    assert_error(
        app.post(
            "/v1/track",
            &json!({"userId": "u", "messageId": "by-header"}),
        )
        .await,
        400,
        "invalid_event",
    )
    .await;
    let body = json!({"userId": "u", "messageId": "by-body-key", "writeKey": WRITE_KEY});
    assert_error(
        app.post_raw("/v1/track", body.to_string().into_bytes(), &[])
            .await,
        400,
        "invalid_event",
    )
    .await;
    let rejected = app.store.rejected(10).await.unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected.iter().any(|r| r.raw.contains("by-body-key")));
    assert!(rejected.iter().all(|r| r.source.as_deref() == Some("web")));
    // An unknown body key is refused and nothing is kept.
    let body = json!({"userId": "u", "writeKey": "not-a-key"});
    assert_error(
        app.post_raw("/v1/track", body.to_string().into_bytes(), &[])
            .await,
        401,
        "invalid_write_key",
    )
    .await;
    assert_eq!(app.store.rejected(10).await.unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn method_uri_and_header_refusals_carry_a_json_body() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/v1/batch", app.url))
        .send()
        .await
        .unwrap();
    assert_error(r, 405, "method_not_allowed").await;
    let long = format!("{}/v1/batch?x={}", app.url, "a".repeat(16 * 1024));
    let r = app.client.post(long).send().await.unwrap();
    assert_error(r, 414, "uri_too_long").await;
    let r = app
        .client
        .post(format!("{}/v1/batch", app.url))
        .header("x-padding", "b".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_error(r, 431, "headers_too_large").await;
    // The server still answers normally.
    app.batch(vec![
        json!({"type": "track", "userId": "u", "event": "E", "messageId": "after-refusals"}),
    ])
    .await;
    app.stop().await;
}

/// Read until the server closes the connection; `false` if it is still open after `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0_u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_normal_requests_are_served() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(Setup {
        tweak: |cfg| cfg.server.header_read_timeout_secs = 1,
        ..Setup::default()
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    // Slowloris: a request head that never ends; and a connection that never says anything.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    app.batch(vec![
        json!({"type": "track", "userId": "u", "event": "E", "messageId": "during-slowloris"}),
    ])
    .await;
    assert!(
        closed_within(&mut slow, Duration::from_secs(30)).await,
        "a half-sent request head kept its connection for 30 s"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(30)).await,
        "an idle connection was kept for 30 s"
    );
    app.batch(vec![
        json!({"type": "track", "userId": "u", "event": "E", "messageId": "after-slowloris"}),
    ])
    .await;
    app.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_told_so_and_closed() {
    let app = spawn_app_with(Setup {
        tweak: |cfg| cfg.server.max_connections = 3,
        ..Setup::default()
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A fresh client (no pooled connection) gets the canned 503.
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/batch", app.url))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"batch": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.headers().get("retry-after").unwrap(),
        "1",
        "{:?}",
        refused.headers()
    );
    assert_error(refused, 503, "too_many_connections").await;
    drop(held);
    // Once they are gone, requests are served again.
    let client = reqwest::Client::new();
    wait_for(
        "a free connection slot",
        Duration::from_secs(30),
        &mut || {
            let client = client.clone();
            let url = app.url.clone();
            async move {
                client
                    .post(format!("{url}/v1/batch"))
                    .basic_auth(WRITE_KEY, Some(""))
                    .json(&json!({"batch": []}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    app.stop().await;
}

fn source_config(extra: &str) -> String {
    format!("[[sources]]\nname = \"web\"\nwrite_keys = [\"{WRITE_KEY}\"]\n{extra}")
}

/// POST one padded batch tagged `tag`: the answer and the messageIds it carried.
async fn post_padded(
    client: &reqwest::Client,
    url: &str,
    tag: &str,
) -> (reqwest::Response, Vec<String>) {
    let (body, ids) = padded_batch(tag);
    let r = client
        .post(format!("{url}/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r, ids)
}

/// A batch of 50 padded tracks; the message ids it carries.
fn padded_batch(tag: &str) -> (serde_json::Value, Vec<String>) {
    let ids: Vec<String> = (0..50).map(|i| format!("{tag}-{i}")).collect();
    let events: Vec<_> = ids
        .iter()
        .map(|id| json!({"type": "track", "userId": "u", "event": "E", "messageId": id, "properties": {"pad": "x".repeat(500)}}))
        .collect();
    (json!({"batch": events}), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_with_retry_after_then_recovers_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("freshgate.toml");
    std::fs::write(&config, source_config("")).unwrap();
    let data = dir.path().join("data");
    // The disk is "full" for this process: no file may grow past 2 MiB (the soft RLIMIT_FSIZE;
    // writes past it fail with EFBIG, as they would with ENOSPC, instead of raising SIGXFSZ).
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -S -f 4096; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_freshgate"))
        .args(crate::crash::serve_args(&config, &data));
    let (mut child, url) = crate::crash::start_command(command);
    let client = reqwest::Client::new();
    let mut acked: Vec<String> = Vec::new();
    let mut refusal = None;
    for n in 0..400 {
        let (r, ids) = post_padded(&client, &url, &format!("fill-{n}")).await;
        if r.status() == 200 {
            acked.extend(ids);
        } else {
            refusal = Some(r);
            break;
        }
    }
    let r = refusal.expect("2 MiB never filled up");
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5"),
        "{:?}",
        r.headers()
    );
    assert_error(r, 503, "storage_unavailable").await;
    assert!(!acked.is_empty());
    // Space comes back: the same process accepts again by itself.
    let lifted = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", child.id()))
        .arg("--fsize=unlimited")
        .status()
        .unwrap();
    assert!(lifted.success());
    let mut recovered = false;
    for n in 0..200 {
        let (r, ids) = post_padded(&client, &url, &format!("after-{n}")).await;
        if r.status() == 200 {
            acked.extend(ids);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "still refusing after the disk had room again");
    child.kill().unwrap();
    child.wait().unwrap();
    let store = freshgate::cli::open_store(&data, 16).unwrap();
    assert!(store.integrity_check().await.unwrap().is_empty());
    for id in &acked {
        assert_eq!(
            store.event_traces(id).await.unwrap().len(),
            1,
            "acknowledged {id} lost"
        );
    }
    store.close().await;
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Enough rejected rows that the output overflows the pipe buffer.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = freshgate::cli::open_store(dir.path(), 16).unwrap();
        let rejected = (0..400)
            .map(|i| freshgate_store::RejectedInput {
                source: Some("web".into()),
                raw: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(1000)).into_bytes(),
                reason: "missing userId and anonymousId".into(),
                received_at_ms: 1_700_000_000_000,
            })
            .collect();
        store
            .append(freshgate_store::AppendBatch {
                events: Vec::new(),
                rejected,
                dedup_window_ms: 1,
            })
            .await
            .unwrap();
        store.close().await;
    });
    // `freshgate events rejected | head -2`
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_freshgate"))
        .args(["events", "rejected", "--limit", "400", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        for _ in 0..2 {
            lines.next().unwrap().unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let app = spawn_app_with(Setup {
        tweak: |cfg| cfg.server.metrics_token_env = Some("TEST_METRICS_TOKEN".into()),
        env: vec![("TEST_METRICS_TOKEN", "metrics-0123456789")],
        ..Setup::default()
    })
    .await;
    let get = |token: Option<&'static str>| {
        let mut r = app.client.get(format!("{}/metrics", app.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_error(get(None).await.unwrap(), 401, "missing_token").await;
    assert_error(
        get(Some("metrics-0123456780")).await.unwrap(),
        401,
        "bad_token",
    )
    .await;
    let r = get(Some("metrics-0123456789")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("freshgate_http_requests_total")
    );
    // Health stays public.
    let r = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// The series lines (not comments) of a Prometheus text exposition.
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_trait_keys_leave_metrics_unchanged() {
    let emulator_config = freshworks_emulator::EmulatorConfig::default();
    let emulator = freshworks_emulator::RunningEmulator::start(emulator_config.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("freshgate.toml");
    // The bulk path is off so both rounds take the same calls (and so the same series).
    let destination = format!(
        "\n[[destinations]]\nname = \"crm\"\nbase_url = \"{}\"\napi_key_env = \"FG_HARDENING_API_KEY\"\nbulk_min_contacts = 0\n",
        emulator.base_url
    );
    std::fs::write(&config, source_config(&destination)).unwrap();
    let data = dir.path().join("data");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_freshgate"));
    command
        .args(crate::crash::serve_args(&config, &data))
        .env("FG_HARDENING_API_KEY", &emulator_config.api_key);
    let (mut child, url) = crate::crash::start_command(command);
    let client = reqwest::Client::new();
    let users = 20;
    // One round: each user identifies with `keys` random trait keys and a first name.
    let round = |first_name: &'static str, keys: usize| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let batch: Vec<_> = (0..users)
                .map(|u| {
                    let mut traits = serde_json::Map::new();
                    for _ in 0..keys {
                        traits.insert(format!("k_{}", uuid::Uuid::new_v4().simple()), json!(1));
                    }
                    traits.insert("first_name".into(), json!(first_name));
                    identify(
                        &format!("user-{u}"),
                        &format!("user-{u}@example.com"),
                        serde_json::Value::Object(traits),
                        "2026-01-01T00:00:00Z",
                        &uuid::Uuid::new_v4().to_string(),
                    )
                })
                .collect();
            for chunk in batch.chunks(4) {
                let r = client
                    .post(format!("{url}/v1/batch"))
                    .basic_auth(WRITE_KEY, Some(""))
                    .json(&json!({"batch": chunk}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    let delivered = |first_name: &'static str| {
        let state = emulator.state.clone();
        move || {
            let contacts = state.contacts();
            let done = contacts
                .iter()
                .filter(|c| c["first_name"] == first_name)
                .count();
            async move { done == users }
        }
    };
    let metrics = || async {
        client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Warm-up: every series a delivery makes exists afterwards (one unmapped key each).
    round("Warm", 1).await;
    wait_for(
        "warm-up delivered",
        Duration::from_secs(60),
        &mut delivered("Warm"),
    )
    .await;
    let _ = metrics().await;
    let before = metrics().await;
    // 20 identifies x 500 random keys = 10,000 keys no field matches.
    round("Hostile", 500).await;
    wait_for(
        "hostile round delivered",
        Duration::from_secs(60),
        &mut delivered("Hostile"),
    )
    .await;
    let after = metrics().await;
    // The keys are in the store instead, bounded per destination.
    let store = freshgate::cli::open_store(&data, 16).unwrap();
    wait_for(
        "unmapped keys in the store",
        Duration::from_secs(30),
        &mut || {
            let store = std::sync::Arc::clone(&store);
            async move {
                let keys = store.unmapped_traits("crm", 100_000).await.unwrap();
                keys.len() == freshgate_store::MAX_UNMAPPED_TRAITS_PER_DESTINATION
            }
        },
    )
    .await;
    store.close().await;
    child.kill().unwrap();
    child.wait().unwrap();
    emulator.stop().await;
    assert!(!after.contains("k_"), "a client key is a metric label");
    assert_eq!(series(&before), series(&after), "series count changed");
    assert!(
        after.len().abs_diff(before.len()) < 2048,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}
