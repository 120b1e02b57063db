//! Value types of what delivering tracks, groups and audiences remembers in the store: list
//! claims and activity intents. (Contact ids, account shadows and entity field metadata need no
//! type of their own: ids are `i64`, shadows opaque JSON bytes, metadata [`crate::FieldMetadata`].)

use serde::{Deserialize, Serialize};

/// Where the cache of a marketing list id stands for one caller of
/// [`crate::Store::claim_list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListClaim {
    /// The list's id is known: use it, create nothing.
    Known(i64),
    /// The caller holds the claim: it finds the list by name in `GET /lists` or creates it, then
    /// records the id with [`crate::Store::put_list_id`].
    Claimed,
    /// Another owner holds the claim until then (it is creating the list): wait and ask again.
    Busy {
        /// When the other claim expires (Unix ms).
        until_ms: i64,
    },
}

/// What the store knows of one event's sales activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityIntent {
    /// Recorded before a call whose outcome was never recorded: the activity may exist. The
    /// caller must not create it blindly (look it up, or settle the event as in doubt).
    Intended {
        /// When the intent was recorded (Unix ms).
        at_ms: i64,
    },
    /// Created, with this id: never create it again.
    Created {
        /// The sales activity id.
        activity_id: i64,
    },
}

impl ActivityIntent {
    /// Stable name of the state, as stored (`intended`, `created`).
    #[must_use]
    pub fn state(&self) -> &'static str {
        match self {
            Self::Intended { .. } => "intended",
            Self::Created { .. } => "created",
        }
    }

    /// The intent of a stored row (`state`, `activity_id`, `intended_at_ms`); `None` for a row
    /// the schema's CHECK would have refused.
    #[must_use]
    pub fn from_row(state: &str, activity_id: Option<i64>, at_ms: i64) -> Option<Self> {
        match (state, activity_id) {
            ("intended", _) => Some(Self::Intended { at_ms }),
            ("created", Some(activity_id)) => Some(Self::Created { activity_id }),
            _ => None,
        }
    }
}

/// The claim answer for `owner` from a list row (decided once for every backend).
pub(crate) fn claim_of(
    list_id: Option<i64>,
    claim_owner: Option<&str>,
    claim_until_ms: Option<i64>,
    owner: &str,
) -> ListClaim {
    match (list_id, claim_owner) {
        (Some(id), _) => ListClaim::Known(id),
        (None, Some(holder)) if holder == owner => ListClaim::Claimed,
        (None, _) => ListClaim::Busy {
            until_ms: claim_until_ms.unwrap_or(0),
        },
    }
}

/// Keys sorted and deduplicated: batch reads answer in key order, once per key.
pub(crate) fn sorted_unique(keys: &[String]) -> Vec<&String> {
    let mut keys: Vec<&String> = keys.iter().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// One id per key, the last given winning (a batch may name a key twice).
pub(crate) fn last_per_key(ids: Vec<(String, i64)>) -> Vec<(String, i64)> {
    let map: std::collections::BTreeMap<String, i64> = ids.into_iter().collect();
    map.into_iter().collect()
}
