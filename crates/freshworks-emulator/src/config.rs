//! Emulator configuration: limits, time scale, seed, field set and the switches for every point the spec
//! marks UNVERIFIED (spec §10/§11), plus the crate's error type and the (optionally localized) messages.

use serde::{Deserialize, Serialize};

/// Everything an emulator instance is built from.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The only API key accepted in `Authorization: Token token=<key>`.
    pub api_key: String,
    /// Calls per sliding (emulated) hour for the whole account.
    pub hourly_limit: u32,
    /// Calls per sliding (emulated) minute for the whole account.
    pub minute_limit: u32,
    /// Emulated time runs this many times faster than wall time for the quota windows.
    pub time_scale: f64,
    /// Seed for ids and the random failure rate, so runs are reproducible.
    pub seed: u64,
    /// Contact field set as `{"fields":[...]}`; `None` uses the embedded default account.
    pub fields: Option<serde_json::Value>,
    /// Behaviour switches for unverified points.
    pub switches: Switches,
    /// Account offset used for timestamps, in minutes east of UTC (spec samples use `-04:00`).
    pub utc_offset_minutes: i32,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            api_key: "emulator-key".to_owned(),
            hourly_limit: 5000,
            minute_limit: 400,
            time_scale: 1.0,
            seed: 42,
            fields: None,
            switches: Switches::default(),
            utc_offset_minutes: -240,
        }
    }
}

/// What to do with a `custom_field` key (or top-level contact key) the account does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFieldPolicy {
    /// Drop it silently, as Segment's documentation describes.
    #[default]
    Ignore,
    /// Answer 400.
    Reject,
}

/// Shape of a bulk job status's `data` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BulkDataFormat {
    /// A JSON-encoded string, as the production API returns it.
    #[default]
    String,
    /// A plain JSON object.
    Object,
}

/// Language of error messages (the real service localizes them to the API user's language).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Locale {
    /// English.
    #[default]
    En,
    /// Dutch (as a Dutch-speaking API user sees them).
    Nl,
}

/// Switches for behaviour the spec marks UNVERIFIED; defaults follow the spec's suggestions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Switches {
    /// HTTP status for a create (upsert that created, `POST /contacts`, `/lists`, ...): 200 or 201.
    pub create_status: u16,
    /// Unknown field keys: ignore or reject with 400.
    pub unknown_fields: UnknownFieldPolicy,
    /// Match emails case-insensitively (stored as sent either way).
    pub email_case_insensitive: bool,
    /// Custom dropdown/radio also accept the choice id, not only the choice text.
    pub dropdown_accepts_id: bool,
    /// Bulk job status `data` as a string or an object.
    pub bulk_data: BulkDataFormat,
    /// Maximum items in one `bulk_upsert` call.
    pub max_bulk_size: usize,
    /// Emit `X-RateLimit-Limit`/`X-RateLimit-Remaining` and, on 429, `Retry-After`.
    pub rate_limit_headers: bool,
    /// Also accept `Authorization: Token <key>` (a weak hint in spec §1).
    pub accept_bare_token: bool,
    /// Language of error messages.
    pub locale: Locale,
    /// Wall-clock delay before a bulk job is processed (the job reads `IN_PROGRESS` until then).
    pub bulk_job_delay_ms: u64,
    /// `POST /sales_activities` without `sales_activity_type_id` is refused (400 "can't be
    /// blank"). A given id must always name an existing type.
    pub activity_type_required: bool,
    /// `POST /sales_activities` without `owner_id` is refused; otherwise the API user owns it.
    /// A given id must always name an existing owner.
    pub activity_owner_required: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Self {
            create_status: 200,
            unknown_fields: UnknownFieldPolicy::Ignore,
            email_case_insensitive: true,
            dropdown_accepts_id: false,
            bulk_data: BulkDataFormat::String,
            max_bulk_size: 100,
            rate_limit_headers: false,
            accept_bare_token: false,
            locale: Locale::En,
            bulk_job_delay_ms: 20,
            activity_type_required: true,
            activity_owner_required: false,
        }
    }
}

/// Errors from building or running an emulator; each variant says what the caller has to fix.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The field set is malformed: fix the `--fields` file.
    #[error("invalid field set: {0}")]
    InvalidFields(String),
    /// A configuration value is out of range: fix the argument.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The fields file could not be read.
    #[error("cannot read fields file {path}: {source}")]
    ReadFields {
        /// The file that failed.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Binding or serving failed.
    #[error("server i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Error messages the emulator produces, rendered in the configured locale.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    EmailNotUnique,
    MobileNotUnique,
    NameTaken,
    Blank(String),
    Invalid(String),
    UnknownField(String),
    MissingIdentifier,
    BadJson,
    NotFound(&'static str),
    TooManyRequests,
    BulkTooLarge(usize),
    Required(&'static str),
    Injected,
}

impl Msg {
    pub(crate) fn render(&self, locale: Locale) -> String {
        match locale {
            Locale::En => match self {
                Msg::EmailNotUnique => "Email is not unique".to_owned(),
                Msg::MobileNotUnique => "MobileNumber is not unique".to_owned(),
                Msg::NameTaken => "Name has already been taken".to_owned(),
                Msg::Blank(label) => format!("{label} can't be blank"),
                Msg::Invalid(label) => format!("{label} is invalid"),
                Msg::UnknownField(name) => format!("Unknown field {name}"),
                Msg::MissingIdentifier => "Unique identifier is missing or invalid".to_owned(),
                Msg::BadJson => "Invalid JSON in request body".to_owned(),
                Msg::NotFound(what) => format!("{what} not found"),
                Msg::TooManyRequests => "Too many requests".to_owned(),
                Msg::BulkTooLarge(max) => format!("You can upsert at most {max} records at a time"),
                Msg::Required(what) => format!("{what} is required"),
                Msg::Injected => "Internal server error".to_owned(),
            },
            Locale::Nl => match self {
                Msg::EmailNotUnique => "E-mail is niet uniek".to_owned(),
                Msg::MobileNotUnique => "Mobiel nummer is niet uniek".to_owned(),
                Msg::NameTaken => "Naam is al in gebruik".to_owned(),
                Msg::Blank(label) => format!("{label} mag niet leeg zijn"),
                Msg::Invalid(label) => format!("{label} is ongeldig"),
                Msg::UnknownField(name) => format!("Onbekend veld {name}"),
                Msg::MissingIdentifier => {
                    "Unieke identificatie ontbreekt of is ongeldig".to_owned()
                }
                Msg::BadJson => "Ongeldige JSON in de aanvraag".to_owned(),
                Msg::NotFound(what) => format!("{what} niet gevonden"),
                Msg::TooManyRequests => "Te veel aanvragen".to_owned(),
                Msg::BulkTooLarge(max) => {
                    format!("U kunt maximaal {max} records tegelijk bijwerken")
                }
                Msg::Required(what) => format!("{what} is verplicht"),
                Msg::Injected => "Interne serverfout".to_owned(),
            },
        }
    }
}
