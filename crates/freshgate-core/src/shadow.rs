//! The contact shadow: what freshgate last wrote to one contact of one destination, and the
//! planning that turns a mapped contact into the fields to send against it.
//!
//! The shadow is what makes delivery idempotent and order-safe without reading the CRM back: a
//! field is never overwritten by an older event (newest event timestamp wins), an update that
//! changes nothing needs no call, and `MissingTraits::Clear` knows which fields it once set.
//! Only fields freshgate itself wrote are cleared; values set by people or other integrations
//! that freshgate never sent are not touched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::coalesce::MissingTraits;
use crate::mapping::{MappedContact, MappedField};

/// One field as last written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowField {
    /// The value sent (`null` = cleared).
    pub value: Value,
    /// Timestamp (Unix ms) of the event that set it.
    pub ts_ms: i64,
    /// It lives under `custom_field` (needed to clear it in the right place).
    #[serde(default)]
    pub custom: bool,
}

/// Per destination + contact: the last state freshgate wrote. Stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactShadow {
    /// The Freshworks contact id, once a response told it.
    #[serde(default)]
    pub contact_id: Option<i64>,
    /// The (lower-cased) email last used as identifier.
    #[serde(default)]
    pub email: Option<String>,
    /// Timestamp of the event that set `email`: an older event's email never replaces it.
    #[serde(default)]
    pub email_ts_ms: Option<i64>,
    /// The `external_id` written on the contact (the Segment `userId`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Field internal name → last value written.
    #[serde(default)]
    pub fields: BTreeMap<String, ShadowField>,
    /// A write to this contact was sent and its outcome never recorded (set before the call,
    /// cleared by a delivered settle): after a crash or a timeout the CRM may hold more than
    /// this shadow says (another email, newer values), so the contact is found by its
    /// `external_id` and nothing is skipped as unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_doubt: bool,
    /// When (Unix ms) the CRM last confirmed a write of this contact (a delivered settle).
    /// An unchanged identify is skipped only for a while after it (see [`Self::skips_unchanged`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at_ms: Option<i64>,
    /// Sales account ids freshgate associated the contact with (group / `traits.company`), in
    /// the order they were added: the first is the primary one. Kept apart from `fields` so
    /// `MissingTraits::Clear` never blanks an association.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub account_ids: Vec<i64>,
    /// Sales accounts a group named before the contact existed in the CRM: the contact's next
    /// upsert associates them (then they move to `account_ids`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_account_ids: Vec<i64>,
    /// Fields last written by another kind of event than identify (a track's lifecycle
    /// stage): newest event still wins on them, but `MissingTraits::Clear` does not blank them
    /// for lacking a trait. An identify that writes the field takes it back.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub not_from_traits: std::collections::BTreeSet<String>,
}

impl ContactShadow {
    /// Whether the CRM has confirmed a write of this contact at least once (its id is known,
    /// or a write was settled). A shadow can exist before that: a group naming an account for
    /// a user with no contact yet keeps the pending association in it.
    #[must_use]
    pub fn written(&self) -> bool {
        self.contact_id.is_some() || self.confirmed_at_ms.is_some()
    }

    /// Whether an identify that changes nothing may be skipped without a call at `now_ms`:
    /// the CRM confirmed a write less than `within_ms` ago (after that the contact may have
    /// been deleted or merged in the CRM, and is written again) and nothing is in doubt.
    #[must_use]
    pub fn skips_unchanged(&self, now_ms: i64, within_ms: i64) -> bool {
        !self.in_doubt
            && self
                .confirmed_at_ms
                .is_some_and(|at| now_ms.saturating_sub(at) < within_ms)
    }

    /// Whether this shadow confirms the contact as written under `email` (normalised) for
    /// `user_id`: its last write was settled, with this `external_id` and this email.
    #[must_use]
    pub fn confirms(&self, user_id: &str, email: &str) -> bool {
        !self.in_doubt
            && self.external_id.as_deref() == Some(user_id)
            && self.email.as_deref() == Some(email)
    }
}

/// The shadow to store before a write is sent: `shadow` marked in doubt. `None` when nothing
/// needs storing: without a shadow the contact is already unconfirmed (found by `external_id`,
/// never skipped as unchanged), and a shadow already in doubt stays so.
#[must_use]
pub fn in_doubt(shadow: Option<&ContactShadow>) -> Option<ContactShadow> {
    let s = shadow.filter(|s| !s.in_doubt)?;
    Some(ContactShadow {
        in_doubt: true,
        ..s.clone()
    })
}

/// What to send for one contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpsertPlan {
    /// Fields to write (including `null` clears).
    pub send: BTreeMap<String, MappedField>,
    /// Everything to send already equals the shadow, the email is the same and no earlier write
    /// is in doubt: no call needed.
    pub unchanged: bool,
    /// Fields not sent because the shadow holds a value from a newer event.
    pub stale: Vec<String>,
    /// Fields blanked by `MissingTraits::Clear` (also in `send`, as `null`).
    pub cleared: Vec<String>,
}

/// Plan the upsert of `mapped` against the shadow.
///
/// Every field whose shadow timestamp is not newer than its event is sent (equal timestamps:
/// the later arrival wins, as when sent one by one); newer shadow values make it `stale`. In
/// `Clear` mode every non-null shadow field absent from `mapped` is blanked at
/// `mapped.ts_ms`, unless the shadow's value is newer than that. Clears are JSON `null` for
/// built-in and custom fields alike: `null` is what Freshworks returns for an empty field
/// (spec/freshworks.md §2.2), while `""` would be a value for text fields and invalid for
/// numbers, dates and dropdowns.
#[must_use]
pub fn plan(
    shadow: Option<&ContactShadow>,
    mapped: &MappedContact,
    mode: MissingTraits,
) -> UpsertPlan {
    let mut out = UpsertPlan::default();
    let known = |name: &str| shadow.and_then(|s| s.fields.get(name));
    for (name, field) in &mapped.fields {
        if known(name).is_some_and(|s| s.ts_ms > field.ts_ms) {
            out.stale.push(name.clone());
        } else {
            out.send.insert(name.clone(), field.clone());
        }
    }
    if let (MissingTraits::Clear, Some(shadow), Some(ts_ms)) = (mode, shadow, mapped.ts_ms) {
        for (name, old) in &shadow.fields {
            if mapped.fields.contains_key(name)
                || old.value.is_null()
                || shadow.not_from_traits.contains(name)
            {
                continue;
            }
            if old.ts_ms > ts_ms {
                out.stale.push(name.clone());
                continue;
            }
            out.cleared.push(name.clone());
            out.send.insert(
                name.clone(),
                MappedField {
                    value: Value::Null,
                    ts_ms,
                    custom: old.custom,
                },
            );
        }
    }
    out.unchanged = shadow.is_some_and(|s| {
        let same_email = mapped.email.is_none() || mapped.email == s.email;
        !s.in_doubt
            && same_email
            && out
                .send
                .iter()
                .all(|(name, f)| s.fields.get(name).is_some_and(|old| old.value == f.value))
    });
    out
}

/// After a write answered with `contact_id`: the plan that completes a contact the CRM had to
/// create anew, or `None`.
///
/// The answer names another contact than the one the shadow knew: that contact was deleted or
/// merged away in the CRM, and the write (keyed by `external_id` or email) created a new one
/// holding only what `sent` carried. Every other value the shadow knows as newest (fields set
/// by earlier events, or kept because they were newer than this event) is missing from it; the
/// plan sends them all, with what `sent` carried, so the contact comes back whole and the
/// shadow again says what the CRM holds. `None` when the contact is the same one, when either
/// id is unknown (a bulk write answers none), or when `sent` already carried everything.
#[must_use]
pub fn recreated(
    shadow: Option<&ContactShadow>,
    sent: &UpsertPlan,
    contact_id: Option<i64>,
) -> Option<UpsertPlan> {
    let shadow = shadow?;
    let (known, answered) = (shadow.contact_id?, contact_id?);
    if known == answered {
        return None;
    }
    let mut full = UpsertPlan {
        send: sent.send.clone(),
        ..UpsertPlan::default()
    };
    for (name, old) in &shadow.fields {
        if old.value.is_null() || full.send.contains_key(name) {
            continue;
        }
        full.send.insert(
            name.clone(),
            MappedField {
                value: old.value.clone(),
                ts_ms: old.ts_ms,
                custom: old.custom,
            },
        );
    }
    (full.send.len() > sent.send.len()).then_some(full)
}

/// The shadow after `plan` was delivered (or found `unchanged`: apply it then too, so the
/// timestamps move forward). `contact_id` is the id from the response, if any; a known id is
/// kept when the response had none.
#[must_use]
pub fn apply(
    shadow: Option<&ContactShadow>,
    user_id: &str,
    email: &str,
    plan: &UpsertPlan,
    contact_id: Option<i64>,
) -> ContactShadow {
    let mut next = shadow.cloned().unwrap_or_default();
    next.in_doubt = false;
    next.contact_id = contact_id.or(next.contact_id);
    next.email = Some(crate::email::normalize(email));
    next.external_id = Some(user_id.to_owned());
    for (name, f) in &plan.send {
        next.not_from_traits.remove(name);
        next.fields.insert(
            name.clone(),
            ShadowField {
                value: f.value.clone(),
                ts_ms: f.ts_ms,
                custom: f.custom,
            },
        );
    }
    next
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn mapped(email: &str, ts: i64, fields: &[(&str, Value)]) -> MappedContact {
        MappedContact {
            email_ts_ms: None,
            email: Some(email.into()),
            fields: fields
                .iter()
                .map(|(n, v)| {
                    (
                        (*n).to_owned(),
                        MappedField {
                            value: v.clone(),
                            ts_ms: ts,
                            custom: n.starts_with("cf_"),
                        },
                    )
                })
                .collect(),
            ts_ms: Some(ts),
            ..MappedContact::default()
        }
    }

    fn shadow_of(fields: &[(&str, Value, i64)]) -> ContactShadow {
        ContactShadow {
            email_ts_ms: None,
            contact_id: Some(7),
            email: Some("a@x.io".into()),
            external_id: Some("u1".into()),
            fields: fields
                .iter()
                .map(|(n, v, ts)| {
                    (
                        (*n).to_owned(),
                        ShadowField {
                            value: v.clone(),
                            ts_ms: *ts,
                            custom: n.starts_with("cf_"),
                        },
                    )
                })
                .collect(),
            in_doubt: false,
            confirmed_at_ms: None,
            account_ids: Vec::new(),
            pending_account_ids: Vec::new(),
            not_from_traits: std::collections::BTreeSet::new(),
        }
    }

    #[test]
    fn new_contact_sends_everything() {
        let m = mapped(
            "a@x.io",
            5,
            &[("first_name", json!("A")), ("cf_plan", json!("Pro"))],
        );
        let p = plan(None, &m, MissingTraits::Keep);
        assert_eq!(p.send.len(), 2);
        assert!(!p.unchanged);
        // Even with no field at all, a new contact needs its create call.
        assert!(!plan(None, &mapped("a@x.io", 5, &[]), MissingTraits::Keep).unchanged);
    }

    #[test]
    fn an_older_event_never_overwrites_a_newer_value() {
        let s = shadow_of(&[("first_name", json!("New"), 10), ("city", json!("Oslo"), 3)]);
        let m = mapped(
            "a@x.io",
            5,
            &[("first_name", json!("Old")), ("city", json!("Bergen"))],
        );
        let p = plan(Some(&s), &m, MissingTraits::Keep);
        assert_eq!(p.stale, vec!["first_name"]);
        assert_eq!(p.send.keys().collect::<Vec<_>>(), vec!["city"]);
        // Equal timestamps: the later arrival (this plan) wins.
        let m = mapped("a@x.io", 10, &[("first_name", json!("Same ts"))]);
        assert!(plan(Some(&s), &m, MissingTraits::Keep).stale.is_empty());
    }

    #[test]
    fn unchanged_when_everything_equals_the_shadow() {
        let s = shadow_of(&[("first_name", json!("A"), 1), ("city", json!("Oslo"), 1)]);
        let p = plan(
            Some(&s),
            &mapped("a@x.io", 2, &[("city", json!("Oslo"))]),
            MissingTraits::Keep,
        );
        assert!(p.unchanged);
        let p = plan(
            Some(&s),
            &mapped("b@x.io", 2, &[("city", json!("Oslo"))]),
            MissingTraits::Keep,
        );
        assert!(!p.unchanged, "a changed email is a change");
        let p = plan(
            Some(&s),
            &mapped("a@x.io", 2, &[("city", json!("Bergen"))]),
            MissingTraits::Keep,
        );
        assert!(!p.unchanged);
        // Clear mode: first_name would be blanked, so it is a change.
        let p = plan(
            Some(&s),
            &mapped("a@x.io", 2, &[("city", json!("Oslo"))]),
            MissingTraits::Clear,
        );
        assert!(!p.unchanged);
    }

    #[test]
    fn a_write_in_doubt_is_never_skipped_and_unconfirms_the_contact() {
        let s = shadow_of(&[("city", json!("Oslo"), 1)]);
        assert!(s.confirms("u1", "a@x.io"));
        assert!(!s.confirms("u1", "b@x.io"));
        assert!(!s.confirms("u2", "a@x.io"));
        let doubt = in_doubt(Some(&s)).unwrap();
        assert!(doubt.in_doubt);
        assert!(!doubt.confirms("u1", "a@x.io"));
        assert_eq!(
            in_doubt(Some(&doubt)),
            None,
            "already marked: nothing to store"
        );
        assert_eq!(in_doubt(None), None, "no shadow: already unconfirmed");
        // The same values as the shadow: unchanged when confirmed, sent when in doubt (the
        // write in doubt may have put other values in the CRM).
        let m = mapped("a@x.io", 2, &[("city", json!("Oslo"))]);
        assert!(plan(Some(&s), &m, MissingTraits::Keep).unchanged);
        let p = plan(Some(&doubt), &m, MissingTraits::Keep);
        assert!(!p.unchanged);
        // A delivered settle clears the doubt.
        assert!(!apply(Some(&doubt), "u1", "a@x.io", &p, None).in_doubt);
    }

    #[test]
    fn unchanged_is_skipped_only_for_a_while_after_a_confirmed_write() {
        let mut s = shadow_of(&[("city", json!("Oslo"), 1)]);
        let day = 86_400_000;
        assert!(
            !s.skips_unchanged(5, day),
            "never confirmed (an older shadow)"
        );
        s.confirmed_at_ms = Some(1_000);
        assert!(s.skips_unchanged(1_000 + day - 1, day));
        assert!(
            !s.skips_unchanged(1_000 + day, day),
            "a day later: written again"
        );
        assert!(!s.skips_unchanged(1_000, 0), "0: always send");
        assert!(!in_doubt(Some(&s)).unwrap().skips_unchanged(1_000, day));
    }

    #[test]
    fn clear_blanks_fields_sent_before_and_absent_now() {
        let s = shadow_of(&[
            ("first_name", json!("A"), 1),
            ("cf_plan", json!("Pro"), 1),
            ("cf_seats", json!(null), 1),
            ("city", json!("Oslo"), 9),
        ]);
        let p = plan(
            Some(&s),
            &mapped("a@x.io", 5, &[("last_name", json!("B"))]),
            MissingTraits::Clear,
        );
        assert_eq!(p.cleared, vec!["cf_plan", "first_name"]);
        assert_eq!(p.stale, vec!["city"]);
        assert_eq!(p.send["cf_plan"].value, Value::Null);
        assert!(p.send["cf_plan"].custom);
        assert_eq!(p.send["first_name"].ts_ms, 5);
        assert!(!p.send.contains_key("cf_seats"), "already blank");
        // Keep mode leaves them alone.
        let p = plan(
            Some(&s),
            &mapped("a@x.io", 5, &[("last_name", json!("B"))]),
            MissingTraits::Keep,
        );
        assert!(p.cleared.is_empty());
        assert_eq!(p.send.len(), 1);
    }

    #[test]
    fn clear_leaves_fields_other_kinds_wrote_until_an_identify_writes_them() {
        let mut s = shadow_of(&[
            ("first_name", json!("A"), 1),
            ("lifecycle_stage_id", json!(7), 1),
        ]);
        s.not_from_traits.insert("lifecycle_stage_id".into());
        let m = mapped("a@x.io", 5, &[("last_name", json!("B"))]);
        let p = plan(Some(&s), &m, MissingTraits::Clear);
        assert_eq!(p.cleared, vec!["first_name"]);
        // An identify that writes the field owns it again.
        let m = mapped("a@x.io", 6, &[("lifecycle_stage_id", json!(8))]);
        let p = plan(Some(&s), &m, MissingTraits::Clear);
        let next = apply(Some(&s), "u1", "a@x.io", &p, None);
        assert!(next.not_from_traits.is_empty());
        let m = mapped("a@x.io", 7, &[("last_name", json!("B"))]);
        let p = plan(Some(&next), &m, MissingTraits::Clear);
        assert!(p.cleared.contains(&"lifecycle_stage_id".to_owned()));
    }

    #[test]
    fn apply_records_values_ids_and_email() {
        let s = shadow_of(&[("city", json!("Oslo"), 1)]);
        let m = mapped(
            "B@X.io",
            4,
            &[("city", json!("Bergen")), ("cf_plan", json!(null))],
        );
        let p = plan(Some(&s), &m, MissingTraits::Keep);
        let next = apply(Some(&s), "u1", "B@X.io", &p, None);
        assert_eq!(next.contact_id, Some(7));
        assert_eq!(next.email.as_deref(), Some("b@x.io"));
        assert_eq!(next.fields["city"].value, json!("Bergen"));
        assert_eq!(next.fields["city"].ts_ms, 4);
        assert_eq!(next.fields["cf_plan"].value, Value::Null);
        let fresh = apply(None, "u2", "c@x.io", &p, Some(99));
        assert_eq!(fresh.contact_id, Some(99));
        assert_eq!(fresh.external_id.as_deref(), Some("u2"));
    }

    #[test]
    fn a_contact_created_anew_gets_every_newest_value_back() {
        let s = shadow_of(&[
            ("first_name", json!("Ada"), 3),
            ("city", json!("Oslo"), 9),
            ("cf_plan", json!(null), 2),
        ]);
        let p = plan(
            Some(&s),
            &mapped(
                "a@x.io",
                5,
                &[("last_name", json!("Lee")), ("city", json!("Bergen"))],
            ),
            MissingTraits::Keep,
        );
        assert_eq!(p.stale, vec!["city"], "Oslo is newer than this event");
        assert_eq!(recreated(Some(&s), &p, Some(7)), None, "the same contact");
        assert_eq!(recreated(Some(&s), &p, None), None, "no id in the answer");
        assert_eq!(recreated(None, &p, Some(8)), None, "nothing known");
        let unknown = ContactShadow {
            contact_id: None,
            ..s.clone()
        };
        assert_eq!(recreated(Some(&unknown), &p, Some(8)), None);

        let full = recreated(Some(&s), &p, Some(8)).unwrap();
        let sent: Vec<(&str, &Value, i64)> = full
            .send
            .iter()
            .map(|(n, f)| (n.as_str(), &f.value, f.ts_ms))
            .collect();
        assert_eq!(
            sent,
            [
                ("city", &json!("Oslo"), 9),
                ("first_name", &json!("Ada"), 3),
                ("last_name", &json!("Lee"), 5),
            ],
            "what was sent, and every other known value (a cleared one is absent anyway)"
        );
        // Sending that plan answers the new id again: nothing more to add, no loop.
        assert_eq!(recreated(Some(&s), &full, Some(8)), None);
        let next = apply(Some(&s), "u1", "a@x.io", &full, Some(8));
        assert_eq!(next.contact_id, Some(8));
        assert_eq!(next.fields["city"].value, json!("Oslo"));
    }

    #[test]
    fn shadow_json_round_trip() {
        let s = shadow_of(&[("cf_plan", json!("Pro"), 1)]);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ContactShadow>(&text).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<ContactShadow>("{}").unwrap(),
            ContactShadow::default()
        );
    }

    #[test]
    fn a_shadow_holding_only_a_pending_association_is_not_a_written_contact() {
        let pending = ContactShadow {
            pending_account_ids: vec![7],
            ..ContactShadow::default()
        };
        assert!(!pending.written());
        let confirmed = ContactShadow {
            confirmed_at_ms: Some(1),
            ..ContactShadow::default()
        };
        assert!(confirmed.written());
        let with_id = ContactShadow {
            contact_id: Some(9),
            ..ContactShadow::default()
        };
        assert!(with_id.written());
    }
}
