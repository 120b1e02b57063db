//! Command-line arguments for `freshgate emulator` and the entry that binds, prints the base URL and serves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{
    BulkDataFormat, EmulatorConfig, EmulatorError, Locale, Switches, UnknownFieldPolicy,
};
use crate::state::EmulatorState;

/// Arguments of the emulator command.
#[derive(clap::Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// API key clients must send as `Authorization: Token token=<key>`.
    #[arg(
        long,
        env = "FRESHWORKS_API_KEY",
        default_value = "emulator-key",
        hide_env_values = true
    )]
    pub api_key: String,
    /// Calls per sliding hour for the account.
    #[arg(long, default_value_t = 5000)]
    pub hourly_limit: u32,
    /// Calls per sliding minute for the account.
    #[arg(long, default_value_t = 400)]
    pub minute_limit: u32,
    /// JSON file `{"fields":[...]}` replacing the default contact field set.
    #[arg(long)]
    pub fields: Option<PathBuf>,
    /// Emulated time runs this many times faster than wall time for the quota windows.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Seed for ids and random faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Status of a create: 200 or 201.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=201))]
    pub create_status: u16,
    /// Unknown custom/contact field keys: ignore or reject (400).
    #[arg(long, value_enum, default_value_t = UnknownFieldPolicy::Ignore)]
    pub unknown_fields: UnknownFieldPolicy,
    /// Match emails case-sensitively (default: case-insensitive).
    #[arg(long)]
    pub email_case_sensitive: bool,
    /// Custom dropdowns also accept the choice id.
    #[arg(long)]
    pub dropdown_accepts_id: bool,
    /// Bulk job status `data` as a JSON string or an object.
    #[arg(long, value_enum, default_value_t = BulkDataFormat::String)]
    pub bulk_data: BulkDataFormat,
    /// Maximum items per bulk upsert.
    #[arg(long, default_value_t = 100)]
    pub max_bulk_size: usize,
    /// Send `X-RateLimit-*` and `Retry-After` headers.
    #[arg(long)]
    pub rate_limit_headers: bool,
    /// Also accept `Authorization: Token <key>`.
    #[arg(long)]
    pub accept_bare_token: bool,
    /// Language of error messages.
    #[arg(long, value_enum, default_value_t = Locale::En)]
    pub locale: Locale,
    /// Delay before a bulk job is processed, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub bulk_job_delay_ms: u64,
    /// Accept sales activities without `sales_activity_type_id` (refused by default).
    #[arg(long)]
    pub activity_type_optional: bool,
    /// Refuse sales activities without `owner_id` (by default the API user owns them).
    #[arg(long)]
    pub activity_owner_required: bool,
    /// Account UTC offset in minutes for timestamps (e.g. -240 for -04:00).
    #[arg(long, default_value_t = -240, allow_negative_numbers = true)]
    pub utc_offset_minutes: i32,
}

impl EmulatorArgs {
    /// Builds the configuration, reading the fields file if given.
    pub fn to_config(&self) -> Result<EmulatorConfig, EmulatorError> {
        let fields = match &self.fields {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| EmulatorError::ReadFields {
                        path: path.display().to_string(),
                        source,
                    })?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    EmulatorError::InvalidFields(format!("{}: {e}", path.display()))
                })?)
            }
            None => None,
        };
        Ok(EmulatorConfig {
            api_key: self.api_key.clone(),
            hourly_limit: self.hourly_limit,
            minute_limit: self.minute_limit,
            time_scale: self.time_scale,
            seed: self.seed,
            fields,
            switches: Switches {
                create_status: self.create_status,
                unknown_fields: self.unknown_fields,
                email_case_insensitive: !self.email_case_sensitive,
                dropdown_accepts_id: self.dropdown_accepts_id,
                bulk_data: self.bulk_data,
                max_bulk_size: self.max_bulk_size,
                rate_limit_headers: self.rate_limit_headers,
                accept_bare_token: self.accept_bare_token,
                locale: self.locale,
                bulk_job_delay_ms: self.bulk_job_delay_ms,
                activity_type_required: !self.activity_type_optional,
                activity_owner_required: self.activity_owner_required,
            },
            utc_offset_minutes: self.utc_offset_minutes,
        })
    }
}

/// Binds, prints `freshworks emulator listening: http://ADDR/crm/sales/api` to stdout, serves until `shutdown`.
pub async fn run_cli(
    args: EmulatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EmulatorError> {
    let state = EmulatorState::new(args.to_config()?)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "freshworks emulator listening: http://{addr}{}",
        crate::routes::BASE
    );
    crate::serve(listener, state, shutdown).await?;
    Ok(())
}
