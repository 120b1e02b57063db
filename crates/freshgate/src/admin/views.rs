//! The typed views of the console, the admin API and the CLI: one query layer over the store
//! and the configuration, so the three always show the same figures (and the same figures as
//! `/metrics`: quota left is counted against the caps with `headroom` applied).
//!
//! Every list here is an index range of the store (see `Store::list_events`, `Store::backlog`);
//! nothing counts every event or delivery, except [`Views::outcomes`] for `queue stats`.

use std::collections::BTreeMap;
use std::sync::Arc;

use freshgate_core::coalesce::{IdentifyInput, MissingTraits, coalesce};
use freshgate_core::fields::FieldDef;
use freshgate_core::mapping::{self, FieldIndex, Level, Resolution};
use freshgate_core::shadow::{self, ContactShadow};
use freshgate_store::{
    DeadLetter, DeliveryFilter, DeliveryId, DeliveryStatus, DestinationPause, EventQuery,
    EventSummary, EventTrace, MinuteCount, PastOutcome, RejectedRecord, Reopen, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{Config, DestinationConfig, ResolvedDestination};

/// How far back the overview's charts reach.
pub const CHART_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// Default page size of the event list.
pub const DEFAULT_PAGE: usize = 50;

/// What a view could not do, shaped by the answer the caller gives.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The store failed: try again later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request named something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong.
    #[error("{0}")]
    BadInput(String),
}

/// The views over one store and configuration.
#[derive(Clone)]
pub struct Views {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    /// Destinations with their keys: present in the serving process (test connection, fetching
    /// field metadata for a preview), absent in read-only CLI commands.
    resolved: Arc<Vec<ResolvedDestination>>,
}

/// The quota of one destination's account right now, from the shared ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetView {
    /// Destination name.
    pub destination: String,
    /// The account's API base URL.
    pub account: String,
    /// The plan's calls per hour.
    pub hourly_limit: u32,
    /// The plan's calls per minute.
    pub minute_limit: u32,
    /// Share of each limit freshgate allows itself.
    pub headroom: f64,
    /// Calls per hour freshgate may make (`hourly_limit` × `headroom`).
    pub hour_cap: u32,
    /// Calls per minute freshgate may make.
    pub minute_cap: u32,
    /// Calls spent in the last hour (every node).
    pub calls_last_hour: u64,
    /// Calls spent in the last minute.
    pub calls_last_minute: u64,
    /// `hour_cap` less the last hour's calls (what `/metrics` reports as left).
    pub left_this_hour: u64,
    /// `minute_cap` less the last minute's calls.
    pub left_this_minute: u64,
}

/// A paused destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseView {
    /// Why (Freshworks' answer).
    pub reason: String,
    /// Paused since, Unix ms.
    pub since_ms: i64,
    /// The next probe, Unix ms.
    pub next_probe_ms: i64,
}

/// One destination's state: backlog, pause, quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// Destination name.
    pub destination: String,
    /// Pending deliveries.
    pub pending: u64,
    /// Contacts with pending deliveries.
    pub pending_contacts: u64,
    /// Dead letters.
    pub dead: u64,
    /// Age of the oldest pending event, seconds.
    pub oldest_pending_age_secs: Option<i64>,
    /// The earliest scheduled attempt, Unix ms.
    pub next_attempt_ms: Option<i64>,
    /// The backlog per kind (the event's call type), by event type; kinds with nothing pending
    /// are left out.
    pub kinds: Vec<KindStatus>,
    /// Set while Freshworks refuses the key.
    pub paused: Option<PauseView>,
    /// The account's quota (absent for a destination no longer configured).
    pub budget: Option<BudgetView>,
}

/// Whole seconds from `at_ms` to `now_ms` (0 for a time ahead of the clock).
fn age_secs(now_ms: i64, at_ms: i64) -> i64 {
    (now_ms - at_ms).max(0) / 1000
}

/// The backlog of one kind (the event's call type) at one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStatus {
    /// The event's call type (`identify`, `track`, ...).
    pub event_type: String,
    /// Pending deliveries of this kind.
    pub pending: u64,
    /// Age of the oldest pending event of this kind, seconds.
    pub oldest_pending_age_secs: Option<i64>,
}

/// Calls per minute of one destination's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCalls {
    /// Destination name.
    pub destination: String,
    /// Calls per minute, oldest first; minutes without calls are left out.
    pub minutes: Vec<MinuteCount>,
}

/// The overview page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// When the figures were read, Unix ms.
    pub now_ms: i64,
    /// Per destination.
    pub destinations: Vec<DestinationStatus>,
    /// Events received per minute over the last 24 hours (minutes with none left out).
    pub ingest_per_minute: Vec<MinuteCount>,
    /// Freshworks calls per minute over the last 24 hours, per destination.
    pub calls_per_minute: Vec<AccountCalls>,
}

/// A page of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<EventSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

/// How a trait key matched a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// The field's internal name (or its camelCase form).
    InternalName,
    /// A Segment reserved trait.
    ReservedTrait,
    /// The field's label.
    Label,
    /// Derived from another trait.
    Derived,
}

impl From<Level> for MatchedBy {
    fn from(l: Level) -> Self {
        match l {
            Level::InternalName => Self::InternalName,
            Level::Reserved => Self::ReservedTrait,
            Level::Label => Self::Label,
            Level::Derived => Self::Derived,
        }
    }
}

/// What became of one trait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TraitOutcome {
    /// `email`: the contact's unique identifier.
    Identifier,
    /// Sent to this field.
    Field {
        /// Internal name.
        field: String,
        /// Label.
        label: String,
        /// Under `custom_field`.
        custom: bool,
        /// How the key matched.
        matched_by: MatchedBy,
    },
    /// `name`, split into first and last name.
    NameSplit,
    /// No field matches; the closest field labels as suggestions.
    Unmapped {
        /// Closest labels.
        suggestions: Vec<String>,
    },
    /// Several fields match at one level: not sent.
    Ambiguous {
        /// The fields.
        fields: Vec<String>,
    },
    /// The value does not fit the field's type.
    CoercionFailed {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The contact holds a value from a newer event: this one is not sent.
    OlderThanKept {
        /// The field.
        field: String,
        /// Timestamp of the kept value, Unix ms.
        kept_ts_ms: i64,
    },
}

/// One trait of an event or a preview, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraitMapping {
    /// The key as received (`address.city` for nested ones).
    pub key: String,
    /// The value as received.
    pub value: Value,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: TraitOutcome,
}

/// The mapping report of an identify for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationMapping {
    /// Destination name.
    pub destination: String,
    /// When the field metadata it was computed with was fetched; absent when the account's
    /// fields were never fetched (then `traits` is empty).
    pub fields_fetched_at_ms: Option<i64>,
    /// Per trait.
    pub traits: Vec<TraitMapping>,
}

/// Everything about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceView {
    /// The event, its deliveries and every attempt with request and response.
    pub event: EventTrace,
    /// For identifies: each trait → field, or why not, per destination.
    pub mapping: Vec<DestinationMapping>,
    /// The messageId of every other event a call of this trace carried, by delivery id: a
    /// field sent by that call may come from one of them, not from this event.
    pub merged: BTreeMap<DeliveryId, String>,
}

/// One earlier outcome of a delivery in words, as the CLI's trace and the console show it: how
/// it had ended, with its reason and attempts, then what put it back in the queue and when.
#[must_use]
pub fn past_outcome_words(p: &PastOutcome) -> String {
    let when = |ms: Option<i64>| {
        ms.and_then(|m| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000_000).ok()
        })
        .map_or_else(|| "-".to_owned(), freshgate_core::segment::format_timestamp)
    };
    let ended = match p.status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Skipped => "skipped",
        DeliveryStatus::Dead => "dead-lettered",
        DeliveryStatus::Pending => "pending",
    };
    let reason = p
        .reason
        .as_deref()
        .map_or_else(String::new, |r| format!(" ({r})"));
    let attempts = match p.attempts {
        0 => "no call".to_owned(),
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let by = match p.reopened_by {
        Reopen::Replay => "replay",
        Reopen::DeadLetterReplay => "dead-letter replay",
    };
    let at = p
        .finished_ms
        .map_or_else(String::new, |ms| format!(" {}", when(Some(ms))));
    format!(
        "{ended}{at}{reason}, {attempts}; put back in the queue {} by {by}",
        when(Some(p.reopened_ms))
    )
}

/// A trait key that matched no field, over recent identifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmappedTrait {
    /// Destination name.
    pub destination: String,
    /// The key.
    pub key: String,
    /// Identifies carrying it (in the sample).
    pub count: u64,
    /// Latest receive time, Unix ms.
    pub last_seen_ms: i64,
    /// Closest field labels.
    pub suggestions: Vec<String>,
}

/// One field of an account and the keys that reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldView {
    /// Internal name.
    pub name: String,
    /// Label.
    pub label: String,
    /// Type.
    pub field_type: String,
    /// Under `custom_field`.
    pub custom: bool,
    /// Trait keys that map to it, strongest first.
    pub matched_by: Vec<String>,
}

/// A destination's settings (no secrets) and its account's fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestinationView {
    /// The configuration entry (the API key is named by its variable, never shown).
    pub settings: DestinationConfig,
    /// The account's API base URL.
    pub account: Option<String>,
    /// When the fields were fetched; absent when never.
    pub fields_fetched_at_ms: Option<i64>,
    /// The account's contact fields.
    pub fields: Vec<FieldView>,
}

/// The answer of a connection test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionTest {
    /// Destination name.
    pub destination: String,
    /// The account's API base URL.
    pub base_url: String,
    /// The key works.
    pub ok: bool,
    /// In words.
    pub message: String,
    /// Activity type, lifecycle stage and owner names of the rules that the account lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_names: Vec<String>,
}

/// What the mapping preview is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewInput {
    /// The `userId` (default `preview-user`).
    #[serde(default)]
    pub user_id: Option<String>,
    /// A Segment identify's `traits`.
    pub traits: Map<String, Value>,
}

/// The exact request freshgate would send for a new contact with these traits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The `POST /contacts/upsert` body, when there is one to send.
    pub body: Option<Value>,
    /// Why nothing would be sent.
    pub problem: Option<String>,
    /// Per trait.
    pub traits: Vec<TraitMapping>,
    /// When the field metadata used was fetched.
    pub fields_fetched_at_ms: Option<i64>,
}

/// An account's API base URL as configured (`base_url`, else from `domain`).
#[must_use]
pub fn account_of(d: &DestinationConfig) -> Option<String> {
    match (&d.base_url, &d.domain) {
        (Some(url), _) => Some(url.trim_end_matches('/').to_owned()),
        (None, Some(domain)) => freshworks_client::base_url_for_domain(domain).ok(),
        (None, None) => None,
    }
}

impl Views {
    /// Views over `store` for `config`; `resolved` destinations enable live calls.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        resolved: Vec<ResolvedDestination>,
    ) -> Self {
        Self {
            store,
            config,
            resolved: Arc::new(resolved),
        }
    }

    /// Set-up problems an operator must see before any figure (no destination configured).
    #[must_use]
    pub fn warnings(&self) -> Vec<&'static str> {
        crate::pipeline::ingest::no_destination_warning(self.config.destinations.len())
            .into_iter()
            .collect()
    }

    /// The store (for writes the console triggers).
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The quota of each configured destination.
    ///
    /// # Errors
    /// The store's.
    pub async fn budgets(&self, now_ms: i64) -> Result<Vec<BudgetView>, ViewError> {
        let mut out = Vec::new();
        for d in &self.config.destinations {
            let Some(account) = account_of(d) else {
                continue;
            };
            let hour = self.store.calls_since(&account, now_ms - 3_600_000).await?;
            let minute = self.store.calls_since(&account, now_ms - 60_000).await?;
            let caps = freshgate_core::budget::BudgetConfig {
                hourly_limit: d.effective_hourly_limit(),
                minute_limit: d.minute_limit,
                headroom: d.headroom,
            };
            out.push(BudgetView {
                destination: d.name.clone(),
                account,
                hourly_limit: caps.hourly_limit,
                minute_limit: caps.minute_limit,
                headroom: caps.headroom,
                hour_cap: caps.hour_cap(),
                minute_cap: caps.minute_cap(),
                calls_last_hour: hour,
                calls_last_minute: minute,
                left_this_hour: u64::from(caps.hour_cap()).saturating_sub(hour),
                left_this_minute: u64::from(caps.minute_cap()).saturating_sub(minute),
            });
        }
        Ok(out)
    }

    /// Outcomes per destination over the deliveries kept (not yet pruned): each outcome counts,
    /// also one a replay has since reopened. Unlike every other view this counts every kept
    /// delivery, so it serves `queue stats`, not the console's live pages.
    ///
    /// # Errors
    /// The store's.
    pub async fn outcomes(&self) -> Result<Vec<freshgate_store::DestinationStats>, ViewError> {
        Ok(self.store.stats().await?.destinations)
    }

    /// Backlog, pause and quota per destination: configured ones first, then any other the
    /// store still holds work for.
    ///
    /// # Errors
    /// The store's.
    pub async fn status(&self, now_ms: i64) -> Result<Vec<DestinationStatus>, ViewError> {
        let backlog = self.store.backlog().await?;
        let pauses: Vec<DestinationPause> = self.store.pauses().await?;
        let mut budgets = self.budgets(now_ms).await?;
        let mut names: Vec<String> = self
            .config
            .destinations
            .iter()
            .map(|d| d.name.clone())
            .collect();
        for b in &backlog {
            if !names.contains(&b.destination) {
                names.push(b.destination.clone());
            }
        }
        Ok(names
            .into_iter()
            .map(|name| {
                let b = backlog.iter().find(|b| b.destination == name);
                let budget = budgets
                    .iter()
                    .position(|x| x.destination == name)
                    .map(|i| budgets.swap_remove(i));
                DestinationStatus {
                    pending: b.map_or(0, |b| b.pending),
                    pending_contacts: b.map_or(0, |b| b.pending_contacts),
                    dead: b.map_or(0, |b| b.dead),
                    oldest_pending_age_secs: b
                        .and_then(|b| b.oldest_pending_received_ms)
                        .map(|t| age_secs(now_ms, t)),
                    next_attempt_ms: b.and_then(|b| b.next_attempt_ms),
                    kinds: b.map_or_else(Vec::new, |b| {
                        b.kinds
                            .iter()
                            .map(|k| KindStatus {
                                event_type: k.event_type.clone(),
                                pending: k.pending,
                                oldest_pending_age_secs: k
                                    .oldest_pending_received_ms
                                    .map(|t| age_secs(now_ms, t)),
                            })
                            .collect()
                    }),
                    paused: pauses
                        .iter()
                        .find(|p| p.destination == name)
                        .map(|p| PauseView {
                            reason: p.reason.clone(),
                            since_ms: p.since_ms,
                            next_probe_ms: p.until_ms,
                        }),
                    budget,
                    destination: name,
                }
            })
            .collect())
    }

    /// The overview page.
    ///
    /// # Errors
    /// The store's.
    pub async fn overview(&self, now_ms: i64) -> Result<Overview, ViewError> {
        let since = now_ms - CHART_WINDOW_MS;
        let mut calls_per_minute = Vec::new();
        for d in &self.config.destinations {
            if let Some(account) = account_of(d) {
                calls_per_minute.push(AccountCalls {
                    destination: d.name.clone(),
                    minutes: self.store.calls_per_minute(&account, since).await?,
                });
            }
        }
        Ok(Overview {
            now_ms,
            destinations: self.status(now_ms).await?,
            ingest_per_minute: self.store.events_per_minute(since).await?,
            calls_per_minute,
        })
    }

    /// A page of events, newest first.
    ///
    /// # Errors
    /// The store's.
    pub async fn events(&self, query: &EventQuery) -> Result<EventPage, ViewError> {
        let mut query = query.clone();
        if query.limit == 0 {
            query.limit = DEFAULT_PAGE;
        }
        let events = self.store.list_events(&query).await?;
        let next_before = if events.len() >= query.limit {
            events.last().map(|e| e.event_id)
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_before,
        })
    }

    /// Everything about the events with this messageId (one per source that sent it).
    ///
    /// # Errors
    /// The store's.
    pub async fn trace(&self, message_id: &str) -> Result<Vec<TraceView>, ViewError> {
        let traces = self.store.event_traces(message_id).await?;
        let mut out = Vec::with_capacity(traces.len());
        for event in traces {
            let own: Vec<DeliveryId> = event.deliveries.iter().map(|d| d.delivery_id).collect();
            let others: Vec<DeliveryId> = event
                .deliveries
                .iter()
                .flat_map(|d| d.attempts.iter())
                .flat_map(|a| a.delivery_ids.iter().copied())
                .filter(|id| !own.contains(id))
                .collect();
            let merged = if others.is_empty() {
                BTreeMap::new()
            } else {
                self.store
                    .delivery_messages(&others)
                    .await?
                    .into_iter()
                    .collect()
            };
            let mapping = self.mapping_of(&event).await?;
            out.push(TraceView {
                event,
                mapping,
                merged,
            });
        }
        Ok(out)
    }

    async fn mapping_of(&self, event: &EventTrace) -> Result<Vec<DestinationMapping>, ViewError> {
        let Ok(parsed) = freshgate_core::segment::parse_stored_event(event.raw.as_bytes()) else {
            return Ok(Vec::new());
        };
        if parsed.event_type != freshgate_core::segment::EventType::Identify {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for d in &event.deliveries {
            let Some(config) = self
                .config
                .destinations
                .iter()
                .find(|c| c.name == d.destination)
            else {
                continue;
            };
            let fields = self.stored_fields(config).await?;
            let shadow: Option<ContactShadow> = self
                .store
                .shadow(&d.destination, &event.contact_key)
                .await?
                .and_then(|b| serde_json::from_slice(&b).ok());
            let traits = match &fields {
                Some((_, index)) => {
                    explain_traits(index, &parsed.traits, event.timestamp_ms, shadow.as_ref())
                }
                None => Vec::new(),
            };
            out.push(DestinationMapping {
                destination: d.destination.clone(),
                fields_fetched_at_ms: fields.map(|(at, _)| at),
                traits,
            });
        }
        Ok(out)
    }

    async fn stored_fields(
        &self,
        d: &DestinationConfig,
    ) -> Result<Option<(i64, FieldIndex)>, ViewError> {
        let Some(account) = account_of(d) else {
            return Ok(None);
        };
        Ok(self.store.field_metadata(&account).await?.and_then(|m| {
            serde_json::from_slice::<Vec<FieldDef>>(&m.body)
                .ok()
                .map(|f| (m.fetched_at_ms, FieldIndex::new(&f)))
        }))
    }

    /// Dead letters matching `filter`, newest first.
    ///
    /// # Errors
    /// The store's.
    pub async fn dead_letters(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeadLetter>, ViewError> {
        Ok(self.store.dead_letters(filter).await?)
    }

    /// How many dead letters match `filter` (its limit ignored): what a replay would requeue.
    ///
    /// # Errors
    /// The store's.
    pub async fn count_dead(&self, filter: &DeliveryFilter) -> Result<u64, ViewError> {
        let all = DeliveryFilter {
            limit: None,
            ..filter.clone()
        };
        Ok(self.store.dead_letters(&all).await?.len() as u64)
    }

    /// Put the dead letters matching `filter` (its limit ignored) back in the queue.
    ///
    /// # Errors
    /// The store's.
    pub async fn replay_dead(
        &self,
        filter: &DeliveryFilter,
        now_ms: i64,
    ) -> Result<u64, ViewError> {
        let all = DeliveryFilter {
            limit: None,
            ..filter.clone()
        };
        Ok(self.store.requeue_dead(&all, now_ms).await?)
    }

    /// Rejected input, newest first.
    ///
    /// # Errors
    /// The store's.
    pub async fn rejected(&self, limit: usize) -> Result<Vec<RejectedRecord>, ViewError> {
        Ok(self.store.rejected(limit).await?)
    }

    /// Trait keys of recent identifies that matched no field of their destination, most
    /// frequent first, as the delivery workers recorded them in the store (per destination,
    /// bounded), with the closest field labels as suggestions.
    ///
    /// # Errors
    /// The store's.
    pub async fn unmapped_traits(&self) -> Result<Vec<UnmappedTrait>, ViewError> {
        let mut out = Vec::new();
        for d in &self.config.destinations {
            let index = self.stored_fields(d).await?.map(|(_, index)| index);
            let kept = self
                .store
                .unmapped_traits(
                    &d.name,
                    freshgate_store::MAX_UNMAPPED_TRAITS_PER_DESTINATION,
                )
                .await?;
            out.extend(kept.into_iter().map(|t| {
                UnmappedTrait {
                    suggestions: index
                        .as_ref()
                        .map(|index| closest_labels(index, &t.key))
                        .unwrap_or_default(),
                    destination: t.destination,
                    key: t.key,
                    count: t.count,
                    last_seen_ms: t.last_seen_ms,
                }
            }));
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Each configured destination with its account's fields as last fetched.
    ///
    /// # Errors
    /// The store's.
    pub async fn destinations(&self) -> Result<Vec<DestinationView>, ViewError> {
        let mut out = Vec::new();
        for d in &self.config.destinations {
            let fields = self.stored_fields(d).await?;
            out.push(DestinationView {
                settings: d.clone(),
                account: account_of(d),
                fields_fetched_at_ms: fields.as_ref().map(|(at, _)| *at),
                fields: fields
                    .map(|(_, index)| field_views(&index))
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn resolved(&self, name: &str) -> Result<&ResolvedDestination, ViewError> {
        self.resolved
            .iter()
            .find(|d| d.config.name == name)
            .ok_or_else(|| ViewError::NotFound(format!("no destination named {name:?}")))
    }

    /// One cheap call (`GET /settings/contacts/fields`) with the destination's key. The call is
    /// entered in the quota ledger and the fields it fetched are kept for the gateway.
    ///
    /// # Errors
    /// An unknown destination; the store's.
    pub async fn test_connection(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<ConnectionTest, ViewError> {
        let d = self.resolved(name)?;
        Ok(test_connection(d, Some(self.store.as_ref()), now_ms).await)
    }

    /// The request freshgate would send for a new contact with `input.traits`, with the
    /// account's field metadata (fetched now, one call, if never fetched).
    ///
    /// # Errors
    /// An unknown destination; the store's; the fields cannot be fetched.
    pub async fn preview(
        &self,
        name: &str,
        input: &PreviewInput,
        now_ms: i64,
    ) -> Result<Preview, ViewError> {
        let config = self
            .config
            .destinations
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| ViewError::NotFound(format!("no destination named {name:?}")))?;
        let fields = match self.stored_fields(config).await? {
            Some(f) => f,
            None => {
                let d = self.resolved(name)?;
                let test = test_connection(d, Some(self.store.as_ref()), now_ms).await;
                if !test.ok {
                    return Err(ViewError::BadInput(format!(
                        "the account's fields cannot be fetched: {}",
                        test.message
                    )));
                }
                self.stored_fields(config).await?.ok_or_else(|| {
                    ViewError::BadInput("the account's fields could not be kept".into())
                })?
            }
        };
        let (fetched_at, index) = fields;
        let user_id = input
            .user_id
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "preview-user".into());
        let traits = explain_traits(&index, &input.traits, now_ms, None);
        let inputs = [IdentifyInput {
            seq: 0,
            ts_ms: now_ms,
            traits: input.traits.clone(),
        }];
        let mapped = mapping::map_traits(&index, &coalesce(&inputs, MissingTraits::Keep));
        let (body, problem) = match &mapped.email {
            Some(email) => {
                let plan = shadow::plan(None, &mapped, config.missing_traits);
                (
                    Some(mapping::upsert_body(
                        &user_id,
                        email,
                        &plan,
                        &mapping::identifier(&user_id, email, None),
                    )),
                    None,
                )
            }
            None => (
                None,
                Some("no traits.email: Freshmarketer requires it, so nothing would be sent".into()),
            ),
        };
        Ok(Preview {
            body,
            problem,
            traits,
            fields_fetched_at_ms: Some(fetched_at),
        })
    }
}

/// The connection test itself (shared with `freshgate destinations test`).
pub async fn test_connection(
    d: &ResolvedDestination,
    store: Option<&dyn Store>,
    now_ms: i64,
) -> ConnectionTest {
    let client = crate::pipeline::deliver::client_for(d);
    let answer = match &client {
        Ok(client) => client.contact_fields().await.map_err(|e| explain(&e)),
        Err(e) => Err(format!("cannot build the HTTP client: {e}")),
    };
    // The rules' names are checked only with a key that works.
    let names = match (&client, &answer) {
        (Ok(client), Ok(_)) => super::names::check_names(client, &d.kinds).await,
        _ => super::names::NameCheck::default(),
    };
    if let Some(store) = store {
        if let Err(e) = store
            .record_calls(&d.base_url, now_ms, 1 + names.calls)
            .await
        {
            tracing::warn!(error = %e, "cannot enter the call in the quota ledger");
        }
        if let Ok(x) = &answer {
            crate::pipeline::fields::remember(store, &d.base_url, &x.body.fields, now_ms).await;
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
        Err(message) => (false, message),
    };
    let (ok, message) = if names.problems.is_empty() {
        (ok, message)
    } else {
        (
            false,
            format!(
                "{message}; but the rules name what the account lacks: {}",
                names.problems.join("; ")
            ),
        )
    };
    ConnectionTest {
        destination: d.config.name.clone(),
        base_url: d.base_url.clone(),
        ok,
        message,
        unknown_names: names.problems,
    }
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

/// What becomes of each trait of one identify (timestamp `ts_ms`) against `index`, given what
/// the contact already holds (`shadow`).
#[must_use]
pub fn explain_traits(
    index: &FieldIndex,
    traits: &Map<String, Value>,
    ts_ms: i64,
    shadow: Option<&ContactShadow>,
) -> Vec<TraitMapping> {
    let inputs = [IdentifyInput {
        seq: 0,
        ts_ms,
        traits: traits.clone(),
    }];
    let coalesced = coalesce(&inputs, MissingTraits::Keep);
    let mapped = mapping::map_traits(index, &coalesced);
    coalesced
        .into_iter()
        .map(|(key, tv)| {
            let failure = mapped
                .report
                .coercion_failures
                .iter()
                .find(|f| f.trait_key == key);
            let outcome = if key == "email" {
                TraitOutcome::Identifier
            } else if let Some(f) = failure {
                TraitOutcome::CoercionFailed {
                    field: f.field.clone(),
                    reason: f.reason.clone(),
                }
            } else {
                match index.resolve(&key) {
                    Resolution::Field { name, level } => {
                        let kept = shadow
                            .and_then(|s| s.fields.get(&name))
                            .filter(|kept| kept.ts_ms > ts_ms);
                        match kept {
                            Some(kept) => TraitOutcome::OlderThanKept {
                                field: name,
                                kept_ts_ms: kept.ts_ms,
                            },
                            None => {
                                let def = index.field(&name);
                                TraitOutcome::Field {
                                    label: def.map(|f| f.label.clone()).unwrap_or_default(),
                                    custom: def.is_some_and(FieldDef::is_custom),
                                    matched_by: level.into(),
                                    field: name,
                                }
                            }
                        }
                    }
                    Resolution::NameSplit => TraitOutcome::NameSplit,
                    Resolution::Ambiguous(fields) => TraitOutcome::Ambiguous { fields },
                    Resolution::Unmapped => TraitOutcome::Unmapped {
                        suggestions: closest_labels(index, &key),
                    },
                }
            };
            TraitMapping {
                key,
                value: tv.value,
                outcome,
            }
        })
        .collect()
}

/// Up to three field labels closest to `key` (compared as labels are: case, spaces, `_` and
/// `-` ignored), if reasonably close.
#[must_use]
pub fn closest_labels(index: &FieldIndex, key: &str) -> Vec<String> {
    let wanted = mapping::resolve::normalize_label(key);
    let mut scored: Vec<(usize, String)> = index
        .fields()
        .iter()
        .filter(|f| !f.label.is_empty())
        .map(|f| {
            let label = mapping::resolve::normalize_label(&f.label);
            let name = mapping::resolve::normalize_label(&f.name);
            let d = strsim::levenshtein(&wanted, &label).min(strsim::levenshtein(&wanted, &name));
            (d, f.label.clone())
        })
        .filter(|(d, label)| *d <= (label.len().max(wanted.len()) / 3).max(2))
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, l)| l).collect()
}

/// Segment trait keys probed to list which reach a field as reserved traits.
const RESERVED_KEYS: &[&str] = &[
    "firstName",
    "lastName",
    "phone",
    "title",
    "address.street",
    "address.city",
    "address.state",
    "address.postalCode",
    "address.country",
];

/// The fields of an account with the keys that reach each.
fn field_views(index: &FieldIndex) -> Vec<FieldView> {
    index
        .fields()
        .iter()
        .map(|f| {
            let mut keys = vec![f.name.clone()];
            let camel = snake_to_camel(&f.name);
            if camel != f.name && index.resolve(&camel) == index.resolve(&f.name) {
                keys.push(camel);
            }
            for k in RESERVED_KEYS {
                if matches!(index.resolve(k), Resolution::Field { ref name, level: Level::Reserved } if *name == f.name)
                {
                    keys.push((*k).to_owned());
                }
            }
            if !f.label.is_empty()
                && matches!(index.resolve(&f.label), Resolution::Field { ref name, .. } if *name == f.name)
                && !keys.contains(&f.label)
            {
                keys.push(f.label.clone());
            }
            FieldView {
                name: f.name.clone(),
                label: f.label.clone(),
                field_type: f.field_type.as_str().to_owned(),
                custom: f.is_custom(),
                matched_by: keys,
            }
        })
        .collect()
}

/// `cf_plan_tier` → `cfPlanTier`.
fn snake_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use freshgate_core::fields::FieldType;
    use freshgate_core::shadow::ShadowField;
    use serde_json::json;

    #[test]
    fn an_earlier_outcome_reads_as_a_sentence() {
        let dead = PastOutcome {
            status: DeliveryStatus::Dead,
            reason: Some("400: Email is invalid".into()),
            attempts: 2,
            finished_ms: Some(1_790_000_000_000),
            reopened_ms: 1_790_000_060_000,
            reopened_by: Reopen::DeadLetterReplay,
        };
        assert_eq!(
            past_outcome_words(&dead),
            "dead-lettered 2026-09-21T14:13:20.000Z (400: Email is invalid), 2 attempts; \
             put back in the queue 2026-09-21T14:14:20.000Z by dead-letter replay"
        );
        let skipped = PastOutcome {
            status: DeliveryStatus::Skipped,
            reason: None,
            attempts: 0,
            finished_ms: None,
            reopened_by: Reopen::Replay,
            ..dead
        };
        assert_eq!(
            past_outcome_words(&skipped),
            "skipped, no call; put back in the queue 2026-09-21T14:14:20.000Z by replay"
        );
    }

    fn index() -> FieldIndex {
        FieldIndex::new(&[
            FieldDef::new("first_name", "First name", FieldType::Text, &[]),
            FieldDef::new("last_name", "Last name", FieldType::Text, &[]),
            FieldDef::new("job_title", "Job title", FieldType::Text, &[]),
            FieldDef::new(
                "cf_plan_tier",
                "Plan tier",
                FieldType::Dropdown,
                &["Free", "Pro"],
            ),
            FieldDef::new("cf_seats", "Seats", FieldType::Number, &[]),
        ])
    }

    fn outcome<'a>(report: &'a [TraitMapping], key: &str) -> &'a TraitOutcome {
        &report.iter().find(|t| t.key == key).unwrap().outcome
    }

    #[test]
    fn each_trait_says_where_it_went_or_why_not() {
        let traits = json!({
            "email": "a@example.com",
            "firstName": "Ann",
            "Plan Tier": "Pro",
            "seats": "many",
            "plan tyer": "x",
            "title": "CTO",
            "lastName": "Lee",
        });
        let shadow = ContactShadow {
            fields: BTreeMap::from([(
                "last_name".to_owned(),
                ShadowField {
                    value: json!("Newer"),
                    ts_ms: 2000,
                    custom: false,
                },
            )]),
            ..ContactShadow::default()
        };
        let report = explain_traits(&index(), traits.as_object().unwrap(), 1000, Some(&shadow));
        assert_eq!(outcome(&report, "email"), &TraitOutcome::Identifier);
        assert_eq!(
            outcome(&report, "firstName"),
            &TraitOutcome::Field {
                field: "first_name".into(),
                label: "First name".into(),
                custom: false,
                matched_by: MatchedBy::InternalName,
            }
        );
        assert_eq!(
            outcome(&report, "Plan Tier"),
            &TraitOutcome::Field {
                field: "cf_plan_tier".into(),
                label: "Plan tier".into(),
                custom: true,
                matched_by: MatchedBy::Label,
            }
        );
        assert!(matches!(
            outcome(&report, "seats"),
            TraitOutcome::CoercionFailed { field, .. } if field == "cf_seats"
        ));
        assert_eq!(
            outcome(&report, "plan tyer"),
            &TraitOutcome::Unmapped {
                suggestions: vec!["Plan tier".into()]
            }
        );
        assert!(matches!(
            outcome(&report, "title"),
            TraitOutcome::Field {
                matched_by: MatchedBy::ReservedTrait,
                ..
            }
        ));
        assert_eq!(
            outcome(&report, "lastName"),
            &TraitOutcome::OlderThanKept {
                field: "last_name".into(),
                kept_ts_ms: 2000
            }
        );
    }

    #[test]
    fn fields_list_the_keys_that_reach_them() {
        let views = field_views(&index());
        let plan = views.iter().find(|f| f.name == "cf_plan_tier").unwrap();
        assert_eq!(plan.matched_by, ["cf_plan_tier", "cfPlanTier", "Plan tier"]);
        let title = views.iter().find(|f| f.name == "job_title").unwrap();
        assert!(title.matched_by.contains(&"title".to_owned()), "{title:?}");
        assert!(plan.custom);
    }
}
