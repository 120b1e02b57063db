//! The emulator's in-memory account: contacts (with emails and custom fields), lists, sales accounts,
//! activities, bulk jobs and the request log, plus the contact rules (uniqueness, required fields,
//! field types, unknown-field policy) shared by single and bulk upserts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value, json};
use time::{OffsetDateTime, UtcOffset};

use crate::config::{EmulatorConfig, EmulatorError, Msg, Switches, UnknownFieldPolicy};
use crate::faults::{Fault, Faults};
use crate::fields::{FieldSet, validate};
use crate::quota::Quota;

/// `record_type_id` of contacts and sales accounts (strings, as in spec §2.2 / §7).
pub(crate) const CONTACT_RECORD_TYPE: &str = "71012139284";
pub(crate) const ACCOUNT_RECORD_TYPE: &str = "71010794477";
/// Id of the API user (creator of activities, etc.).
pub(crate) const API_USER_ID: i64 = 70000012345;

/// One API call as the emulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    /// HTTP method.
    pub method: String,
    /// Path (with the `/crm/sales/api` prefix), without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Status answered; 0 when the connection was dropped by a fault.
    pub status: u16,
    /// Request body as text (lossy UTF-8).
    pub body: String,
    /// Whether the call counted against the account quota.
    pub counted: bool,
    /// When it arrived.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A contact email entry.
#[derive(Debug, Clone)]
pub(crate) struct Email {
    pub id: i64,
    pub value: String,
    pub is_primary: bool,
    pub label: Option<String>,
}

/// A stored contact.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub id: i64,
    /// Built-in scalar fields by internal name.
    pub scalars: Map<String, Value>,
    pub emails: Vec<Email>,
    pub custom: Map<String, Value>,
    pub tags: Vec<Value>,
    pub phone_numbers: Vec<Value>,
    /// `(sales_account_id, is_primary)`.
    pub sales_accounts: Vec<(i64, bool)>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A marketing list.
#[derive(Debug, Clone)]
pub(crate) struct List {
    pub id: i64,
    pub name: String,
    pub members: BTreeSet<i64>,
    pub created_at: OffsetDateTime,
}

/// A sales account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub id: i64,
    pub fields: Map<String, Value>,
    pub custom: Map<String, Value>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A bulk upsert job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: i64,
    pub done: bool,
    pub succeeded: u64,
    pub failed: u64,
    pub report: Vec<Value>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Which `unique_identifier` key an upsert uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IdKey {
    Emails,
    Mobile,
    External,
    Id,
    Custom(String),
}

impl IdKey {
    pub(crate) fn from_key(key: &str) -> Option<Self> {
        match key {
            "emails" => Some(Self::Emails),
            "mobile_number" => Some(Self::Mobile),
            "external_id" => Some(Self::External),
            "id" => Some(Self::Id),
            k if k.starts_with("cf_") => Some(Self::Custom(k.to_owned())),
            _ => None,
        }
    }
}

/// A parsed `unique_identifier`.
#[derive(Debug, Clone)]
pub(crate) struct Identifier {
    pub key: IdKey,
    pub value: String,
}

/// How a contact payload changes emails.
#[derive(Debug, Clone)]
enum EmailsPatch {
    /// Set (or replace) the primary address, keeping secondaries.
    Primary(Option<String>),
    /// Replace the whole set: `(value, is_primary, label)`.
    Replace(Vec<(String, bool, Option<String>)>),
}

/// A validated contact payload.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactPatch {
    scalars: Map<String, Value>,
    emails: Option<EmailsPatch>,
    custom: Map<String, Value>,
    tags: Option<Vec<Value>>,
    phone_numbers: Option<Vec<Value>>,
    sales_accounts: Option<Vec<(i64, bool)>>,
}

/// Built-in keys accepted although the field set may not list them.
const EXTRA_BUILTINS: &[&str] = &[
    "territory_id",
    "campaign_id",
    "whatsapp_subscription_status",
    "sms_subscription_status",
    "avatar",
];
/// Read-only/system keys: silently ignored on write (spec §5).
const READ_ONLY: &[&str] = &[
    "id",
    "display_name",
    "created_at",
    "updated_at",
    "links",
    "lead_score",
    "customer_fit",
    "is_deleted",
    "record_type_id",
    "last_seen",
    "last_contacted",
    "open_deals_amount",
    "won_deals_amount",
    "total_sessions",
    "web_form_ids",
    "team_user_ids",
    "last_assigned_at",
];

/// Contacts by their unique keys, so lookups and uniqueness checks do not scan every contact
/// (a 100,000-contact backfill would otherwise be quadratic). Keys are lower-cased; exact
/// matching (e.g. case-sensitive emails) is checked on the candidates.
#[derive(Debug, Default)]
pub(crate) struct ContactIndex {
    emails: HashMap<String, BTreeSet<i64>>,
    mobiles: HashMap<String, BTreeSet<i64>>,
    external_ids: HashMap<String, BTreeSet<i64>>,
}

impl ContactIndex {
    fn keys(c: &Contact) -> [(u8, Vec<String>); 3] {
        let scalar = |name: &str| {
            c.scalars
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_lowercase)
                .into_iter()
                .collect::<Vec<_>>()
        };
        [
            (0, c.emails.iter().map(|e| e.value.to_lowercase()).collect()),
            (1, scalar("mobile_number")),
            (2, scalar("external_id")),
        ]
    }

    fn map(&mut self, which: u8) -> &mut HashMap<String, BTreeSet<i64>> {
        match which {
            0 => &mut self.emails,
            1 => &mut self.mobiles,
            _ => &mut self.external_ids,
        }
    }

    fn add(&mut self, c: &Contact) {
        for (which, keys) in Self::keys(c) {
            for k in keys {
                self.map(which).entry(k).or_default().insert(c.id);
            }
        }
    }

    fn remove(&mut self, c: &Contact) {
        for (which, keys) in Self::keys(c) {
            for k in keys {
                let map = self.map(which);
                if let Some(ids) = map.get_mut(&k) {
                    ids.remove(&c.id);
                    if ids.is_empty() {
                        map.remove(&k);
                    }
                }
            }
        }
    }

    /// Ids of contacts that may own `value` under `key` (lower-cased match).
    fn candidates(&self, key: &IdKey, value: &str) -> Option<Vec<i64>> {
        let map = match key {
            IdKey::Emails => &self.emails,
            IdKey::Mobile => &self.mobiles,
            IdKey::External => &self.external_ids,
            IdKey::Id | IdKey::Custom(_) => return None,
        };
        Some(
            map.get(&value.to_lowercase())
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
        )
    }
}

/// Mutable account data behind one lock.
#[derive(Debug)]
pub(crate) struct Store {
    next_id: i64,
    rng: StdRng,
    /// Read freely; write only through [`Store::put_contact`] / [`Store::remove_contact`],
    /// which keep `index` in step.
    pub contacts: BTreeMap<i64, Contact>,
    index: ContactIndex,
    pub lists: BTreeMap<i64, List>,
    pub accounts: BTreeMap<i64, Account>,
    pub activities: Vec<Value>,
    pub jobs: BTreeMap<i64, Job>,
    pub log: Vec<LoggedRequest>,
}

impl Store {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // Ids look like the real ones: about 7×10¹⁰.
        let next_id = 70_000_000_000 + rng.random_range(0..50_000_000);
        Self {
            next_id,
            rng,
            contacts: BTreeMap::new(),
            index: ContactIndex::default(),
            lists: BTreeMap::new(),
            accounts: BTreeMap::new(),
            activities: Vec::new(),
            jobs: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// A fresh id; ids are never reused, even across resets.
    pub(crate) fn new_id(&mut self) -> i64 {
        self.next_id += self.rng.random_range(1..=9);
        self.next_id
    }

    /// Insert or replace a contact, keeping the index in step.
    pub(crate) fn put_contact(&mut self, c: Contact) {
        if let Some(old) = self.contacts.get(&c.id) {
            self.index.remove(old);
        }
        self.index.add(&c);
        self.contacts.insert(c.id, c);
    }

    /// Remove a contact, keeping the index in step.
    pub(crate) fn remove_contact(&mut self, id: i64) -> Option<Contact> {
        let c = self.contacts.remove(&id)?;
        self.index.remove(&c);
        Some(c)
    }

    fn clear(&mut self) {
        self.contacts.clear();
        self.index = ContactIndex::default();
        self.lists.clear();
        self.accounts.clear();
        self.activities.clear();
        self.jobs.clear();
        self.log.clear();
    }
}

/// Everything shared by the handlers.
#[derive(Debug)]
pub(crate) struct Inner {
    pub api_key: String,
    pub fields: FieldSet,
    pub offset: UtcOffset,
    pub switches: Mutex<Switches>,
    pub store: Mutex<Store>,
    pub quota: Mutex<Quota>,
    pub faults: Mutex<Faults>,
}

/// Handle on one emulated account; cheap to clone.
#[derive(Debug, Clone)]
pub struct EmulatorState {
    pub(crate) inner: Arc<Inner>,
}

/// Locks a mutex, recovering from poisoning: a panicked handler must not wedge the emulator.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EmulatorState {
    /// Builds an emulator from its configuration.
    pub fn new(config: EmulatorConfig) -> Result<Self, EmulatorError> {
        if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
            return Err(EmulatorError::InvalidConfig(format!(
                "time scale {} must be > 0",
                config.time_scale
            )));
        }
        if !matches!(config.switches.create_status, 200 | 201) {
            return Err(EmulatorError::InvalidConfig(
                "create status must be 200 or 201".to_owned(),
            ));
        }
        let fields = match config.fields {
            Some(raw) => FieldSet::parse(raw)?,
            None => FieldSet::default_set()?,
        };
        let offset = UtcOffset::from_whole_seconds(config.utc_offset_minutes.saturating_mul(60))
            .map_err(|e| EmulatorError::InvalidConfig(format!("utc offset: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                api_key: config.api_key,
                fields,
                offset,
                switches: Mutex::new(config.switches),
                store: Mutex::new(Store::new(config.seed)),
                quota: Mutex::new(Quota::new(
                    config.hourly_limit,
                    config.minute_limit,
                    config.time_scale,
                )),
                faults: Mutex::new(Faults::new(config.seed)),
            }),
        })
    }

    /// Every contact, as `GET /contacts/{id}` returns it inside `"contact"`.
    pub fn contacts(&self) -> Vec<Value> {
        let store = lock(&self.inner.store);
        store
            .contacts
            .values()
            .map(|c| self.render_contact(&store, c, false, true))
            .collect()
    }

    /// The request log of API calls (admin calls are not logged).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.inner.store).log.clone()
    }

    /// Adds a fault; faults add up until [`EmulatorState::clear_faults`].
    pub fn inject(&self, fault: Fault) {
        lock(&self.inner.faults).inject(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// Changes the quota limits at run time (counted calls are kept).
    pub fn set_limits(&self, hourly: u32, minute: u32) {
        lock(&self.inner.quota).set_limits(hourly, minute);
    }

    /// Changes the time scale at run time, without a jump in emulated time.
    pub fn set_time_scale(&self, scale: f64) {
        if scale.is_finite() && scale > 0.0 {
            lock(&self.inner.quota).set_scale(scale);
        }
    }

    /// Spends `calls` quota as if another integration of the account made them now.
    pub fn spend(&self, calls: u32) {
        lock(&self.inner.quota).spend(calls);
    }

    /// Removes contact `id` and its list memberships, as a person deleting it in the CRM (or a
    /// merge that removes it) would. `false` if there is no such contact.
    pub fn delete_contact(&self, id: i64) -> bool {
        let mut store = lock(&self.inner.store);
        if store.remove_contact(id).is_none() {
            return false;
        }
        for list in store.lists.values_mut() {
            list.members.remove(&id);
        }
        true
    }

    /// Forgets all data, the log, the quota usage and the faults (configuration is kept).
    pub fn reset(&self) {
        lock(&self.inner.store).clear();
        lock(&self.inner.quota).reset();
        lock(&self.inner.faults).clear();
    }

    /// How many 429s the quota (not injected faults) produced.
    pub fn quota_429_count(&self) -> u64 {
        lock(&self.inner.quota).refused()
    }

    /// Current switches.
    pub fn switches(&self) -> Switches {
        lock(&self.inner.switches).clone()
    }

    /// Replaces the switches at run time.
    pub fn set_switches(&self, switches: Switches) {
        *lock(&self.inner.switches) = switches;
    }

    /// Quota usage and limits as JSON (admin API).
    pub fn quota_snapshot(&self) -> Value {
        lock(&self.inner.quota).snapshot()
    }

    /// The whole account as JSON (admin API).
    pub fn snapshot(&self) -> Value {
        let store = lock(&self.inner.store);
        let contacts: Vec<Value> = store
            .contacts
            .values()
            .map(|c| self.render_contact(&store, c, true, true))
            .collect();
        let lists: Vec<Value> = store
            .lists
            .values()
            .map(|l| json!({"id": l.id, "name": l.name, "contact_ids": l.members.iter().collect::<Vec<_>>()}))
            .collect();
        let accounts: Vec<Value> = store
            .accounts
            .values()
            .map(|a| self.render_account(a))
            .collect();
        let jobs: Vec<Value> = store
            .jobs
            .values()
            .map(|j| self.render_job(j, false))
            .collect();
        json!({
            "contacts": contacts,
            "lists": lists,
            "sales_accounts": accounts,
            "sales_activities": store.activities,
            "jobs": jobs,
        })
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc().to_offset(self.inner.offset)
    }

    pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
        let f = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
        );
        t.format(f).unwrap_or_default()
    }

    pub(crate) fn msg(&self, m: Msg) -> String {
        m.render(lock(&self.inner.switches).locale)
    }

    pub(crate) fn log(&self, entry: LoggedRequest) {
        lock(&self.inner.store).log.push(entry);
    }

    /// Full contact JSON (spec §2.2 sample keys), optionally with `sales_accounts` and `custom_field`.
    pub(crate) fn render_contact(
        &self,
        store: &Store,
        c: &Contact,
        with_accounts: bool,
        with_custom: bool,
    ) -> Value {
        let s = |k: &str| c.scalars.get(k).cloned().unwrap_or(Value::Null);
        let primary = c
            .emails
            .iter()
            .find(|e| e.is_primary)
            .or(c.emails.first())
            .map(|e| e.value.clone());
        let name = [s("first_name"), s("last_name")]
            .iter()
            .filter_map(|v| v.as_str().filter(|x| !x.is_empty()).map(str::to_owned))
            .collect::<Vec<_>>()
            .join(" ");
        let display_name = if !name.is_empty() {
            Value::String(name)
        } else if let Some(p) = &primary {
            Value::String(p.clone())
        } else {
            s("mobile_number")
        };
        let id = c.id;
        let mut o = Map::new();
        o.insert("id".into(), json!(id));
        for k in ["first_name", "last_name"] {
            o.insert(k.into(), s(k));
        }
        o.insert("display_name".into(), display_name);
        o.insert("avatar".into(), s("avatar"));
        for k in ["job_title", "city", "state", "zipcode", "country"] {
            o.insert(k.into(), s(k));
        }
        o.insert("email".into(), primary.map_or(Value::Null, Value::String));
        o.insert(
            "emails".into(),
            Value::Array(
                c.emails
                    .iter()
                    .map(|e| {
                        json!({"id": e.id, "value": e.value, "is_primary": e.is_primary,
                               "label": e.label, "_destroy": false})
                    })
                    .collect(),
            ),
        );
        for k in ["time_zone", "work_number", "mobile_number", "address"] {
            o.insert(k.into(), s(k));
        }
        o.insert("last_seen".into(), Value::Null);
        o.insert("lead_score".into(), json!(0));
        o.insert("last_contacted".into(), Value::Null);
        o.insert("open_deals_amount".into(), Value::Null);
        o.insert("won_deals_amount".into(), Value::Null);
        o.insert(
            "links".into(),
            json!({
                "conversations": format!("/crm/sales/contacts/{id}/conversations/all?include=email_conversation_recipients%2Ctargetable%2Cphone_number%2Cphone_caller%2Cnote%2Cuser&per_page=3"),
                "timeline_feeds": format!("/crm/sales/contacts/{id}/timeline_feeds"),
                "document_associations": format!("/crm/sales/contacts/{id}/document_associations"),
                "notes": format!("/crm/sales/contacts/{id}/notes?include=creater"),
                "tasks": format!("/crm/sales/contacts/{id}/tasks?include=creater,owner,updater,targetable,users,task_type"),
                "appointments": format!("/crm/sales/contacts/{id}/appointments?include=creater,owner,updater,targetable,appointment_attendees,conference,note"),
                "reminders": format!("/crm/sales/contacts/{id}/reminders?include=creater,owner,updater,targetable"),
                "duplicates": format!("/crm/sales/contacts/{id}/duplicates"),
                "connections": format!("/crm/sales/contacts/{id}/connections")
            }),
        );
        if with_custom {
            o.insert("custom_field".into(), Value::Object(c.custom.clone()));
        }
        o.insert("created_at".into(), json!(Self::fmt_time(c.created_at)));
        o.insert("updated_at".into(), json!(Self::fmt_time(c.updated_at)));
        o.insert("keyword".into(), s("keyword"));
        o.insert("medium".into(), s("medium"));
        o.insert("tags".into(), Value::Array(c.tags.clone()));
        for k in ["facebook", "twitter", "linkedin"] {
            o.insert(k.into(), s(k));
        }
        o.insert("is_deleted".into(), json!(false));
        o.insert("team_user_ids".into(), Value::Null);
        o.insert("external_id".into(), s("external_id"));
        o.insert("work_email".into(), s("work_email"));
        o.insert(
            "subscription_status".into(),
            c.scalars
                .get("subscription_status")
                .cloned()
                .unwrap_or(json!(1)),
        );
        o.insert(
            "subscription_types".into(),
            c.scalars
                .get("subscription_types")
                .cloned()
                .unwrap_or(json!("2;3;4;5;1")),
        );
        o.insert("customer_fit".into(), json!(0));
        o.insert("record_type_id".into(), json!(CONTACT_RECORD_TYPE));
        for k in ["whatsapp_subscription_status", "sms_subscription_status"] {
            o.insert(k.into(), c.scalars.get(k).cloned().unwrap_or(json!(2)));
        }
        o.insert("locale".into(), s("locale"));
        o.insert("total_sessions".into(), Value::Null);
        o.insert(
            "phone_numbers".into(),
            Value::Array(c.phone_numbers.clone()),
        );
        o.insert("web_form_ids".into(), Value::Null);
        o.insert("last_assigned_at".into(), Value::Null);
        for k in [
            "owner_id",
            "lifecycle_stage_id",
            "contact_status_id",
            "lead_source_id",
            "territory_id",
            "campaign_id",
        ] {
            o.insert(k.into(), s(k));
        }
        // Any other built-in field of the account's field set that was written.
        for (k, v) in &c.scalars {
            if !o.contains_key(k) {
                o.insert(k.clone(), v.clone());
            }
        }
        if with_accounts {
            let accounts: Vec<Value> = c
                .sales_accounts
                .iter()
                .filter_map(|(aid, primary)| {
                    store.accounts.get(aid).map(|a| {
                        json!({"partial": true, "id": a.id, "name": a.fields.get("name"), "avatar": null,
                               "website": a.fields.get("website"), "last_contacted": null,
                               "record_type_id": ACCOUNT_RECORD_TYPE, "is_primary": primary})
                    })
                })
                .collect();
            o.insert("sales_accounts".into(), Value::Array(accounts));
        }
        Value::Object(o)
    }

    pub(crate) fn render_account(&self, a: &Account) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), json!(a.id));
        for k in [
            "name",
            "address",
            "city",
            "state",
            "zipcode",
            "country",
            "number_of_employees",
            "annual_revenue",
            "website",
            "owner_id",
            "phone",
            "industry_type_id",
            "business_type_id",
            "parent_sales_account_id",
        ] {
            o.insert(k.into(), a.fields.get(k).cloned().unwrap_or(Value::Null));
        }
        for (k, v) in &a.fields {
            o.entry(k.clone()).or_insert_with(|| v.clone());
        }
        o.insert("custom_field".into(), Value::Object(a.custom.clone()));
        o.insert("record_type_id".into(), json!(ACCOUNT_RECORD_TYPE));
        o.insert("created_at".into(), json!(Self::fmt_time(a.created_at)));
        o.insert("updated_at".into(), json!(Self::fmt_time(a.updated_at)));
        Value::Object(o)
    }

    pub(crate) fn render_job(&self, j: &Job, data_as_string: bool) -> Value {
        let data = if j.done {
            let d = json!({
                "record_status": {"succeeded": j.succeeded, "failed": j.failed},
                "detailed_failure_report": j.report,
            });
            if data_as_string {
                Value::String(d.to_string())
            } else {
                d
            }
        } else {
            Value::Null
        };
        json!({
            "id": j.id,
            "status": if j.done { "SUCCESS" } else { "IN_PROGRESS" },
            "job_type_name": "Contact Bulk Upsert",
            "created_at": Self::fmt_time(j.created_at),
            "status_updated_at": Self::fmt_time(j.updated_at),
            "progress": if j.done { 100 } else { 0 },
            "data": data,
        })
    }

    fn emails_equal(sw: &Switches, a: &str, b: &str) -> bool {
        if sw.email_case_insensitive {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// Finds a contact by identifier.
    pub(crate) fn find(&self, store: &Store, sw: &Switches, ident: &Identifier) -> Option<i64> {
        let v = ident.value.as_str();
        let matches = |c: &&Contact| match &ident.key {
            IdKey::Emails => c.emails.iter().any(|e| Self::emails_equal(sw, &e.value, v)),
            IdKey::Mobile => c.scalars.get("mobile_number").and_then(Value::as_str) == Some(v),
            IdKey::External => c.scalars.get("external_id").and_then(Value::as_str) == Some(v),
            IdKey::Id => v.parse::<i64>().ok() == Some(c.id),
            IdKey::Custom(k) => c.custom.get(k).is_some_and(|x| value_text(x) == v),
        };
        if let IdKey::Id = ident.key {
            return v
                .parse::<i64>()
                .ok()
                .filter(|id| store.contacts.contains_key(id));
        }
        match store.index.candidates(&ident.key, v) {
            Some(ids) => ids
                .iter()
                .filter_map(|id| store.contacts.get(id))
                .find(matches)
                .map(|c| c.id),
            // Custom unique fields are rare: scan.
            None => store.contacts.values().find(matches).map(|c| c.id),
        }
    }

    /// Validates a contact payload against the field set.
    pub(crate) fn parse_patch(&self, sw: &Switches, contact: &Value) -> Result<ContactPatch, Msg> {
        let obj = match contact {
            Value::Object(o) => o,
            Value::Null => return Ok(ContactPatch::default()),
            _ => return Err(Msg::Invalid("Contact".to_owned())),
        };
        let fields = &self.inner.fields;
        let mut p = ContactPatch::default();
        let unknown = |name: &str| -> Result<(), Msg> {
            match sw.unknown_fields {
                UnknownFieldPolicy::Ignore => Ok(()),
                UnknownFieldPolicy::Reject => Err(Msg::UnknownField(name.to_owned())),
            }
        };
        for (k, v) in obj {
            match k.as_str() {
                "emails" | "email" => p.emails = Some(parse_emails(v)?),
                "custom_field" => {
                    let Value::Object(cf) = v else {
                        if v.is_null() {
                            continue;
                        }
                        return Err(Msg::Invalid("Custom field".to_owned()));
                    };
                    for (ck, cv) in cf {
                        match fields.get(ck).filter(|d| !d.builtin) {
                            Some(def) => {
                                p.custom.insert(ck.clone(), validate(def, cv, sw)?);
                            }
                            None => unknown(ck)?,
                        }
                    }
                }
                "tags" => match v {
                    Value::Array(a) => p.tags = Some(a.clone()),
                    Value::String(s) => {
                        p.tags = Some(
                            s.split(',')
                                .map(|t| Value::String(t.trim().to_owned()))
                                .collect(),
                        )
                    }
                    Value::Null => p.tags = Some(Vec::new()),
                    _ => return Err(Msg::Invalid("Tags".to_owned())),
                },
                "phone_numbers" => match v {
                    Value::Array(a) => p.phone_numbers = Some(a.clone()),
                    _ => return Err(Msg::Invalid("Phone numbers".to_owned())),
                },
                "sales_accounts" => p.sales_accounts = Some(parse_account_links(v)?),
                k if READ_ONLY.contains(&k) => {}
                k if EXTRA_BUILTINS.contains(&k) => {
                    let stored = match v {
                        Value::Null => Value::Null,
                        Value::String(s) if k == "avatar" => Value::String(s.clone()),
                        _ => match v {
                            Value::Number(_) => v.clone(),
                            Value::String(s) => s
                                .trim()
                                .parse::<i64>()
                                .map(Value::from)
                                .map_err(|_| Msg::Invalid(k.to_owned()))?,
                            _ => return Err(Msg::Invalid(k.to_owned())),
                        },
                    };
                    p.scalars.insert(k.to_owned(), stored);
                }
                k => match fields.get(k).filter(|d| d.builtin) {
                    Some(def) => {
                        p.scalars.insert(k.to_owned(), validate(def, v, sw)?);
                    }
                    None => unknown(k)?,
                },
            }
        }
        Ok(p)
    }

    /// Applies a patch to a contact in place.
    fn apply(&self, store: &mut Store, c: &mut Contact, p: &ContactPatch) {
        for (k, v) in &p.scalars {
            c.scalars.insert(k.clone(), v.clone());
        }
        for (k, v) in &p.custom {
            if v.is_null() {
                c.custom.remove(k);
            } else {
                c.custom.insert(k.clone(), v.clone());
            }
        }
        if let Some(t) = &p.tags {
            c.tags = t.clone();
        }
        if let Some(n) = &p.phone_numbers {
            c.phone_numbers = n.clone();
        }
        if let Some(a) = &p.sales_accounts {
            c.sales_accounts = a
                .iter()
                .filter(|(id, _)| store.accounts.contains_key(id))
                .copied()
                .collect();
        }
        match &p.emails {
            None => {}
            Some(EmailsPatch::Primary(None)) => c.emails.retain(|e| !e.is_primary),
            Some(EmailsPatch::Primary(Some(addr))) => {
                if let Some(existing) = c.emails.iter_mut().find(|e| e.value == *addr) {
                    existing.is_primary = true;
                    let keep = existing.id;
                    for e in c.emails.iter_mut().filter(|e| e.id != keep) {
                        e.is_primary = false;
                    }
                } else if let Some(primary) = c.emails.iter_mut().find(|e| e.is_primary) {
                    primary.value = addr.clone();
                } else {
                    let id = store.new_id();
                    c.emails.insert(
                        0,
                        Email {
                            id,
                            value: addr.clone(),
                            is_primary: true,
                            label: None,
                        },
                    );
                }
            }
            Some(EmailsPatch::Replace(list)) => {
                let mut out = Vec::with_capacity(list.len());
                for (value, is_primary, label) in list {
                    let id = c
                        .emails
                        .iter()
                        .find(|e| e.value == *value)
                        .map_or_else(|| store.new_id(), |e| e.id);
                    out.push(Email {
                        id,
                        value: value.clone(),
                        is_primary: *is_primary,
                        label: label.clone(),
                    });
                }
                if !out.iter().any(|e| e.is_primary)
                    && let Some(first) = out.first_mut()
                {
                    first.is_primary = true;
                }
                c.emails = out;
            }
        }
    }

    /// Rejects a candidate contact whose email or mobile number another contact owns.
    fn check_unique(&self, store: &Store, sw: &Switches, c: &Contact) -> Result<(), Msg> {
        // Only contacts sharing an email or the mobile number (case-folded) can clash.
        let mut candidates: BTreeSet<i64> = BTreeSet::new();
        for e in &c.emails {
            candidates.extend(
                store
                    .index
                    .candidates(&IdKey::Emails, &e.value)
                    .unwrap_or_default(),
            );
        }
        if let Some(m) = c.scalars.get("mobile_number").and_then(Value::as_str) {
            candidates.extend(
                store
                    .index
                    .candidates(&IdKey::Mobile, m)
                    .unwrap_or_default(),
            );
        }
        for other in candidates
            .iter()
            .filter(|id| **id != c.id)
            .filter_map(|id| store.contacts.get(id))
        {
            if c.emails.iter().any(|e| {
                other
                    .emails
                    .iter()
                    .any(|o| Self::emails_equal(sw, &e.value, &o.value))
            }) {
                return Err(Msg::EmailNotUnique);
            }
            let mobile = c
                .scalars
                .get("mobile_number")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty());
            if mobile.is_some()
                && mobile == other.scalars.get("mobile_number").and_then(Value::as_str)
            {
                return Err(Msg::MobileNotUnique);
            }
        }
        Ok(())
    }

    /// Rejects a new contact lacking a configured required field.
    fn check_required(&self, c: &Contact) -> Result<(), Msg> {
        for def in self.inner.fields.defs.iter().filter(|d| d.required) {
            let present = match def.name.as_str() {
                "emails" | "email" => !c.emails.is_empty(),
                name if def.builtin => c.scalars.get(name).is_some_and(is_filled),
                name => c.custom.get(name).is_some_and(is_filled),
            };
            if !present {
                return Err(Msg::Blank(def.label.clone()));
            }
        }
        Ok(())
    }

    /// Creates a contact from a patch (plus an identifier seed); returns its id.
    pub(crate) fn create_contact(
        &self,
        store: &mut Store,
        sw: &Switches,
        ident: Option<&Identifier>,
        p: &ContactPatch,
    ) -> Result<i64, Msg> {
        let now = self.now();
        let mut c = Contact {
            id: 0,
            scalars: Map::new(),
            emails: Vec::new(),
            custom: Map::new(),
            tags: Vec::new(),
            phone_numbers: Vec::new(),
            sales_accounts: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        if let Some(ident) = ident {
            match &ident.key {
                IdKey::Emails => {
                    let id = store.new_id();
                    c.emails.push(Email {
                        id,
                        value: ident.value.clone(),
                        is_primary: true,
                        label: None,
                    });
                }
                IdKey::Mobile => {
                    c.scalars.insert("mobile_number".into(), json!(ident.value));
                }
                IdKey::External => {
                    c.scalars.insert("external_id".into(), json!(ident.value));
                }
                IdKey::Custom(k) => {
                    c.custom.insert(k.clone(), json!(ident.value));
                }
                IdKey::Id => return Err(Msg::NotFound("Contact")),
            }
        }
        self.apply(store, &mut c, p);
        self.check_required(&c)?;
        self.check_unique(store, sw, &c)?;
        c.id = store.new_id();
        let id = c.id;
        store.put_contact(c);
        Ok(id)
    }

    /// Updates an existing contact with a patch.
    pub(crate) fn update_contact(
        &self,
        store: &mut Store,
        sw: &Switches,
        id: i64,
        p: &ContactPatch,
    ) -> Result<(), Msg> {
        let mut c = store
            .contacts
            .get(&id)
            .cloned()
            .ok_or(Msg::NotFound("Contact"))?;
        self.apply(store, &mut c, p);
        self.check_unique(store, sw, &c)?;
        c.updated_at = self.now();
        store.put_contact(c);
        Ok(())
    }

    /// Upsert by identifier: `(contact id, created?)`.
    pub(crate) fn upsert(
        &self,
        store: &mut Store,
        sw: &Switches,
        ident: &Identifier,
        contact: &Value,
    ) -> Result<(i64, bool), Msg> {
        let p = self.parse_patch(sw, contact)?;
        match self.find(store, sw, ident) {
            Some(id) => self.update_contact(store, sw, id, &p).map(|()| (id, false)),
            None => self
                .create_contact(store, sw, Some(ident), &p)
                .map(|id| (id, true)),
        }
    }

    /// Runs a bulk job's items and marks it done (no-op if the job vanished in a reset).
    pub(crate) fn run_job(&self, job_id: i64, items: Vec<Value>) {
        let sw = self.switches();
        let mut store = lock(&self.inner.store);
        if !store.jobs.contains_key(&job_id) {
            return;
        }
        let (mut ok, mut failed, mut report) = (0u64, 0u64, Vec::new());
        for item in items {
            let ident = parse_bulk_identifier(&item);
            let outcome = match &ident {
                Some((_, ident)) => {
                    let data = item.get("data").cloned().unwrap_or(Value::Null);
                    self.upsert(&mut store, &sw, ident, &data).map(|_| ())
                }
                None => Err(Msg::MissingIdentifier),
            };
            match outcome {
                Ok(()) => ok += 1,
                Err(m) => {
                    failed += 1;
                    let mut entry = Map::new();
                    if let Some((key, ident)) = ident {
                        entry.insert(key, json!(ident.value));
                    }
                    entry.insert("error_message".into(), json!([m.render(sw.locale)]));
                    report.push(Value::Object(entry));
                }
            }
        }
        let now = self.now();
        if let Some(job) = store.jobs.get_mut(&job_id) {
            job.done = true;
            job.succeeded = ok;
            job.failed = failed;
            job.report = report;
            job.updated_at = now;
        }
    }
}

fn is_filled(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

/// Text of a scalar for identifier comparison.
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `emails`/`email` in a payload: a string (primary) or an array of entries (replace).
fn parse_emails(v: &Value) -> Result<EmailsPatch, Msg> {
    let bad = || Msg::Invalid("Emails".to_owned());
    match v {
        Value::Null => Ok(EmailsPatch::Primary(None)),
        Value::String(s) if s.trim().is_empty() => Ok(EmailsPatch::Primary(None)),
        Value::String(s) if s.contains('@') => Ok(EmailsPatch::Primary(Some(s.trim().to_owned()))),
        Value::Array(items) => {
            let mut out = Vec::new();
            for it in items {
                let (value, primary, label, destroy) = match it {
                    Value::String(s) => (s.clone(), false, None, false),
                    Value::Object(o) => (
                        o.get("value")
                            .and_then(Value::as_str)
                            .ok_or_else(bad)?
                            .to_owned(),
                        o.get("is_primary")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        o.get("label").and_then(Value::as_str).map(str::to_owned),
                        o.get("_destroy").and_then(Value::as_bool).unwrap_or(false),
                    ),
                    _ => return Err(bad()),
                };
                if !value.contains('@') {
                    return Err(bad());
                }
                if !destroy {
                    out.push((value, primary, label));
                }
            }
            Ok(EmailsPatch::Replace(out))
        }
        _ => Err(bad()),
    }
}

/// `sales_accounts: [{"id":..,"is_primary":..}]`.
fn parse_account_links(v: &Value) -> Result<Vec<(i64, bool)>, Msg> {
    let bad = || Msg::Invalid("Sales accounts".to_owned());
    let Value::Array(items) = v else {
        return Err(bad());
    };
    items
        .iter()
        .map(|it| {
            let id = it.get("id").and_then(json_i64).ok_or_else(bad)?;
            Ok((
                id,
                it.get("is_primary")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ))
        })
        .collect()
}

/// An id given as a JSON number or numeric string.
pub(crate) fn json_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses `{"unique_identifier":{"<key>":"<value>"}}`: exactly one known key with a scalar value.
pub(crate) fn parse_identifier(v: Option<&Value>) -> Option<Identifier> {
    let Value::Object(o) = v? else { return None };
    if o.len() != 1 {
        return None;
    }
    let (k, val) = o.iter().next()?;
    scalar_identifier(k, val)
}

fn scalar_identifier(k: &str, val: &Value) -> Option<Identifier> {
    let key = IdKey::from_key(k)?;
    let value = match val {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(Identifier { key, value })
}

/// A bulk item's identifier: the one key besides `data`.
fn parse_bulk_identifier(item: &Value) -> Option<(String, Identifier)> {
    let Value::Object(o) = item else { return None };
    let mut keys = o.iter().filter(|(k, _)| k.as_str() != "data");
    let (k, v) = keys.next()?;
    if keys.next().is_some() {
        return None;
    }
    scalar_identifier(k, v).map(|i| (k.clone(), i))
}
