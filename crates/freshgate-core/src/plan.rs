//! The delivery planner: a contact's pending deliveries, in FIFO order, become an ordered list
//! of [`Step`]s. Pure: the pipeline reads the queue, runs the steps in order (each kind through
//! its own sink) and settles them.
//!
//! Owns the per-contact order across kinds (a step never runs before a step planned ahead of
//! it; an event that comes after an identify waits for that identify's upsert) and which
//! identifies coalesce into one upsert (a run of consecutive identifies, see
//! [`crate::coalesce`]). Also owns the one planning decision that needs the contact's shadow
//! once the run is mapped: whether the upsert can be skipped as unchanged
//! ([`skip_unchanged`]).
//!
//! A new kind of delivery is one new [`Step`] variant planned here and one sink in the
//! pipeline; events of kinds without a step are skipped as not handled (ingest already records
//! them so through `routing`; the planner holds the same line for anything queued otherwise).
//!
//! Tracks, pages and screens a rule takes become [`Step::TrackActivity`]. They need the
//! contact: when it is not known yet (no id, no shadow), a track waits behind the first valid
//! identify queued after it (planned right after that identify's upsert run), or, when none is
//! queued, becomes [`Step::AwaitIdentify`] (the pipeline keeps it pending for
//! `identify_wait_secs`, then skips it with the reason).

use serde_json::Value;

use crate::audience::{AudienceChange, audience_change};
use crate::reason::{DeadReason, SkipReason};
use crate::routing::stored_call_name;
use crate::rules::DestinationKinds;
use crate::segment::{EventType, StoredEvent};
use crate::shadow::{ContactShadow, UpsertPlan};

/// One pending delivery of a contact as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub enum Pending<'a> {
    /// The stored event cannot be parsed: why.
    Unreadable(&'a str),
    /// A readable event.
    Event(&'a StoredEvent),
}

/// One thing to do for a contact. Deliveries are named by their index in the planner's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One contact upsert for a run of identifies, coalesced (indices in FIFO order).
    UpsertContact {
        /// The identifies the upsert covers.
        members: Vec<usize>,
    },
    /// A `group` call (`group_accounts`): the sales account upserted (unless its shadow shows
    /// it unchanged), then the contact associated with it. Runs after every identify before it,
    /// since the association needs the contact.
    UpsertAccount {
        /// The group call.
        index: usize,
    },
    /// No call now: an Engage audience track's list membership is handed to the list
    /// flusher, which sends it in a batch with other contacts' (`audience_lists`).
    HandOffMembership {
        /// The delivery.
        index: usize,
        /// The membership change.
        change: AudienceChange,
    },
    /// A track / page / screen a rule takes: its sales activity created and/or the contact's
    /// lifecycle stage set (the rule is looked up again by the sink).
    TrackActivity {
        /// The delivery.
        index: usize,
    },
    /// A track / page / screen a rule takes whose contact is not known and no identify is
    /// queued for it: it stays pending until one comes or the wait is over.
    AwaitIdentify {
        /// The delivery.
        index: usize,
    },
    /// No call: recorded as skipped.
    Skip {
        /// The delivery.
        index: usize,
        /// Why.
        reason: SkipReason,
    },
    /// No call: the delivery can never succeed (dead-lettered).
    DeadLetter {
        /// The delivery.
        index: usize,
        /// Why.
        reason: DeadReason,
        /// The words for people.
        detail: String,
    },
}

impl Step {
    /// Whether this step makes a Freshworks call (the others are settled without one).
    #[must_use]
    pub fn calls(&self) -> bool {
        match self {
            Self::UpsertContact { .. }
            | Self::UpsertAccount { .. }
            | Self::TrackActivity { .. } => true,
            Self::HandOffMembership { .. }
            | Self::Skip { .. }
            | Self::DeadLetter { .. }
            | Self::AwaitIdentify { .. } => false,
        }
    }
}

/// Plan a contact's pending deliveries (FIFO order) into steps, in the order they must run.
/// `kinds` says what the destination delivers besides identify; `contact_known`: the contact
/// exists in Freshworks as far as the store knows (an id or a shadow).
///
/// Consecutive identifies form one [`Step::UpsertContact`]; an identify that can never be sent
/// (no `userId`, no email) is skipped without breaking its run. Any other event ends the run:
/// it is planned after it, and identifies after it form a new run. A track a rule takes whose
/// contact is not known yet is planned after the run of the first valid identify queued
/// after it. A `group` becomes a [`Step::UpsertAccount`] when `kinds.group_accounts` is on.
/// (`traits.company` of an identify travels with its run: the account is upserted just before
/// the run's contact upsert, which then carries the association.) With `audience_lists`, an
/// Engage audience track is a [`Step::HandOffMembership`] (an identify's membership goes with
/// its upsert).
#[must_use]
pub fn steps(pending: &[Pending<'_>], kinds: &DestinationKinds, contact_known: bool) -> Vec<Step> {
    let mut out = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    // Tracks waiting for the contact's first upsert run to close.
    let mut deferred: Vec<usize> = Vec::new();
    let mut known = contact_known;
    let valid_identify = |p: &Pending<'_>| {
        matches!(p, Pending::Event(e) if e.event_type == EventType::Identify
            && identify_rejection(e).is_none())
    };
    for (index, p) in pending.iter().enumerate() {
        let event = match p {
            Pending::Unreadable(why) => {
                out.push(Step::DeadLetter {
                    index,
                    reason: DeadReason::Unreadable,
                    detail: format!("stored event cannot be read: {why}"),
                });
                continue;
            }
            Pending::Event(e) => e,
        };
        match event.event_type {
            EventType::Identify => match identify_rejection(event) {
                Some(reason) => out.push(Step::Skip { index, reason }),
                None => {
                    run.push(index);
                    known = true;
                }
            },
            EventType::Group if kinds.group_accounts => {
                close_run(&mut out, &mut run, &mut deferred);
                out.push(Step::UpsertAccount { index });
            }
            EventType::Track
                if kinds.audience_lists
                    && let Some(change) = audience_change(event) =>
            {
                close_run(&mut out, &mut run, &mut deferred);
                out.push(match event.user_id.as_deref() {
                    Some(u) if !u.is_empty() => Step::HandOffMembership { index, change },
                    _ => Step::Skip {
                        index,
                        reason: SkipReason::NoUserId,
                    },
                });
            }
            other => {
                let rule = kinds
                    .rules_for(other)
                    .filter(|r| !r.is_empty())
                    .map(|r| r.find(stored_call_name(event)));
                let anonymous = event.user_id.as_deref().is_none_or(str::is_empty);
                match rule {
                    Some(Ok(_)) if anonymous => out.push(Step::Skip {
                        index,
                        reason: SkipReason::Anonymous,
                    }),
                    Some(Ok(_)) if known => {
                        close_run(&mut out, &mut run, &mut deferred);
                        out.push(Step::TrackActivity { index });
                    }
                    Some(Ok(_)) if pending[index + 1..].iter().any(valid_identify) => {
                        deferred.push(index);
                    }
                    Some(Ok(_)) => out.push(Step::AwaitIdentify { index }),
                    Some(Err(no_rule)) => out.push(Step::Skip {
                        index,
                        reason: SkipReason::NoRule(no_rule),
                    }),
                    None => {
                        close_run(&mut out, &mut run, &mut deferred);
                        out.push(Step::Skip {
                            index,
                            reason: SkipReason::NotHandled(other),
                        });
                    }
                }
            }
        }
    }
    close_run(&mut out, &mut run, &mut deferred);
    out
}

/// Close the open identify run; tracks that waited for the contact follow its upsert.
fn close_run(out: &mut Vec<Step>, run: &mut Vec<usize>, deferred: &mut Vec<usize>) {
    if !run.is_empty() {
        out.push(Step::UpsertContact {
            members: std::mem::take(run),
        });
        out.extend(
            deferred
                .drain(..)
                .map(|index| Step::TrackActivity { index }),
        );
    }
}

/// Why an identify is not sent at all (the seed's rules), if it is not.
#[must_use]
pub fn identify_rejection(event: &StoredEvent) -> Option<SkipReason> {
    if event.user_id.as_deref().is_none_or(str::is_empty) {
        return Some(SkipReason::NoUserId);
    }
    let email = event
        .traits
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim);
    if email.is_none_or(str::is_empty) {
        return Some(SkipReason::NoEmail);
    }
    None
}

/// Whether a mapped upsert can be skipped: it changes no field, keeps the email, and the CRM
/// confirmed the contact less than `unchanged_skip_ms` ago (after that it may have been deleted
/// or merged there, and must not stay hidden).
#[must_use]
pub fn skip_unchanged(
    shadow: Option<&ContactShadow>,
    plan: &UpsertPlan,
    email: &str,
    now_ms: i64,
    unchanged_skip_ms: i64,
) -> Option<SkipReason> {
    let email_unchanged = shadow.and_then(|s| s.email.as_deref()) == Some(email);
    let recently_confirmed = shadow.is_some_and(|s| s.skips_unchanged(now_ms, unchanged_skip_ms));
    (plan.unchanged && email_unchanged && recently_confirmed).then_some(SkipReason::Unchanged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// What a generated pending delivery is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Identify,
        IdentifyNoUser,
        IdentifyNoEmail,
        Other(EventType),
        /// A group call, with `group_accounts` on.
        Group,
        /// An Engage `Audience Exited` track (a list membership with `audience_lists`).
        AudienceTrack,
        /// A track a rule of [`rule_kinds`] takes.
        TrackRule,
        Unreadable,
    }

    /// Track rule for "Buy" only.
    fn rule_kinds() -> DestinationKinds {
        use crate::rules::{RuleKind, TrackRule, TrackRules};
        let mut kinds = DestinationKinds::identify_only();
        kinds.track = TrackRules::new(
            RuleKind::Track,
            vec![TrackRule::new("Buy", Some("Purchase".into()), None, None).unwrap()],
        );
        kinds
    }

    fn event(kind: Kind) -> Option<StoredEvent> {
        let (t, user, email) = match kind {
            Kind::Identify => (EventType::Identify, Some("u1"), Some("a@x.io")),
            Kind::IdentifyNoUser => (EventType::Identify, None, Some("a@x.io")),
            Kind::IdentifyNoEmail => (EventType::Identify, Some("u1"), Some("  ")),
            Kind::Other(t) => (t, Some("u1"), None),
            Kind::Group => (EventType::Group, Some("u1"), None),
            Kind::AudienceTrack => (EventType::Track, Some("u1"), None),
            Kind::TrackRule => (EventType::Track, Some("u1"), None),
            Kind::Unreadable => return None,
        };
        let name = if kind == Kind::TrackRule { "Buy" } else { "E" };
        let mut raw = json!({
            "type": t.as_str(), "messageId": "m", "timestamp": "2026-01-01T00:00:00Z",
            "traits": {}, "event": name, "groupId": "g", "previousId": "p",
        });
        if let Some(u) = user {
            raw["userId"] = json!(u);
        } else {
            raw["anonymousId"] = json!("anon");
        }
        if let Some(e) = email {
            raw["traits"]["email"] = json!(e);
        }
        if kind == Kind::AudienceTrack {
            raw["event"] = json!("Audience Exited");
            raw["context"] = json!({"personas": {"computation_class": "audience",
                                                 "computation_key": "vip"}});
        }
        Some(crate::segment::parse_stored_event(raw.to_string().as_bytes()).unwrap())
    }

    /// Accounts and audience lists on: plain tracks and pages are still not handled.
    fn plan_of(kinds: &[Kind]) -> Vec<Step> {
        let accounts_and_lists = DestinationKinds {
            group_accounts: true,
            audience_lists: true,
            ..DestinationKinds::identify_only()
        };
        plan_with(kinds, &accounts_and_lists, false)
    }

    fn plan_with(kinds: &[Kind], rules: &DestinationKinds, known: bool) -> Vec<Step> {
        let events: Vec<Option<StoredEvent>> = kinds.iter().map(|k| event(*k)).collect();
        let pending: Vec<Pending<'_>> = events
            .iter()
            .map(|e| {
                e.as_ref()
                    .map_or(Pending::Unreadable("bad"), Pending::Event)
            })
            .collect();
        steps(&pending, rules, known)
    }

    /// The reference model: deliver one event at a time, in FIFO order, as a per-event
    /// integration would; then merge each upsert into the previous upsert when nothing but
    /// call-less steps of identifies lies between them.
    fn model(kinds: &[Kind]) -> Vec<(Vec<usize>, &'static str)> {
        let mut one_by_one: Vec<(usize, &'static str)> = Vec::new();
        for (i, k) in kinds.iter().enumerate() {
            one_by_one.push((
                i,
                match k {
                    Kind::Identify => "upsert",
                    Kind::IdentifyNoUser | Kind::IdentifyNoEmail => "skip",
                    Kind::Other(_) | Kind::TrackRule => "skip",
                    Kind::Group => "account",
                    Kind::AudienceTrack => "hand-off",
                    Kind::Unreadable => "dead",
                },
            ));
        }
        // Group: an upsert joins the open upsert unless a non-identify came in between.
        let mut out: Vec<(Vec<usize>, &'static str)> = Vec::new();
        let mut open: Option<Vec<usize>> = None;
        for (i, what) in one_by_one {
            match (kinds[i], what) {
                (_, "upsert") => open.get_or_insert_with(Vec::new).push(i),
                (Kind::Other(_) | Kind::Group | Kind::AudienceTrack, _) => {
                    if let Some(run) = open.take() {
                        out.push((run, "upsert"));
                    }
                    out.push((vec![i], what));
                }
                _ => out.push((vec![i], what)),
            }
        }
        if let Some(run) = open.take() {
            out.push((run, "upsert"));
        }
        out
    }

    fn shape(steps: &[Step]) -> Vec<(Vec<usize>, &'static str)> {
        steps
            .iter()
            .map(|s| match s {
                Step::UpsertContact { members } => (members.clone(), "upsert"),
                Step::UpsertAccount { index } => (vec![*index], "account"),
                Step::Skip { index, .. } => (vec![*index], "skip"),
                Step::DeadLetter { index, .. } => (vec![*index], "dead"),
                Step::HandOffMembership { index, .. } => (vec![*index], "hand-off"),
                Step::TrackActivity { index } => (vec![*index], "activity"),
                Step::AwaitIdentify { index } => (vec![*index], "await"),
            })
            .collect()
    }

    fn position(steps: &[Step], i: usize) -> Option<usize> {
        steps.iter().position(|s| match s {
            Step::UpsertContact { members } => members.contains(&i),
            Step::Skip { index, .. }
            | Step::DeadLetter { index, .. }
            | Step::TrackActivity { index }
            | Step::AwaitIdentify { index }
            | Step::UpsertAccount { index }
            | Step::HandOffMembership { index, .. } => *index == i,
        })
    }

    fn mixed_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            4 => Just(Kind::Identify),
            1 => Just(Kind::IdentifyNoEmail),
            3 => Just(Kind::TrackRule),
            1 => Just(Kind::Other(EventType::Track)),
            1 => Just(Kind::Other(EventType::Group)),
            1 => Just(Kind::Unreadable),
        ]
    }

    /// What a per-event integration would do with each delivery, one at a time: a track a rule
    /// takes is written once the contact exists (known, or an earlier valid identify), or after
    /// the first valid identify queued after it, or waits.
    fn mixed_model(kinds: &[Kind], known: bool) -> Vec<&'static str> {
        let mut exists = known;
        kinds
            .iter()
            .enumerate()
            .map(|(i, k)| match k {
                Kind::Identify => {
                    exists = true;
                    "upsert"
                }
                Kind::TrackRule if exists || kinds[i..].contains(&Kind::Identify) => "activity",
                Kind::TrackRule => "await",
                Kind::Unreadable => "dead",
                _ => "skip",
            })
            .collect()
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            6 => Just(Kind::Identify),
            1 => Just(Kind::IdentifyNoUser),
            1 => Just(Kind::IdentifyNoEmail),
            1 => Just(Kind::Other(EventType::Track)),
            1 => Just(Kind::Other(EventType::Page)),
            1 => Just(Kind::Other(EventType::Alias)),
            2 => Just(Kind::Group),
            1 => Just(Kind::AudienceTrack),
            1 => Just(Kind::Unreadable),
        ]
    }

    #[test]
    fn a_run_of_identifies_is_one_upsert_and_a_track_waits_for_it() {
        use Kind::*;
        let steps = plan_of(&[
            Identify,
            IdentifyNoEmail,
            Identify,
            Other(EventType::Track),
            Identify,
        ]);
        assert_eq!(
            steps,
            vec![
                Step::Skip {
                    index: 1,
                    reason: SkipReason::NoEmail
                },
                Step::UpsertContact {
                    members: vec![0, 2]
                },
                Step::Skip {
                    index: 3,
                    reason: SkipReason::NotHandled(EventType::Track)
                },
                Step::UpsertContact { members: vec![4] },
            ]
        );
        assert!(plan_of(&[]).is_empty());
    }

    #[test]
    fn a_group_is_an_account_step_after_the_identifies_before_it_only_when_switched_on() {
        use Kind::*;
        let planned = plan_of(&[Identify, Group, Identify, Group]);
        assert_eq!(
            planned,
            vec![
                Step::UpsertContact { members: vec![0] },
                Step::UpsertAccount { index: 1 },
                Step::UpsertContact { members: vec![2] },
                Step::UpsertAccount { index: 3 },
            ]
        );
        assert!(planned.iter().all(Step::calls));
        // Without group_accounts: not handled, as before.
        let events: Vec<StoredEvent> = [Identify, Group]
            .iter()
            .map(|k| event(*k).unwrap())
            .collect();
        let pending: Vec<Pending<'_>> = events.iter().map(Pending::Event).collect();
        assert_eq!(
            steps(&pending, &DestinationKinds::identify_only(), false),
            vec![
                Step::UpsertContact { members: vec![0] },
                Step::Skip {
                    index: 1,
                    reason: SkipReason::NotHandled(EventType::Group)
                },
            ]
        );
    }

    #[test]
    fn an_audience_track_hands_its_membership_off_after_the_upsert_before_it() {
        let parse = |v: serde_json::Value| {
            crate::segment::parse_stored_event(v.to_string().as_bytes()).unwrap()
        };
        let personas = json!({"personas": {"computation_class": "audience",
                                           "computation_key": "vip"}});
        let identify = parse(
            json!({"type": "identify", "messageId": "m1", "userId": "u1",
            "timestamp": "2026-01-01T00:00:00Z", "traits": {"email": "a@x.io", "vip": true},
            "context": personas}),
        );
        let exited = parse(json!({"type": "track", "messageId": "m2", "userId": "u1",
            "event": "Audience Exited", "timestamp": "2026-01-01T00:00:01Z",
            "properties": {"vip": false}, "context": personas}));
        let anonymous = parse(
            json!({"type": "track", "messageId": "m3", "anonymousId": "a1",
            "event": "Audience Entered", "timestamp": "2026-01-01T00:00:01Z",
            "properties": {"vip": true}, "context": personas}),
        );
        let pending = [
            Pending::Event(&identify),
            Pending::Event(&exited),
            Pending::Event(&anonymous),
        ];
        let lists = DestinationKinds {
            audience_lists: true,
            ..DestinationKinds::identify_only()
        };
        assert_eq!(
            steps(&pending, &lists, false),
            vec![
                Step::UpsertContact { members: vec![0] },
                Step::HandOffMembership {
                    index: 1,
                    change: AudienceChange {
                        list: "vip".into(),
                        membership: crate::audience::Membership::Remove,
                    },
                },
                Step::Skip {
                    index: 2,
                    reason: SkipReason::NoUserId
                },
            ]
        );
        // Without the key: not handled, exactly as before.
        assert_eq!(
            steps(&pending, &DestinationKinds::identify_only(), false)[1],
            Step::Skip {
                index: 1,
                reason: SkipReason::NotHandled(EventType::Track)
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn steps_agree_with_the_one_by_one_model(kinds in proptest::collection::vec(kind(), 0..24)) {
            let steps = plan_of(&kinds);
            prop_assert_eq!(shape(&steps), model(&kinds));

            // Every delivery is planned exactly once.
            let mut seen: Vec<usize> = shape(&steps).into_iter().flat_map(|(m, _)| m).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..kinds.len()).collect::<Vec<_>>());

            // Order across kinds: whatever an event of another kind is planned with, everything
            // before it in FIFO order runs before it and everything after it runs after it.
            let position = |i: usize| position(&steps, i);
            for (j, k) in kinds.iter().enumerate() {
                if matches!(k, Kind::Other(_) | Kind::Group | Kind::AudienceTrack) {
                    let pj = position(j);
                    for (i, other) in kinds.iter().enumerate() {
                        if *other == Kind::Identify {
                            prop_assert_eq!(position(i) < pj, i < j, "{} vs {}", i, j);
                        }
                    }
                }
            }
            // Coalescing: members of an upsert are FIFO-ordered valid identifies.
            for s in &steps {
                if let Step::UpsertContact { members } = s {
                    prop_assert!(members.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(members.iter().all(|i| kinds[*i] == Kind::Identify));
                }
            }
        }
    }

    #[test]
    fn a_track_before_the_first_identify_waits_for_its_upsert() {
        use Kind::*;
        let rules = rule_kinds();
        let steps = plan_with(&[TrackRule, Identify, TrackRule, Identify], &rules, false);
        assert_eq!(
            steps,
            vec![
                Step::UpsertContact { members: vec![1] },
                Step::TrackActivity { index: 0 },
                Step::TrackActivity { index: 2 },
                Step::UpsertContact { members: vec![3] },
            ]
        );
        // Known contact: in FIFO order.
        let steps = plan_with(&[TrackRule, Identify], &rules, true);
        assert_eq!(
            steps,
            vec![
                Step::TrackActivity { index: 0 },
                Step::UpsertContact { members: vec![1] },
            ]
        );
        // Nothing to wait behind.
        assert_eq!(
            plan_with(&[TrackRule, IdentifyNoEmail], &rules, false)[0],
            Step::AwaitIdentify { index: 0 }
        );
        // A track without userId can never have a contact.
        let anonymous = crate::segment::parse_stored_event(
            br#"{"type":"track","event":"Buy","anonymousId":"a","messageId":"m","timestamp":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            super::steps(&[Pending::Event(&anonymous)], &rules, true),
            vec![Step::Skip {
                index: 0,
                reason: SkipReason::Anonymous
            }]
        );
        // A track no rule takes is skipped with the rule's reason.
        match &plan_with(&[Other(EventType::Track)], &rules, true)[0] {
            Step::Skip { reason, .. } => {
                assert_eq!(reason.detail(), "no track rule matches 'E'");
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn mixed_kinds_keep_order_and_coalescing(
            kinds in proptest::collection::vec(mixed_kind(), 0..24),
            known in any::<bool>(),
        ) {
            let rules = rule_kinds();
            let steps = plan_with(&kinds, &rules, known);
            let model = mixed_model(&kinds, known);

            // Every delivery planned exactly once, as the one-by-one model says.
            let shape = shape(&steps);
            let mut seen: Vec<usize> = shape.iter().flat_map(|(m, _)| m.clone()).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..kinds.len()).collect::<Vec<_>>());
            for (members, what) in &shape {
                for i in members {
                    prop_assert_eq!(model[*i], *what, "delivery {}", i);
                }
            }
            let first_identify = kinds.iter().position(|k| *k == Kind::Identify);
            for (t, k) in kinds.iter().enumerate() {
                if *k != Kind::TrackRule || model[t] != "activity" {
                    continue;
                }
                let pt = position(&steps, t);
                // A track whose contact did not exist yet runs right after the upsert of the
                // first identify queued after it; any other track keeps its FIFO place
                // against identifies.
                let waited = !known && first_identify.is_none_or(|f| f > t);
                for (i, other) in kinds.iter().enumerate() {
                    if *other != Kind::Identify {
                        continue;
                    }
                    let before = position(&steps, i) < pt;
                    if waited {
                        if Some(i) == first_identify {
                            prop_assert!(before, "track {} before its identify {}", t, i);
                        }
                    } else {
                        prop_assert_eq!(before, i < t, "{} vs {}", i, t);
                    }
                }
                // Tracks keep their FIFO order among themselves.
                for (u, other) in kinds.iter().enumerate().skip(t + 1) {
                    if *other == Kind::TrackRule && model[u] == "activity" {
                        prop_assert!(pt < position(&steps, u));
                    }
                }
            }
            // Coalescing unchanged: members of an upsert are FIFO-ordered valid identifies,
            // and a run is broken only by an event that is not a call-less skip of a track.
            for s in &steps {
                if let Step::UpsertContact { members } = s {
                    prop_assert!(members.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(members.iter().all(|i| kinds[*i] == Kind::Identify));
                }
            }
            // Without tracks a rule takes, the plan is the identify-only plan.
            if !kinds.contains(&Kind::TrackRule) && !kinds.contains(&Kind::Other(EventType::Track)) {
                prop_assert_eq!(
                    steps,
                    plan_with(&kinds, &DestinationKinds::identify_only(), false)
                );
            }
        }
    }

    #[test]
    fn unchanged_is_skipped_only_while_recently_confirmed() {
        let shadow = ContactShadow {
            email: Some("a@x.io".into()),
            confirmed_at_ms: Some(1_000),
            ..ContactShadow::default()
        };
        let plan = UpsertPlan {
            unchanged: true,
            ..UpsertPlan::default()
        };
        assert_eq!(
            skip_unchanged(Some(&shadow), &plan, "a@x.io", 1_500, 1_000),
            Some(SkipReason::Unchanged)
        );
        assert_eq!(
            skip_unchanged(Some(&shadow), &plan, "a@x.io", 2_000, 1_000),
            None
        );
        assert_eq!(
            skip_unchanged(Some(&shadow), &plan, "b@x.io", 1_500, 1_000),
            None
        );
        assert_eq!(skip_unchanged(None, &plan, "a@x.io", 1_500, 1_000), None);
    }
}
