//! The account shadow: what freshgate last wrote to one sales account of one destination
//! (keyed by [`crate::account::AccountKey`]), and the planning of an [`AccountSpec`] against it.
//!
//! The same rules as the contact shadow ([`crate::shadow`]): per field, the newest event wins
//! (an older group never overwrites a newer value); an account whose every field to send
//! already equals the shadow, recently confirmed and not in doubt, costs no call. Stored as
//! JSON through `Store::account_shadow` / `Store::put_account_shadow`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::account::AccountSpec;
use crate::mapping::MappedField;
use crate::shadow::ShadowField;

/// Per destination + account key: the last state freshgate wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountShadow {
    /// The Freshworks sales account id, once a response told it.
    #[serde(default)]
    pub account_id: Option<i64>,
    /// The name the account was upserted under (its unique identifier).
    #[serde(default)]
    pub name: Option<String>,
    /// Field internal name → last value written.
    #[serde(default)]
    pub fields: BTreeMap<String, ShadowField>,
    /// A write was sent and its outcome never recorded: nothing is skipped as unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_doubt: bool,
    /// When (Unix ms) the CRM last confirmed a write of this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at_ms: Option<i64>,
}

/// What to send for one account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountPlan {
    /// Fields to write.
    pub send: BTreeMap<String, MappedField>,
    /// No call needed: same name, every field to send equals the shadow, confirmed less than
    /// `unchanged_within_ms` ago, nothing in doubt.
    pub unchanged: bool,
    /// Fields not sent because the shadow holds a value from a newer event.
    pub stale: Vec<String>,
}

/// Plan the upsert of `spec` against the shadow at `now_ms`.
#[must_use]
pub fn plan_account(
    shadow: Option<&AccountShadow>,
    spec: &AccountSpec,
    now_ms: i64,
    unchanged_within_ms: i64,
) -> AccountPlan {
    let mut out = AccountPlan::default();
    for (name, field) in &spec.fields {
        let newer = shadow
            .and_then(|s| s.fields.get(name))
            .is_some_and(|s| s.ts_ms > field.ts_ms);
        if newer {
            out.stale.push(name.clone());
        } else {
            out.send.insert(name.clone(), field.clone());
        }
    }
    out.unchanged = shadow.is_some_and(|s| {
        !s.in_doubt
            && s.account_id.is_some()
            && s.name.as_deref() == Some(spec.name.as_str())
            && s.confirmed_at_ms
                .is_some_and(|at| now_ms.saturating_sub(at) < unchanged_within_ms)
            && out
                .send
                .iter()
                .all(|(name, f)| s.fields.get(name).is_some_and(|old| old.value == f.value))
    });
    out
}

/// The shadow to store before a write is sent: marked in doubt (a new shadow too, so a crash
/// leaves a trace that the account may exist with other values).
#[must_use]
pub fn account_in_doubt(shadow: Option<&AccountShadow>) -> AccountShadow {
    AccountShadow {
        in_doubt: true,
        ..shadow.cloned().unwrap_or_default()
    }
}

/// The shadow after `plan` was delivered at `now_ms` (or found unchanged). `account_id` is the
/// id from the response; a known id is kept when the response had none.
#[must_use]
pub fn apply_account(
    shadow: Option<&AccountShadow>,
    spec: &AccountSpec,
    plan: &AccountPlan,
    account_id: Option<i64>,
    now_ms: i64,
) -> AccountShadow {
    let mut next = shadow.cloned().unwrap_or_default();
    next.in_doubt = false;
    next.account_id = account_id.or(next.account_id);
    next.name = Some(spec.name.clone());
    next.confirmed_at_ms = Some(now_ms);
    for (name, f) in &plan.send {
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
    use crate::account::AccountKey;
    use crate::mapping::MappingReport;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn spec(ts: i64, fields: &[(&str, Value)]) -> AccountSpec {
        AccountSpec {
            key: AccountKey::Group("g".into()),
            name: "Acme".into(),
            fields: fields
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        MappedField {
                            value: v.clone(),
                            ts_ms: ts,
                            custom: false,
                        },
                    )
                })
                .collect(),
            report: MappingReport::default(),
            ts_ms: ts,
        }
    }

    #[test]
    fn an_unchanged_group_costs_no_call_once_confirmed() {
        let first = spec(10, &[("website", json!("a.example"))]);
        let p = plan_account(None, &first, 100, 1000);
        assert!(!p.unchanged);
        let shadow = apply_account(None, &first, &p, Some(7), 100);
        let again = spec(20, &[("website", json!("a.example"))]);
        assert!(plan_account(Some(&shadow), &again, 200, 1000).unchanged);
        // Too long since the CRM confirmed it, or in doubt, or renamed: sent again.
        assert!(!plan_account(Some(&shadow), &again, 1200, 1000).unchanged);
        assert!(!plan_account(Some(&account_in_doubt(Some(&shadow))), &again, 200, 1000).unchanged);
        let renamed = AccountSpec {
            name: "Acme Inc".into(),
            ..again.clone()
        };
        assert!(!plan_account(Some(&shadow), &renamed, 200, 1000).unchanged);
    }

    #[test]
    fn an_older_group_does_not_overwrite_a_newer_field() {
        let newer = spec(50, &[("website", json!("new")), ("phone", json!("1"))]);
        let p = plan_account(None, &newer, 0, 1000);
        let shadow = apply_account(None, &newer, &p, Some(1), 0);
        let older = spec(40, &[("website", json!("old")), ("city", json!("Oslo"))]);
        let p = plan_account(Some(&shadow), &older, 0, 1000);
        assert_eq!(p.stale, vec!["website"]);
        assert_eq!(p.send.keys().collect::<Vec<_>>(), vec!["city"]);
        let next = apply_account(Some(&shadow), &older, &p, None, 1);
        assert_eq!(next.account_id, Some(1));
        assert_eq!(next.fields["website"].value, json!("new"));
        assert_eq!(next.fields["city"].value, json!("Oslo"));
    }

    proptest! {
        // Model: applying groups in any order leaves each field at the value of its newest
        // event (ties: the later arrival), as applying them in timestamp order would.
        #[test]
        fn per_field_newest_wins_in_any_arrival_order(
            events in proptest::collection::vec((0i64..5, 0usize..3, 0u8..4), 1..12),
        ) {
            let names = ["website", "phone", "city"];
            let mut shadow: Option<AccountShadow> = None;
            for (ts, field, value) in &events {
                let s = spec(*ts, &[(names[*field], json!(value))]);
                let p = plan_account(shadow.as_ref(), &s, 0, 1000);
                shadow = Some(apply_account(shadow.as_ref(), &s, &p, Some(1), 0));
            }
            let shadow = shadow.unwrap();
            for (i, name) in names.iter().enumerate() {
                let model = events
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, f, _))| *f == i)
                    .max_by_key(|(arrival, (ts, _, _))| (*ts, *arrival))
                    .map(|(_, (_, _, v))| json!(v));
                prop_assert_eq!(shadow.fields.get(*name).map(|f| f.value.clone()), model);
            }
        }
    }
}
