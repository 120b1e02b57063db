//! The console's views over a large store (`cargo bench -p freshgate --bench console`).
//!
//! Seeds an SQLite store with 1,000,000 events (`--events=N`) of 100,000 contacts received over
//! the last 24 hours, each contact with identifies and tracks whose stored JSON comes out of the
//! real Segment parser, through `Store::append` like ingest (so every index and the per-minute
//! trigger are maintained as in production). Then, with SQL on the closed file, it settles them
//! as a day of traffic leaves them: 94.9 % delivered, 5 % still pending, 0.1 % dead letters
//! (the contact keys' pending counters recomputed to match). Then it times every view the API
//! and the console serve, in process (the same `Views` calls the handlers make, without HTTP),
//! `--runs=N` times each (default 30): p50, p99 and max per view. The searches and the trace
//! look for the identify nearest the middle of the store (its userId, its email upper-cased,
//! its messageId), so they find rows whatever `--events` is.
//!
//! The target is p99 ≤ 100 ms per view. Each view is an index range: none counts every event or
//! delivery. The seeded store is kept in `--dir=PATH` when given (reused when it exists).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use freshgate::admin::views::Views;
use freshgate::config::{Config, DestinationConfig};
use freshgate::pipeline::ingest::unix_ms;
use freshgate_core::fields::{FieldDef, FieldType};
use freshgate_core::segment::{
    Endpoint, EventType, ItemOutcome, Limits, format_timestamp, parse_tracking_request,
};
use freshgate_store::sqlite::{SqliteOptions, SqliteStore};
use freshgate_store::{
    AppendBatch, DeliveryFilter, DeliveryStatus, EventQuery, FieldMetadata, NewDelivery, NewEvent,
    Store,
};

const DEST: &str = "crm";
const BASE_URL: &str = "http://127.0.0.1:9/crm/sales/api";
const CONTACTS: usize = 100_000;

struct Args {
    events: usize,
    runs: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        events: 1_000_000,
        runs: 30,
        dir: None,
    };
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--events=") {
            a.events = v.parse().context("--events")?;
        } else if let Some(v) = arg.strip_prefix("--runs=") {
            a.runs = v.parse().context("--runs")?;
        } else if let Some(v) = arg.strip_prefix("--dir=") {
            a.dir = Some(PathBuf::from(v));
        }
    }
    Ok(a)
}

fn now_ms() -> i64 {
    freshgate::pipeline::now_ms()
}

/// The `i`-th seeded event, built as ingest builds it: a Segment request body through the real
/// parser (`parse_tracking_request`), so the stored raw JSON is what the trace view reads back.
/// Each contact gets a mix of identifies (2 in 5) and tracks.
fn event(i: usize, start: i64, span: i64, total: usize) -> Result<NewEvent> {
    let contact = i % CONTACTS;
    let user = format!("user-{contact:06}");
    let at = start + span * i64::try_from(i).unwrap_or(0) / i64::try_from(total).unwrap_or(1);
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)?;
    let message_id = format!("m-{i:07}");
    let identify = (i / CONTACTS + contact) % 5 < 2;
    let (kind, body) = if identify {
        (
            EventType::Identify,
            serde_json::json!({
                "userId": user, "messageId": message_id,
                "timestamp": format_timestamp(when),
                "context": {"library": {"name": "analytics-node", "version": "2.1.0"}},
                "traits": {"email": format!("{user}@example.com"), "firstName": "Bench",
                           "plan": "Pro", "favourite colour": "teal"},
            }),
        )
    } else {
        (
            EventType::Track,
            serde_json::json!({
                "userId": user, "messageId": message_id,
                "timestamp": format_timestamp(when),
                "context": {"library": {"name": "analytics-node", "version": "2.1.0"}},
                "event": "Order Completed", "properties": {"total": 42},
            }),
        )
    };
    let parsed = parse_tracking_request(
        Endpoint::Single(kind),
        &serde_json::to_vec(&body)?,
        when,
        &Limits::default(),
        &mut || message_id.clone(),
    )?;
    let Some(ItemOutcome::Accepted(ev)) = parsed.items.into_iter().next() else {
        anyhow::bail!("the parser refused seeded event {i}");
    };
    Ok(NewEvent {
        source: "web".into(),
        message_id: ev.message_id,
        event_type: ev.event_type.as_str().into(),
        contact_key: ev.contact_key,
        timestamp_ms: unix_ms(ev.timestamp),
        received_at_ms: unix_ms(ev.received_at),
        raw: ev.raw,
        email: ev.email,
        deliveries: vec![NewDelivery {
            destination: DEST.into(),
            skip_reason: None,
            skip_code: None,
        }],
    })
}

async fn seed(dir: &std::path::Path, total: usize) -> Result<()> {
    let path = dir.join("freshgate.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default())?);
    let end = now_ms();
    let span = 24 * 3_600_000 - 60_000;
    let start = end - span;
    let started = Instant::now();
    let chunk = 2_000;
    let mut next = 0;
    while next < total {
        // Eight appends in flight: the writer's group commit sees concurrent ingest.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            if next >= total {
                break;
            }
            let upto = (next + chunk).min(total);
            let events: Vec<NewEvent> = (next..upto)
                .map(|i| event(i, start, span, total))
                .collect::<Result<_>>()?;
            next = upto;
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                store
                    .append(AppendBatch {
                        events,
                        rejected: Vec::new(),
                        dedup_window_ms: 7 * 24 * 3_600_000,
                    })
                    .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
    }
    let fields = vec![
        FieldDef::new("first_name", "First name", FieldType::Text, &[]),
        FieldDef::new("last_name", "Last name", FieldType::Text, &[]),
        FieldDef::new("cf_plan", "Plan", FieldType::Dropdown, &["Free", "Pro"]),
        FieldDef::new(
            "cf_favourite_color",
            "Favourite color",
            FieldType::Text,
            &[],
        ),
    ];
    store
        .put_field_metadata(
            BASE_URL,
            FieldMetadata {
                fetched_at_ms: end,
                body: serde_json::to_vec(&fields)?,
            },
        )
        .await?;
    for k in 0..500 {
        store.record_calls(BASE_URL, start + k * 170_000, 7).await?;
    }
    store.close().await;
    eprintln!(
        "seeded {total} events in {:.1} s ({:.0} events/s)",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );
    // A day of delivery, settled in bulk (the store's own API would take as long as the day).
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(&format!(
        "BEGIN;
         UPDATE deliveries SET status = 'delivered', attempts = 1, finished_ms = {end}
           WHERE id % 1000 != 0 AND id % 20 != 1;
         UPDATE deliveries SET status = 'dead', attempts = 1, finished_ms = {end},
                reason = '400: Mobile number is invalid' WHERE id % 1000 = 0;
         UPDATE contact_keys SET pending = (SELECT count(*) FROM deliveries d
            WHERE d.destination = contact_keys.destination
              AND d.contact_key = contact_keys.contact_key AND d.status = 'pending');
         DELETE FROM contact_keys WHERE pending = 0;
         COMMIT;
         ANALYZE;"
    ))?;
    Ok(())
}

/// A page of 50 events with the conditions `f` sets.
fn page(f: impl FnOnce(&mut EventQuery)) -> EventQuery {
    let mut q = EventQuery {
        limit: 50,
        ..EventQuery::default()
    };
    f(&mut q);
    q
}

struct Timing {
    name: &'static str,
    rows: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

async fn time<F, Fut>(name: &'static str, runs: usize, mut f: F) -> Result<Timing>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let mut ms = Vec::with_capacity(runs);
    let mut rows = 0;
    for _ in 0..runs {
        let t = Instant::now();
        rows = f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Ok(Timing {
        name,
        rows,
        p50: at(0.5),
        p99: at(0.99),
        max: ms[ms.len() - 1],
    })
}

#[allow(clippy::too_many_lines)]
async fn run(args: Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    if !dir.join("freshgate.db").exists() {
        seed(&dir, args.events).await?;
    }
    // As `serve` opens it (the console is served by the process that takes ingest): the writer
    // reads its index tail at open, so the readers' lookups in the tail use its view.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
        &dir.join("freshgate.db"),
        SqliteOptions {
            build_dedup_on_open: true,
            ..SqliteOptions::default()
        },
    )?);
    let mut config = Config::default();
    config.destinations.push(DestinationConfig {
        name: DEST.into(),
        base_url: Some(BASE_URL.into()),
        ..DestinationConfig::default()
    });
    let views = Views::new(Arc::clone(&store), Arc::new(config), Vec::new());
    let v = &views;
    let n = args.runs;
    // The subject of the searches and the trace, taken from the seeded data: the identify
    // nearest the middle of the store (its contact has identifies and tracks).
    let middle = {
        let newest = v.events(&page(|_| {})).await?;
        newest.events.first().map_or(0, |e| e.event_id) / 2
    };
    let subject = {
        let mut q = page(|q| q.event_type = Some("identify".into()));
        q.before_id = Some(middle + 1);
        q.limit = 1;
        v.events(&q)
            .await?
            .events
            .into_iter()
            .next()
            .context("no identify in the store")?
    };
    let subject_user = subject.contact_key.clone();
    let subject_email = serde_json::from_str::<serde_json::Value>(&subject.raw)?
        .pointer("/traits/email")
        .and_then(serde_json::Value::as_str)
        .context("the subject identify has no traits.email")?
        .to_uppercase();
    let subject_message = subject.message_id.clone();
    let trace = v.trace(&subject_message).await?;
    anyhow::ensure!(
        !trace.is_empty() && trace.iter().all(|t| !t.mapping.is_empty()),
        "the trace of {subject_message} has no mapping report: its raw event did not parse"
    );
    eprintln!("subject: userId {subject_user}, email {subject_email}, messageId {subject_message}");
    let (subject_user, subject_email, subject_message) =
        (&subject_user, &subject_email, &subject_message);
    let mut out = Vec::new();
    out.push(
        time("overview (charts, backlog, quota)", n, || async {
            Ok(v.overview(now_ms()).await?.ingest_per_minute.len())
        })
        .await?,
    );
    out.push(
        time("queue stats (backlog, pauses, quota)", n, || async {
            Ok(v.status(now_ms()).await?.len())
        })
        .await?,
    );
    out.push(
        time("queue stats: outcomes (counters)", n, || async {
            Ok(v.outcomes().await?.len())
        })
        .await?,
    );
    out.push(
        time("queue stats: per kind and state (counters)", n, || async {
            Ok(store.kind_counts().await?.len())
        })
        .await?,
    );
    out.push(
        time("events: newest page", n, || async {
            Ok(v.events(&page(|_| {})).await?.events.len())
        })
        .await?,
    );
    let first = v.events(&page(|_| {})).await?;
    let before = first.next_before;
    out.push(
        time("events: 2nd page (keyset)", n, || async move {
            let mut q = page(|_| {});
            q.before_id = before;
            Ok(v.events(&q).await?.events.len())
        })
        .await?,
    );
    out.push(
        time("events: by userId", n, || async {
            Ok(
                v.events(&page(|q| q.contact_key = Some(subject_user.clone())))
                    .await?
                    .events
                    .len(),
            )
        })
        .await?,
    );
    out.push(
        time("events: by email", n, || async {
            Ok(v.events(&page(|q| q.email = Some(subject_email.clone())))
                .await?
                .events
                .len())
        })
        .await?,
    );
    out.push(
        time("events: by messageId", n, || async {
            Ok(
                v.events(&page(|q| q.message_id = Some(subject_message.clone())))
                    .await?
                    .events
                    .len(),
            )
        })
        .await?,
    );
    out.push(
        time("events: type = identify", n, || async {
            Ok(v.events(&page(|q| q.event_type = Some("identify".into())))
                .await?
                .events
                .len())
        })
        .await?,
    );
    out.push(
        time("events: status = pending", n, || async {
            Ok(
                v.events(&page(|q| q.status = Some(DeliveryStatus::Pending)))
                    .await?
                    .events
                    .len(),
            )
        })
        .await?,
    );
    out.push(
        time("events: status = dead", n, || async {
            Ok(v.events(&page(|q| q.status = Some(DeliveryStatus::Dead)))
                .await?
                .events
                .len())
        })
        .await?,
    );
    let noon = now_ms() - 12 * 3_600_000;
    out.push(
        time("events: an hour 12 h ago", n, || async move {
            let mut q = page(|_| {});
            q.since_ms = Some(noon);
            q.until_ms = Some(noon + 3_600_000);
            Ok(v.events(&q).await?.events.len())
        })
        .await?,
    );
    let hour = page(|q| {
        q.since_ms = Some(noon);
        q.until_ms = Some(noon + 3_600_000);
    });
    let hour_next = v.events(&hour).await?.next_before;
    out.push(
        time("events: that hour, 2nd page (keyset)", n, || {
            let mut q = hour.clone();
            q.before_id = hour_next;
            async move { Ok(v.events(&q).await?.events.len()) }
        })
        .await?,
    );
    out.push(
        time("event trace", n, || async {
            Ok(v.trace(subject_message).await?.len())
        })
        .await?,
    );
    out.push(
        time("dead letters (100)", n, || async {
            let f = DeliveryFilter {
                limit: Some(100),
                ..DeliveryFilter::default()
            };
            Ok(v.dead_letters(&f).await?.len())
        })
        .await?,
    );
    out.push(
        time("dead letters: count matching", n, || async {
            Ok(usize::try_from(v.count_dead(&DeliveryFilter::default()).await?).unwrap_or(0))
        })
        .await?,
    );
    out.push(
        time("rejected input (100)", n, || async {
            Ok(v.rejected(100).await?.len())
        })
        .await?,
    );
    out.push(
        time("unmapped traits (1,000 identifies)", n, || async {
            Ok(v.unmapped_traits().await?.len())
        })
        .await?,
    );
    out.push(
        time("destinations", n, || async {
            Ok(v.destinations().await?.len())
        })
        .await?,
    );
    store.close().await;
    println!(
        "console views over {} events ({} runs each, in process, SQLite):",
        args.events, n
    );
    println!(
        "{:<38} {:>6} {:>9} {:>9} {:>9}",
        "view", "rows", "p50 ms", "p99 ms", "max ms"
    );
    for t in &out {
        println!(
            "{:<38} {:>6} {:>9.2} {:>9.2} {:>9.2}{}",
            t.name,
            t.rows,
            t.p50,
            t.p99,
            t.max,
            if t.p99 > 100.0 { "  > 100 ms" } else { "" }
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}
