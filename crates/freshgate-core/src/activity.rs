//! A track (or page/screen) that a rule takes → the pure spec of what is written: the sales
//! activity (title, notes, time, type name) and the lifecycle stage name. Resolving the names to
//! ids (`/selector/sales_activity_types`, `/selector/lifecycle_stages`) and the contact and owner
//! ids is the caller's; this module decides only what the event says.
//!
//! Times: `start_date` / `end_date` are written as the account writes its own timestamps,
//! RFC 3339 to the second in the account's UTC offset (`2021-10-04T14:45:00-04:00`,
//! spec/freshworks.md §7, §9.10). The offset is learnt from any timestamp the account returns
//! ([`offset_of`]), UTC until one is known.

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

use crate::rules::TrackRule;
use crate::segment::StoredEvent;
use crate::template::{TemplateInput, default_title};

/// What one event becomes under its rule, before ids are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivitySpec {
    /// The event's `messageId`: the activity's idempotency key (see the store's activity
    /// intents).
    pub message_id: String,
    /// A sales activity to create, when the rule names a type.
    pub activity: Option<ActivityBody>,
    /// A lifecycle stage to set on the contact, when the rule names one.
    pub lifecycle_stage: Option<StageChange>,
}

/// The activity's fields, ids still to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityBody {
    /// The activity type's name (resolve via `/selector/sales_activity_types`, exact match).
    pub type_name: String,
    /// The rendered title.
    pub title: String,
    /// The properties as `key: value` lines.
    pub notes: String,
    /// `start_date` = `end_date`: the event time in the account's offset.
    pub at: String,
}

/// A lifecycle stage write, newest event wins against identify-set values of the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageChange {
    /// The stage's name (resolve via `/selector/lifecycle_stages`, exact match).
    pub stage_name: String,
    /// Timestamp (Unix ms) of the event, for newest-wins on `lifecycle_stage_id`.
    pub ts_ms: i64,
}

/// What `event` becomes under `rule`, times in `offset`.
#[must_use]
pub fn activity_spec(event: &StoredEvent, rule: &TrackRule, offset: UtcOffset) -> ActivitySpec {
    let input = TemplateInput::of(event);
    let title = rule
        .title
        .as_ref()
        .map_or_else(|| default_title(&input), |t| t.render(&input));
    ActivitySpec {
        message_id: event.message_id.clone(),
        activity: rule.activity_type.as_ref().map(|type_name| ActivityBody {
            type_name: type_name.clone(),
            title,
            notes: crate::notes::notes(&event.properties),
            at: activity_time(event.timestamp, offset),
        }),
        lifecycle_stage: rule.lifecycle_stage.as_ref().map(|stage_name| StageChange {
            stage_name: stage_name.clone(),
            ts_ms: unix_ms(event.timestamp),
        }),
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// `t` as the account writes times: `YYYY-MM-DDTHH:MM:SS±HH:MM` in `offset` (sub-seconds
/// dropped). An instant the offset would carry out of the four-digit years stays in UTC.
#[must_use]
pub fn activity_time(t: OffsetDateTime, offset: UtcOffset) -> String {
    let local = t
        .checked_to_offset(offset)
        .filter(|l| (1..=9999).contains(&l.year()))
        .unwrap_or_else(|| t.to_offset(UtcOffset::UTC));
    let off = local.offset();
    let sign = if off.is_negative() { '-' } else { '+' };
    let (h, m, _) = off.as_hms();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        h.unsigned_abs(),
        m.unsigned_abs()
    )
}

/// The UTC offset of a timestamp the account returned (`2021-10-04T14:45:00-04:00` →
/// −04:00, `…Z` → UTC); `None` when it has none or does not parse.
#[must_use]
pub fn offset_of(timestamp: &str) -> Option<UtcOffset> {
    let t = timestamp.trim();
    if t.ends_with('Z') || t.ends_with('z') {
        return crate::segment::parse_timestamp(t).map(|_| UtcOffset::UTC);
    }
    crate::segment::parse_timestamp(t)?;
    let (body, tail) = t.split_at(t.len().checked_sub(6)?);
    let sign = match tail.as_bytes().first()? {
        b'+' => 1i8,
        b'-' => -1i8,
        _ => return None,
    };
    body.contains('T').then_some(())?;
    let (h, m) = tail.get(1..)?.split_once(':')?;
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

/// What becomes of a track (or page) whose user has no contact yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwaitIdentify {
    /// Keep it pending behind the user's identify; look again at this time (Unix ms).
    Wait {
        /// End of the wait.
        until_ms: i64,
    },
    /// The wait is over: skip it with [`NoIdentify`] as the reason.
    GiveUp(NoIdentify),
}

/// The skip reason of a track whose user never had a valid identify within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no valid identify for this user within {wait_secs} s (identify_wait_secs): nothing to attach it to"
)]
pub struct NoIdentify {
    /// The configured wait.
    pub wait_secs: u64,
}

/// Whether a track received at `received_at_ms`, whose user has no contact at `now_ms`, still
/// waits for an identify (at most `wait_secs` after it was received).
#[must_use]
pub fn await_identify(received_at_ms: i64, now_ms: i64, wait_secs: u64) -> AwaitIdentify {
    let wait_ms = i64::try_from(wait_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let until_ms = received_at_ms.saturating_add(wait_ms);
    if now_ms < until_ms {
        AwaitIdentify::Wait { until_ms }
    } else {
        AwaitIdentify::GiveUp(NoIdentify { wait_secs })
    }
}

/// One user of `GET /selector/owners`, as far as choosing an activity owner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCandidate {
    /// The user id.
    pub id: i64,
    /// The login email, if listed.
    pub email: Option<String>,
    /// `is_active`; `None` (not listed) counts as active.
    pub active: Option<bool>,
}

/// Why no owner can be chosen: the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoOwner {
    /// The configured `owner_email` is not an active user of the account.
    #[error("owner_email {0:?} is not an active user of the account (GET /selector/owners)")]
    NotFound(String),
    /// The account lists no active user.
    #[error("the account has no active user to own activities")]
    NoneActive,
}

/// The owner of created activities: the configured email (compared normalised), else the first
/// active user in the selector's order.
///
/// # Errors
/// [`NoOwner`].
pub fn choose_owner(owner_email: Option<&str>, owners: &[OwnerCandidate]) -> Result<i64, NoOwner> {
    let active = owners.iter().filter(|o| o.active != Some(false));
    match owner_email {
        Some(want) => {
            let want = crate::email::normalize(want);
            active
                .clone()
                .find(|o| {
                    o.email
                        .as_deref()
                        .is_some_and(|e| crate::email::normalize(e) == want)
                })
                .map(|o| o.id)
                .ok_or(NoOwner::NotFound(want))
        }
        None => active
            .clone()
            .next()
            .map(|o| o.id)
            .ok_or(NoOwner::NoneActive),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::segment::parse_stored_event;
    use crate::template::TitleTemplate;
    use proptest::prelude::*;
    use serde_json::json;
    use time::macros::{datetime, offset};

    #[test]
    fn times_are_written_in_the_account_offset() {
        let t = datetime!(2021-10-04 18:45:00.250 UTC);
        assert_eq!(
            activity_time(t, offset!(-04:00)),
            "2021-10-04T14:45:00-04:00"
        );
        assert_eq!(
            activity_time(t, offset!(+05:30)),
            "2021-10-05T00:15:00+05:30"
        );
        assert_eq!(
            activity_time(t, UtcOffset::UTC),
            "2021-10-04T18:45:00+00:00"
        );
    }

    #[test]
    fn the_offset_is_learnt_from_an_account_timestamp() {
        assert_eq!(
            offset_of("2021-10-04T14:45:00-04:00"),
            Some(offset!(-04:00))
        );
        assert_eq!(
            offset_of("2024-01-02T03:04:05.123+05:30"),
            Some(offset!(+05:30))
        );
        assert_eq!(offset_of("2024-01-02T03:04:05Z"), Some(UtcOffset::UTC));
        for bad in [
            "",
            "yesterday",
            "2024-01-02",
            "+05:30",
            "2024-01-02T03:04:05+99:00",
        ] {
            assert_eq!(offset_of(bad), None, "{bad}");
        }
    }

    fn event(v: serde_json::Value) -> StoredEvent {
        parse_stored_event(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_rule_makes_the_activity_and_the_stage() {
        let e = event(json!({
            "type": "track", "messageId": "m-1", "userId": "u1", "event": "Order Completed",
            "timestamp": "2024-03-01T12:00:00.000Z",
            "properties": {"order_id": 7, "total": 9.5}
        }));
        let rule = TrackRule::new(
            "Order Completed",
            Some("Purchase".into()),
            Some("Customer".into()),
            Some(TitleTemplate::parse("Order {{properties.order_id}}").unwrap()),
        )
        .unwrap();
        let spec = activity_spec(&e, &rule, offset!(-04:00));
        assert_eq!(spec.message_id, "m-1");
        assert_eq!(
            spec.activity,
            Some(ActivityBody {
                type_name: "Purchase".into(),
                title: "Order 7".into(),
                notes: "order_id: 7\ntotal: 9.5".into(),
                at: "2024-03-01T08:00:00-04:00".into(),
            })
        );
        assert_eq!(
            spec.lifecycle_stage,
            Some(StageChange {
                stage_name: "Customer".into(),
                ts_ms: 1_709_294_400_000
            })
        );
        let stage_only = TrackRule::new("*", None, Some("Lead".into()), None).unwrap();
        let spec = activity_spec(&e, &stage_only, UtcOffset::UTC);
        assert!(spec.activity.is_none());
        let untitled = TrackRule::new("*", Some("Call".into()), None, None).unwrap();
        assert_eq!(
            activity_spec(&e, &untitled, UtcOffset::UTC)
                .activity
                .unwrap()
                .title,
            "Order Completed"
        );
    }

    #[test]
    fn a_track_waits_for_its_identify_then_gives_up_with_the_reason() {
        assert_eq!(
            await_identify(1_000, 2_000, 3600),
            AwaitIdentify::Wait {
                until_ms: 3_601_000
            }
        );
        let AwaitIdentify::GiveUp(reason) = await_identify(1_000, 3_601_000, 3600) else {
            panic!("should give up");
        };
        assert_eq!(
            reason.to_string(),
            "no valid identify for this user within 3600 s (identify_wait_secs): nothing to attach it to"
        );
        assert!(matches!(
            await_identify(0, 0, u64::MAX),
            AwaitIdentify::Wait { until_ms: i64::MAX }
        ));
    }

    #[test]
    fn the_owner_is_the_configured_email_else_the_first_active_user() {
        let owners = [
            OwnerCandidate {
                id: 1,
                email: Some("gone@x.io".into()),
                active: Some(false),
            },
            OwnerCandidate {
                id: 2,
                email: Some("Ada@X.io".into()),
                active: None,
            },
            OwnerCandidate {
                id: 3,
                email: None,
                active: Some(true),
            },
        ];
        assert_eq!(choose_owner(None, &owners), Ok(2));
        assert_eq!(choose_owner(Some(" ada@x.io"), &owners), Ok(2));
        assert_eq!(
            choose_owner(Some("gone@x.io"), &owners),
            Err(NoOwner::NotFound("gone@x.io".into()))
        );
        assert_eq!(choose_owner(None, &owners[..1]), Err(NoOwner::NoneActive));
    }

    proptest! {
        #[test]
        fn activity_time_round_trips_the_instant(
            secs in -62_000_000_000i64..250_000_000_000i64,
            off_minutes in -1439i32..1439,
        ) {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let off = UtcOffset::from_whole_seconds(off_minutes * 60).unwrap();
            let text = activity_time(t, off);
            let back = crate::segment::parse_timestamp(&text).unwrap();
            prop_assert_eq!(back.unix_timestamp(), secs);
        }
    }
}
