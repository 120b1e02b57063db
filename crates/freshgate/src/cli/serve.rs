//! `freshgate serve`: run the gateway, optionally with the built-in Freshworks emulator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::{ConfigArgs, load_config, open_store_for_delivery, shutdown_signal};
use crate::admin::AdminAuth;
use crate::app::{App, AppOptions};
use crate::config::{
    self, DEFAULT_DESTINATION, DEFAULT_SOURCE, DestinationConfig, Env, ProcessEnv, SourceConfig,
};

/// Write key used with `--emulator` when the configuration has none.
pub const DEV_WRITE_KEY: &str = "freshgate-dev";
/// Variable name under which `--emulator` hands its API key to the destination.
const EMULATOR_KEY_VAR: &str = "FRESHGATE_EMULATOR_API_KEY";

/// `freshgate serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address to listen on (overrides server.listen).
    #[arg(long, env = "FRESHGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the web console and admin API (overrides server.admin_listen). Anywhere but
    /// loopback it requires FRESHGATE_ADMIN_TOKEN.
    #[arg(long, env = "FRESHGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Also start the built-in Freshworks emulator and deliver to it (no Freshworks account
    /// needed). Adds the write key "freshgate-dev" when no source is configured.
    #[arg(long)]
    pub emulator: bool,
    /// Speed-up of the pipeline clock, for tests and benchmarks paired with the emulator's
    /// --time-scale (quota windows, retries, leases all run this much faster).
    #[arg(long, default_value_t = 1.0, hide = true)]
    pub time_scale: f64,
    /// Address of the built-in emulator.
    #[arg(long, default_value = "127.0.0.1:9090", requires = "emulator")]
    pub emulator_listen: SocketAddr,
}

/// The process environment with a few entries laid over it.
struct Overlay(BTreeMap<String, String>);

impl Env for Overlay {
    fn var(&self, name: &str) -> Option<String> {
        self.0.var(name).or_else(|| ProcessEnv.var(name))
    }
}

/// Run the gateway until Ctrl-C / SIGTERM.
///
/// # Errors
/// Configuration problems (all of them), a port in use, a store that cannot be opened.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (mut cfg, origin) = load_config(&args.config)?;
    if let Some(listen) = args.listen {
        cfg.server.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        cfg.server.admin_listen = admin;
    }
    let mut overlay = BTreeMap::new();
    let mut emulator = None;
    if args.emulator {
        let emu_config = freshworks_emulator::EmulatorConfig::default();
        let listener = tokio::net::TcpListener::bind(args.emulator_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {} for the emulator", args.emulator_listen)
            })?;
        let addr = listener.local_addr()?;
        let state = freshworks_emulator::EmulatorState::new(emu_config.clone())?;
        overlay.insert(EMULATOR_KEY_VAR.to_owned(), emu_config.api_key.clone());
        let base_url = format!("http://{addr}/crm/sales/api");
        let task = tokio::spawn(freshworks_emulator::serve(
            listener,
            state,
            shutdown_signal(),
        ));
        emulator = Some((base_url.clone(), task));
        cfg.destinations.retain(|d| d.name != DEFAULT_DESTINATION);
        cfg.destinations.insert(
            0,
            DestinationConfig {
                name: DEFAULT_DESTINATION.into(),
                base_url: Some(base_url),
                api_key_env: EMULATOR_KEY_VAR.into(),
                hourly_limit: Some(emu_config.hourly_limit),
                minute_limit: emu_config.minute_limit,
                ..DestinationConfig::default()
            },
        );
        if cfg.sources.is_empty() {
            cfg.sources.push(SourceConfig {
                name: DEFAULT_SOURCE.into(),
                write_keys: vec![DEV_WRITE_KEY.into()],
                ..SourceConfig::default()
            });
        }
    }
    let resolved = config::resolve(cfg, &origin, &Overlay(overlay))?;
    if resolved.sources.is_empty() {
        anyhow::bail!(
            "no source is configured: add [[sources]] to the config file, set {} or use --emulator",
            config::ENV_WRITE_KEY
        );
    }
    let listener = tokio::net::TcpListener::bind(resolved.config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", resolved.config.server.listen))?;
    let addr = listener.local_addr()?;
    // Refuse a console reachable from elsewhere without a token before opening anything else.
    let admin_auth = AdminAuth::new(
        resolved.config.server.admin_listen,
        ProcessEnv.var(config::ENV_ADMIN_TOKEN),
    )?;
    let admin_listener = tokio::net::TcpListener::bind(resolved.config.server.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the console (server.admin_listen)",
                resolved.config.server.admin_listen
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;
    let store = open_store_for_delivery(&resolved.config).await?;
    // The built-in emulator starts empty each time, while the data dir remembers what was
    // written to it: its shadows would hide every contact ("unchanged"). They are forgotten,
    // and the stored events are delivered to the new emulator again, so the quick start
    // survives a restart.
    let refilled = if emulator.is_some() {
        store
            .forget_shadows(Some(DEFAULT_DESTINATION), None)
            .await?;
        let everything = freshgate_store::DeliveryFilter {
            destination: Some(DEFAULT_DESTINATION.into()),
            ..freshgate_store::DeliveryFilter::default()
        };
        crate::pipeline::late::replay_finished(
            store.as_ref(),
            &resolved.config.destinations,
            &everything,
            crate::pipeline::now_ms(),
        )
        .await?
        .requeued
    } else {
        0
    };

    println!("freshgate listening on http://{addr}");
    println!(
        "  ingest URL:  http://{addr}/v1/batch   (set your Segment library's host to http://{addr})"
    );
    println!(
        "  console:     http://{admin_addr}/   (admin API http://{admin_addr}/api/v1/; {})",
        if admin_auth.required() {
            "log in with FRESHGATE_ADMIN_TOKEN"
        } else {
            "no token: loopback only"
        }
    );
    match resolved.config.store.kind {
        config::StoreKind::Sqlite => println!(
            "  store:       {}",
            resolved
                .config
                .server
                .data_dir
                .join("freshgate.db")
                .display()
        ),
        config::StoreKind::Postgres => println!(
            "  store:       PostgreSQL (${})",
            resolved.config.store.database_url_env
        ),
    }
    if let Some((url, _)) = &emulator {
        println!(
            "  emulator:    {url}   (state: {}/__emulator/state)",
            url.trim_end_matches("/crm/sales/api")
        );
        if refilled > 0 {
            println!(
                "  emulator:    starts empty; {refilled} stored deliveries are sent to it again"
            );
        }
        if resolved.source_for_key(DEV_WRITE_KEY).is_some() {
            println!("  write key:   {DEV_WRITE_KEY}");
            println!(
                "  try:         freshgate send examples/events.ndjson --url http://{addr} --write-key {DEV_WRITE_KEY}"
            );
        }
    }
    // Events are acknowledged and kept; without a destination nothing sends them anywhere.
    if let Some(warning) =
        crate::pipeline::ingest::no_destination_warning(resolved.destinations.len())
    {
        println!("  WARNING:     {warning}");
        tracing::warn!("{warning}");
    }
    for d in &resolved.destinations {
        println!(
            "  destination: {} -> {} ({} calls/h, {} /min)",
            d.config.name,
            d.base_url,
            d.config.effective_hourly_limit(),
            d.config.minute_limit
        );
    }

    let options = AppOptions {
        time_scale: args.time_scale,
        ..AppOptions::default()
    };
    let app = App::build(resolved, store, options)
        .await?
        .with_admin(admin_listener, admin_auth);
    app.run(listener, shutdown_signal()).await?;
    if let Some((_, task)) = emulator {
        let _ = task.await;
    }
    Ok(ExitCode::SUCCESS)
}
