//! Operator commands that read or repair the queue: `queue stats`, `dlq list|show|replay`,
//! `events list|show|rejected`, `replay`, `config check`, `doctor`, `destinations test`,
//! `migrate`. Each one asks [`crate::admin::views`] (the console's query layer) and prints the
//! answer for people, or as JSON with `--json`. None of them creates a store, but `migrate`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use freshgate_store::{DeliveryFilter, DeliveryStatus, EventQuery, Store};
use serde::Serialize;

use super::{ConfigArgs, StoreLocation, load_config, print_json, resolve_config};
use crate::admin::api::{parse_status, parse_time};
use crate::admin::views::{self, DestinationStatus, TraceView, TraitOutcome, Views};
use crate::config::{self, ProcessEnv};
use crate::pipeline::late::{LateRouting, Replayed, replay_finished, route_stored_events};
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
    /// Only dead letters with this reason code: conflict (another contact holds the email or
    /// the userId), refused (Freshworks refused the data), retry_horizon (retried too long),
    /// unreadable (the stored event cannot be read), unknown_name (a rule's activity type or
    /// lifecycle stage does not exist in the account), no_owner (no owner for activities).
    #[arg(long, value_name = "CODE", value_parser = reason_code)]
    pub reason_code: Option<String>,
    /// At most this many (list).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// A dead-letter reason code given on the command line, checked.
fn reason_code(code: &str) -> Result<String, String> {
    freshgate_core::reason::DeadReason::from_code(code)
        .map(|r| r.code().to_owned())
        .ok_or_else(|| {
            let codes: Vec<&str> = freshgate_core::reason::DeadReason::ALL
                .iter()
                .map(|r| r.code())
                .collect();
            format!("unknown reason code {code:?}: one of {}", codes.join(", "))
        })
}

impl DlqArgs {
    fn filter(&self) -> DeliveryFilter {
        DeliveryFilter {
            destination: self.destination.clone(),
            source: self.source.clone(),
            contact_key: self.contact.clone(),
            reason_contains: self.reason.clone(),
            reason_code: self.reason_code.clone(),
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
    /// The event's Segment messageId (find it with `freshgate events list`).
    pub message_id: String,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `events list`: the console's event search.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only this contact (userId, else anonymousId).
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of the contacts an identify gave this email (case-insensitive).
    #[arg(long)]
    pub email: Option<String>,
    /// Only this event type (identify, track, page, screen, group, alias).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events with a delivery in this state: pending, delivered, skipped, dead.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only events received at or after this time (RFC 3339, e.g. 2026-11-25T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events received before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Page: the events after this one in the listing, newest first (the `next_before` of the
    /// previous page; with --since/--until the order is by receive time).
    #[arg(long)]
    pub before: Option<i64>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
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
    /// Only deliveries that ended with this reason code, e.g. no_rule (tracks no rule took,
    /// after adding one), not_handled, no_identify, or a dead-letter code.
    #[arg(long, value_name = "CODE")]
    pub reason_code: Option<String>,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `config check` / `destinations test` / `migrate` / `doctor`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// The configuration, the store (only if it exists) and the views over both.
async fn views_for(args: &ConfigArgs) -> anyhow::Result<(Arc<dyn Store>, Views)> {
    let (cfg, _) = load_config(args)?;
    let store = super::open_existing_store(&cfg).await?;
    let views = Views::new(Arc::clone(&store), Arc::new(cfg), Vec::new());
    Ok((store, views))
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(|m| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000_000).ok())
        .map_or_else(|| "-".to_owned(), freshgate_core::segment::format_timestamp)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `migrate`
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn migrate(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (cfg, _) = load_config(&args.config)?;
    let location = StoreLocation::of(&cfg);
    let existed = location.exists();
    #[cfg(feature = "postgres")]
    if cfg.store.kind == config::StoreKind::Postgres {
        let url = super::database_url(&cfg)?;
        freshgate_store::postgres::migrate(&url).await?;
    }
    // SQLite migrates when opened; opening also proves the file is usable.
    let store = super::open_configured_store(&cfg).await?;
    store.close().await;
    #[derive(Serialize)]
    struct Migrated {
        ok: bool,
        backend: &'static str,
        store: String,
        created: bool,
    }
    let out = Migrated {
        ok: true,
        backend: location.backend(),
        store: location.to_string(),
        created: !existed,
    };
    if args.out.json {
        print_json(&out)?;
    } else if out.created {
        println!("created a new {} store at {location}", out.backend);
    } else {
        println!(
            "{} store at {location} is at the current schema",
            out.backend
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `queue stats`
///
/// # Errors
/// When there is no store or it cannot be read.
pub async fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let (store, views) = views_for(&args.config).await?;
    let now = now_ms();
    let status = views.status(now).await;
    let outcomes = views.outcomes().await;
    let unmapped = views.unmapped_traits().await;
    let kinds = store.kind_counts().await;
    store.close().await;
    let (status, outcomes, unmapped, kinds) = (status?, outcomes?, unmapped?, kinds?);
    if args.out.json {
        #[derive(Serialize)]
        struct Stats<'a> {
            destinations: &'a [DestinationStatus],
            /// Outcomes per destination over the kept deliveries (each counts, also one a
            /// replay has reopened since).
            outcomes: &'a [freshgate_store::DestinationStats],
            /// Trait keys that matched no field, most often seen first (from the store).
            unmapped_traits: &'a [views::UnmappedTrait],
            /// Deliveries per destination, call type and state.
            kinds: &'a [freshgate_store::KindCount],
            /// Set-up problems an operator must know (no destination configured).
            warnings: Vec<&'static str>,
        }
        print_json(&Stats {
            destinations: &status,
            outcomes: &outcomes,
            unmapped_traits: &unmapped,
            kinds: &kinds,
            warnings: views.warnings(),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    for warning in views.warnings() {
        println!("WARNING: {warning}");
    }
    if status.is_empty() {
        println!("no destination is configured and the store holds no deliveries");
    }
    for d in &status {
        print_status(d, now);
        if let Some(o) = outcomes.iter().find(|o| o.destination == d.destination) {
            println!(
                "  outcomes kept: delivered {}, skipped {}, dead-lettered {}; {} put back by replay",
                o.delivered, o.skipped, o.dead_lettered, o.reopened
            );
        }
        print_kinds(&d.destination, &kinds);
        let keys: Vec<String> = unmapped
            .iter()
            .filter(|t| t.destination == d.destination)
            .map(|t| format!("{} ({})", t.key, t.count))
            .collect();
        if !keys.is_empty() {
            println!(
                "  unmapped trait keys: {}{}",
                keys.iter()
                    .take(UNMAPPED_SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if keys.len() > UNMAPPED_SHOWN {
                    format!(
                        " and {} more (all in `queue stats --json` and the console)",
                        keys.len() - UNMAPPED_SHOWN
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per call type of a destination: how many deliveries are in each state.
fn print_kinds(destination: &str, kinds: &[freshgate_store::KindCount]) {
    let mut types: Vec<&str> = kinds
        .iter()
        .filter(|k| k.destination == destination)
        .map(|k| k.event_type.as_str())
        .collect();
    types.dedup();
    for t in types {
        let states: Vec<String> = kinds
            .iter()
            .filter(|k| k.destination == destination && k.event_type == t)
            .map(|k| format!("{} {}", k.count, k.status.as_str()))
            .collect();
        println!("  {t}: {}", states.join(", "));
    }
}

/// Unmapped trait keys `queue stats` names per destination; the console lists them all.
const UNMAPPED_SHOWN: usize = 5;

fn print_status(d: &DestinationStatus, now: i64) {
    println!(
        "{}: pending {} ({}), dead {}, oldest pending {}, next attempt {}",
        d.destination,
        d.pending,
        plural(d.pending_contacts, "contact", "contacts"),
        d.dead,
        d.oldest_pending_age_secs
            .map_or_else(|| "-".to_owned(), |s| format!("{s}s old")),
        d.next_attempt_ms.map_or_else(
            || "-".to_owned(),
            |t| format!(
                "{} (in {}s)",
                fmt_ms(Some(t)),
                ((t - now).max(0) + 999) / 1000
            )
        ),
    );
    if !d.kinds.is_empty() {
        let kinds: Vec<String> = d
            .kinds
            .iter()
            .map(|k| {
                format!(
                    "{} {}{}",
                    k.event_type,
                    k.pending,
                    k.oldest_pending_age_secs
                        .map_or_else(String::new, |s| format!(" (oldest {s}s old)"))
                )
            })
            .collect();
        println!("  pending by kind: {}", kinds.join(", "));
    }
    if let Some(p) = &d.paused {
        println!(
            "  PAUSED since {}: {}; next probe {}",
            fmt_ms(Some(p.since_ms)),
            p.reason,
            fmt_ms(Some(p.next_probe_ms))
        );
    }
    if let Some(b) = &d.budget {
        println!(
            "  quota: {} left this hour ({} spent of {} = {} x headroom {}), {} left this minute ({} spent of {})",
            b.left_this_hour,
            b.calls_last_hour,
            b.hour_cap,
            b.hourly_limit,
            b.headroom,
            b.left_this_minute,
            b.calls_last_minute,
            b.minute_cap
        );
    }
}

/// `dlq list`
///
/// # Errors
/// When there is no store or it cannot be read.
pub async fn dlq_list(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let (store, views) = views_for(&args.config).await?;
    let dead = views.dead_letters(&args.filter()).await;
    store.close().await;
    let dead = dead?;
    if args.out.json {
        print_json(&dead)?;
    } else if dead.is_empty() {
        println!("no dead letters");
    } else {
        for d in &dead {
            println!(
                "{}  {}  {}  {} {}  after {}: {}{}",
                fmt_ms(Some(d.dead_at_ms)),
                d.destination,
                d.message_id,
                d.event_type,
                d.contact_key,
                plural(u64::from(d.attempts), "attempt", "attempts"),
                d.reason_code
                    .as_deref()
                    .map_or_else(String::new, |c| format!("[{c}] ")),
                d.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq replay`
///
/// # Errors
/// When there is no store or it cannot be written.
pub async fn dlq_replay(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let (store, views) = views_for(&args.config).await?;
    let n = views.replay_dead(&args.filter(), now_ms()).await;
    store.close().await;
    let n = n?;
    if args.out.json {
        #[derive(Serialize)]
        struct Requeued {
            requeued: u64,
        }
        print_json(&Requeued { requeued: n })?;
    } else {
        println!(
            "{} put back in the queue; a running gateway delivers them now",
            plural(n, "dead letter", "dead letters")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `events show` / `dlq show`
///
/// # Errors
/// When there is no store or it cannot be read; exit code 1 when the event is unknown (or, for
/// `dlq show`, not dead).
pub async fn show(args: ShowArgs, dead_only: bool) -> anyhow::Result<ExitCode> {
    let (store, views) = views_for(&args.config).await?;
    let traces = views.trace(&args.message_id).await;
    store.close().await;
    let mut traces = traces?;
    if traces.is_empty() {
        if args.out.json {
            print_json(&traces)?;
        }
        eprintln!(
            "no stored event has messageId {:?} (find events with `freshgate events list`; delivered events are pruned after server.retention_hours)",
            args.message_id
        );
        return Ok(ExitCode::FAILURE);
    }
    if dead_only {
        let states: Vec<String> = traces
            .iter()
            .flat_map(|t| &t.event.deliveries)
            .map(|d| format!("{} {}", d.destination, d.status.as_str()))
            .collect();
        for t in &mut traces {
            t.event
                .deliveries
                .retain(|d| d.status == DeliveryStatus::Dead);
        }
        traces.retain(|t| !t.event.deliveries.is_empty());
        if traces.is_empty() {
            if args.out.json {
                print_json(&traces)?;
            }
            eprintln!(
                "event {:?} has no dead letter: {} (see `freshgate events show {}`)",
                args.message_id,
                states.join(", "),
                args.message_id
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    if args.out.json {
        print_json(&traces)?;
    } else {
        for t in &traces {
            print_trace(t);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_trace(view: &TraceView) {
    let t = &view.event;
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
    for m in &view.mapping {
        println!("  mapping for {}:", m.destination);
        if m.fields_fetched_at_ms.is_none() {
            println!("     (the account's fields were never fetched)");
        }
        for tr in &m.traits {
            let what = match &tr.outcome {
                TraitOutcome::Identifier => "the contact's email (identifier)".to_owned(),
                TraitOutcome::Field { field, label, .. } => format!("-> {field} ({label})"),
                TraitOutcome::NameSplit => "-> first_name, last_name".to_owned(),
                TraitOutcome::Unmapped { suggestions } if suggestions.is_empty() => {
                    "unmapped: no field matches".to_owned()
                }
                TraitOutcome::Unmapped { suggestions } => {
                    format!("unmapped; closest: {}", suggestions.join(", "))
                }
                TraitOutcome::Ambiguous { fields } => format!("ambiguous: {}", fields.join(", ")),
                TraitOutcome::CoercionFailed { field, reason } => {
                    format!("not sent to {field}: {reason}")
                }
                TraitOutcome::OlderThanKept { field, kept_ts_ms } => format!(
                    "not sent: {field} holds a value from a newer event ({})",
                    fmt_ms(Some(*kept_ts_ms))
                ),
            };
            println!("     {} = {}: {what}", tr.key, tr.value);
        }
    }
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
        for p in &d.history {
            println!("     earlier: {}", views::past_outcome_words(p));
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
            let others: Vec<&str> = a
                .delivery_ids
                .iter()
                .filter_map(|id| view.merged.get(id).map(String::as_str))
                .collect();
            if !others.is_empty() {
                println!(
                    "       this call also carried {} (a field it sent may come from them)",
                    others.join(", ")
                );
            }
            if let Some(b) = &a.request_body {
                println!("       sent: {b}");
            }
            if let Some(b) = &a.response_body {
                println!("       got:  {b}");
            }
        }
    }
}

/// `events list`
///
/// # Errors
/// Bad filters; when there is no store or it cannot be read.
pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let query = EventQuery {
        contact_key: args.user.clone(),
        email: args.email.clone(),
        message_id: None,
        event_type: args.event_type.clone(),
        status: args.status.as_deref().map(parse_status).transpose()?,
        source: args.source.clone(),
        since_ms: args
            .since
            .as_deref()
            .map(|s| parse_time(s, "--since"))
            .transpose()?,
        until_ms: args
            .until
            .as_deref()
            .map(|s| parse_time(s, "--until"))
            .transpose()?,
        before_id: args.before,
        limit: args.limit.max(1),
    };
    let (store, views) = views_for(&args.config).await?;
    let page = views.events(&query).await;
    store.close().await;
    let page = page?;
    if args.out.json {
        print_json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.events.is_empty() {
        println!("no event matches");
    }
    for e in &page.events {
        let states: Vec<String> = e
            .deliveries
            .iter()
            .map(|d| format!("{} {}", d.destination, d.status.as_str()))
            .collect();
        println!(
            "{}  {:<8} {}  {}  {}  [{}]",
            fmt_ms(Some(e.received_at_ms)),
            e.event_type,
            e.message_id,
            e.contact_key,
            e.source,
            states.join(", ")
        );
    }
    if let Some(before) = page.next_before {
        println!("more: add --before {before}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `events rejected`
///
/// # Errors
/// When there is no store or it cannot be read.
pub async fn rejected(args: RejectedArgs) -> anyhow::Result<ExitCode> {
    let (store, views) = views_for(&args.config).await?;
    let rows = views.rejected(args.limit).await;
    store.close().await;
    let rows = rows?;
    if args.out.json {
        print_json(&rows)?;
    } else if rows.is_empty() {
        println!("no rejected input: every request so far became events");
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
/// Bad times; when there is no store or it cannot be written.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let since = parse_time(&args.since, "--since")?;
    let until = match &args.until {
        Some(u) => parse_time(u, "--until")?,
        None => now_ms() + 1,
    };
    let (cfg, _) = load_config(&args.config)?;
    let store = super::open_existing_store(&cfg).await?;
    let filter = DeliveryFilter {
        destination: args.destination.clone(),
        since_ms: Some(since),
        until_ms: Some(until),
        reason_code: args.reason_code.clone(),
        ..DeliveryFilter::default()
    };
    let result = replay_in(store.as_ref(), &cfg, &args, &filter, since, until).await;
    store.close().await;
    let (replayed, late, forced) = result?;
    if args.out.json {
        #[derive(Serialize)]
        struct ReplayOutput {
            requeued: u64,
            not_routed: u64,
            unconfigured: u64,
            created: u64,
            skipped: u64,
            forced_contacts: u64,
        }
        print_json(&ReplayOutput {
            requeued: replayed.requeued,
            not_routed: replayed.not_routed,
            unconfigured: replayed.unconfigured,
            created: late.created,
            skipped: late.skipped,
            forced_contacts: forced,
        })?;
    } else {
        println!(
            "{} put back in the queue (what each had done stays in its history: `events show`)",
            plural(replayed.requeued, "delivery", "deliveries")
        );
        if replayed.not_routed > 0 {
            println!(
                "{} left as they are: the destination does not take the event (integrations opt-out or call type)",
                plural(
                    replayed.not_routed,
                    "finished delivery",
                    "finished deliveries"
                )
            );
        }
        if replayed.unconfigured > 0 {
            println!(
                "{} left as they are: their destination is no longer configured",
                plural(
                    replayed.unconfigured,
                    "finished delivery",
                    "finished deliveries"
                )
            );
        }
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
) -> anyhow::Result<(Replayed, LateRouting, u64)> {
    let forced = if args.force {
        super::shadow::unconfirm(store, filter).await?
    } else {
        0
    };
    let requeued = replay_finished(store, &cfg.destinations, filter, now_ms()).await?;
    let mut late = LateRouting::default();
    for d in &cfg.destinations {
        if args
            .destination
            .as_ref()
            .is_some_and(|name| *name != d.name)
        {
            continue;
        }
        let kinds = d.kinds().map_err(|problems| {
            let words: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            anyhow::anyhow!("destination {:?}: {}", d.name, words.join("; "))
        })?;
        let added = route_stored_events(store, d, &kinds, since, until, now_ms()).await?;
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
                #[derive(Serialize)]
                struct Dest<'a> {
                    name: &'a str,
                    base_url: &'a str,
                    hourly_limit: u32,
                    minute_limit: u32,
                }
                #[derive(Serialize)]
                struct Checked<'a> {
                    ok: bool,
                    file: &'a str,
                    sources: Vec<&'a str>,
                    destinations: Vec<Dest<'a>>,
                    problems: [(); 0],
                }
                print_json(&Checked {
                    ok: true,
                    file: &resolved.origin,
                    sources: resolved.sources.iter().map(|s| s.name.as_str()).collect(),
                    destinations: resolved
                        .destinations
                        .iter()
                        .map(|d| Dest {
                            name: &d.config.name,
                            base_url: &d.base_url,
                            hourly_limit: d.config.effective_hourly_limit(),
                            minute_limit: d.config.minute_limit,
                        })
                        .collect(),
                    problems: [],
                })?;
            } else {
                println!("{}: ok", resolved.origin);
                print!("{}", config::redacted_toml(&resolved.config));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if args.out.json {
                #[derive(Serialize)]
                struct Failed<'a> {
                    ok: bool,
                    problems: &'a [config::ConfigProblem],
                }
                print_json(&Failed {
                    ok: false,
                    problems: &e.problems,
                })?;
            } else {
                eprintln!("{e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `doctor`: the configuration, and the integrity of the store if there is one (it never
/// creates one, and says where it looked).
///
/// # Errors
/// Never; problems give exit code 1.
pub async fn doctor(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let config_ok = match resolve_config(&args.config) {
        Ok(_) => true,
        Err(e) => {
            problems.extend(e.problems.iter().map(ToString::to_string));
            false
        }
    };
    let (cfg, location) = match load_config(&args.config) {
        Ok((cfg, _)) => {
            let location = StoreLocation::of(&cfg);
            (Some(cfg), Some(location))
        }
        Err(_) => (None, None),
    };
    let store_problems = match &cfg {
        None => vec!["not checked: the configuration cannot be read".to_owned()],
        Some(cfg) => match super::open_existing_store(cfg).await {
            Ok(store) => {
                let r = store.integrity_check().await;
                store.close().await;
                match r {
                    Ok(p) => p,
                    Err(e) => vec![format!("integrity check failed: {e}")],
                }
            }
            Err(e) => vec![format!("{e:#}")],
        },
    };
    problems.extend(store_problems.iter().map(|p| format!("store: {p}")));
    let store = location.as_ref().map(ToString::to_string);
    if args.out.json {
        #[derive(Serialize)]
        struct Doctor {
            ok: bool,
            config_ok: bool,
            store_ok: bool,
            store: Option<String>,
            problems: Vec<String>,
        }
        print_json(&Doctor {
            ok: problems.is_empty(),
            config_ok,
            store_ok: store_problems.is_empty(),
            store,
            problems: problems.clone(),
        })?;
    } else {
        if config_ok {
            println!("configuration: ok");
        }
        if store_problems.is_empty() {
            println!(
                "store: {}: integrity ok",
                store.as_deref().unwrap_or("(unknown)")
            );
        }
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

/// `destinations test`: one `GET /settings/contacts/fields` per destination. When a store
/// exists, the call is entered in its quota ledger like any other (it spends the account's hour
/// too), and the field list it fetched is kept for the gateway.
///
/// # Errors
/// Configuration problems.
pub async fn destinations_test(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let resolved = resolve_config(&args.config)?;
    if resolved.destinations.is_empty() {
        eprintln!(
            "no destination is configured: add a [[destinations]] entry to the config file, or set {} (or {}) and {}",
            config::ENV_FRESHWORKS_DOMAIN,
            config::ENV_FRESHWORKS_BASE_URL,
            config::ENV_FRESHWORKS_API_KEY
        );
        if args.out.json {
            print_json(&Vec::<views::ConnectionTest>::new())?;
        }
        return Ok(ExitCode::FAILURE);
    }
    // Without a store the test still answers; only the bookkeeping is skipped.
    let store = match super::open_existing_store(&resolved.config).await {
        Ok(store) => Some(store),
        Err(e) => {
            eprintln!("note: the calls are not entered in a quota ledger: {e:#}");
            None
        }
    };
    let mut results = Vec::new();
    for d in &resolved.destinations {
        results.push(views::test_connection(d, store.as_deref(), now_ms()).await);
    }
    if let Some(store) = store {
        store.close().await;
    }
    let all_ok = results.iter().all(|r| r.ok);
    if args.out.json {
        print_json(&results)?;
    } else {
        for r in &results {
            println!("{} ({}): {}", r.destination, r.base_url, r.message);
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
