//! The names the destination's rules use (activity types, lifecycle stages, the activity owner)
//! checked against the account, for `destinations test` and the console's connection test.
//! Only what the configuration uses is asked for: a destination without rules costs no call.

use freshgate_core::activity::{OwnerCandidate, choose_owner};
use freshgate_core::rules::{DestinationKinds, NameIds};
use freshworks_client::{FreshworksClient, SelectorChoice};

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameCheck {
    /// Calls made (each spends the account's quota).
    pub calls: u32,
    /// Each name the account lacks, or a selector that could not be read, in words.
    pub problems: Vec<String>,
}

/// Resolve every type and stage name of `kinds`, and the owner when activities are created.
pub async fn check_names(client: &FreshworksClient, kinds: &DestinationKinds) -> NameCheck {
    let mut check = NameCheck::default();
    let mut ids = NameIds::default();
    let by_name =
        |choices: Vec<SelectorChoice>| choices.into_iter().map(|c| (c.name, c.id)).collect();
    let types = kinds.activity_types();
    if !types.is_empty() {
        check.calls += 1;
        match client.sales_activity_types().await {
            Ok(x) => ids.activity_types = by_name(x.body.sales_activity_types),
            Err(e) => check
                .problems
                .push(format!("cannot read the sales activity types: {e}")),
        }
    }
    if !kinds.lifecycle_stages().is_empty() {
        check.calls += 1;
        match client.lifecycle_stages().await {
            Ok(x) => ids.lifecycle_stages = by_name(x.body.lifecycle_stages),
            Err(e) => check
                .problems
                .push(format!("cannot read the lifecycle stages: {e}")),
        }
    }
    if check.problems.is_empty() {
        check
            .problems
            .extend(ids.unknown_in(kinds).iter().map(ToString::to_string));
    }
    if !types.is_empty() {
        check.calls += 1;
        match client.owners().await {
            Ok(x) => {
                let owners: Vec<OwnerCandidate> = x
                    .body
                    .users
                    .into_iter()
                    .map(|o| OwnerCandidate {
                        id: o.id,
                        email: o.email,
                        active: o.is_active,
                    })
                    .collect();
                if let Err(e) = choose_owner(kinds.owner_email.as_deref(), &owners) {
                    check.problems.push(e.to_string());
                }
            }
            Err(e) => check
                .problems
                .push(format!("cannot read the account's users: {e}")),
        }
    }
    check
}
