//! Configuration: a TOML file, environment overrides for quick starts, validation that reports
//! every problem at once with its key and file, and secrets that only ever come from the
//! environment and are never printed.
//!
//! Precedence: command-line flag > environment > file > default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use freshgate_core::coalesce::MissingTraits;
use freshgate_core::rules::{
    DEFAULT_IDENTIFY_WAIT_SECS, DestinationKinds, RuleError, RuleKind, TrackRule, TrackRules,
};
use freshgate_core::template::TitleTemplate;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Name of the source created by `FRESHGATE_WRITE_KEY` when the file defines none.
pub const DEFAULT_SOURCE: &str = "default";
/// Name of the destination created by `FRESHWORKS_*` variables or `--emulator`.
pub const DEFAULT_DESTINATION: &str = "freshworks";
/// Environment variable adding a write key to the default source.
pub const ENV_WRITE_KEY: &str = "FRESHGATE_WRITE_KEY";
/// Default environment variable holding the Freshworks API key.
pub const ENV_FRESHWORKS_API_KEY: &str = "FRESHWORKS_API_KEY";
/// Environment variable naming the Freshworks bundle alias or host.
pub const ENV_FRESHWORKS_DOMAIN: &str = "FRESHWORKS_DOMAIN";
/// Environment variable giving a full Freshworks API base URL (emulators, proxies).
pub const ENV_FRESHWORKS_BASE_URL: &str = "FRESHWORKS_BASE_URL";
/// Environment variable holding the token of the web console and admin API.
pub const ENV_ADMIN_TOKEN: &str = "FRESHGATE_ADMIN_TOKEN";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server and local storage.
    pub server: ServerConfig,
    /// The queue of record.
    pub store: StoreConfig,
    /// Where events come from: one entry per Segment source (write keys, webhook secret).
    pub sources: Vec<SourceConfig>,
    /// Where events go: Freshworks CRM accounts.
    pub destinations: Vec<DestinationConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Address of the web console and admin API (`/`, `/api/v1/…`). Anywhere but loopback it
    /// needs the `FRESHGATE_ADMIN_TOKEN` environment variable.
    pub admin_listen: SocketAddr,
    /// Directory of the embedded SQLite store.
    pub data_dir: PathBuf,
    /// Largest request body accepted, after gzip decompression (Segment: 500 KiB).
    pub max_request_bytes: usize,
    /// Largest single event (Segment: 32 KiB).
    pub max_event_bytes: usize,
    /// A `messageId` seen again from the same source within this many hours is a duplicate.
    pub dedup_window_hours: u64,
    /// Delivered and skipped events, and rejected inputs, are removed after this many hours.
    pub retention_hours: u64,
    /// Rejected inputs (authenticated but invalid) are kept up to this many bytes in all; past
    /// it the oldest go first (`freshgate_rejected_pruned_total` counts them).
    pub rejected_max_bytes: u64,
    /// Seconds a client has to send a complete request head, counted from when the server
    /// starts waiting for one; so also how long an idle keep-alive connection stays open.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request body.
    pub body_read_timeout_secs: u64,
    /// Connections served at once; more are answered `503 too_many_connections` and closed.
    pub max_connections: usize,
    /// Environment variable holding a token that `/metrics` requires as
    /// `Authorization: Bearer <token>`; without it `/metrics` is public.
    pub metrics_token_env: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("./freshgate-data"),
            max_request_bytes: 500 * 1024,
            max_event_bytes: 32 * 1024,
            dedup_window_hours: 24 * 7,
            retention_hours: 72,
            rejected_max_bytes: 64 * 1024 * 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            max_connections: 1024,
            metrics_token_env: None,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (embedded, default) or `postgres` (several nodes).
    pub kind: StoreKind,
    /// Environment variable holding the PostgreSQL URL (kind = "postgres").
    pub database_url_env: String,
    /// Bound of the writer queue, in requests; beyond it ingest answers 503.
    pub writer_queue: usize,
    /// SQLite: events whose messageId and contact index entries the writer holds in memory
    /// before writing them as one sorted run (about 250 bytes each, twice over while a run is
    /// written). Larger runs mean fewer runs for lookups and listings to visit.
    pub index_run_events: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            database_url_env: "DATABASE_URL".into(),
            writer_queue: 1024,
            index_run_events: freshgate_store::sqlite::RunLimits::default().run_events,
        }
    }
}

/// Which backend holds the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite in `data_dir`.
    Sqlite,
    /// A shared PostgreSQL database.
    Postgres,
}

/// `[[sources]]`
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Name, used in traces, stats and `/webhook/{name}`.
    pub name: String,
    /// Write keys accepted for this source. Segment write keys are not secret (analytics.js puts
    /// them in every web page), so they may be written here; `write_keys_env` also works.
    pub write_keys: Vec<String>,
    /// Environment variables each holding one more write key.
    pub write_keys_env: Vec<String>,
    /// Environment variable holding the shared secret of Segment webhook deliveries (HMAC-SHA1
    /// `X-Signature`). Without it (and without `webhook_token_env`), `/webhook/{name}` is refused.
    pub webhook_secret_env: Option<String>,
    /// Environment variable holding a bearer token that webhook deliveries must send as
    /// `Authorization: Bearer <token>` (a custom header of Segment's Webhooks (Actions)
    /// destination). It covers the whole request, so batched (array) bodies are accepted.
    pub webhook_token_env: Option<String>,
    /// What an array (batched) webhook body needs when no `webhook_token_env` is set.
    pub webhook_batches: WebhookBatches,
}

/// How `/webhook/{name}` treats a batched body (a JSON array) when the source has no bearer
/// token. Segment signs only the first element of a batch (spec/segment.md §6.1), so the
/// signature proves nothing about the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookBatches {
    /// Refuse array bodies with 401 `unauthenticated_batch` (the default).
    #[default]
    Refuse,
    /// Accept array bodies whose first element is signed. Anyone who has seen one signed body
    /// can append any events to it: use only when the webhook URL is not reachable by others.
    FirstElementSignature,
}

impl std::fmt::Debug for SourceConfig {
    // Write keys are redacted: Debug output ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("name", &self.name)
            .field(
                "write_keys",
                &format_args!("[{} redacted]", self.write_keys.len()),
            )
            .field("write_keys_env", &self.write_keys_env)
            .field("webhook_secret_env", &self.webhook_secret_env)
            .field("webhook_token_env", &self.webhook_token_env)
            .field("webhook_batches", &self.webhook_batches)
            .finish()
    }
}

/// `[[destinations]]`: one Freshworks CRM account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationConfig {
    /// Name, used in traces, stats and the CLI.
    pub name: String,
    /// Bundle alias (`acme`) or host (`acme.myfreshworks.com`).
    pub domain: Option<String>,
    /// Full API base URL instead of `domain` (emulator, proxy), e.g.
    /// `http://127.0.0.1:9090/crm/sales/api`.
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    pub api_key_env: String,
    /// Plan, which sets the hourly limit: `free`, `growth`, `pro`, `enterprise`
    /// (also the older names `blossom`, `garden`, `estate`, `forest`).
    pub plan: Option<String>,
    /// Explicit hourly call limit (overrides `plan`).
    pub hourly_limit: Option<u32>,
    /// Per-minute call limit of the account.
    pub minute_limit: u32,
    /// Share of each limit freshgate allows itself (other integrations share the account).
    pub headroom: f64,
    /// Sources feeding this destination; empty means all.
    pub sources: Vec<String>,
    /// Key of this destination in Segment's `integrations` object.
    pub integration_key: String,
    /// What happens to a field sent earlier and absent from a later identify: `keep` it, or
    /// `clear` it (Segment's Freshmarketer destination behaviour).
    pub missing_traits: MissingTraits,
    /// Contacts delivered in parallel.
    pub concurrency: usize,
    /// Per-request timeout, seconds.
    pub timeout_secs: u64,
    /// How long the account's field metadata is trusted (in memory and in the store), seconds.
    /// Each refresh is one call of the hourly quota. New fields and new dropdown choices are
    /// picked up sooner, on evidence (a trait that matches no field, a value that is not a
    /// choice), so this only bounds how long a changed field type can go unnoticed.
    pub fields_ttl_secs: u64,
    /// Retryable failures are retried for this many hours, then dead-lettered.
    pub retry_horizon_hours: u64,
    /// When at least this many contacts are ready at once (a backlog), they go out through
    /// `bulk_upsert`, up to 100 per call; 0 turns the bulk path off.
    pub bulk_min_contacts: usize,
    /// Bulk jobs in flight at once (each also takes one of the `concurrency` permits). A job
    /// holds up to 100 contacts' plans, settles and traces until Freshworks has processed it,
    /// so this bounds what draining an hour of backlog at once costs in memory; two jobs keep
    /// the hourly quota, not the job latency, the bound of the drain on every plan.
    pub bulk_jobs: usize,
    /// An identify that changes nothing freshgate last wrote costs no call, but only within
    /// this many seconds of the last write the CRM confirmed: contacts are deleted and merged in
    /// the CRM, and the shadow must not hide a contact forever. 0: always send.
    pub unchanged_skip_secs: u64,
    /// group → sales account (named `traits.name`, else the `groupId`), contact associated.
    pub group_accounts: bool,
    /// identify `traits.company` (`{name, ...}` or a string) → sales account, contact associated.
    pub company_accounts: bool,
    /// Engage audience membership → marketing list named after the audience key.
    pub audience_lists: bool,
    /// Owner of the sales activities freshgate creates (an email of `/selector/owners`);
    /// without it, the account's first active owner.
    pub owner_email: Option<String>,
    /// How long a track (or page) of a user who never had a valid identify waits for one
    /// before it is skipped with a reason, seconds.
    pub identify_wait_secs: u64,
    /// `[[destinations.track]]`: track → sales activity and/or lifecycle stage; first match
    /// wins, a track no rule matches stays "not handled".
    pub track: Vec<TrackRuleConfig>,
    /// `[[destinations.page]]`: the same for page and screen calls, matched on `name`.
    pub page: Vec<PageRuleConfig>,
}

/// `[[destinations.track]]`: one rule. (Every key has a default so that a missing one is
/// reported by validation with its key, like a blank one.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackRuleConfig {
    /// Exact event name, or `"*"` for any.
    pub event: String,
    /// A Sales activity type NAME (`GET /selector/sales_activity_types`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    /// A lifecycle stage NAME (`GET /selector/lifecycle_stages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<String>,
    /// Activity title template, e.g. `"Order {{properties.order_id}}"`; default: the event name.
    #[serde(
        default,
        deserialize_with = "title_template",
        skip_serializing_if = "Option::is_none"
    )]
    pub title: Option<String>,
}

/// `[[destinations.page]]`: one rule for page and screen calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PageRuleConfig {
    /// Exact page (or screen) name, or `"*"` for any.
    pub name: String,
    /// A Sales activity type NAME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    /// A lifecycle stage NAME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<String>,
    /// Activity title template; default: the page name.
    #[serde(
        default,
        deserialize_with = "title_template",
        skip_serializing_if = "Option::is_none"
    )]
    pub title: Option<String>,
}

/// A title is checked as it is read, so a bad template is reported at its line and column.
fn title_template<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let title = Option::<String>::deserialize(d)?;
    if let Some(t) = &title {
        TitleTemplate::parse(t).map_err(serde::de::Error::custom)?;
    }
    Ok(title)
}

impl Default for DestinationConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_DESTINATION.into(),
            domain: None,
            base_url: None,
            api_key_env: ENV_FRESHWORKS_API_KEY.into(),
            plan: None,
            hourly_limit: None,
            minute_limit: 400,
            headroom: 0.9,
            sources: Vec::new(),
            integration_key: "Freshmarketer".into(),
            missing_traits: MissingTraits::Keep,
            concurrency: 8,
            timeout_secs: 10,
            fields_ttl_secs: 86_400,
            retry_horizon_hours: 72,
            bulk_min_contacts: 20,
            bulk_jobs: 2,
            unchanged_skip_secs: 86_400,
            group_accounts: false,
            company_accounts: false,
            audience_lists: false,
            owner_email: None,
            identify_wait_secs: DEFAULT_IDENTIFY_WAIT_SECS,
            track: Vec::new(),
            page: Vec::new(),
        }
    }
}

impl DestinationConfig {
    /// The hourly limit: explicit, else from the plan, else the lowest paid plan's 1,000.
    #[must_use]
    pub fn effective_hourly_limit(&self) -> u32 {
        self.hourly_limit
            .or_else(|| self.plan.as_deref().and_then(plan_hourly_limit))
            .unwrap_or(1000)
    }

    /// What this destination delivers besides identify, as the delivery side's own spec: the
    /// one conversion from configuration to [`DestinationKinds`]. Each problem comes back with
    /// its dotted key below the destination (`track[0].activity_type`).
    ///
    /// # Errors
    /// Every problem found, as (key, message).
    pub fn kinds(&self) -> Result<DestinationKinds, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut rule = |kind: &str,
                        i: usize,
                        pattern: &str,
                        activity_type: &Option<String>,
                        lifecycle_stage: &Option<String>,
                        title: &Option<String>| {
            let at = format!("{kind}[{i}]");
            let title = match title.as_deref().map(TitleTemplate::parse).transpose() {
                Ok(t) => t,
                Err(e) => {
                    problems.push((format!("{at}.title"), e.to_string()));
                    return None;
                }
            };
            match TrackRule::new(
                pattern,
                activity_type.clone(),
                lifecycle_stage.clone(),
                title,
            ) {
                Ok(r) => Some(r),
                Err(e) => {
                    let key = match &e {
                        RuleError::EmptyPattern if kind == "track" => "event",
                        RuleError::EmptyPattern => "name",
                        RuleError::BlankName(k) => *k,
                        RuleError::NothingToDo => "activity_type",
                    };
                    problems.push((format!("{at}.{key}"), e.to_string()));
                    None
                }
            }
        };
        let track: Vec<TrackRule> = self
            .track
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                rule(
                    "track",
                    i,
                    &r.event,
                    &r.activity_type,
                    &r.lifecycle_stage,
                    &r.title,
                )
            })
            .collect();
        let page: Vec<TrackRule> = self
            .page
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                rule(
                    "page",
                    i,
                    &r.name,
                    &r.activity_type,
                    &r.lifecycle_stage,
                    &r.title,
                )
            })
            .collect();
        if let Some(owner) = &self.owner_email
            && !owner.contains('@')
        {
            problems.push((
                "owner_email".into(),
                format!(
                    "{owner:?} is not an email address (an owner's email, from /selector/owners)"
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(DestinationKinds {
            group_accounts: self.group_accounts,
            company_accounts: self.company_accounts,
            audience_lists: self.audience_lists,
            owner_email: self
                .owner_email
                .as_deref()
                .map(freshgate_core::email::normalize),
            identify_wait_secs: self.identify_wait_secs,
            track: TrackRules::new(RuleKind::Track, track),
            page: TrackRules::new(RuleKind::Page, page),
        })
    }

    /// Whether `source` feeds this destination.
    #[must_use]
    pub fn takes_source(&self, source: &str) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| s == source)
    }
}

/// Hourly limit of a Freshworks plan (spec/freshworks.md §8).
#[must_use]
pub fn plan_hourly_limit(plan: &str) -> Option<u32> {
    match plan.to_ascii_lowercase().as_str() {
        "free" | "growth" | "blossom" | "garden" => Some(1000),
        "pro" | "estate" => Some(2000),
        "enterprise" | "forest" => Some(5000),
        _ => None,
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// File the problem is in (or `environment`).
    pub file: String,
    /// Line in the file (1-based), when the problem is at a place in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Column in the line (1-based, in characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Dotted key, e.g. `destinations[0].domain` (`(syntax)` for a TOML syntax error).
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ConfigProblem {
    /// A problem of a key, not tied to a place in the file.
    fn of_key(file: &str, key: String, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            column: None,
            key,
            message,
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(
                f,
                "{}:{line}:{column}: {}: {}",
                self.file, self.key, self.message
            ),
            _ => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}

/// A configuration that failed to load or validate: every problem, not just the first.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// All problems found.
    pub problems: Vec<ConfigProblem>,
}

/// Read access to the environment, passed in so tests do not touch the process environment.
pub trait Env {
    /// The variable's value, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

/// A validated configuration with secrets resolved from the environment.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The configuration as read (after environment overrides).
    pub config: Config,
    /// Where it came from, for messages.
    pub origin: String,
    /// Sources with their keys.
    pub sources: Vec<ResolvedSource>,
    /// Destinations with their URLs and keys.
    pub destinations: Vec<ResolvedDestination>,
    /// The token `/metrics` requires, if configured.
    pub metrics_token: Option<SecretString>,
}

/// A source ready for ingest.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// Name.
    pub name: String,
    /// Accepted write keys.
    pub write_keys: Vec<SecretString>,
    /// Webhook shared secret, if configured.
    pub webhook_secret: Option<SecretString>,
    /// Webhook bearer token, if configured.
    pub webhook_token: Option<SecretString>,
    /// What a batched webhook body needs without a token.
    pub webhook_batches: WebhookBatches,
}

/// A destination ready for delivery.
#[derive(Debug, Clone)]
pub struct ResolvedDestination {
    /// The configuration entry.
    pub config: DestinationConfig,
    /// Normalised API base URL.
    pub base_url: String,
    /// The API key.
    pub api_key: SecretString,
    /// What it delivers besides identify (from [`DestinationConfig::kinds`]).
    pub kinds: DestinationKinds,
}

impl Resolved {
    /// The source owning a write key.
    #[must_use]
    pub fn source_for_key(&self, key: &str) -> Option<&ResolvedSource> {
        // Every key is compared (no early exit), each in constant time.
        self.sources.iter().find(|s| {
            s.write_keys.iter().fold(false, |found, k| {
                crate::secret::eq(key.as_bytes(), k.expose_secret().as_bytes()) | found
            })
        })
    }

    /// A source by name.
    #[must_use]
    pub fn source(&self, name: &str) -> Option<&ResolvedSource> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Most problems one parse reports (each further one costs a deserialization).
const MAX_PARSE_PROBLEMS: usize = 50;

/// Parse a TOML file's text. `origin` names it in errors.
///
/// Every problem is reported, each with its line, column and dotted key: all syntax errors
/// (the parser recovers), else every type error and unknown key (each is cut out of the
/// document and the rest deserialized again), an unknown key with the closest known one.
///
/// # Errors
/// A `ConfigError` listing every problem.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let (mut root, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(ConfigError {
            problems: syntax
                .iter()
                .map(|e| {
                    placed(
                        origin,
                        text,
                        e.span(),
                        "(syntax)".into(),
                        e.message().trim(),
                    )
                })
                .collect(),
        });
    }
    let mut problems = Vec::new();
    while problems.len() < MAX_PARSE_PROBLEMS {
        let de = toml::de::Deserializer::from(root.clone());
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => break,
            Err(e) => {
                let mut path: Vec<PathPart> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Seq { index } => {
                            Some(PathPart::Index(*index))
                        }
                        serde_path_to_error::Segment::Map { key } => {
                            Some(PathPart::Key(key.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let inner = e.into_inner();
                let mut message = inner.message().trim().to_owned();
                if let Some((unknown, expected)) = unknown_field(&message) {
                    if path.last() != Some(&PathPart::Key(unknown.clone())) {
                        path.push(PathPart::Key(unknown.clone()));
                    }
                    message = format!("unknown key `{unknown}`");
                    if let Some(close) = closest(&unknown, &expected) {
                        message.push_str(&format!("; did you mean `{close}`?"));
                    }
                    message.push_str(&format!(" (known keys: {})", expected.join(", ")));
                }
                problems.push(placed(origin, text, inner.span(), dotted(&path), &message));
                if path.is_empty() || !remove_at(root.get_mut(), &path) {
                    break;
                }
            }
        }
    }
    Err(ConfigError { problems })
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPart {
    Key(String),
    Index(usize),
}

/// `destinations[0].concurrency`
fn dotted(path: &[PathPart]) -> String {
    let mut out = String::new();
    for part in path {
        match part {
            PathPart::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathPart::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() { "(file)".into() } else { out }
}

/// A problem at a byte span of `text`, placed by line and column.
fn placed(
    origin: &str,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    key: String,
    message: &str,
) -> ConfigProblem {
    let (line, column) = match span {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    ConfigProblem {
        file: origin.to_owned(),
        line,
        column,
        key,
        message: message.to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `unknown field `x`, expected one of `a`, `b`` → (`x`, [`a`, `b`]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((name.to_owned(), expected))
}

/// The known key closest to `key` by edit distance, if any is reasonably close.
fn closest(key: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Cut the value at `path` out of the document. False when the path does not lead anywhere.
fn remove_at(table: &mut toml::de::DeTable<'_>, path: &[PathPart]) -> bool {
    match path {
        [] => false,
        [PathPart::Key(k)] => table.remove(k.as_str()).is_some(),
        [PathPart::Key(k), rest @ ..] => match table.get_mut(k.as_str()) {
            Some(v) => remove_in_value(v.get_mut(), rest),
            None => false,
        },
        [PathPart::Index(_), ..] => false,
    }
}

fn remove_in_value(value: &mut toml::de::DeValue<'_>, path: &[PathPart]) -> bool {
    match (value, path) {
        (toml::de::DeValue::Table(t), _) => remove_at(t, path),
        (toml::de::DeValue::Array(items), [PathPart::Index(i), rest @ ..]) => {
            match items.get_mut(*i) {
                Some(item) if rest.is_empty() => {
                    // An array element itself is bad: blank it rather than shift the indexes.
                    *item.get_mut() = toml::de::DeValue::Table(toml::de::DeTable::new());
                    true
                }
                Some(item) => remove_in_value(item.get_mut(), rest),
                None => false,
            }
        }
        _ => false,
    }
}

/// Read a file, or the defaults when `path` is `None`.
///
/// # Errors
/// A `ConfigError` naming the file when it cannot be read or parsed.
pub fn load(path: Option<&Path>) -> Result<(Config, String), ConfigError> {
    match path {
        None => Ok((Config::default(), "(defaults)".into())),
        Some(p) => {
            let origin = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                problems: vec![ConfigProblem::of_key(
                    &origin,
                    "(file)".into(),
                    format!("cannot read: {e}"),
                )],
            })?;
            Ok((parse(&text, &origin)?, origin))
        }
    }
}

/// Apply the quick-start environment overrides (`FRESHGATE_WRITE_KEY`, `FRESHWORKS_*`).
pub fn apply_env_overrides(config: &mut Config, env: &dyn Env) {
    if env.var(ENV_WRITE_KEY).is_some() {
        let source = match config.sources.iter().position(|s| s.name == DEFAULT_SOURCE) {
            Some(i) => &mut config.sources[i],
            None => {
                config.sources.push(SourceConfig {
                    name: DEFAULT_SOURCE.into(),
                    ..SourceConfig::default()
                });
                let last = config.sources.len() - 1;
                &mut config.sources[last]
            }
        };
        if !source.write_keys_env.iter().any(|v| v == ENV_WRITE_KEY) {
            source.write_keys_env.push(ENV_WRITE_KEY.into());
        }
    }
    let base_url = env.var(ENV_FRESHWORKS_BASE_URL);
    let domain = env.var(ENV_FRESHWORKS_DOMAIN);
    if base_url.is_some() || domain.is_some() {
        if config.destinations.is_empty() {
            config.destinations.push(DestinationConfig::default());
        }
        // The variables address the first destination: that is the quick-start case.
        let first = &mut config.destinations[0];
        if let Some(url) = base_url {
            first.base_url = Some(url);
            first.domain = None;
        } else if let Some(d) = domain {
            first.domain = Some(d);
            first.base_url = None;
        }
    }
}

/// Validate and resolve secrets; reports every problem at once.
///
/// # Errors
/// A `ConfigError` listing every problem with its key.
pub fn resolve(config: Config, origin: &str, env: &dyn Env) -> Result<Resolved, ConfigError> {
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| {
        problems.push(ConfigProblem::of_key(origin, key, message));
    };

    if config.server.max_request_bytes < config.server.max_event_bytes {
        problem(
            "server.max_request_bytes".into(),
            "must be at least server.max_event_bytes".into(),
        );
    }
    if config.server.dedup_window_hours == 0 {
        problem(
            "server.dedup_window_hours".into(),
            "must be at least 1 (duplicates from client retries arrive within minutes)".into(),
        );
    }
    for (key, value) in [
        (
            "server.header_read_timeout_secs",
            config.server.header_read_timeout_secs,
        ),
        (
            "server.body_read_timeout_secs",
            config.server.body_read_timeout_secs,
        ),
        (
            "server.max_connections",
            u64::try_from(config.server.max_connections).unwrap_or(u64::MAX),
        ),
    ] {
        if value == 0 {
            problem(key.into(), "must be at least 1".into());
        }
    }
    let metrics_token = config.server.metrics_token_env.as_ref().and_then(|var| {
        let value = env.var(var);
        if value.is_none() {
            problem(
                "server.metrics_token_env".into(),
                format!("environment variable {var} is not set"),
            );
        }
        value.map(SecretString::from)
    });
    if config.store.writer_queue == 0 {
        problem("store.writer_queue".into(), "must be at least 1".into());
    }
    if config.store.index_run_events == 0 {
        problem("store.index_run_events".into(), "must be at least 1".into());
    }
    if config.store.kind == StoreKind::Postgres {
        if !cfg!(feature = "postgres") {
            problem(
                "store.kind".into(),
                "\"postgres\" is not compiled into this build (cargo feature `postgres`); use \"sqlite\"".into(),
            );
        } else if env.var(&config.store.database_url_env).is_none() {
            problem(
                "store.database_url_env".into(),
                format!(
                    "environment variable {} is not set (postgres://user@host:5432/db)",
                    config.store.database_url_env
                ),
            );
        }
    }

    let mut sources = Vec::new();
    let mut seen_keys: BTreeMap<String, String> = BTreeMap::new();
    for (i, s) in config.sources.iter().enumerate() {
        let at = format!("sources[{i}]");
        if s.name.trim().is_empty() {
            problem(format!("{at}.name"), "must not be empty".into());
        } else if !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problem(
                format!("{at}.name"),
                format!(
                    "{:?} may only contain letters, digits, '-' and '_' (it is part of the webhook URL)",
                    s.name
                ),
            );
        }
        if config.sources[..i].iter().any(|o| o.name == s.name) {
            problem(
                format!("{at}.name"),
                format!("duplicate source {:?}", s.name),
            );
        }
        let mut keys: Vec<SecretString> = Vec::new();
        for (k, key) in s.write_keys.iter().enumerate() {
            if key.trim().is_empty() {
                problem(format!("{at}.write_keys[{k}]"), "must not be empty".into());
            } else {
                keys.push(SecretString::from(key.clone()));
            }
        }
        for (k, var) in s.write_keys_env.iter().enumerate() {
            match env.var(var) {
                Some(v) => keys.push(SecretString::from(v)),
                None => problem(
                    format!("{at}.write_keys_env[{k}]"),
                    format!("environment variable {var} is not set"),
                ),
            }
        }
        for key in &keys {
            let k = key.expose_secret().to_owned();
            if let Some(other) = seen_keys.insert(k, s.name.clone())
                && other != s.name
            {
                problem(
                    format!("{at}.write_keys"),
                    format!("a write key is also used by source {other:?}"),
                );
            }
        }
        let mut secret_from = |key: &str, var: &Option<String>| {
            let var = var.as_ref()?;
            let value = env.var(var);
            if value.is_none() {
                problem(
                    format!("{at}.{key}"),
                    format!("environment variable {var} is not set"),
                );
            }
            value.map(SecretString::from)
        };
        let webhook_secret = secret_from("webhook_secret_env", &s.webhook_secret_env);
        let webhook_token = secret_from("webhook_token_env", &s.webhook_token_env);
        if keys.is_empty() && webhook_secret.is_none() && webhook_token.is_none() {
            problem(
                format!("{at}.write_keys"),
                "a source needs at least one write key (or a webhook secret or token)".into(),
            );
        }
        sources.push(ResolvedSource {
            name: s.name.clone(),
            write_keys: keys,
            webhook_secret,
            webhook_token,
            webhook_batches: s.webhook_batches,
        });
    }

    let mut destinations = Vec::new();
    for (i, d) in config.destinations.iter().enumerate() {
        let at = format!("destinations[{i}]");
        if d.name.trim().is_empty() {
            problem(format!("{at}.name"), "must not be empty".into());
        }
        if config.destinations[..i].iter().any(|o| o.name == d.name) {
            problem(
                format!("{at}.name"),
                format!("duplicate destination {:?}", d.name),
            );
        }
        let base_url = match (&d.domain, &d.base_url) {
            (Some(_), Some(_)) => {
                problem(
                    format!("{at}.domain"),
                    "set either domain or base_url, not both".into(),
                );
                None
            }
            (None, None) => {
                problem(
                    format!("{at}.domain"),
                    format!(
                        "missing: set domain (bundle alias like \"acme\" or host like \"acme.myfreshworks.com\"), base_url, or the {ENV_FRESHWORKS_DOMAIN} / {ENV_FRESHWORKS_BASE_URL} environment variables"
                    ),
                );
                None
            }
            (Some(domain), None) => match freshworks_client::base_url_for_domain(domain) {
                Ok(url) => Some(url),
                Err(e) => {
                    problem(format!("{at}.domain"), e.to_string());
                    None
                }
            },
            (None, Some(url)) => {
                if url.starts_with("http://") || url.starts_with("https://") {
                    Some(url.trim_end_matches('/').to_owned())
                } else {
                    problem(
                        format!("{at}.base_url"),
                        format!("{url:?} must start with http:// or https://"),
                    );
                    None
                }
            }
        };
        if let Some(plan) = &d.plan
            && plan_hourly_limit(plan).is_none()
        {
            problem(
                format!("{at}.plan"),
                format!(
                    "unknown plan {plan:?}; expected free, growth, pro or enterprise (or set hourly_limit)"
                ),
            );
        }
        if d.hourly_limit == Some(0) {
            problem(format!("{at}.hourly_limit"), "must be at least 1".into());
        }
        if d.minute_limit == 0 {
            problem(format!("{at}.minute_limit"), "must be at least 1".into());
        }
        if !(d.headroom > 0.0 && d.headroom <= 1.0) {
            problem(
                format!("{at}.headroom"),
                "must be a fraction in (0, 1], e.g. 0.9".into(),
            );
        }
        if d.concurrency == 0 {
            problem(format!("{at}.concurrency"), "must be at least 1".into());
        }
        if d.bulk_jobs == 0 {
            problem(
                format!("{at}.bulk_jobs"),
                "must be at least 1 (bulk_min_contacts = 0 turns the bulk path off)".into(),
            );
        }
        if d.timeout_secs == 0 {
            problem(format!("{at}.timeout_secs"), "must be at least 1".into());
        }
        for (k, s) in d.sources.iter().enumerate() {
            if !config.sources.iter().any(|o| &o.name == s) {
                problem(
                    format!("{at}.sources[{k}]"),
                    format!("no source named {s:?}"),
                );
            }
        }
        let kinds = match d.kinds() {
            Ok(kinds) => Some(kinds),
            Err(found) => {
                for (key, message) in found {
                    problem(format!("{at}.{key}"), message);
                }
                None
            }
        };
        let api_key = match env.var(&d.api_key_env) {
            Some(v) => Some(SecretString::from(v)),
            None => {
                problem(
                    format!("{at}.api_key_env"),
                    format!(
                        "environment variable {} is not set (the Freshworks API key: Profile Settings > API Settings)",
                        d.api_key_env
                    ),
                );
                None
            }
        };
        if let (Some(base_url), Some(api_key), Some(kinds)) = (base_url, api_key, kinds) {
            destinations.push(ResolvedDestination {
                config: d.clone(),
                base_url,
                api_key,
                kinds,
            });
        }
    }

    if problems.is_empty() {
        Ok(Resolved {
            config,
            origin: origin.to_owned(),
            sources,
            destinations,
            metrics_token,
        })
    } else {
        Err(ConfigError { problems })
    }
}

/// The configuration as TOML with every secret replaced by where it comes from.
#[must_use]
pub fn redacted_toml(config: &Config) -> String {
    let mut shown = config.clone();
    for s in &mut shown.sources {
        for k in &mut s.write_keys {
            *k = "<redacted>".into();
        }
    }
    toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
[[sources]]
name = "web site"
write_keys_env = ["MISSING_KEY"]

[[destinations]]
name = "crm"
domain = "not a domain!"
plan = "platinum"
minute_limit = 0
bulk_jobs = 0
sources = ["nope"]
"#;
        let cfg = parse(text, "bad.toml").unwrap();
        let err = resolve(cfg, "bad.toml", &env(&[])).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "sources[0].name",
            "sources[0].write_keys_env[0]",
            "destinations[0].domain",
            "destinations[0].plan",
            "destinations[0].minute_limit",
            "destinations[0].bulk_jobs",
            "destinations[0].sources[0]",
            "destinations[0].api_key_env",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
        assert!(err.problems.iter().all(|p| p.file == "bad.toml"));
    }

    #[test]
    fn unknown_keys_name_the_file() {
        let err = parse("[server]\nlisten_on = \"x\"\n", "f.toml").unwrap_err();
        assert_eq!(err.problems[0].file, "f.toml");
        assert!(err.problems[0].message.contains("listen_on"), "{err}");
    }

    #[test]
    fn type_errors_give_line_column_and_dotted_key_every_one() {
        let text = "[server]\nretention_hours = 72\n\n[[destinations]]\nname = \"crm\"\nconcurrency = \"eight\"\ntimeout_sec = 5\n";
        let err = parse(text, "f.toml").unwrap_err();
        let found: Vec<(String, Option<usize>, Option<usize>)> = err
            .problems
            .iter()
            .map(|p| (p.key.clone(), p.line, p.column))
            .collect();
        assert_eq!(
            found,
            [
                ("destinations[0].concurrency".to_owned(), Some(6), Some(15)),
                ("destinations[0].timeout_sec".to_owned(), Some(7), Some(1)),
            ],
            "{err}"
        );
        assert!(
            err.problems[1]
                .message
                .contains("did you mean `timeout_secs`?"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("f.toml:6:15: destinations[0].concurrency: "),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_placed_by_line_and_column() {
        let err = parse("[server]\nlisten = \"127.0.0.1:80\n", "f.toml").unwrap_err();
        assert_eq!(err.problems[0].key, "(syntax)");
        assert_eq!(err.problems[0].line, Some(2), "{err}");
        assert!(err.problems[0].column.is_some());
    }

    #[test]
    fn env_overrides_make_a_quick_start() {
        let mut cfg = Config::default();
        let e = env(&[
            (ENV_WRITE_KEY, "wk"),
            (ENV_FRESHWORKS_DOMAIN, "acme"),
            (ENV_FRESHWORKS_API_KEY, "secret"),
        ]);
        apply_env_overrides(&mut cfg, &e);
        let r = resolve(cfg, "(defaults)", &e).unwrap();
        assert_eq!(r.source_for_key("wk").unwrap().name, DEFAULT_SOURCE);
        assert_eq!(
            r.destinations[0].base_url,
            "https://acme.myfreshworks.com/crm/sales/api"
        );
        assert_eq!(r.destinations[0].config.effective_hourly_limit(), 1000);
    }

    #[test]
    fn write_keys_are_compared_in_constant_time_every_one_of_them() {
        let mut cfg = Config::default();
        for (name, key) in [("a", "key-a"), ("b", "key-b")] {
            cfg.sources.push(SourceConfig {
                name: name.into(),
                write_keys: vec![key.into(), format!("{key}-2")],
                ..SourceConfig::default()
            });
        }
        let r = resolve(cfg, "x", &env(&[])).unwrap();
        let before = crate::secret::calls::count();
        assert_eq!(r.source_for_key("key-a").unwrap().name, "a");
        // Every key of the matching source went through `secret::eq`, not only up to the match.
        assert!(crate::secret::calls::count() >= before + 2);
        let before = crate::secret::calls::count();
        assert!(r.source_for_key("key-c").is_none());
        assert_eq!(crate::secret::calls::count(), before + 4);
    }

    const RULES: &str = r#"
[[destinations]]
name = "crm"
base_url = "http://127.0.0.1:9/crm/sales/api"
group_accounts = true
company_accounts = true
audience_lists = true
owner_email = "Owner@Example.com"
identify_wait_secs = 600

[[destinations.track]]
event = "Order Completed"
activity_type = "Purchase"
lifecycle_stage = "Customer"
title = "Order {{properties.order_id}}"

[[destinations.track]]
event = "*"
activity_type = "Other"

[[destinations.page]]
name = "Pricing"
activity_type = "Website visit"
"#;

    #[test]
    fn kinds_and_rules_become_the_delivery_spec() {
        let cfg = parse(RULES, "r.toml").unwrap();
        let r = resolve(cfg, "r.toml", &env(&[(ENV_FRESHWORKS_API_KEY, "k")])).unwrap();
        let kinds = &r.destinations[0].kinds;
        assert!(kinds.group_accounts && kinds.company_accounts && kinds.audience_lists);
        assert_eq!(kinds.owner_email.as_deref(), Some("owner@example.com"));
        assert_eq!(kinds.identify_wait_secs, 600);
        let order = kinds.track.find(Some("Order Completed")).unwrap();
        assert_eq!(order.lifecycle_stage.as_deref(), Some("Customer"));
        assert_eq!(
            order.title.as_ref().map(TitleTemplate::as_str),
            Some("Order {{properties.order_id}}")
        );
        assert_eq!(
            kinds
                .track
                .find(Some("Signed Up"))
                .unwrap()
                .activity_type
                .as_deref(),
            Some("Other")
        );
        assert!(kinds.page.find(Some("Home")).is_err());
        // Round trip through the shown configuration.
        assert!(parse(&redacted_toml(&r.config), "shown").is_ok());
    }

    #[test]
    fn no_new_keys_is_identify_only() {
        let cfg = parse(
            "[[destinations]]\nname = \"crm\"\nbase_url = \"http://x/api\"\n",
            "f.toml",
        )
        .unwrap();
        let r = resolve(cfg, "f.toml", &env(&[(ENV_FRESHWORKS_API_KEY, "k")])).unwrap();
        assert_eq!(r.destinations[0].kinds, DestinationKinds::identify_only());
    }

    #[test]
    fn bad_rules_are_reported_with_key_line_and_column() {
        let text = "[[destinations]]\nname = \"crm\"\n\n[[destinations.track]]\nevent = \"A\"\ntitle = \"Order {{properties.id\"\nactivity = \"x\"\n";
        let err = parse(text, "f.toml").unwrap_err();
        let found: Vec<(String, Option<usize>)> = err
            .problems
            .iter()
            .map(|p| (p.key.clone(), p.line))
            .collect();
        assert_eq!(
            found,
            [
                ("destinations[0].track[0].activity".to_owned(), Some(7)),
                ("destinations[0].track[0].title".to_owned(), Some(6)),
            ],
            "{err}"
        );
        assert!(err.problems[1].message.contains("not closed"), "{err}");
        assert!(
            err.problems[0]
                .message
                .contains("did you mean `activity_type`?"),
            "{err}"
        );

        let text = "[[destinations]]\nname = \"crm\"\nbase_url = \"http://x/api\"\nowner_email = \"bob\"\n[[destinations.track]]\nevent = \"A\"\n[[destinations.page]]\nname = \"\"\nactivity_type = \"Visit\"\n[[destinations.page]]\nname = \"B\"\nlifecycle_stage = \" \"\n";
        let cfg = parse(text, "f.toml").unwrap();
        let err = resolve(cfg, "f.toml", &env(&[(ENV_FRESHWORKS_API_KEY, "k")])).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "destinations[0].track[0].activity_type",
                "destinations[0].page[0].name",
                "destinations[0].page[1].lifecycle_stage",
                "destinations[0].owner_email",
            ],
            "{err}"
        );
        assert!(
            err.problems[0]
                .message
                .contains("set activity_type, lifecycle_stage or both")
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let mut cfg = Config::default();
        cfg.sources.push(SourceConfig {
            name: "s".into(),
            write_keys: vec!["very-secret".into()],
            ..SourceConfig::default()
        });
        let e = env(&[(ENV_FRESHWORKS_API_KEY, "api-secret")]);
        let shown = redacted_toml(&cfg);
        assert!(!shown.contains("very-secret"));
        let r = resolve(cfg, "x", &e).unwrap();
        assert!(!format!("{r:?}").contains("very-secret"));
    }
}
