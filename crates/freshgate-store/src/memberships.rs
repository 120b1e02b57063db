//! Value types of the marketing list memberships handed from a contact's delivery to the list
//! flusher (Engage audiences): the desired membership per (list, contact), newest event wins,
//! until the flusher has sent it in a batch (`done`) or given up on it (`dead`, with the reason).

use serde::{Deserialize, Serialize};

/// In or out of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListAction {
    /// `PUT /lists/{id}/add_contacts`.
    Add,
    /// `PUT /lists/{id}/remove_contacts`.
    Remove,
}

impl ListAction {
    /// Stable name, as stored (`add`, `remove`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }

    /// The action of a stored name; `None` for a name the schema's CHECK would have refused.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "add" => Some(Self::Add),
            "remove" => Some(Self::Remove),
            _ => None,
        }
    }
}

/// A desired membership, recorded by a contact's delivery step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    /// The list's name (the audience key).
    pub list: String,
    /// The contact's key (`userId`).
    pub contact_key: String,
    /// In or out.
    pub action: ListAction,
    /// The event's time (Unix ms): a change older than the recorded one is ignored.
    pub ts_ms: i64,
    /// The contact's Freshworks id, when the step knew it.
    pub contact_id: Option<i64>,
    /// The delivery of the event (the list call is recorded in its trace).
    pub delivery_id: Option<i64>,
}

/// A membership due to be sent, as taken by the flusher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueMembership {
    /// The list's name.
    pub list: String,
    /// The contact's key.
    pub contact_key: String,
    /// In or out.
    pub action: ListAction,
    /// The event's time (Unix ms); names this version of the row when it is finished.
    pub ts_ms: i64,
    /// The contact's Freshworks id, if known.
    pub contact_id: Option<i64>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When this version was recorded (Unix ms): the retry horizon counts from here.
    pub first_at_ms: i64,
    /// The delivery of the event this version came from.
    pub delivery_id: Option<i64>,
}

/// How a due membership ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipEnd {
    /// The list call succeeded.
    Done,
    /// Try again at `at_ms`.
    Retry {
        /// When (Unix ms).
        at_ms: i64,
        /// The last error, in words.
        error: String,
    },
    /// Given up, with the reason in words.
    Dead {
        /// Why.
        reason: String,
    },
}

/// The end of one due membership. Applied only when the row still holds the same version
/// (`action`, `ts_ms`): a newer change recorded meanwhile stays pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipResult {
    /// The list's name.
    pub list: String,
    /// The contact's key.
    pub contact_key: String,
    /// The version's action.
    pub action: ListAction,
    /// The version's event time.
    pub ts_ms: i64,
    /// The contact's Freshworks id when resolved (kept for the next change).
    pub contact_id: Option<i64>,
    /// How it ended.
    pub end: MembershipEnd,
}

/// Memberships of a destination by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipCounts {
    /// Recorded, not sent yet (or to be retried).
    pub pending: u64,
    /// Sent.
    pub done: u64,
    /// Given up.
    pub dead: u64,
}

impl MembershipCounts {
    /// Add a `(state, count)` row of the store.
    pub(crate) fn add(&mut self, state: &str, n: u64) {
        match state {
            "pending" => self.pending += n,
            "done" => self.done += n,
            "dead" => self.dead += n,
            _ => {}
        }
    }
}

/// The state stored for a row after `end`, with its error words.
pub(crate) fn state_of(end: &MembershipEnd) -> (&'static str, Option<&str>) {
    match end {
        MembershipEnd::Done => ("done", None),
        MembershipEnd::Retry { error, .. } => ("pending", Some(error)),
        MembershipEnd::Dead { reason } => ("dead", Some(reason)),
    }
}
