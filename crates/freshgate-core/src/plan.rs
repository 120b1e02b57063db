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

use serde_json::Value;

use crate::audience::{AudienceChange, audience_change};
use crate::reason::{DeadReason, SkipReason};
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
            Self::UpsertContact { .. } | Self::UpsertAccount { .. } => true,
            Self::HandOffMembership { .. } | Self::Skip { .. } | Self::DeadLetter { .. } => false,
        }
    }
}

/// Plan a contact's pending deliveries (FIFO order) into steps, in the order they must run,
/// for a destination delivering `kinds`.
///
/// Consecutive identifies form one [`Step::UpsertContact`]; an identify that can never be sent
/// (no `userId`, no email) is skipped without breaking its run. Any other event ends the run:
/// it is planned after it, and identifies after it form a new run. A `group` becomes a
/// [`Step::UpsertAccount`] when `kinds.group_accounts` is on. (`traits.company` of an identify
/// travels with its run: the account is upserted just before the run's contact upsert, which
/// then carries the association.) With `audience_lists`, an Engage audience track is a
/// [`Step::HandOffMembership`] (an identify's membership goes with its upsert).
#[must_use]
pub fn steps(pending: &[Pending<'_>], kinds: &DestinationKinds) -> Vec<Step> {
    let mut out = Vec::new();
    let mut run: Vec<usize> = Vec::new();
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
                None => run.push(index),
            },
            EventType::Group if kinds.group_accounts => {
                close_run(&mut out, &mut run);
                out.push(Step::UpsertAccount { index });
            }
            EventType::Track
                if kinds.audience_lists
                    && let Some(change) = audience_change(event) =>
            {
                close_run(&mut out, &mut run);
                out.push(match event.user_id.as_deref() {
                    Some(u) if !u.is_empty() => Step::HandOffMembership { index, change },
                    _ => Step::Skip {
                        index,
                        reason: SkipReason::NoUserId,
                    },
                });
            }
            other => {
                close_run(&mut out, &mut run);
                out.push(Step::Skip {
                    index,
                    reason: SkipReason::NotHandled(other),
                });
            }
        }
    }
    close_run(&mut out, &mut run);
    out
}

fn close_run(out: &mut Vec<Step>, run: &mut Vec<usize>) {
    if !run.is_empty() {
        out.push(Step::UpsertContact {
            members: std::mem::take(run),
        });
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
        Unreadable,
    }

    fn event(kind: Kind) -> Option<StoredEvent> {
        let (t, user, email) = match kind {
            Kind::Identify => (EventType::Identify, Some("u1"), Some("a@x.io")),
            Kind::IdentifyNoUser => (EventType::Identify, None, Some("a@x.io")),
            Kind::IdentifyNoEmail => (EventType::Identify, Some("u1"), Some("  ")),
            Kind::Other(t) => (t, Some("u1"), None),
            Kind::Group => (EventType::Group, Some("u1"), None),
            Kind::AudienceTrack => (EventType::Track, Some("u1"), None),
            Kind::Unreadable => return None,
        };
        let mut raw = json!({
            "type": t.as_str(), "messageId": "m", "timestamp": "2026-01-01T00:00:00Z",
            "traits": {}, "event": "E", "groupId": "g", "previousId": "p",
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

    fn plan_of(kinds: &[Kind]) -> Vec<Step> {
        let events: Vec<Option<StoredEvent>> = kinds.iter().map(|k| event(*k)).collect();
        let pending: Vec<Pending<'_>> = events
            .iter()
            .map(|e| {
                e.as_ref()
                    .map_or(Pending::Unreadable("bad"), Pending::Event)
            })
            .collect();
        // Accounts and audience lists on: plain tracks and pages are still not handled.
        let kinds = DestinationKinds {
            group_accounts: true,
            audience_lists: true,
            ..DestinationKinds::identify_only()
        };
        steps(&pending, &kinds)
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
                    Kind::Other(_) => "skip",
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
            steps(&pending, &DestinationKinds::identify_only()),
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
            steps(&pending, &lists),
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
            steps(&pending, &DestinationKinds::identify_only())[1],
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
            let position = |i: usize| {
                steps.iter().position(|s| match s {
                    Step::UpsertContact { members } => members.contains(&i),
                    Step::UpsertAccount { index }
                    | Step::Skip { index, .. }
                    | Step::DeadLetter { index, .. }
                    | Step::HandOffMembership { index, .. } => *index == i,
                })
            };
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
