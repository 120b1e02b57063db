//! Which destination takes an event: Segment's `integrations` rule (spec §3). Keys are destination
//! names, case-sensitive; `"All"` applies when the destination has no key of its own; the default
//! is everything enabled.
//!
//! `enabled = match integrations.get(key) { Some(false) => false, Some(_) => true,
//! None => integrations.get("All") != Some(false) }`: any value other than the literal `false`
//! (`true`, an options object, even `null`) enables. An `integrations` that is not an object
//! (webhook deletes send `[]`) counts as absent.
//!
//! [`Route::decide`] is the one decision of what a destination does with an event, used at
//! ingest and by `replay` for events stored before the destination existed. A destination
//! takes `identify` always, and `track` / `page` / `screen` when it has rules for them
//! ([`DestinationKinds::rules_for`]): a call no rule takes is skipped with the rule's reason
//! ("no track rule matches 'Signed Up'"). With no rules, only `identify` is delivered.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::audience::audience_change;
use crate::reason::SkipReason;
use crate::rules::{DestinationKinds, NoRuleMatches};
use crate::segment::envelope::{get, is_false, object_entries};
use crate::segment::{EventType, StoredEvent};

/// What a destination does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Queue it for delivery.
    Deliver,
    /// Record it as skipped: the destination does nothing with this call type.
    NotHandled(EventType),
    /// Record it as skipped: the destination has rules for this call type, none takes it.
    NoRule(NoRuleMatches),
    /// Record it as skipped: the `integrations` object turns the destination off.
    OptedOut,
}

impl Route {
    /// The decision for a call of `event_type` named `name` (a track's `event`, a page's or
    /// screen's `name`), given whether [`destination_enabled`] holds and what the destination
    /// delivers (`kinds`): `identify` always writes a contact; `group` upserts a sales account
    /// with `group_accounts`; with `audience_lists`, an Engage audience track (`Audience
    /// Entered` / `Audience Exited`, [`audience_change`]) becomes a list membership; other
    /// tracks, pages and screens are taken by the first of the destination's rules that matches
    /// (none matching: skipped with the rules' reason). `read` gives the event's details; it is
    /// called only for a track when `audience_lists` is on, so the ingest hot path parses
    /// nothing more than before. With [`DestinationKinds::identify_only`] this is the seed's
    /// decision.
    #[must_use]
    pub fn decide(
        event_type: EventType,
        name: Option<&str>,
        enabled: bool,
        kinds: &DestinationKinds,
        read: impl FnOnce() -> Option<StoredEvent>,
    ) -> Self {
        let audience = event_type == EventType::Track
            && kinds.audience_lists
            && read().is_some_and(|e| audience_change(&e).is_some());
        let taken = match event_type {
            _ if audience => true,
            EventType::Identify => true,
            EventType::Group => kinds.group_accounts,
            other => match kinds.rules_for(other) {
                Some(rules) if !rules.is_empty() => match rules.find(name) {
                    Ok(_) => true,
                    Err(no_rule) => return Self::NoRule(no_rule),
                },
                _ => false,
            },
        };
        if !taken {
            Self::NotHandled(event_type)
        } else if !enabled {
            Self::OptedOut
        } else {
            Self::Deliver
        }
    }

    /// Why a skipped delivery is skipped (`None`: deliver), for the destination whose
    /// `integrations` key is `integration_key`.
    #[must_use]
    pub fn skip(&self, integration_key: &str) -> Option<SkipReason> {
        match self {
            Self::Deliver => None,
            Self::NotHandled(t) => Some(SkipReason::NotHandled(*t)),
            Self::NoRule(no_rule) => Some(SkipReason::NoRule(no_rule.clone())),
            Self::OptedOut => Some(SkipReason::OptedOut {
                integration_key: integration_key.to_owned(),
            }),
        }
    }

    /// The reason stored with a skipped delivery (`None`: deliver): [`Self::skip`] in words.
    #[must_use]
    pub fn skip_reason(&self, integration_key: &str) -> Option<String> {
        self.skip(integration_key).map(|r| r.detail())
    }
}

/// The name rules match a stored call on: a track's `event`, a page's or screen's `name` (the
/// same as `NormalizedEvent::name` at ingest).
#[must_use]
pub fn stored_call_name(event: &crate::segment::StoredEvent) -> Option<&str> {
    match event.event_type {
        EventType::Track => event.event.as_deref(),
        EventType::Page | EventType::Screen => event.name.as_deref(),
        _ => None,
    }
}

/// The rule over the raw `integrations` JSON (the hot form kept by `NormalizedEvent`), without
/// building a `Value`.
pub fn destination_enabled(integrations: Option<&RawValue>, key: &str) -> bool {
    let Some(entries) = integrations.and_then(object_entries) else {
        return true;
    };
    match get(&entries, key) {
        Some(value) => !is_false(value),
        None => get(&entries, "All").is_none_or(|all| !is_false(all)),
    }
}

/// The same rule over a parsed map (the form kept by `StoredEvent`).
pub fn destination_enabled_in_map(integrations: &Map<String, Value>, key: &str) -> bool {
    match integrations.get(key) {
        Some(value) => *value != Value::Bool(false),
        None => integrations.get("All") != Some(&Value::Bool(false)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: &str = "Freshmarketer";

    #[test]
    fn rule_table() {
        // (integrations JSON, expected for "Freshmarketer")
        let table = [
            ("{}", true),
            (r#"{"All":true}"#, true),
            (r#"{"All":false}"#, false),
            (r#"{"All":false,"Freshmarketer":true}"#, true),
            (r#"{"All":true,"Freshmarketer":false}"#, false),
            (r#"{"Freshmarketer":false}"#, false),
            (r#"{"Freshmarketer":{"option":1}}"#, true),
            (r#"{"All":false,"Freshmarketer":{}}"#, true),
            (r#"{"All":false,"Freshmarketer":null}"#, true),
            (r#"{"Salesforce":false}"#, true),
            (r#"{"All":false,"freshmarketer":true}"#, false),
            (r#"{"All":"false"}"#, true),
            (r#"{"Freshmarketer":true,"Freshmarketer":false}"#, false),
            ("[]", true),
            (r#"[{"All":false}]"#, true),
            ("false", true),
            ("null", true),
            (r#"{ "All" : false , "Freshmarketer" : false }"#, false),
        ];
        for (json, want) in table {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            assert_eq!(destination_enabled(Some(&raw), KEY), want, "raw {json}");
            let map_result = match serde_json::from_str::<Value>(json).unwrap() {
                Value::Object(map) => destination_enabled_in_map(&map, KEY),
                _ => destination_enabled_in_map(&Map::new(), KEY),
            };
            assert_eq!(map_result, want, "map {json}");
        }
        assert!(destination_enabled(None, KEY));
    }

    fn identify_only(event_type: EventType, enabled: bool) -> Route {
        Route::decide(
            event_type,
            None,
            enabled,
            &DestinationKinds::identify_only(),
            || panic!("an identify-only destination reads no event"),
        )
    }

    #[test]
    fn route_handles_identify_only_and_honours_opt_out() {
        assert_eq!(identify_only(EventType::Identify, true), Route::Deliver);
        assert_eq!(identify_only(EventType::Identify, false), Route::OptedOut);
        assert_eq!(
            identify_only(EventType::Track, true),
            Route::NotHandled(EventType::Track)
        );
        assert_eq!(
            identify_only(EventType::Group, true),
            Route::NotHandled(EventType::Group)
        );
        assert_eq!(Route::Deliver.skip_reason(KEY), None);
        assert_eq!(
            Route::OptedOut.skip_reason(KEY).as_deref(),
            Some("disabled by the integrations object (key \"Freshmarketer\")")
        );
        assert_eq!(
            identify_only(EventType::Page, false)
                .skip_reason(KEY)
                .as_deref(),
            Some("not handled by this destination: page")
        );
    }

    #[test]
    fn group_is_delivered_when_group_accounts_is_on() {
        let accounts = DestinationKinds {
            group_accounts: true,
            ..DestinationKinds::identify_only()
        };
        assert_eq!(
            Route::decide(EventType::Group, None, true, &accounts, || None),
            Route::Deliver
        );
        assert_eq!(
            Route::decide(EventType::Group, None, false, &accounts, || None),
            Route::OptedOut
        );
        // company_accounts rides on identify: it routes no other call type.
        let company = DestinationKinds {
            company_accounts: true,
            ..DestinationKinds::identify_only()
        };
        assert_eq!(
            Route::decide(EventType::Group, None, true, &company, || None),
            Route::NotHandled(EventType::Group)
        );
        assert_eq!(
            Route::decide(EventType::Track, None, true, &accounts, || None),
            Route::NotHandled(EventType::Track)
        );
    }

    #[test]
    fn audience_tracks_are_delivered_only_with_audience_lists() {
        let audience = |event: &str| {
            crate::segment::parse_stored_event(
                serde_json::json!({
                    "type": "track", "event": event, "messageId": "m", "userId": "u",
                    "timestamp": "2026-01-01T00:00:00Z", "properties": {},
                    "context": {"personas": {"computation_class": "audience",
                                             "computation_key": "vip"}}
                })
                .to_string()
                .as_bytes(),
            )
            .ok()
        };
        let lists = DestinationKinds {
            audience_lists: true,
            ..DestinationKinds::identify_only()
        };
        let decide = |event: &'static str, enabled, kinds: &DestinationKinds| {
            Route::decide(EventType::Track, None, enabled, kinds, || audience(event))
        };
        assert_eq!(decide("Audience Entered", true, &lists), Route::Deliver);
        assert_eq!(decide("Audience Exited", false, &lists), Route::OptedOut);
        assert_eq!(
            decide("Order Completed", true, &lists),
            Route::NotHandled(EventType::Track)
        );
        assert_eq!(
            decide("Audience Entered", true, &DestinationKinds::identify_only()),
            Route::NotHandled(EventType::Track)
        );
        // Other call types stay not handled, whatever they carry.
        assert_eq!(
            Route::decide(EventType::Group, None, true, &lists, || audience("x")),
            Route::NotHandled(EventType::Group)
        );
    }

    #[test]
    fn tracks_and_pages_are_taken_by_their_rules() {
        use crate::rules::{RuleKind, TrackRule, TrackRules};
        let mut kinds = DestinationKinds::identify_only();
        kinds.track = TrackRules::new(
            RuleKind::Track,
            vec![TrackRule::new("Order Completed", Some("Purchase".into()), None, None).unwrap()],
        );
        let track = |name: &str, enabled: bool| {
            Route::decide(EventType::Track, Some(name), enabled, &kinds, || None)
        };
        assert_eq!(track("Order Completed", true), Route::Deliver);
        assert_eq!(track("Order Completed", false), Route::OptedOut);
        let skipped = track("Signed Up", true).skip(KEY).unwrap();
        assert_eq!(skipped.code(), "no_rule");
        assert_eq!(skipped.detail(), "no track rule matches 'Signed Up'");
        // No page rules: pages stay not handled; groups too.
        assert_eq!(
            Route::decide(EventType::Page, Some("Pricing"), true, &kinds, || None),
            Route::NotHandled(EventType::Page)
        );
        kinds.page = TrackRules::new(
            RuleKind::Page,
            vec![TrackRule::new("*", Some("Website visit".into()), None, None).unwrap()],
        );
        assert_eq!(
            Route::decide(EventType::Screen, None, true, &kinds, || None),
            Route::Deliver
        );
        assert_eq!(
            Route::decide(EventType::Group, None, true, &kinds, || None),
            Route::NotHandled(EventType::Group)
        );
    }
}
