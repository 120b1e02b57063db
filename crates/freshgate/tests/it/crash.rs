//! Crash safety of ingest: the real binary under concurrent batch posts is `kill -9`ed at random
//! moments, restarted, and every `messageId` that got a 200 is in the store exactly once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::WRITE_KEY;

/// Start `freshgate serve` on port 0 and return it with its address.
pub fn start_server(config: &Path, data_dir: &Path) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_freshgate"));
    command.args(serve_args(config, data_dir));
    start_command(command)
}

/// The arguments of `freshgate serve` on port 0 with this config and data dir.
pub fn serve_args(config: &Path, data_dir: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--config",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(config.into());
    args.push("--data-dir".into());
    args.push(data_dir.into());
    args
}

/// Start a command that runs `freshgate serve` and return it with the address it printed.
pub fn start_command(mut command: Command) -> (Child, String) {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    // Keep reading stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_never_loses_an_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("freshgate.toml");
    // Index runs of 1,000 events: some kills land while a run is being written.
    std::fs::write(
        &config,
        format!(
            "[store]\nindex_run_events = 1000\n\n\
             [[sources]]\nname = \"web\"\nwrite_keys = [\"{WRITE_KEY}\"]\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let trials = 20;
    for trial in 0..trials {
        let (mut child, url) = start_server(&config, &data);
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let client = client.clone();
            let url = url.clone();
            let acked = Arc::clone(&acked);
            tasks.push(tokio::spawn(async move {
                for batch in 0.. {
                    let ids: Vec<String> = (0..50)
                        .map(|i| format!("t{trial}-w{worker}-b{batch}-{i}"))
                        .collect();
                    let events: Vec<_> = ids
                        .iter()
                        .map(|id| json!({"type": "track", "userId": format!("u{}", id.len() % 7), "event": "E", "messageId": id, "properties": {"pad": "x".repeat(500)}}))
                        .collect();
                    let r = client
                        .post(format!("{url}/v1/batch"))
                        .basic_auth(WRITE_KEY, Some(""))
                        .json(&json!({"batch": events}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }));
        }
        let wait = 150 + (trial * 37 % 400) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            let _ = t.await;
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > trials * 50,
        "the server acknowledged too little to prove anything: {}",
        acked.len()
    );
    // After the last kill, every acknowledged messageId is still a duplicate (whether its
    // entry was in a run, in a run half-written, or only in the tail when the process died).
    let (mut child, url) = start_server(&config, &data);
    let resent: Vec<_> = acked
        .iter()
        .step_by((acked.len() / 200).max(1))
        .map(|id| json!({"type": "track", "userId": "u", "event": "E", "messageId": id}))
        .collect();
    let r = client
        .post(format!("{url}/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"batch": resent}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let store = freshgate::cli::open_store(&data, 16).unwrap();
    assert!(store.integrity_check().await.unwrap().is_empty());
    let mut missing = Vec::new();
    for id in &acked {
        let n = store.event_traces(id).await.unwrap().len();
        if n != 1 {
            missing.push((id.clone(), n));
        }
    }
    store.close().await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events not stored exactly once: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
