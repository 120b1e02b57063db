//! Why a delivery was skipped or dead-lettered: closed sets of reasons, each with a stable code
//! (what a filter or a dashboard matches on) and a sentence for people (what traces show).
//!
//! The code never changes once released; the sentence may. A new kind of delivery adds its own
//! variants here, next to its planner case, so every skip and dead letter has a reason a user
//! understands and an operator can select on.

use crate::account::NoAccount;
use crate::activity::NoIdentify;
use crate::rules::NoRuleMatches;
use crate::segment::EventType;

/// Why a delivery needs no call at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The destination does nothing with this call type.
    NotHandled(EventType),
    /// The event's `integrations` object turns the destination off (`integration_key`).
    OptedOut {
        /// The destination's key in `integrations`.
        integration_key: String,
    },
    /// An identify without `userId` (Freshmarketer requires it).
    NoUserId,
    /// An identify without `traits.email` (Freshmarketer requires it).
    NoEmail,
    /// Every mapped field equals what was last sent, and the CRM confirmed it recently.
    Unchanged,
    /// A group call (or `traits.company`) that names no account.
    NoAccount(NoAccount),
    /// A track / page / screen that no rule of the destination takes.
    NoRule(NoRuleMatches),
    /// A track / page of a user that had no valid identify within the wait.
    NoIdentify(NoIdentify),
    /// A track / page without `userId`: no contact can ever be attached to it.
    Anonymous,
    /// An earlier attempt to create this event's activity was interrupted with its outcome
    /// unknown (Unix ms of the attempt): it may exist, and Freshworks has no idempotency key,
    /// so it is not sent again.
    ActivityInDoubt {
        /// When the interrupted attempt was recorded.
        at_ms: i64,
    },
    /// This event's activity was already created (by an attempt whose settle was lost).
    ActivityExists {
        /// Its Freshworks id.
        activity_id: i64,
    },
    /// The rule only sets a lifecycle stage, and a newer event already set the field.
    StaleStage,
}

impl SkipReason {
    /// The stable code (lower snake case).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotHandled(_) => "not_handled",
            Self::OptedOut { .. } => "opted_out",
            Self::NoUserId => "no_user_id",
            Self::NoEmail => "no_email",
            Self::Unchanged => "unchanged",
            Self::NoAccount(_) => "no_account",
            Self::NoRule(_) => "no_rule",
            Self::NoIdentify(_) => "no_identify",
            Self::Anonymous => "anonymous",
            Self::ActivityInDoubt { .. } => "activity_in_doubt",
            Self::ActivityExists { .. } => "activity_exists",
            Self::StaleStage => "stale_stage",
        }
    }

    /// The sentence stored with the delivery (the wording traces and the CLI have always shown).
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            Self::NotHandled(t) => format!("not handled by this destination: {}", t.as_str()),
            Self::OptedOut { integration_key } => {
                format!("disabled by the integrations object (key {integration_key:?})")
            }
            Self::NoUserId => "rejected: identify has no userId (Freshmarketer requires it)".into(),
            Self::NoEmail => {
                "rejected: identify has no traits.email (Freshmarketer requires it)".into()
            }
            Self::Unchanged => "unchanged: every mapped field equals what was last sent".into(),
            Self::NoAccount(why) => format!("rejected: {why}"),
            Self::NoRule(no_rule) => no_rule.to_string(),
            Self::NoIdentify(no_identify) => no_identify.to_string(),
            Self::Anonymous => {
                "no userId (anonymousId only): there is no contact to attach it to".into()
            }
            Self::ActivityInDoubt { at_ms } => format!(
                "an attempt to create this activity (at {at_ms} ms) was interrupted before its \
                 answer was recorded: it may exist in Freshworks, which has no idempotency key, \
                 so it is not sent again"
            ),
            Self::ActivityExists { activity_id } => {
                format!("activity {activity_id} was already created for this messageId")
            }
            Self::StaleStage => {
                "lifecycle stage not set: a newer event already set lifecycle_stage_id".into()
            }
        }
    }

    /// The metric outcome label of this skip (bounded set).
    #[must_use]
    pub fn metric_label(&self) -> Option<&'static str> {
        match self {
            Self::NoUserId | Self::NoEmail | Self::NoAccount(_) => Some("rejected"),
            Self::Unchanged | Self::StaleStage | Self::ActivityExists { .. } => Some("unchanged"),
            Self::NoIdentify(_) | Self::ActivityInDoubt { .. } | Self::Anonymous => {
                Some("rejected")
            }
            Self::NotHandled(_) | Self::OptedOut { .. } | Self::NoRule(_) => None,
        }
    }
}

/// Why a delivery can never succeed as it is (it goes to the dead-letter queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// The stored event cannot be parsed any more.
    Unreadable,
    /// Freshworks refused the data (a 4xx other than a uniqueness conflict).
    Refused,
    /// Another contact holds a unique value (email, mobile) or this `external_id`.
    Conflict,
    /// Retried past the retry horizon.
    RetryHorizon,
    /// A rule names an activity type or lifecycle stage the account does not have.
    UnknownName,
    /// No owner can be chosen for an activity (`owner_email` unknown, no active user).
    NoOwner,
}

impl DeadReason {
    /// Every reason, for `--help` texts and filters.
    pub const ALL: [Self; 6] = [
        Self::Unreadable,
        Self::Refused,
        Self::Conflict,
        Self::RetryHorizon,
        Self::UnknownName,
        Self::NoOwner,
    ];

    /// The stable code (lower snake case).
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::Refused => "refused",
            Self::Conflict => "conflict",
            Self::RetryHorizon => "retry_horizon",
            Self::UnknownName => "unknown_name",
            Self::NoOwner => "no_owner",
        }
    }

    /// The reason a refusal's text (`HTTP 400: Email is not unique`) stands for.
    #[must_use]
    pub fn of_refusal(message: &str) -> Self {
        if crate::delivery::is_uniqueness_conflict(message) {
            Self::Conflict
        } else {
            Self::Refused
        }
    }

    /// The reason with this code, if any.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        let codes: Vec<&str> = DeadReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes,
            [
                "unreadable",
                "refused",
                "conflict",
                "retry_horizon",
                "unknown_name",
                "no_owner"
            ]
        );
        for r in DeadReason::ALL {
            assert_eq!(DeadReason::from_code(r.code()), Some(r));
        }
        assert_eq!(DeadReason::from_code("nope"), None);
        assert_eq!(
            DeadReason::of_refusal("HTTP 400: Email is not unique"),
            DeadReason::Conflict
        );
        assert_eq!(
            DeadReason::of_refusal("HTTP 400: Email is invalid"),
            DeadReason::Refused
        );
    }

    #[test]
    fn skip_details_keep_their_wording() {
        assert_eq!(
            SkipReason::NotHandled(EventType::Page).detail(),
            "not handled by this destination: page"
        );
        assert_eq!(
            SkipReason::NotHandled(EventType::Track).code(),
            "not_handled"
        );
        assert_eq!(
            SkipReason::OptedOut {
                integration_key: "Freshmarketer".into()
            }
            .detail(),
            "disabled by the integrations object (key \"Freshmarketer\")"
        );
        assert_eq!(SkipReason::NoEmail.metric_label(), Some("rejected"));
    }
}
