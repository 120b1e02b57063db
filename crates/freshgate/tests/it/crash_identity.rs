//! `kill -9` of the real binary while a contact write is in flight, with the email changing:
//! every user must end as exactly one contact with the newest values.
//!
//! One trial: identifies of a few new users are posted; once the emulator has applied their
//! write (a single upsert whose answer is held back, or a bulk job the gateway has not polled
//! yet), identifies under new emails are posted behind them and the server is killed. The
//! restarted server delivers what was pending, coalesced: the shadow never learned of the
//! first write. Shared by the suite (a few dozen trials) and `cargo bench --bench crash`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procs::{Emulator, Site, emulator, identify, post_batch};

/// Users per trial.
const USERS: usize = 4;

/// What the trials saw.
#[derive(Debug, Default)]
pub struct CrashReport {
    /// Trials run (one `kill -9` each).
    pub trials: usize,
    /// Users written.
    pub users: usize,
    /// Users with more than one contact.
    pub duplicates: Vec<String>,
    /// Users whose contact does not hold the newest values.
    pub wrong: Vec<String>,
}

/// How the first write goes out.
#[derive(Debug, Clone, Copy)]
enum Path {
    Single,
    Bulk,
}

fn config(path: Path) -> String {
    match path {
        // Every contact on its own upsert.
        Path::Single => "concurrency = 4\nbulk_min_contacts = 0\n".into(),
        // The trial's users go out in one bulk job.
        Path::Bulk => "concurrency = 4\nbulk_min_contacts = 2\n".into(),
    }
}

/// Contacts by `external_id`.
async fn by_user(emu: &Emulator) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for c in emu.contacts().await {
        if let Some(u) = c["external_id"].as_str() {
            out.entry(u.to_owned()).or_default().push(c.clone());
        }
    }
    out
}

/// Run `trials` crash trials against one emulator and one data dir.
pub async fn crash_trials(trials: usize, tag: &str) -> CrashReport {
    let emu = emulator(1_000_000, 100_000, 1.0);
    let site = Site::new(&emu, &config(Path::Single));
    let (mut server, mut url) = site.serve(1.0);
    let mut report = CrashReport::default();
    let base_ms = 1_790_000_000_000i64;
    for trial in 0..trials {
        let path = if trial % 2 == 0 {
            Path::Single
        } else {
            Path::Bulk
        };
        let users: Vec<String> = (0..USERS).map(|u| format!("{tag}-t{trial}-u{u}")).collect();
        let ts = base_ms + i64::try_from(trial).unwrap_or(0) * 1_000_000;
        if let Path::Single = path {
            emu.post("faults", json!({"kind": "slow_answer", "ms": 4000}))
                .await;
        }
        let first: Vec<Value> = users
            .iter()
            .map(|u| {
                identify(
                    u,
                    &format!("{u}.old@example.com"),
                    json!({"firstName": "Old", "lastName": "Kept"}),
                    ts,
                    &format!("{u}-a"),
                )
            })
            .collect();
        post_batch(&url, &first).await.expect("server up");
        // Wait until the CRM holds every first write (its outcome not yet read).
        let start = Instant::now();
        loop {
            let seen = by_user(&emu).await;
            if users.iter().all(|u| seen.contains_key(u)) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{tag} trial {trial}: first writes never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second: Vec<Value> = users
            .iter()
            .map(|u| {
                identify(
                    u,
                    &format!("{u}.new@example.com"),
                    json!({"firstName": "New"}),
                    ts + 60_000,
                    &format!("{u}-b"),
                )
            })
            .collect();
        post_batch(&url, &second).await.expect("server up");
        server.kill9();
        report.trials += 1;
        emu.clear_faults().await;
        // The next trial's path (the config is read at start).
        let next = if trial % 2 == 0 {
            Path::Bulk
        } else {
            Path::Single
        };
        site.rewrite(&emu, &config(next));
        (server, url) = site.serve(1.0);
        // Converged: each user has a contact under the new email.
        let start = Instant::now();
        let seen = loop {
            let seen = by_user(&emu).await;
            let done = users.iter().all(|u| {
                seen.get(u).is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["email"] == format!("{u}.new@example.com").as_str())
                })
            });
            if done || start.elapsed() > Duration::from_secs(60) {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        for u in &users {
            report.users += 1;
            let cs = seen.get(u).cloned().unwrap_or_default();
            if cs.len() > 1 {
                report.duplicates.push(format!(
                    "{u} ({path:?}): {:?}",
                    cs.iter().map(|c| c["email"].clone()).collect::<Vec<_>>()
                ));
            }
            let right = cs.len() == 1
                && cs[0]["email"] == format!("{u}.new@example.com").as_str()
                && cs[0]["first_name"] == "New"
                && cs[0]["last_name"] == "Kept";
            if !right && cs.len() <= 1 {
                report.wrong.push(format!("{u} ({path:?}): {cs:?}"));
            }
        }
    }
    drop(server);
    report
}
