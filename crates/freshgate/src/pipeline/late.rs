//! Routing stored events again (`freshgate replay`): each stored event without a delivery to a
//! configured destination gets the delivery ingest would have given it, and a finished delivery
//! is put back in the queue only if that same routing decision ([`Route::decide`]) delivers it
//! (an event that opted out of the destination, or a call type it does not handle, stays
//! skipped). The store only lists, inserts and reopens.

use freshgate_core::routing::{Route, stored_call_name};
use freshgate_core::rules::DestinationKinds;
use freshgate_core::segment::parse_stored_event;
use freshgate_store::{DeliveryFilter, LateDelivery, Reopen, Store, StoreError};

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
            let skip = route_of(&event.raw, destination, kinds).skip(&destination.integration_key);
            match skip {
                Some(_) => total.skipped += 1,
                None => total.created += 1,
            }
            late.push(LateDelivery {
                event_id: event.event_id,
                contact_key: event.contact_key,
                delivery: super::ingest::new_delivery(&destination.name, skip),
            });
        }
        store.add_deliveries(late, now_ms).await?;
    }
}

/// What `destination` does with a stored event. One that cannot be read back is delivered all
/// the same: the delivery side dead-letters it with its reason, where the operator sees it.
fn route_of(raw: &[u8], destination: &DestinationConfig, kinds: &DestinationKinds) -> Route {
    parse_stored_event(raw).map_or(Route::Deliver, |stored| {
        let event_type = stored.event_type;
        let name = stored_call_name(&stored).map(str::to_owned);
        let enabled = stored.destination_enabled(&destination.integration_key);
        Route::decide(event_type, name.as_deref(), enabled, kinds, move || {
            Some(stored)
        })
    })
}

/// What a replay of finished deliveries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Deliveries put back in the queue.
    pub requeued: u64,
    /// Finished deliveries left as they are: their routing does not deliver the event
    /// (`integrations` opt-out, call type not handled).
    pub not_routed: u64,
    /// Finished deliveries left as they are: their destination is not configured.
    pub unconfigured: u64,
}

/// Put back in the queue, due at `now_ms`, every finished delivery matching `filter` (its limit
/// ignored) whose destination is among `destinations` and whose routing delivers the event; the
/// outcome each had stays in its history.
///
/// # Errors
/// When the store cannot be read or written.
pub async fn replay_finished(
    store: &dyn Store,
    destinations: &[DestinationConfig],
    filter: &DeliveryFilter,
    now_ms: i64,
) -> Result<Replayed, StoreError> {
    let mut total = Replayed::default();
    let mut after_id = 0;
    // A loaded configuration was validated: its kinds convert.
    let kinds: Vec<DestinationKinds> = destinations
        .iter()
        .map(|d| d.kinds().unwrap_or_default())
        .collect();
    loop {
        let page = store.finished_deliveries(filter, after_id, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(total);
        };
        after_id = last.delivery_id;
        let mut reopen = Vec::with_capacity(page.len());
        for finished in page {
            let Some((destination, kinds)) = destinations
                .iter()
                .zip(&kinds)
                .find(|(d, _)| d.name == finished.destination)
            else {
                total.unconfigured += 1;
                continue;
            };
            match route_of(&finished.raw, destination, kinds) {
                Route::Deliver => reopen.push(finished.delivery_id),
                Route::NotHandled(_) | Route::OptedOut | Route::NoRule(_) => total.not_routed += 1,
            }
        }
        total.requeued += store.reopen(reopen, Reopen::Replay, now_ms).await?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use freshgate_store::{AppendBatch, NewEvent};
    use serde_json::json;

    use super::*;

    fn stored(event_type: &str, message_id: &str) -> NewEvent {
        let raw = json!({
            "type": event_type, "messageId": message_id, "userId": "u1", "groupId": "g1",
            "traits": {"email": "a@x.io"}, "timestamp": "2026-01-01T00:00:00.000Z",
        });
        NewEvent {
            source: "web".into(),
            message_id: message_id.into(),
            event_type: event_type.into(),
            contact_key: "u1".into(),
            timestamp_ms: 1_000,
            received_at_ms: 1_000,
            raw: raw.to_string().into_bytes(),
            email: None,
            deliveries: Vec::new(),
        }
    }

    /// Replay routes stored groups by the destination's kinds, as ingest does.
    #[tokio::test]
    async fn stored_groups_are_routed_by_the_destinations_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let store = freshgate_store::sqlite::open_in(dir.path()).unwrap();
        store
            .append(AppendBatch {
                events: vec![stored("identify", "m1"), stored("group", "m2")],
                rejected: Vec::new(),
                dedup_window_ms: 0,
            })
            .await
            .unwrap();
        let plain = DestinationConfig {
            name: "plain".into(),
            ..DestinationConfig::default()
        };
        let routed = route_stored_events(&store, &plain, &plain.kinds().unwrap(), 0, 10_000, 5_000)
            .await
            .unwrap();
        assert_eq!((routed.created, routed.skipped), (1, 1));
        let accounts = DestinationConfig {
            name: "accounts".into(),
            group_accounts: true,
            ..DestinationConfig::default()
        };
        let routed = route_stored_events(
            &store,
            &accounts,
            &accounts.kinds().unwrap(),
            0,
            10_000,
            5_000,
        )
        .await
        .unwrap();
        assert_eq!((routed.created, routed.skipped), (2, 0));
    }
}
