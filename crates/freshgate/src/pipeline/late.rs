//! Deliveries for events stored before their destination existed (`freshgate replay`): each
//! stored event without a delivery to a configured destination gets the delivery ingest would
//! have given it, by the same routing decision ([`Route::decide`]). The store only lists and
//! inserts.

use freshgate_core::reason::SkipReason;
use freshgate_core::routing::{Route, stored_call_name};
use freshgate_core::rules::DestinationKinds;
use freshgate_core::segment::parse_stored_event;
use freshgate_store::{LateDelivery, NewDelivery, Store, StoreError};

use crate::config::DestinationConfig;

/// Events read and routed per store round trip.
const PAGE: usize = 1000;

/// What routing stored events to a destination added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateRouting {
    /// New pending deliveries.
    pub created: u64,
    /// New deliveries recorded as skipped (call type not handled, `integrations` opt-out).
    pub skipped: u64,
}

/// Give every event received in `[since_ms, until_ms)` that has no delivery to `destination`
/// the delivery its routing decides (what `kinds` delivers), due at `now_ms`. Events of sources the destination does
/// not take get none (as at ingest).
///
/// # Errors
/// When the store cannot be read or written.
pub async fn route_stored_events(
    store: &dyn Store,
    destination: &DestinationConfig,
    kinds: &DestinationKinds,
    since_ms: i64,
    until_ms: i64,
    now_ms: i64,
) -> Result<LateRouting, StoreError> {
    let mut total = LateRouting::default();
    let mut after_id = 0;
    loop {
        let page = store
            .events_without_delivery(&destination.name, since_ms, until_ms, after_id, PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(total);
        };
        after_id = last.event_id;
        let mut late = Vec::with_capacity(page.len());
        for event in page {
            if !destination.takes_source(&event.source) {
                continue;
            }
            // An event that cannot be read back is queued all the same: the delivery side
            // dead-letters it with its reason, where the operator sees it.
            let route = parse_stored_event(&event.raw).map_or(Route::Deliver, |stored| {
                Route::decide(
                    stored.event_type,
                    stored_call_name(&stored),
                    stored.destination_enabled(&destination.integration_key),
                    kinds,
                )
            });
            let skip = route.skip(&destination.integration_key);
            match skip {
                Some(_) => total.skipped += 1,
                None => total.created += 1,
            }
            late.push(LateDelivery {
                event_id: event.event_id,
                contact_key: event.contact_key,
                delivery: NewDelivery {
                    destination: destination.name.clone(),
                    skip_reason: skip.as_ref().map(SkipReason::detail),
                    skip_code: skip.as_ref().map(|r| r.code().to_owned()),
                },
            });
        }
        store.add_deliveries(late, now_ms).await?;
    }
}
