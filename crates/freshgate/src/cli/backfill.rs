//! `freshgate backfill`: load a file of historical events straight into the store (no HTTP),
//! then deliver everything pending through `bulk_upsert` (100 contacts a call) until the queue
//! is empty, with a progress bar, within the account's quota.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use freshgate_core::segment::{self, Endpoint};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::sync::Notify;

use super::{ConfigArgs, open_store_for_delivery, print_json, resolve_config};
use crate::app::{App, AppOptions};
use crate::pipeline::ingest::{Ingestor, unix_ms};

/// `freshgate backfill`
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Events to load first (JSON array, NDJSON or a batch body; `-` reads stdin). Without it,
    /// only what is already queued is delivered.
    pub file: Option<PathBuf>,
    /// Source the loaded events belong to (default: the first configured source).
    #[arg(long)]
    pub source: Option<String>,
    /// Give up waiting after this many seconds (what is left stays queued for `serve`).
    #[arg(long, default_value_t = 24 * 3600)]
    pub max_seconds: u64,
    /// Speed-up of the pipeline clock, for tests with the emulator's --time-scale.
    #[arg(long, default_value_t = 1.0, hide = true)]
    pub time_scale: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `backfill`.
///
/// # Errors
/// Configuration problems, unreadable files, store failures.
pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let resolved = resolve_config(&args.config)?;
    let store = open_store_for_delivery(&resolved.config).await?;
    let mut loaded = 0usize;
    let mut rejected = 0usize;
    if let Some(file) = &args.file {
        let source = match &args.source {
            Some(s) => resolved
                .source(s)
                .map(|s| s.name.clone())
                .with_context(|| format!("no source named {s:?}"))?,
            None => resolved
                .sources
                .first()
                .map(|s| s.name.clone())
                .context("no source is configured")?,
        };
        let text = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
        };
        let events = super::send::split_events(&text)?;
        let ingestor = Ingestor::new(
            Arc::clone(&store),
            Arc::new(resolved.clone()),
            Arc::new(Notify::new()),
        );
        let limits = ingestor.limits();
        for chunk in events.chunks(1000) {
            let body = format!(
                "{{\"batch\":[{}]}}",
                chunk.iter().map(|e| e.get()).collect::<Vec<_>>().join(",")
            );
            let now = time::OffsetDateTime::now_utc();
            let mut new_id = || uuid::Uuid::new_v4().to_string();
            let parsed = segment::parse_tracking_request(
                Endpoint::Batch,
                body.as_bytes(),
                now,
                &limits,
                &mut new_id,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let outcome = loop {
                match ingestor
                    .ingest(&source, parsed.clone(), unix_ms(now), body.len())
                    .await
                {
                    Ok(o) => break o,
                    Err(crate::pipeline::ingest::IngestError::Saturated) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            loaded += outcome.accepted;
            rejected += outcome.rejected;
        }
    }

    let options = AppOptions {
        force_bulk: true,
        time_scale: args.time_scale,
        ..AppOptions::default()
    };
    let app = App::build(resolved, Arc::clone(&store), options).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} deliveries settled {elapsed} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut total: Option<u64> = None;
    let stats = app
        .deliver_until_drained(Duration::from_secs(args.max_seconds), |s| {
            let pending: u64 = s.destinations.iter().map(|d| d.pending).sum();
            let t = *total.get_or_insert(pending);
            bar.set_length(t);
            bar.set_position(t.saturating_sub(pending));
            let dead: u64 = s.destinations.iter().map(|d| d.dead).sum();
            bar.set_message(format!("{dead} dead"));
        })
        .await?;
    bar.finish_and_clear();
    let pending: u64 = stats.destinations.iter().map(|d| d.pending).sum();
    let summary = json!({
        "loaded": loaded,
        "rejected": rejected,
        "destinations": stats.destinations,
        "pending": pending,
    });
    if args.json {
        print_json(&summary)?;
    } else {
        eprintln!("loaded {loaded} events ({rejected} rejected)");
        for d in &stats.destinations {
            eprintln!(
                "{}: delivered {}, skipped {}, dead {}, still pending {}",
                d.destination, d.delivered, d.skipped, d.dead, d.pending
            );
        }
    }
    Ok(if pending == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
