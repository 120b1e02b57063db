//! Operator commands that read or repair the queue: `queue stats`, `dlq list|show|replay`,
//! `events show|rejected`, `replay`, `config check`, `doctor`, `destinations test`.
//! Every one of them prints for people by default and JSON with `--json`.

use std::process::ExitCode;

use clap::Args;
use freshgate_store::{DeliveryFilter, EventTrace};
use serde_json::json;

use super::{ConfigArgs, load_config, print_json, resolve_config};
use crate::config::{self, ProcessEnv};
use crate::pipeline::ingest::NO_DESTINATION_WARNING;
use crate::pipeline::late::{LateRouting, route_stored_events};
use crate::pipeline::now_ms;

/// `--json`
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON on stdout (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// `queue stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// Filters shared by `dlq list` and `dlq replay`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this contact (userId, else anonymousId).
    #[arg(long)]
    pub contact: Option<String>,
    /// Only dead letters whose reason contains this text.
    #[arg(long)]
    pub reason: Option<String>,
    /// At most this many (list).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

impl DlqArgs {
    fn filter(&self) -> DeliveryFilter {
        DeliveryFilter {
            destination: self.destination.clone(),
            source: self.source.clone(),
            contact_key: self.contact.clone(),
            reason_contains: self.reason.clone(),
            limit: Some(self.limit),
            ..DeliveryFilter::default()
        }
    }
}

/// `events show` / `dlq show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The event's Segment messageId.
    pub message_id: String,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `events rejected`
#[derive(Debug, Args)]
pub struct RejectedArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Events received at or after this time (RFC 3339, e.g. 2026-11-25T00:00:00Z).
    #[arg(long)]
    pub since: String,
    /// Events received before this time (RFC 3339); default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Resend even to contacts whose shadow says nothing changed (they may have been deleted
    /// or merged in the CRM); a replayed event still never overwrites a newer value.
    #[arg(long)]
    pub force: bool,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `config check` / `destinations test`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

async fn store_for(
    args: &ConfigArgs,
) -> anyhow::Result<std::sync::Arc<dyn freshgate_store::Store>> {
    let (cfg, _) = load_config(args)?;
    super::open_configured_store(&cfg).await
}

/// `migrate`
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn migrate(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (cfg, _) = load_config(&args.config)?;
    let backend = match cfg.store.kind {
        config::StoreKind::Sqlite => "sqlite",
        config::StoreKind::Postgres => "postgres",
    };
    #[cfg(feature = "postgres")]
    if cfg.store.kind == config::StoreKind::Postgres {
        let url = super::database_url(&cfg)?;
        freshgate_store::postgres::migrate(&url).await?;
    }
    // SQLite migrates when opened; opening also proves the file is usable.
    let store = super::open_configured_store(&cfg).await?;
    store.close().await;
    if args.out.json {
        print_json(&json!({ "ok": true, "backend": backend }))?;
    } else {
        println!("{backend} store is at the current schema");
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(|m| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000_000).ok())
        .map_or_else(|| "-".to_owned(), freshgate_core::segment::format_timestamp)
}

fn parse_time(s: &str, flag: &str) -> anyhow::Result<i64> {
    freshgate_core::segment::parse_timestamp(s)
        .map(crate::pipeline::ingest::unix_ms)
        .ok_or_else(|| {
            anyhow::anyhow!("{flag}: {s:?} is not a time; use RFC 3339, e.g. 2026-11-25T00:00:00Z")
        })
}

/// `queue stats`
///
/// # Errors
/// When the store cannot be read.
pub async fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let (cfg, _) = load_config(&args.config)?;
    let store = super::open_configured_store(&cfg).await?;
    let stats = store.stats().await?;
    let now = now_ms();
    let mut budgets = Vec::new();
    for d in &cfg.destinations {
        let account = match (&d.base_url, &d.domain) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(domain)) => {
                freshworks_client::base_url_for_domain(domain).unwrap_or_default()
            }
            (None, None) => continue,
        };
        let hour = store.calls_since(&account, now - 3_600_000).await?;
        let minute = store.calls_since(&account, now - 60_000).await?;
        let hourly = u64::from(d.effective_hourly_limit());
        let per_minute = u64::from(d.minute_limit);
        budgets.push(json!({
            "destination": d.name,
            "calls_last_hour": hour,
            "calls_last_minute": minute,
            "left_this_hour": hourly.saturating_sub(hour),
            "left_this_minute": per_minute.saturating_sub(minute),
        }));
    }
    store.close().await;
    let no_destination = cfg
        .destinations
        .is_empty()
        .then_some(NO_DESTINATION_WARNING);
    if args.out.json {
        print_json(&json!({
            "events": stats.events,
            "rejected": stats.rejected,
            "destinations": stats.destinations.iter().map(|d| json!({
                "destination": d.destination,
                "pending": d.pending,
                "pending_contacts": d.pending_contacts,
                "delivered": d.delivered,
                "skipped": d.skipped,
                "dead": d.dead,
                "oldest_pending_age_seconds": d.oldest_pending_received_ms.map(|t| (now - t) / 1000),
                "next_attempt": fmt_ms(d.next_attempt_ms),
            })).collect::<Vec<_>>(),
            "budgets": budgets,
            "warnings": no_destination.iter().collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "events stored: {}   rejected inputs: {}",
            stats.events, stats.rejected
        );
        if cfg.destinations.is_empty() {
            println!("WARNING: {NO_DESTINATION_WARNING}");
        }
        for b in &budgets {
            println!(
                "{}: Freshworks calls {} in the last hour ({} left), {} in the last minute ({} left)",
                b["destination"].as_str().unwrap_or(""),
                b["calls_last_hour"],
                b["left_this_hour"],
                b["calls_last_minute"],
                b["left_this_minute"]
            );
        }
        for d in &stats.destinations {
            println!(
                "{}: pending {} ({} contacts), delivered {}, skipped {}, dead {}, oldest pending {}, next attempt {}",
                d.destination,
                d.pending,
                d.pending_contacts,
                d.delivered,
                d.skipped,
                d.dead,
                d.oldest_pending_received_ms
                    .map_or_else(|| "-".to_owned(), |t| format!("{}s old", (now - t) / 1000)),
                fmt_ms(d.next_attempt_ms)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq list`
///
/// # Errors
/// When the store cannot be read.
pub async fn dlq_list(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let store = store_for(&args.config).await?;
    let dead = store.dead_letters(&args.filter()).await?;
    store.close().await;
    if args.out.json {
        print_json(&dead)?;
    } else if dead.is_empty() {
        println!("no dead letters");
    } else {
        for d in &dead {
            println!(
                "{}  {}  {}  {} {}  after {} attempts: {}",
                fmt_ms(Some(d.dead_at_ms)),
                d.destination,
                d.message_id,
                d.event_type,
                d.contact_key,
                d.attempts,
                d.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq replay`
///
/// # Errors
/// When the store cannot be written.
pub async fn dlq_replay(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let store = store_for(&args.config).await?;
    let mut filter = args.filter();
    filter.limit = None;
    let n = store.requeue_dead(&filter, now_ms()).await?;
    store.close().await;
    if args.out.json {
        print_json(&json!({ "requeued": n }))?;
    } else {
        println!("{n} dead letters put back in the queue; a running gateway delivers them now");
    }
    Ok(ExitCode::SUCCESS)
}

/// `events show` / `dlq show`
///
/// # Errors
/// When the store cannot be read; exit code 1 when the event is unknown.
pub async fn show(args: ShowArgs, dead_only: bool) -> anyhow::Result<ExitCode> {
    let store = store_for(&args.config).await?;
    let mut traces = store.event_traces(&args.message_id).await?;
    store.close().await;
    if dead_only {
        for t in &mut traces {
            t.deliveries
                .retain(|d| d.status == freshgate_store::DeliveryStatus::Dead);
        }
        traces.retain(|t| !t.deliveries.is_empty());
    }
    if args.out.json {
        print_json(&traces)?;
    } else if traces.is_empty() {
        println!("no event with messageId {:?}", args.message_id);
    } else {
        for t in &traces {
            print_trace(t);
        }
    }
    Ok(if traces.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_trace(t: &EventTrace) {
    println!(
        "{} {} from {} for {}: timestamp {}, received {}",
        t.event_type,
        t.message_id,
        t.source,
        t.contact_key,
        fmt_ms(Some(t.timestamp_ms)),
        fmt_ms(Some(t.received_at_ms))
    );
    println!("  event: {}", t.raw);
    for d in &t.deliveries {
        println!(
            "  -> {}: {}{}",
            d.destination,
            d.status.as_str(),
            d.reason
                .as_deref()
                .map_or_else(String::new, |r| format!(" ({r})"))
        );
        if let Some(next) = d.next_attempt_ms {
            println!("     next attempt {}", fmt_ms(Some(next)));
        }
        for a in &d.attempts {
            println!(
                "     {} {} -> {}: {}",
                fmt_ms(Some(a.at_ms)),
                a.request_line,
                a.status
                    .map_or_else(|| "no response".to_owned(), |s| s.to_string()),
                a.outcome
            );
            if let Some(b) = &a.request_body {
                println!("       sent: {b}");
            }
            if let Some(b) = &a.response_body {
                println!("       got:  {b}");
            }
        }
    }
}

/// `events rejected`
///
/// # Errors
/// When the store cannot be read.
pub async fn rejected(args: RejectedArgs) -> anyhow::Result<ExitCode> {
    let store = store_for(&args.config).await?;
    let rows = store.rejected(args.limit).await?;
    store.close().await;
    if args.out.json {
        print_json(&rows)?;
    } else {
        for r in &rows {
            println!(
                "{}  {}  {}\n    {}",
                fmt_ms(Some(r.received_at_ms)),
                r.source.as_deref().unwrap_or("-"),
                r.reason,
                r.raw
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `replay`
///
/// # Errors
/// Bad times, or when the store cannot be written.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let since = parse_time(&args.since, "--since")?;
    let until = match &args.until {
        Some(u) => parse_time(u, "--until")?,
        None => now_ms() + 1,
    };
    let (cfg, _) = load_config(&args.config)?;
    let store = super::open_configured_store(&cfg).await?;
    let filter = DeliveryFilter {
        destination: args.destination.clone(),
        since_ms: Some(since),
        until_ms: Some(until),
        ..DeliveryFilter::default()
    };
    let result = replay_in(store.as_ref(), &cfg, &args, &filter, since, until).await;
    store.close().await;
    let (n, late, forced) = result?;
    if args.out.json {
        print_json(&json!({
            "requeued": n,
            "created": late.created,
            "skipped": late.skipped,
            "forced_contacts": forced,
        }))?;
    } else {
        println!("{n} deliveries put back in the queue");
        println!(
            "{} new deliveries for events stored before their destination existed ({} of them skipped by routing)",
            late.created + late.skipped,
            late.skipped
        );
        if args.force {
            println!("{forced} contacts are written even if unchanged");
        } else {
            println!(
                "unchanged contacts cost no call (the shadow skips them; --force resends them)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The store work of `replay`: (deliveries put back, deliveries created, contacts forced).
async fn replay_in(
    store: &dyn freshgate_store::Store,
    cfg: &config::Config,
    args: &ReplayArgs,
    filter: &DeliveryFilter,
    since: i64,
    until: i64,
) -> anyhow::Result<(u64, LateRouting, u64)> {
    let forced = if args.force {
        super::shadow::unconfirm(store, filter).await?
    } else {
        0
    };
    let requeued = store.replay(filter, now_ms()).await?;
    let mut late = LateRouting::default();
    for d in &cfg.destinations {
        if args
            .destination
            .as_ref()
            .is_some_and(|name| *name != d.name)
        {
            continue;
        }
        let added = route_stored_events(store, d, since, until, now_ms()).await?;
        late.created += added.created;
        late.skipped += added.skipped;
    }
    Ok((requeued, late, forced))
}

/// `config check`
///
/// # Errors
/// Never; problems are printed and give exit code 1.
pub fn config_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let result = load_config(&args.config)
        .and_then(|(cfg, origin)| config::resolve(cfg, &origin, &ProcessEnv));
    match result {
        Ok(resolved) => {
            if args.out.json {
                print_json(&json!({
                    "ok": true,
                    "file": resolved.origin,
                    "sources": resolved.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "destinations": resolved.destinations.iter().map(|d| json!({
                        "name": d.config.name, "base_url": d.base_url,
                        "hourly_limit": d.config.effective_hourly_limit(),
                        "minute_limit": d.config.minute_limit,
                    })).collect::<Vec<_>>(),
                    "problems": [],
                }))?;
            } else {
                println!("{}: ok", resolved.origin);
                print!("{}", config::redacted_toml(&resolved.config));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if args.out.json {
                print_json(&json!({ "ok": false, "problems": e.problems }))?;
            } else {
                eprintln!("{e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `doctor`
///
/// # Errors
/// Never; problems give exit code 1.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let config_ok = match resolve_config(&args.config) {
        Ok(_) => true,
        Err(e) => {
            problems.extend(e.problems.iter().map(ToString::to_string));
            false
        }
    };
    let store_problems = match store_for(&args.config).await {
        Ok(store) => {
            let r = store.integrity_check().await;
            store.close().await;
            match r {
                Ok(p) => p,
                Err(e) => vec![format!("integrity check failed: {e}")],
            }
        }
        Err(e) => vec![format!("{e:#}")],
    };
    problems.extend(store_problems.iter().map(|p| format!("store: {p}")));
    if args.out.json {
        print_json(&json!({
            "ok": problems.is_empty(),
            "config_ok": config_ok,
            "store_ok": store_problems.is_empty(),
            "problems": problems,
        }))?;
    } else if problems.is_empty() {
        println!("configuration: ok\nstore: integrity ok");
    } else {
        for p in &problems {
            println!("problem: {p}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `destinations test`: one `GET /settings/contacts/fields` per destination. The call is
/// entered in the store's quota ledger like any other (it spends the account's hour too), and
/// the field list it fetched is kept for the gateway, so the test costs the gateway nothing.
///
/// # Errors
/// Configuration problems.
pub async fn destinations_test(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let resolved = resolve_config(&args.config)?;
    // Without the store the test still answers; only the bookkeeping is lost.
    let store = match super::open_configured_store(&resolved.config).await {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!(error = %e, "the call will not be entered in the quota ledger");
            None
        }
    };
    let mut results = Vec::new();
    for d in &resolved.destinations {
        let client = crate::pipeline::deliver::client_for(d)?;
        let answer = client.contact_fields().await;
        if let Some(store) = &store {
            let at = crate::pipeline::clock::now_ms();
            if let Err(e) = store.record_calls(&d.base_url, at, 1).await {
                tracing::warn!(error = %e, "cannot enter the call in the quota ledger");
            }
            if let Ok(x) = &answer {
                crate::pipeline::fields::remember(store.as_ref(), &d.base_url, &x.body.fields, at)
                    .await;
            }
        }
        let (ok, message) = match answer {
            Ok(x) => (
                true,
                format!(
                    "ok: the key works; the account has {} contact fields ({} custom)",
                    x.body.fields.len(),
                    x.body.fields.iter().filter(|f| f.is_custom()).count()
                ),
            ),
            Err(e) => (false, explain(&e)),
        };
        results.push(json!({"destination": d.config.name, "base_url": d.base_url, "ok": ok, "message": message}));
    }
    if let Some(store) = store {
        store.close().await;
    }
    let all_ok = results.iter().all(|r| r["ok"] == true);
    if args.out.json {
        print_json(&results)?;
    } else {
        for r in &results {
            println!(
                "{} ({}): {}",
                r["destination"].as_str().unwrap_or(""),
                r["base_url"].as_str().unwrap_or(""),
                r["message"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A Freshworks error in words an operator can act on.
fn explain(e: &freshworks_client::FreshworksError) -> String {
    match e.status() {
        Some(401) => "the API key was refused (401): copy it again from Profile Settings > API Settings, and check the bundle alias".into(),
        Some(403) => "the key's user lacks permission (403): use the key of a user allowed to manage contacts".into(),
        Some(404) => "not found (404): the domain or base_url does not point to a Freshworks CRM account (expected https://<alias>.myfreshworks.com/crm/sales/api)".into(),
        Some(429) => "the account's API quota is spent right now (429); the key itself may be fine".into(),
        Some(s) => format!("unexpected answer {s}: {e}"),
        None => format!("no answer: {e} (check the domain, DNS and network)"),
    }
}
