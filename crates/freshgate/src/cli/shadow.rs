//! `freshgate shadow forget`, and what `replay --force` does to shadows: the operator's ways to
//! stop the shadow (what freshgate last wrote to each contact) from hiding a contact the CRM
//! lost (deleted, merged, an account restored from a backup).

use std::process::ExitCode;

use clap::Args;
use freshgate_core::shadow::{self, ContactShadow};
use freshgate_store::{DeliveryFilter, Store};
use serde_json::json;

use super::inspect::JsonFlag;
use super::{ConfigArgs, load_config, print_json};

/// `shadow forget`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["contact", "destination"])))]
pub struct ForgetArgs {
    /// Configuration and data directory.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The contact key (Segment userId) whose shadow to forget; with --destination only there.
    #[arg(long)]
    pub contact: Option<String>,
    /// Forget every shadow of this destination (or, with --contact, that contact's there).
    #[arg(long)]
    pub destination: Option<String>,
    /// JSON output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `shadow forget`: the next identify of each forgotten contact is written (found by its
/// `external_id`), whatever the shadow said.
///
/// # Errors
/// When the store cannot be opened or written.
pub async fn forget(args: ForgetArgs) -> anyhow::Result<ExitCode> {
    let (cfg, _) = load_config(&args.config)?;
    let store = super::open_configured_store(&cfg).await?;
    let n = store
        .forget_shadows(args.destination.as_deref(), args.contact.as_deref())
        .await;
    store.close().await;
    let n = n?;
    if args.out.json {
        print_json(&json!({ "forgotten": n }))?;
    } else {
        println!("{n} contact shadows forgotten; the next identify of each is written to the CRM");
    }
    Ok(ExitCode::SUCCESS)
}

/// Mark the shadow of every contact with a delivery matching `filter` in doubt: its next write
/// is sent even if nothing changed, found by `external_id` (a contact the CRM lost is created
/// again). Unlike forgetting, the field timestamps stay, so a replayed event still never
/// overwrites a newer value. Returns how many shadows were marked.
///
/// # Errors
/// When the store cannot be read or written.
pub async fn unconfirm(store: &dyn Store, filter: &DeliveryFilter) -> anyhow::Result<u64> {
    let mut marked = 0;
    for (destination, contact_key) in store.contacts_matching(filter).await? {
        let Some(bytes) = store.shadow(&destination, &contact_key).await? else {
            continue;
        };
        let Ok(current) = serde_json::from_slice::<ContactShadow>(&bytes) else {
            continue;
        };
        if let Some(doubt) = shadow::in_doubt(Some(&current)) {
            store
                .put_shadow(&destination, &contact_key, serde_json::to_vec(&doubt)?)
                .await?;
            marked += 1;
        }
    }
    Ok(marked)
}
