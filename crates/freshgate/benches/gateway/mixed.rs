//! The mixed workload of issue 11 (`cargo bench -p freshgate --bench gateway -- delivery`, or
//! `-- mixed` for this part alone): 5,000 users, each with an identify and 3 tracks (two
//! matching a track rule), a group for a third of them (50 accounts), and an Engage audience
//! enter (identify) then exit (`Audience Exited` track) for a fifth, against the emulator with
//! every kind switched on (`track` rules, `group_accounts`, `audience_lists`).
//!
//! Reported per kind of event, whatever this build delivers: how the deliveries ended (a kind
//! this build does not deliver shows as "not handled"), the Freshworks calls attributable to the
//! kind (by endpoint), calls per event and per delivered event, and the same stream as a
//! per-event integration would send it: one call per event, plus one contact lookup by
//! `external_id` for each event that is not an identify (it needs the contact's id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use freshgate::app::{App, AppOptions};
use freshgate::config::{self, Config, DestinationConfig, SourceConfig, TrackRuleConfig};
use freshgate_store::{DeliveryStatus, Store};
use freshworks_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;

use super::{
    API_KEY_ENV, BATCH, Gateway, SOURCE, WRITE_KEY, batch_body, email, identify_json, post_batches,
    unthrottled_emulator, user_id, verdict,
};

const USERS: usize = 5_000;
const ACCOUNTS: usize = 50;
const AUDIENCE: &str = "bench_power_users";
/// Issue 11's targets.
const TARGET_PER_TRACK: f64 = 1.0;
const TARGET_PER_MEMBERSHIP: f64 = 0.05;
const TARGET_PER_GROUP_AFTER_FIRST: f64 = 0.1;

/// The kinds of event in the workload, in report order.
const KINDS: [&str; 6] = [
    "identify",
    "track (rule)",
    "track (no rule)",
    "group",
    "audience enter (identify)",
    "audience exit (track)",
];

/// Which kind a Freshworks call is made for, by its path.
fn call_kind(path: &str) -> &'static str {
    if path.ends_with("/lookup") {
        "lookup"
    } else if path.contains("/lists") {
        "audience"
    } else if path.contains("sales_accounts") {
        "group"
    } else if path.contains("/sales_activities") || path.contains("/selector/") {
        "track"
    } else if path.contains("/contacts/")
        || path.contains("/job_statuses/")
        || path.contains("fields")
    {
        "identify"
    } else {
        "other"
    }
}

fn ts_at(base: OffsetDateTime, ms: i64) -> String {
    (base + time::Duration::milliseconds(ms))
        .format(&Rfc3339)
        .unwrap_or_else(|_| "2026-01-01T00:00:00Z".to_owned())
}

fn personas() -> Value {
    json!({"personas": {"computation_class": "audience", "computation_key": AUDIENCE,
                        "computation_id": "aud_bench", "space_id": "spa_bench"}})
}

/// One posted event: (kind, messageId, event JSON).
type Posted = (&'static str, String, String);

/// The workload: phase 1, then phase 2 (the exits).
fn workload(base: OffsetDateTime) -> (Vec<Posted>, Vec<Posted>) {
    let mut first = Vec::new();
    let mut exits = Vec::new();
    for n in 0..USERS {
        let u = 300_000 + n;
        let uid = user_id(u);
        let mid = |what: &str| format!("mixed-{what}-{u}");
        first.push((
            "identify",
            mid("id"),
            identify_json(u, &mid("id"), &ts_at(base, 0), "pro", 1),
        ));
        for (i, (event, kind)) in [
            ("Order Completed", "track (rule)"),
            ("Product Viewed", "track (rule)"),
            ("Page Scrolled", "track (no rule)"),
        ]
        .into_iter()
        .enumerate()
        {
            let m = mid(&format!("t{i}"));
            let body = json!({"type": "track", "messageId": m, "userId": uid, "event": event,
                "timestamp": ts_at(base, 1 + i64::try_from(i).unwrap_or(0)),
                "properties": {"order_id": format!("o-{u}-{i}"), "total": 42.5, "currency": "USD"}});
            first.push((kind, m, body.to_string()));
        }
        if n % 3 == 0 {
            let m = mid("g");
            let account = n % ACCOUNTS;
            let body = json!({"type": "group", "messageId": m, "userId": uid,
                "groupId": format!("acct-{account}"), "timestamp": ts_at(base, 5),
                "traits": {"name": format!("Account {account}"), "industry": "Software",
                           "employees": 100 + account}});
            first.push(("group", m, body.to_string()));
        }
        if n % 5 == 0 {
            let m = mid("enter");
            let body = json!({"type": "identify", "messageId": m, "userId": uid,
                "timestamp": ts_at(base, 6), "context": personas(),
                "traits": {"email": email(u), AUDIENCE: true}});
            first.push(("audience enter (identify)", m, body.to_string()));
            let m = mid("exit");
            let body = json!({"type": "track", "messageId": m, "userId": uid,
                "event": "Audience Exited", "timestamp": ts_at(base, 60_000),
                "context": personas(), "properties": {AUDIENCE: false}});
            exits.push(("audience exit (track)", m, body.to_string()));
        }
    }
    (first, exits)
}

/// The gateway with every kind switched on.
async fn start(emu: &RunningEmulator, bulk_min: Option<usize>) -> Result<(Gateway, String)> {
    let data_dir = tempfile::tempdir().context("temp data dir")?;
    let mut cfg = Config::default();
    cfg.server.data_dir = data_dir.path().to_path_buf();
    cfg.sources.push(SourceConfig {
        name: SOURCE.into(),
        write_keys: vec![WRITE_KEY.into()],
        ..SourceConfig::default()
    });
    let rule = |event: &str, activity_type: &str| TrackRuleConfig {
        event: event.into(),
        activity_type: Some(activity_type.into()),
        ..TrackRuleConfig::default()
    };
    cfg.destinations.push(DestinationConfig {
        base_url: Some(emu.base_url.clone()),
        api_key_env: API_KEY_ENV.into(),
        hourly_limit: Some(1_000_000),
        minute_limit: 1_000_000,
        group_accounts: true,
        audience_lists: true,
        bulk_min_contacts: bulk_min.unwrap_or(DestinationConfig::default().bulk_min_contacts),
        track: vec![
            rule("Order Completed", "Purchase"),
            rule("Product Viewed", "Website visit"),
        ],
        ..DestinationConfig::default()
    });
    let destination = cfg.destinations[0].name.clone();
    let mut env = BTreeMap::new();
    env.insert(API_KEY_ENV.to_owned(), EmulatorConfig::default().api_key);
    let writer_queue = cfg.store.writer_queue;
    let resolved = config::resolve(cfg, "bench", &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = freshgate::cli::open_store(data_dir.path(), writer_queue)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = App::build(resolved, Arc::clone(&store), AppOptions::default()).await?;
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(listener, async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    Ok((
        Gateway {
            url: format!("http://{addr}"),
            client,
            store,
            shutdown: Some(tx),
            handle,
            _data_dir: data_dir,
        },
        destination,
    ))
}

/// Wait until no delivery and no list membership is pending.
async fn settle(gw: &Gateway, destination: &str, limit: Duration) -> Result<()> {
    gw.drain(limit).await?;
    let start = Instant::now();
    loop {
        if gw.store.membership_counts(destination).await?.pending == 0 {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("list memberships still pending after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(gw: &Gateway, events: &[Posted]) -> Result<()> {
    let bodies: Vec<String> = events.iter().map(|(_, _, b)| b.clone()).collect();
    post_batches(gw, bodies.chunks(BATCH).map(batch_body).collect()).await
}

/// How the deliveries of each kind ended: (delivered, not handled, other skips, dead, pending).
async fn outcomes(
    store: &dyn Store,
    events: &[Posted],
) -> Result<BTreeMap<&'static str, [u64; 5]>> {
    let mut out: BTreeMap<&'static str, [u64; 5]> = BTreeMap::new();
    for (kind, mid, _) in events {
        let row = out.entry(kind).or_default();
        for trace in store.event_traces(mid).await? {
            for d in &trace.deliveries {
                let slot = match d.status {
                    DeliveryStatus::Delivered => 0,
                    DeliveryStatus::Skipped
                        if d.reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("not handled")) =>
                    {
                        1
                    }
                    DeliveryStatus::Skipped => 2,
                    DeliveryStatus::Dead => 3,
                    _ => 4,
                };
                row[slot] += 1;
            }
        }
    }
    Ok(out)
}

fn ratio(a: usize, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// The mixed workload with the default configuration (bulk jobs for backlogs: their results
/// carry no contact ids) and with one upsert per contact (every id known from its upsert).
pub(super) async fn mixed_scenario() -> Result<Value> {
    println!(
        "  (d) mixed workload (issue 11): {USERS} users: identify + 3 tracks (2 match a rule), a group for a third ({ACCOUNTS} accounts), audience enter then exit for a fifth"
    );
    let default_bulk = DestinationConfig::default().bulk_min_contacts;
    let bulk = mixed_run(
        &format!("default config, bulk_min_contacts = {default_bulk}"),
        None,
    )
    .await?;
    let single = mixed_run("bulk_min_contacts = 0, one upsert per contact", Some(0)).await?;
    Ok(json!({ "default": bulk, "single_upserts": single }))
}

async fn mixed_run(mode: &str, bulk_min: Option<usize>) -> Result<Value> {
    println!("   [{mode}]");
    let emu = unthrottled_emulator().await?;
    let (gw, destination) = start(&emu, bulk_min).await?;
    let (first, exits) = workload(OffsetDateTime::now_utc());
    let started = Instant::now();
    post(&gw, &first).await?;
    settle(&gw, &destination, Duration::from_secs(900)).await?;
    let after_first = started.elapsed();
    let calls_before_exits = emu.state.request_log().len();
    post(&gw, &exits).await?;
    settle(&gw, &destination, Duration::from_secs(900)).await?;
    let elapsed = started.elapsed();

    let all: Vec<Posted> = first.into_iter().chain(exits).collect();
    let ends = outcomes(gw.store.as_ref(), &all).await?;
    let memberships = gw.store.membership_counts(&destination).await?;
    let log = emu.state.request_log();
    let mut calls: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
    for r in &log {
        *calls.entry(call_kind(&r.path)).or_default() += 1;
        // Ids in paths (lists, jobs) folded so the table stays short.
        let path: String = r
            .path
            .split('/')
            .map(|s| {
                if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
                    "{id}"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        *by_path.entry(format!("{} {path}", r.method)).or_default() += 1;
    }
    let non_2xx = log
        .iter()
        .filter(|r| !(200..300).contains(&r.status))
        .count();
    let contacts = emu.state.contacts().len();
    let lists = emu.state.snapshot()["lists"].as_array().map_or(0, Vec::len);
    gw.stop().await?;
    emu.stop().await;

    let count = |k: &str| all.iter().filter(|(kind, _, _)| *kind == k).count() as u64;
    let events = all.len() as u64;
    println!(
        "    posted {events} events; phase 1 settled after {:.1} s, the exits after {:.1} s in all; emulator holds {contacts} contacts, {lists} lists",
        after_first.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "    {:<27} {:>6} {:>9} {:>11} {:>7} {:>5} {:>7}",
        "kind", "events", "delivered", "not handled", "skipped", "dead", "pending"
    );
    let mut kinds_json = serde_json::Map::new();
    for kind in KINDS {
        let e = ends.get(kind).copied().unwrap_or_default();
        println!(
            "    {kind:<27} {:>6} {:>9} {:>11} {:>7} {:>5} {:>7}",
            count(kind),
            e[0],
            e[1],
            e[2],
            e[3],
            e[4]
        );
        kinds_json.insert(
            kind.into(),
            json!({"events": count(kind), "delivered": e[0], "not_handled": e[1],
                   "skipped": e[2], "dead": e[3], "pending": e[4]}),
        );
    }
    println!(
        "    list memberships: {} sent, {} given up, {} pending",
        memberships.done, memberships.dead, memberships.pending
    );
    println!(
        "    Freshworks calls by endpoint ({} in all, {non_2xx} non-2xx):",
        log.len()
    );
    for (path, n) in &by_path {
        println!("      {n:>6}  {path}");
    }

    // Calls per event of each kind (calls attributed by endpoint; lookups apart).
    let delivered = |k: &str| ends.get(k).map_or(0, |e| e[0]);
    let identifies = count("identify");
    let tracks = count("track (rule)") + count("track (no rule)");
    let tracks_delivered = delivered("track (rule)") + delivered("track (no rule)");
    let groups = count("group");
    let groups_delivered = delivered("group");
    let changes = count("audience enter (identify)") + count("audience exit (track)");
    let changes_delivered =
        delivered("audience enter (identify)") + delivered("audience exit (track)");
    let c = |k: &str| calls.get(k).copied().unwrap_or(0);
    let rows: [(&str, &str, u64, u64); 4] = [
        ("identify", "identify", identifies, delivered("identify")),
        ("track", "track", tracks, tracks_delivered),
        ("group", "group", groups, groups_delivered),
        (
            "list membership change",
            "audience",
            changes,
            changes_delivered,
        ),
    ];
    println!(
        "    {:<24} {:>6} {:>9} {:>6} {:>10} {:>13} {:>18}",
        "kind", "events", "delivered", "calls", "calls/event", "calls/deliv.", "per-event integr."
    );
    let mut per_kind = serde_json::Map::new();
    for (label, key, n, d) in rows {
        let baseline = if key == "identify" { n } else { 2 * n };
        let status = if d == 0 {
            " (not handled by this build)"
        } else {
            ""
        };
        println!(
            "    {label:<24} {n:>6} {d:>9} {:>6} {:>10.4} {:>13.4} {:>18}{status}",
            c(key),
            ratio(c(key), n),
            ratio(c(key), d),
            baseline
        );
        per_kind.insert(
            label.into(),
            json!({"events": n, "delivered": d, "calls": c(key),
                   "calls_per_event": ratio(c(key), n), "calls_per_delivered": ratio(c(key), d),
                   "per_event_integration_calls": baseline}),
        );
    }
    let baseline_total = identifies + 2 * (events - identifies);
    println!(
        "    lookups by external_id: {} (for contacts written by bulk jobs, whose results carry no id); other calls: {}",
        c("lookup"),
        c("other")
    );
    println!(
        "    total: {} calls for {events} events = {:.4} per event; a per-event integration: {baseline_total} ({:.2} per event); ratio {:.3}",
        log.len(),
        ratio(log.len(), events),
        baseline_total as f64 / events as f64,
        log.len() as f64 / baseline_total as f64
    );
    let per_track = ratio(c("track"), tracks_delivered);
    let per_change = ratio(c("audience"), changes_delivered);
    let exit_calls = log.len() - calls_before_exits;
    println!(
        "    targets: per delivered track {per_track:.4} (<= {TARGET_PER_TRACK}: {}); per list membership change {per_change:.4} (<= {TARGET_PER_MEMBERSHIP}: {}); per group after the first per account: {} (<= {TARGET_PER_GROUP_AFTER_FIRST}: {}); the exit phase cost {exit_calls} calls for {} exits",
        if tracks_delivered == 0 {
            "not handled"
        } else {
            verdict(per_track <= TARGET_PER_TRACK)
        },
        if changes_delivered == 0 {
            "not handled"
        } else {
            verdict(per_change <= TARGET_PER_MEMBERSHIP)
        },
        if groups_delivered == 0 {
            "n/a".to_owned()
        } else {
            format!(
                "{:.4}",
                ratio(
                    c("group").saturating_sub(ACCOUNTS),
                    groups_delivered.saturating_sub(ACCOUNTS as u64)
                )
            )
        },
        if groups_delivered == 0 {
            "not handled"
        } else {
            verdict(
                ratio(
                    c("group").saturating_sub(ACCOUNTS),
                    groups_delivered.saturating_sub(ACCOUNTS as u64),
                ) <= TARGET_PER_GROUP_AFTER_FIRST,
            )
        },
        count("audience exit (track)")
    );
    Ok(json!({
        "mode": mode,
        "users": USERS,
        "events": events,
        "secs": elapsed.as_secs_f64(),
        "outcomes": kinds_json,
        "per_kind": per_kind,
        "calls": log.len(),
        "calls_by_endpoint": by_path,
        "lookups": c("lookup"),
        "non_2xx": non_2xx,
        "per_event_integration_calls": baseline_total,
        "memberships": {"done": memberships.done, "dead": memberships.dead, "pending": memberships.pending},
    }))
}
