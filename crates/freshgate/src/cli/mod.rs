//! The command line: `serve`, `emulator`, `send`, `queue`, `dlq`, `events`, `replay`, `config`,
//! `doctor`, `destinations`. Each command lives in its own module; this one holds the clap tree
//! and the shared bits (loading the configuration, opening the store, printing results).

pub mod backfill;
pub mod inspect;
pub mod send;
pub mod serve;
pub mod shadow;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use freshgate_store::Store;
use freshgate_store::sqlite::SqliteStore;

use crate::config::{self, Config, ProcessEnv, Resolved};
use crate::telemetry::{self, LogFormat};

/// freshgate: a Segment-compatible gateway that delivers to Freshworks CRM.
///
/// Point Segment's official libraries (or Segment webhooks) at freshgate instead of
/// api.segment.io; it stores every event durably, then creates and updates Freshworks contacts
/// from identify calls, within your account's API quota.
///
/// Quick start, with no Freshworks account (built-in emulator, embedded SQLite):
///
///   freshgate serve --emulator
///   freshgate send examples/events.ndjson --write-key freshgate-dev
#[derive(Debug, Parser)]
#[command(
    name = "freshgate",
    version,
    about,
    long_about,
    propagate_version = true
)]
pub struct Cli {
    /// Log format on stderr: json (default when stderr is not a terminal) or pretty.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "FRESHGATE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The emulator's admin API, shown after `freshgate emulator --help`.
const EMULATOR_HELP: &str = "\
Admin API (no auth, not counted against the quota), under http://LISTEN/__emulator/:
  GET  state        the contacts and accounts as the \"CRM\" now holds them
  GET  requests     every API call received, with its body and answer
  POST reset        forget everything
  POST faults       inject a fault; faults add up until DELETE faults clears them
  POST limits       change the hourly and minute limits; GET quota shows the windows

Fault bodies (JSON, \"kind\" says which):
  {\"kind\": \"next_status\", \"count\": 3, \"status\": 503}
  {\"kind\": \"next_status\", \"count\": 1, \"status\": 400, \"path_contains\": \"upsert\",
   \"body\": \"{\\\"errors\\\":{\\\"code\\\":400,\\\"message\\\":[\\\"Email is invalid\\\"]}}\"}
  {\"kind\": \"wrapped429\", \"count\": 2}      a 400 wrapping an upstream 429
  {\"kind\": \"failure_rate\", \"rate\": 0.1}   10 % of calls answer 500 (seeded)
  {\"kind\": \"latency\", \"ms\": 250}
  {\"kind\": \"drop_connections\", \"count\": 1}

Example:
  curl -X POST http://127.0.0.1:9090/__emulator/faults -H 'content-type: application/json' \\
       -d '{\"kind\": \"next_status\", \"count\": 3, \"status\": 503}'";

/// Where the configuration and data are.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Without it: defaults plus environment variables
    /// (FRESHGATE_WRITE_KEY, FRESHWORKS_API_KEY, FRESHWORKS_DOMAIN or FRESHWORKS_BASE_URL).
    #[arg(long, short = 'c', env = "FRESHGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store (overrides server.data_dir).
    #[arg(long, env = "FRESHGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: Tracking API and webhook ingest, delivery to Freshworks.
    Serve(serve::ServeArgs),
    /// Run the built-in Freshworks CRM emulator alone (for trying things and for tests).
    #[command(after_long_help = EMULATOR_HELP)]
    Emulator(freshworks_emulator::EmulatorArgs),
    /// Post events from a file (JSON array, NDJSON or a Segment batch body) to a running gateway.
    Send(send::SendArgs),
    /// Queue figures.
    Queue {
        /// What to show.
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// The dead-letter queue: events Freshworks refused for good.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// What happened to events.
    Events {
        /// What to show.
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Load historical events and deliver the whole queue through bulk upserts, then exit.
    Backfill(backfill::BackfillArgs),
    /// Resend stored events received in a time range (delivered, skipped or dead) that the
    /// destination's routing takes (an `integrations` opt-out stays skipped), keeping what each
    /// delivery did first in its history; and give events stored before a destination was added
    /// the delivery its routing decides.
    Replay(inspect::ReplayArgs),
    /// The contact shadows (what freshgate last wrote to each contact).
    Shadow {
        /// What to do.
        #[command(subcommand)]
        command: ShadowCommand,
    },
    /// Configuration files.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check the configuration, and the integrity of the store if there is one.
    Doctor(inspect::CheckArgs),
    /// Create or upgrade the store's schema and exit (for operators who run migrations
    /// separately from the nodes; `serve` also migrates on start).
    Migrate(inspect::CheckArgs),
    /// Freshworks destinations.
    Destinations {
        /// What to do.
        #[command(subcommand)]
        command: DestinationsCommand,
    },
    /// Print a shell completion script, e.g. `freshgate completions bash > /etc/bash_completion.d/freshgate`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Backlog, dead letters, oldest event, next attempt, per destination.
    Stats(inspect::StatsArgs),
}

/// `dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List(inspect::DlqArgs),
    /// Show the dead letters of one event, with every attempt.
    Show(inspect::ShowArgs),
    /// Put dead letters back in the queue (after fixing the cause, e.g. a missing field).
    Replay(inspect::DlqArgs),
}

/// `events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Find events by user, email, type, delivery state, source and time, newest first.
    List(inspect::ListArgs),
    /// Everything about one event: received, mapped, each call with request and response.
    Show(inspect::ShowArgs),
    /// Input that never became an event (bad batch items, bad signatures), newest first.
    Rejected(inspect::RejectedArgs),
}

/// `shadow …`
#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Forget shadows, so the next identify of those contacts is written to the CRM even if
    /// nothing changed (after contacts were deleted or merged there).
    Forget(shadow::ForgetArgs),
}

/// `config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration and list every problem at once.
    Check(inspect::CheckArgs),
}

/// `destinations …`
#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Check each destination's API key against its account with one cheap call.
    Test(inspect::CheckArgs),
}

/// Entry point: run a command, map its result to an exit code.
#[must_use]
pub fn main(cli: Cli) -> ExitCode {
    // Servers log what they do; one-shot commands only warnings, so their output stays readable.
    let level = match cli.command {
        Command::Serve(_) | Command::Emulator(_) => "info",
        _ => "warn",
    };
    telemetry::init_logging(cli.log_format, level);
    end_quietly_when_stdout_closes();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Emulator(args) => freshworks_emulator::run_cli(args, shutdown_signal())
                .await
                .map(|()| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from),
            Command::Send(args) => send::run(args).await,
            Command::Queue {
                command: QueueCommand::Stats(a),
            } => inspect::stats(a).await,
            Command::Dlq { command } => match command {
                DlqCommand::List(a) => inspect::dlq_list(a).await,
                DlqCommand::Show(a) => inspect::show(a, true).await,
                DlqCommand::Replay(a) => inspect::dlq_replay(a).await,
            },
            Command::Events { command } => match command {
                EventsCommand::List(a) => inspect::list(a).await,
                EventsCommand::Show(a) => inspect::show(a, false).await,
                EventsCommand::Rejected(a) => inspect::rejected(a).await,
            },
            Command::Replay(a) => inspect::replay(a).await,
            Command::Shadow {
                command: ShadowCommand::Forget(a),
            } => shadow::forget(a).await,
            Command::Backfill(a) => backfill::run(a).await,
            Command::Config {
                command: ConfigCommand::Check(a),
            } => inspect::config_check(a),
            Command::Doctor(a) => inspect::doctor(a).await,
            Command::Migrate(a) => inspect::migrate(a).await,
            Command::Destinations {
                command: DestinationsCommand::Test(a),
            } => inspect::destinations_test(a).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                // Into a buffer: the generator panics on a closed stdout (`| head`).
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, "freshgate", &mut script);
                std::io::Write::write_all(&mut std::io::stdout(), &script)
                    .map(|()| ExitCode::SUCCESS)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            Ok(ExitCode::SUCCESS)
                        } else {
                            Err(e.into())
                        }
                    })
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `freshgate events rejected | head -2`: once the reader is gone, the next write to stdout
/// fails with EPIPE, and `println!` panics on that (Rust ignores SIGPIPE, so the process is not
/// killed by it either). The reader has all it wanted: exit 0 without a word, like `cat` would.
fn end_quietly_when_stdout_closes() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_closed_stdout(info.payload()) {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// Whether a panic is `println!`'s "failed printing to stdout: Broken pipe".
fn is_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    let broken_pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe).to_string();
    message.starts_with("failed printing to stdout")
        && (message.contains("os error 32") || message.contains(&broken_pipe))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Load the file, apply environment overrides and the `--data-dir` flag (not yet validated).
///
/// # Errors
/// When the file cannot be read or parsed.
pub fn load_config(args: &ConfigArgs) -> Result<(Config, String), config::ConfigError> {
    let (mut cfg, origin) = config::load(args.config.as_deref())?;
    config::apply_env_overrides(&mut cfg, &ProcessEnv);
    if let Some(dir) = &args.data_dir {
        cfg.server.data_dir.clone_from(dir);
    }
    Ok((cfg, origin))
}

/// Load and validate.
///
/// # Errors
/// Every problem of the configuration.
pub fn resolve_config(args: &ConfigArgs) -> Result<Resolved, config::ConfigError> {
    let (cfg, origin) = load_config(args)?;
    config::resolve(cfg, &origin, &ProcessEnv)
}

/// Open the store named by the configuration.
///
/// # Errors
/// When the database cannot be opened.
pub fn open_store(data_dir: &Path, writer_queue: usize) -> anyhow::Result<Arc<dyn Store>> {
    let options = freshgate_store::sqlite::SqliteOptions {
        writer_queue,
        ..freshgate_store::sqlite::SqliteOptions::default()
    };
    open_sqlite(data_dir, options)
}

fn open_sqlite(
    data_dir: &Path,
    options: freshgate_store::sqlite::SqliteOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
    let store = SqliteStore::open(&data_dir.join("freshgate.db"), options)
        .map_err(|e| anyhow::anyhow!("cannot open the store in {}: {e}", data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Where the configuration's store is, for messages.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// The SQLite file (absolute when the working directory is known).
    Sqlite(PathBuf),
    /// PostgreSQL at the URL in this environment variable.
    Postgres(String),
}

impl StoreLocation {
    /// The configuration's store.
    #[must_use]
    pub fn of(cfg: &Config) -> Self {
        match cfg.store.kind {
            config::StoreKind::Sqlite => {
                let file = cfg.server.data_dir.join("freshgate.db");
                Self::Sqlite(std::path::absolute(&file).unwrap_or(file))
            }
            config::StoreKind::Postgres => Self::Postgres(cfg.store.database_url_env.clone()),
        }
    }

    /// Whether it exists already (a PostgreSQL database is taken to).
    #[must_use]
    pub fn exists(&self) -> bool {
        match self {
            Self::Sqlite(path) => path.exists(),
            Self::Postgres(_) => true,
        }
    }

    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(var) => write!(f, "PostgreSQL (${var})"),
        }
    }
}

/// Open the store for a command that reads or repairs it: an SQLite store that does not exist
/// is an error saying where it was looked for, never a new empty store.
///
/// # Errors
/// No store there; the database cannot be opened or reached.
pub async fn open_existing_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let location = StoreLocation::of(cfg);
    if !location.exists() {
        anyhow::bail!(
            "no store at {location} (server.data_dir = {}): run this where the gateway runs, or pass --data-dir / --config with the gateway's settings (`freshgate migrate` creates an empty one)",
            cfg.server.data_dir.display()
        );
    }
    open_configured_store(cfg).await
}

/// Open the store the configuration names: SQLite in `data_dir`, or PostgreSQL at the URL in
/// `store.database_url_env` (migrations run on connect).
///
/// # Errors
/// When the database cannot be opened or reached.
pub async fn open_configured_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    open_store_as(cfg, false).await
}

/// Open the store for the delivering process (`serve`, `backfill`): with SQLite, leases left
/// by a crash are dropped at once instead of stalling their contacts until they expire.
///
/// # Errors
/// When the database cannot be opened or reached.
pub async fn open_store_for_delivery(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    open_store_as(cfg, true).await
}

async fn open_store_as(cfg: &Config, delivering: bool) -> anyhow::Result<Arc<dyn Store>> {
    match cfg.store.kind {
        config::StoreKind::Sqlite => {
            let options = freshgate_store::sqlite::SqliteOptions {
                writer_queue: cfg.store.writer_queue,
                release_leases_on_open: delivering,
                // The delivering process is the one that takes ingest.
                build_dedup_on_open: delivering,
                index_runs: freshgate_store::sqlite::RunLimits {
                    run_events: cfg.store.index_run_events,
                    ..freshgate_store::sqlite::RunLimits::default()
                },
                ..freshgate_store::sqlite::SqliteOptions::default()
            };
            open_sqlite(&cfg.server.data_dir, options)
        }
        #[cfg(feature = "postgres")]
        config::StoreKind::Postgres => {
            let url = database_url(cfg)?;
            let store = freshgate_store::postgres::PostgresStore::connect(
                &url,
                freshgate_store::postgres::PostgresOptions::default(),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to PostgreSQL ({}): {e}",
                    cfg.store.database_url_env
                )
            })?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "postgres"))]
        config::StoreKind::Postgres => {
            anyhow::bail!("store.kind = \"postgres\" is not compiled into this build")
        }
    }
}

/// The PostgreSQL URL from the environment variable the configuration names.
///
/// # Errors
/// When the variable is not set.
pub fn database_url(cfg: &Config) -> anyhow::Result<String> {
    use config::Env as _;
    ProcessEnv.var(&cfg.store.database_url_env).ok_or_else(|| {
        anyhow::anyhow!(
            "store.kind = \"postgres\" but environment variable {} is not set",
            cfg.store.database_url_env
        )
    })
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_is_ended_quietly() {
        let epipe = std::io::Error::from_raw_os_error(32);
        let closed = format!("failed printing to stdout: {epipe}");
        assert!(is_closed_stdout(&closed));
        assert!(!is_closed_stdout(
            &"failed printing to stdout: No space left"
        ));
        assert!(!is_closed_stdout(&"index out of bounds".to_owned()));
    }
}
