//! The conformance cases: what every `Store` backend must do, whatever it is built on.

use freshgate_store::{
    ActivityIntent, AppendBatch, DeliveryFilter, DeliveryStatus, DestinationPause, DueMembership,
    EventQuery, FieldMetadata, LateDelivery, ListAction, ListClaim, MAX_UNMAPPED_KEY_BYTES,
    MAX_UNMAPPED_TRAITS_PER_DESTINATION, MembershipChange, MembershipCounts, MembershipEnd,
    MembershipResult, NewDelivery, NewEvent, PastOutcome, QueueDepth, RejectedInput, Reopen,
    Settlement, StoreError, UnmappedTrait,
};

use crate::harness::{
    DEST, Fixture, LEASE_MS, OTHER, WINDOW_MS, append_all, attempt, batch, ev, ev_with_skip,
    lease_all, lease_key, mids, pending,
};

fn delivered() -> Settlement {
    Settlement::Delivered
}

/// A dead letter with the `refused` code and these words.
fn refused(reason: &str) -> Settlement {
    Settlement::DeadLettered {
        code: "refused".to_owned(),
        reason: reason.to_owned(),
    }
}

/// A messageId repeated inside one batch is stored once; the first copy wins.
pub async fn dedup_within_batch(fx: &mut dyn Fixture) {
    let s = fx.store();
    let out = s
        .append(batch(vec![
            ev("m1", "k1", 1000),
            ev("m1", "k1", 1001),
            ev("m2", "k1", 1002),
        ]))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates, out.rejected), (2, 1, 0));
    let lease = lease_key(s, "k1", 2000).await;
    assert_eq!(mids(&pending(s, &lease).await), ["m1", "m2"]);
    // The first copy wins: the stored bytes are those of the first.
    assert_eq!(s.event_traces("m1").await.unwrap().len(), 1);
}

/// Dedup spans batches and sources are separate; past the window the event is new again.
pub async fn dedup_across_batches_and_window(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("m1", "k1", 1000)]).await;
    // Within the window: duplicate, even in a batch with new events.
    let out = s
        .append(batch(vec![
            ev("m1", "k1", 1000 + WINDOW_MS),
            ev("m2", "k1", 1000 + WINDOW_MS),
        ]))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 1));
    // The same messageId from another source is another event.
    let mut other_source = ev("m1", "k1", 2000);
    other_source.source = "ios".to_owned();
    assert_eq!(
        s.append(batch(vec![other_source])).await.unwrap().accepted,
        1
    );
    // Past the window: accepted again, and the dedup entry is renewed from that time.
    let late = 1000 + WINDOW_MS + 1;
    let out = s.append(batch(vec![ev("m1", "k1", late)])).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 0));
    let out = s
        .append(batch(vec![ev("m1", "k1", late + WINDOW_MS)]))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (0, 1));
    assert_eq!(s.event_traces("m1").await.unwrap().len(), 3);
}

/// Duplicates take nothing pending: a client's retry of a stored batch (with a new event in it,
/// and a copy of a stored messageId under a key that has nothing else) leaves every key's
/// pending count as the deliveries are, and the key that only a duplicate named is not leased.
pub async fn duplicates_leave_pending_counts(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("m1", "k1", 1000), ev("m2", "k2", 1000)]).await;
    let out = s
        .append(batch(vec![
            ev("m1", "k1", 1500),
            ev("m2", "k3", 1500),
            ev("m3", "k1", 1500),
        ]))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 2));
    counters_agree(s, "an append with duplicates").await;
    let mut leased: Vec<String> = lease_all(s, 2000)
        .await
        .into_iter()
        .map(|l| l.contact_key)
        .collect();
    leased.sort();
    assert_eq!(leased, ["k1", "k2"]);
    let all_dupes = s
        .append(batch(vec![ev("m1", "k1", 1600), ev("m3", "k1", 1600)]))
        .await
        .unwrap();
    assert_eq!((all_dupes.accepted, all_dupes.duplicates), (0, 2));
    counters_agree(s, "an append of duplicates only").await;
}

/// Rejected inputs are kept with their reason and raw bytes, newest first.
pub async fn rejected_inputs_kept(fx: &mut dyn Fixture) {
    let s = fx.store();
    let out = s
        .append(AppendBatch {
            events: vec![ev("m1", "k1", 1000)],
            rejected: vec![
                RejectedInput {
                    source: Some("web".to_owned()),
                    raw: br#"{"type":"identify"}"#.to_vec(),
                    reason: "missing userId and anonymousId".to_owned(),
                    received_at_ms: 1000,
                },
                RejectedInput {
                    source: None,
                    raw: b"not json".to_vec(),
                    reason: "bad signature".to_owned(),
                    received_at_ms: 2000,
                },
            ],
            dedup_window_ms: WINDOW_MS,
        })
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (1, 2));
    let rows = s.rejected(10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].reason, "bad signature", "newest first");
    assert_eq!(rows[0].source, None);
    assert_eq!(rows[0].raw, "not json");
    assert_eq!(rows[1].source.as_deref(), Some("web"));
    assert_eq!(rows[1].raw, r#"{"type":"identify"}"#);
    assert_eq!(rows[1].received_at_ms, 1000);
    assert_eq!(s.rejected(1).await.unwrap().len(), 1);
    assert_eq!(s.stats().await.unwrap().rejected, 2);
}

/// Pending deliveries of a key come out in append order, across batches.
pub async fn fifo_per_key(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("a1", "k1", 1000), ev("b1", "k2", 1000)]).await;
    append_all(s, vec![ev("a2", "k1", 1001)]).await;
    append_all(s, vec![ev("b2", "k2", 1002), ev("a3", "k1", 1002)]).await;
    let l1 = lease_key(s, "k1", 2000).await;
    let all = pending(s, &l1).await;
    assert_eq!(mids(&all), ["a1", "a2", "a3"]);
    assert!(all.windows(2).all(|w| w[0].event_id < w[1].event_id));
    assert_eq!(all[0].attempts, 0);
    assert_eq!(all[0].first_attempt_ms, None);
    assert_eq!(all[0].source, "web");
    assert_eq!(all[0].event_type, "identify");
    assert_eq!(all[0].raw, br#"{"messageId":"a1","userId":"k1"}"#);
    assert_eq!(mids(&s.pending_for(&l1, 1).await.unwrap()), ["a1"]);
    s.settle(&l1, 2001, vec![(all[0].delivery_id, delivered())], None)
        .await
        .unwrap();
    assert_eq!(mids(&pending(s, &l1).await), ["a2", "a3"]);
    let l2 = s
        .lease_contacts(DEST, "w", 2000, LEASE_MS, 10)
        .await
        .unwrap();
    assert!(l2.is_empty(), "k2 was leased with k1 by lease_key");
}

/// A leased key is not handed out again; keys due earliest come first; tokens are unique.
pub async fn leases_exclusive(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![
            ev("a1", "k1", 1000),
            ev("b1", "k2", 1000),
            ev("c1", "k3", 900),
        ],
    )
    .await;
    assert!(
        s.lease_contacts(DEST, "w1", 899, LEASE_MS, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let first = s
        .lease_contacts(DEST, "w1", 1000, LEASE_MS, 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].contact_key, "k3", "due earliest first");
    assert_eq!(first[0].until_ms, 1000 + LEASE_MS);
    let rest = s
        .lease_contacts(DEST, "w2", 1000, LEASE_MS, 10)
        .await
        .unwrap();
    let mut keys: Vec<_> = rest.iter().map(|l| l.contact_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["k1", "k2"]);
    assert!(
        s.lease_contacts(DEST, "w3", 1000, LEASE_MS, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.lease_contacts(OTHER, "w3", 1000, LEASE_MS, 10)
            .await
            .unwrap()
            .is_empty(),
        "other destinations have nothing"
    );
    let tokens: std::collections::HashSet<_> =
        first.iter().chain(&rest).map(|l| l.token.clone()).collect();
    assert_eq!(tokens.len(), 3, "tokens are unique");
}

/// An expired lease is taken over; the old token gets `LeaseLost` and cannot release.
pub async fn expired_lease_taken_over(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("a1", "k1", 1000)]).await;
    let old = s
        .lease_contacts(DEST, "w1", 1000, 100, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        s.lease_contacts(DEST, "w2", 1100, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let new = s
        .lease_contacts(DEST, "w2", 1101, 100, 10)
        .await
        .unwrap()
        .remove(0);
    assert_ne!(old.token, new.token);
    let id = pending(s, &new).await[0].delivery_id;
    let err = s
        .settle(&old, 1102, vec![(id, delivered())], None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { ref contact_key, .. } if contact_key == "k1"));
    assert!(matches!(
        s.pending_for(&old, 10).await.unwrap_err(),
        StoreError::LeaseLost { .. }
    ));
    // A stale release does not free the key from under its new owner.
    s.release(&old, None).await.unwrap();
    assert!(
        s.lease_contacts(DEST, "w3", 1102, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        mids(&pending(s, &new).await),
        ["a1"],
        "the stale settle changed nothing"
    );
    s.settle(&new, 1102, vec![(id, delivered())], None)
        .await
        .unwrap();
    s.release(&new, None).await.unwrap();
    // Released: a released token is stale too.
    assert!(matches!(
        s.settle(&new, 1103, vec![], None).await.unwrap_err(),
        StoreError::LeaseLost { .. }
    ));
    assert!(
        s.lease_contacts(DEST, "w3", 5000, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A retry makes the whole key wait until its time, even when new events arrive.
pub async fn retry_schedules_key(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("a1", "k1", 1000), ev("a2", "k1", 1000)]).await;
    let lease = lease_key(s, "k1", 1000).await;
    let p = pending(s, &lease).await;
    let retry = Settlement::Retry {
        at_ms: 5000,
        error: "503 Service Unavailable".to_owned(),
    };
    s.settle(
        &lease,
        1010,
        vec![(p[0].delivery_id, retry)],
        Some(attempt(&[p[0].delivery_id], 1005, 503, "retry: 503")),
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();
    // A new event for the key does not make it due earlier than the retry.
    append_all(s, vec![ev("a3", "k1", 2000)]).await;
    assert!(lease_all(s, 4999).await.is_empty());
    let lease = lease_key(s, "k1", 5000).await;
    let p = pending(s, &lease).await;
    assert_eq!(mids(&p), ["a1", "a2", "a3"]);
    assert_eq!(p[0].attempts, 1);
    assert_eq!(p[0].first_attempt_ms, Some(1005));
    assert_eq!(p[1].attempts, 0);
    // A second retry keeps the first attempt time.
    let retry = Settlement::Retry {
        at_ms: 9000,
        error: "timeout".to_owned(),
    };
    s.settle(&lease, 5010, vec![(p[0].delivery_id, retry)], None)
        .await
        .unwrap();
    s.release(&lease, None).await.unwrap();
    let lease = lease_key(s, "k1", 9000).await;
    let p = pending(s, &lease).await;
    assert_eq!((p[0].attempts, p[0].first_attempt_ms), (2, Some(1005)));
    let trace = &s.event_traces("a1").await.unwrap()[0].deliveries[0];
    assert_eq!(trace.status, DeliveryStatus::Pending);
    assert_eq!(trace.reason.as_deref(), Some("timeout"));
}

/// `release` with a not-before delays the key but never pulls a later schedule forward.
pub async fn release_not_before(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("a1", "k1", 1000)]).await;
    let lease = lease_key(s, "k1", 1000).await;
    s.release(&lease, Some(9000)).await.unwrap();
    assert!(lease_all(s, 8999).await.is_empty());
    let lease = lease_key(s, "k1", 9000).await;
    // A not-before earlier than the schedule does not pull it forward.
    let p = pending(s, &lease).await;
    let retry = Settlement::Retry {
        at_ms: 20_000,
        error: "429".to_owned(),
    };
    s.settle(&lease, 9001, vec![(p[0].delivery_id, retry)], None)
        .await
        .unwrap();
    s.release(&lease, Some(10_000)).await.unwrap();
    assert!(lease_all(s, 19_999).await.is_empty());
    lease_key(s, "k1", 20_000).await;
}

/// Dead letters are listed newest first with filters, and requeued to pending.
pub async fn dead_letters_listed_and_requeued(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![
            ev("a1", "k1", 1000),
            ev("b1", "k2", 1000),
            ev("b2", "k2", 1001),
        ],
    )
    .await;
    let leases = lease_all(s, 1000).await;
    for lease in &leases {
        let p = pending(s, lease).await;
        let (code, reason, at) = if lease.contact_key == "k1" {
            ("conflict", "400: email is invalid", 2000)
        } else {
            ("refused", "404: no such field", 3000)
        };
        let settlements = p
            .iter()
            .map(|d| {
                (
                    d.delivery_id,
                    Settlement::DeadLettered {
                        code: code.to_owned(),
                        reason: reason.to_owned(),
                    },
                )
            })
            .collect();
        let ids: Vec<_> = p.iter().map(|d| d.delivery_id).collect();
        s.settle(
            lease,
            at,
            settlements,
            Some(attempt(&ids, at, 400, "dead-lettered")),
        )
        .await
        .unwrap();
        s.release(lease, None).await.unwrap();
    }
    let all = s.dead_letters(&DeliveryFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].dead_at_ms, 3000, "newest first");
    assert_eq!(all[2].message_id, "a1");
    assert_eq!(all[2].reason, "400: email is invalid");
    assert_eq!(all[2].attempts, 1);
    assert_eq!(all[2].destination, DEST);
    assert_eq!(all[2].source, "web");
    assert_eq!(all[2].contact_key, "k1");
    let by_key = DeliveryFilter {
        contact_key: Some("k1".to_owned()),
        ..DeliveryFilter::default()
    };
    assert_eq!(s.dead_letters(&by_key).await.unwrap().len(), 1);
    let by_reason = DeliveryFilter {
        reason_contains: Some("no such".to_owned()),
        ..DeliveryFilter::default()
    };
    assert_eq!(s.dead_letters(&by_reason).await.unwrap().len(), 2);
    assert_eq!(all[2].reason_code.as_deref(), Some("conflict"));
    let by_code = DeliveryFilter {
        reason_code: Some("conflict".to_owned()),
        ..DeliveryFilter::default()
    };
    let conflicts = s.dead_letters(&by_code).await.unwrap();
    assert_eq!(conflicts.len(), 1, "the code selects, not a text search");
    assert_eq!(conflicts[0].contact_key, "k1");
    let by_other_code = DeliveryFilter {
        reason_code: Some("retry_horizon".to_owned()),
        ..DeliveryFilter::default()
    };
    assert!(s.dead_letters(&by_other_code).await.unwrap().is_empty());
    let limited = DeliveryFilter {
        limit: Some(1),
        ..DeliveryFilter::default()
    };
    assert_eq!(s.dead_letters(&limited).await.unwrap().len(), 1);
    let wrong_dest = DeliveryFilter {
        destination: Some(OTHER.to_owned()),
        ..DeliveryFilter::default()
    };
    assert!(s.dead_letters(&wrong_dest).await.unwrap().is_empty());
    assert!(
        lease_all(s, 10_000).await.is_empty(),
        "dead letters are not pending"
    );

    assert_eq!(s.requeue_dead(&by_key, 10_000).await.unwrap(), 1);
    assert_eq!(
        s.dead_letters(&DeliveryFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let lease = lease_key(s, "k1", 10_000).await;
    let p = pending(s, &lease).await;
    assert_eq!(mids(&p), ["a1"]);
    assert_eq!((p[0].attempts, p[0].first_attempt_ms), (0, None));
    assert_eq!(
        s.requeue_dead(&DeliveryFilter::default(), 10_000)
            .await
            .unwrap(),
        2
    );
    assert!(
        s.dead_letters(&DeliveryFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let lease = lease_key(s, "k2", 10_000).await;
    assert_eq!(mids(&pending(s, &lease).await), ["b1", "b2"]);
}

/// `replay` lists the finished deliveries of a time range, a page at a time with their events,
/// and puts back those it is given; each keeps the outcome it had in its history, and the
/// figures count that outcome and the new one.
pub async fn replay_reopens_finished(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![
            ev("a1", "k1", 1000),
            ev("a2", "k1", 1500),
            ev("b1", "k2", 5000),
        ],
    )
    .await;
    for lease in lease_all(s, 5000).await {
        let settlements = pending(s, &lease)
            .await
            .iter()
            .map(|d| (d.delivery_id, Settlement::Delivered))
            .collect();
        s.settle(&lease, 5001, settlements, None).await.unwrap();
        s.release(&lease, None).await.unwrap();
    }
    assert!(lease_all(s, 6000).await.is_empty());
    let range = DeliveryFilter {
        since_ms: Some(0),
        until_ms: Some(5000),
        // A list's limit is not the page size.
        limit: Some(1),
        ..DeliveryFilter::default()
    };
    let first = s.finished_deliveries(&range, 0, 1).await.unwrap();
    assert_eq!(first.len(), 1, "one page");
    let rest = s
        .finished_deliveries(&range, first[0].delivery_id, 10)
        .await
        .unwrap();
    let found: Vec<_> = first.iter().chain(&rest).collect();
    assert_eq!(found.len(), 2, "b1 is out of range");
    assert!(String::from_utf8_lossy(&found[0].raw).contains("a1"));
    assert_eq!(
        (
            found[0].destination.as_str(),
            found[0].source.as_str(),
            found[0].status
        ),
        (DEST, "web", DeliveryStatus::Delivered)
    );
    let ids: Vec<_> = found.iter().map(|d| d.delivery_id).collect();
    assert_eq!(
        s.reopen(ids.clone(), Reopen::Replay, 6000).await.unwrap(),
        2
    );
    assert_eq!(
        s.reopen(ids, Reopen::Replay, 6000).await.unwrap(),
        0,
        "a pending delivery is not reopened again"
    );
    assert!(
        s.finished_deliveries(&range, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let leases = lease_all(s, 6000).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(mids(&pending(s, &leases[0]).await), ["a1", "a2"]);
    let crm = crm_stats(s).await;
    assert_eq!(
        (crm.pending, crm.delivered, crm.reopened),
        (2, 3, 2),
        "the first deliveries still count"
    );
    let trace = &s.event_traces("a1").await.unwrap()[0].deliveries[0];
    assert_eq!(trace.status, DeliveryStatus::Pending);
    assert_eq!(
        trace.history,
        [PastOutcome {
            status: DeliveryStatus::Delivered,
            reason: None,
            attempts: 0,
            finished_ms: Some(5001),
            reopened_ms: 6000,
            reopened_by: Reopen::Replay,
        }]
    );
}

async fn crm_stats(s: &dyn freshgate_store::Store) -> freshgate_store::DestinationStats {
    s.stats()
        .await
        .unwrap()
        .destinations
        .into_iter()
        .find(|d| d.destination == DEST)
        .unwrap()
}

/// A delivery dead-lettered, replayed from the dead-letter queue and delivered, then replayed
/// again and skipped: its trace shows every outcome in order with every attempt, and the figures
/// count each outcome once (history is appended, never rewritten).
pub async fn history_is_never_rewritten(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("a1", "k1", 1000)]).await;
    let settle_once = |at: i64, settlement: Settlement, status: u16| async move {
        let lease = lease_key(s, "k1", at).await;
        let p = pending(s, &lease).await;
        let id = p[0].delivery_id;
        s.settle(
            &lease,
            at,
            vec![(id, settlement)],
            Some(attempt(&[id], at, status, "outcome")),
        )
        .await
        .unwrap();
        s.release(&lease, None).await.unwrap();
        id
    };
    let dead = refused("400: email is invalid");
    let id = settle_once(2000, dead, 400).await;
    assert_eq!(
        s.requeue_dead(&DeliveryFilter::default(), 3000)
            .await
            .unwrap(),
        1
    );
    settle_once(3000, Settlement::Delivered, 200).await;
    let crm = crm_stats(s).await;
    assert_eq!(
        (crm.delivered, crm.dead_lettered, crm.dead, crm.reopened),
        (1, 1, 0, 1),
        "dead-lettered then delivered on replay: both outcomes count"
    );
    assert_eq!(s.reopen(vec![id], Reopen::Replay, 4000).await.unwrap(), 1);
    let lease = lease_key(s, "k1", 4000).await;
    s.settle(
        &lease,
        4001,
        vec![(
            id,
            Settlement::Skipped {
                code: "unchanged".to_owned(),
                reason: "unchanged".to_owned(),
            },
        )],
        None,
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();

    let trace = &s.event_traces("a1").await.unwrap()[0].deliveries[0];
    assert_eq!(
        (trace.status, trace.reason.as_deref()),
        (DeliveryStatus::Skipped, Some("unchanged"))
    );
    assert_eq!(trace.attempts.len(), 2, "every attempt is kept");
    let past: Vec<_> = trace
        .history
        .iter()
        .map(|h| {
            (
                h.status,
                h.reason.as_deref(),
                h.attempts,
                h.finished_ms,
                h.reopened_ms,
                h.reopened_by,
            )
        })
        .collect();
    assert_eq!(
        past,
        [
            (
                DeliveryStatus::Dead,
                Some("400: email is invalid"),
                1,
                Some(2000),
                3000,
                Reopen::DeadLetterReplay
            ),
            (
                DeliveryStatus::Delivered,
                None,
                1,
                Some(3000),
                4000,
                Reopen::Replay
            ),
        ]
    );
    let crm = crm_stats(s).await;
    assert_eq!(
        (
            crm.delivered,
            crm.skipped,
            crm.dead_lettered,
            crm.dead,
            crm.reopened
        ),
        (1, 1, 1, 0, 2)
    );
    fx.reopen().await;
    let s = fx.store();
    assert_eq!(
        s.event_traces("a1").await.unwrap()[0].deliveries[0]
            .history
            .len(),
        2,
        "kept across restarts"
    );
    // The history goes with its event when the event is pruned.
    s.prune(10_000, 10_000).await.unwrap();
    assert!(s.event_traces("a1").await.unwrap().is_empty());
    assert_eq!(crm_stats_or_default(s).await.delivered, 0);
}

async fn crm_stats_or_default(s: &dyn freshgate_store::Store) -> freshgate_store::DestinationStats {
    s.stats()
        .await
        .unwrap()
        .destinations
        .into_iter()
        .find(|d| d.destination == DEST)
        .unwrap_or_default()
}

/// Events stored with no delivery to a destination (added later) are listed by receive time,
/// paged by id, and get exactly one first delivery each: pending ones are leased in event
/// order, skipped ones never.
pub async fn late_deliveries_for_stored_events(fx: &mut dyn Fixture) {
    let s = fx.store();
    let none = |mid: &str, key: &str, at: i64| {
        let mut e = ev(mid, key, at);
        e.deliveries.clear();
        e
    };
    append_all(
        s,
        vec![
            none("n1", "k1", 1000),
            none("n2", "k1", 2000),
            none("n3", "k2", 3000),
            ev("d1", "k3", 3500),
            none("n4", "k4", 9000),
        ],
    )
    .await;
    let listed = s
        .events_without_delivery(DEST, 0, 5000, 0, 2)
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "one page");
    let rest = s
        .events_without_delivery(DEST, 0, 5000, listed[1].event_id, 10)
        .await
        .unwrap();
    let keys: Vec<&str> = listed
        .iter()
        .chain(&rest)
        .map(|e| e.contact_key.as_str())
        .collect();
    assert_eq!(keys, ["k1", "k1", "k2"], "d1 has one, n4 is out of range");
    assert_eq!(listed[0].source, "web");
    assert!(String::from_utf8_lossy(&listed[0].raw).contains("n1"));

    let late: Vec<LateDelivery> = listed
        .iter()
        .chain(&rest)
        .map(|e| LateDelivery {
            event_id: e.event_id,
            contact_key: e.contact_key.clone(),
            delivery: NewDelivery {
                destination: DEST.to_owned(),
                skip_reason: (e.contact_key == "k2").then(|| "opted out".to_owned()),
                skip_code: (e.contact_key == "k2").then(|| "opted_out".to_owned()),
            },
        })
        .collect();
    assert_eq!(s.add_deliveries(late.clone(), 6000).await.unwrap(), 3);
    assert_eq!(
        s.add_deliveries(late, 6000).await.unwrap(),
        0,
        "an event keeps its one delivery"
    );
    assert!(
        s.events_without_delivery(DEST, 0, 5000, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let leases = lease_all(s, 6000).await;
    let k1 = leases.iter().find(|l| l.contact_key == "k1").unwrap();
    assert_eq!(mids(&pending(s, k1).await), ["n1", "n2"]);
    assert!(leases.iter().all(|l| l.contact_key != "k2"));
    let trace = &s.event_traces("n3").await.unwrap()[0];
    assert_eq!(trace.deliveries[0].status, DeliveryStatus::Skipped);
    assert_eq!(trace.deliveries[0].reason.as_deref(), Some("opted out"));
    // The skip's code is kept: a filter on it selects that delivery alone.
    let opted_out = DeliveryFilter {
        reason_code: Some("opted_out".to_owned()),
        ..DeliveryFilter::default()
    };
    let finished = s.finished_deliveries(&opted_out, 0, 100).await.unwrap();
    assert_eq!(finished.len(), 1);
    let ids = finished.iter().map(|f| f.delivery_id).collect();
    assert_eq!(s.reopen(ids, Reopen::Replay, 7000).await.unwrap(), 1);
    let trace = &s.event_traces("n3").await.unwrap()[0];
    assert_eq!(trace.deliveries[0].status, DeliveryStatus::Pending);
    // The late deliveries are counted like the append's (the counters match the rows).
    assert!(s.integrity_check().await.unwrap().is_empty());
}

/// Deliveries skipped at append are recorded but never leased.
pub async fn skipped_at_append_never_pending(fx: &mut dyn Fixture) {
    let s = fx.store();
    let mut only_skipped = ev("s1", "k2", 1000);
    only_skipped.deliveries[0].skip_reason = Some("integrations opt-out".to_owned());
    append_all(s, vec![ev_with_skip("m1", "k1", 1000), only_skipped]).await;
    assert!(
        s.lease_contacts(OTHER, "w", 1_000_000, LEASE_MS, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let leases = lease_all(s, 1_000_000).await;
    assert_eq!(leases.len(), 1, "k2 has nothing pending");
    assert_eq!(leases[0].contact_key, "k1");
    let trace = &s.event_traces("m1").await.unwrap()[0];
    let other = trace
        .deliveries
        .iter()
        .find(|d| d.destination == OTHER)
        .unwrap();
    assert_eq!(other.status, DeliveryStatus::Skipped);
    assert_eq!(
        other.reason.as_deref(),
        Some("not handled by this destination")
    );
    assert_eq!(other.next_attempt_ms, None);
    let stats = s.stats().await.unwrap();
    let o = stats
        .destinations
        .iter()
        .find(|d| d.destination == OTHER)
        .unwrap();
    assert_eq!((o.pending, o.skipped, o.pending_contacts), (0, 1, 0));
    // The skip's code is stored beside its words: a filter selects on it.
    let by_code = |code: &str| DeliveryFilter {
        destination: Some(OTHER.to_owned()),
        reason_code: Some(code.to_owned()),
        ..DeliveryFilter::default()
    };
    assert_eq!(replay_matching(s, &by_code("no_rule"), 2_000).await, 0);
    // Per call type and state (the harness's events are identifies).
    let kinds = s.kind_counts().await.unwrap();
    let count = |d: &str, status: DeliveryStatus| {
        kinds
            .iter()
            .filter(|k| k.destination == d && k.status == status && k.event_type == "identify")
            .map(|k| k.count)
            .sum::<u64>()
    };
    assert_eq!(count(DEST, DeliveryStatus::Pending), 1);
    assert_eq!(count(DEST, DeliveryStatus::Skipped), 1);
    assert_eq!(count(OTHER, DeliveryStatus::Skipped), 1);
    assert_eq!(kinds.iter().map(|k| k.count).sum::<u64>(), 3);
    assert_eq!(replay_matching(s, &by_code("not_handled"), 2_000).await, 1);
}

/// Shadows are stored per (destination, contact) and replaced on put.
pub async fn shadow_get_put(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert_eq!(s.shadow(DEST, "k1").await.unwrap(), None);
    s.put_shadow(DEST, "k1", br#"{"a":1}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(s.shadow(DEST, "k1").await.unwrap().unwrap(), br#"{"a":1}"#);
    s.put_shadow(DEST, "k1", br#"{"a":2}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(s.shadow(DEST, "k1").await.unwrap().unwrap(), br#"{"a":2}"#);
    assert_eq!(s.shadow(OTHER, "k1").await.unwrap(), None);
    assert_eq!(s.shadow(DEST, "k2").await.unwrap(), None);
}

/// Shadows are forgotten for one contact, one destination, or one contact everywhere; never
/// all at once by accident.
pub async fn shadows_forgotten(fx: &mut dyn Fixture) {
    let s = fx.store();
    for (d, k) in [(DEST, "k1"), (DEST, "k2"), (OTHER, "k1"), (OTHER, "k3")] {
        s.put_shadow(d, k, b"{}".to_vec()).await.unwrap();
    }
    assert_eq!(s.forget_shadows(None, None).await.unwrap(), 0);
    assert_eq!(s.forget_shadows(Some(DEST), Some("k2")).await.unwrap(), 1);
    assert_eq!(s.shadow(DEST, "k2").await.unwrap(), None);
    assert!(s.shadow(DEST, "k1").await.unwrap().is_some());
    assert_eq!(s.forget_shadows(None, Some("k1")).await.unwrap(), 2);
    assert_eq!(s.shadow(OTHER, "k1").await.unwrap(), None);
    assert_eq!(s.forget_shadows(Some(OTHER), None).await.unwrap(), 1);
    assert_eq!(s.shadow(OTHER, "k3").await.unwrap(), None);
}

/// The contacts a filter's deliveries belong to, once each.
pub async fn contacts_matching_a_filter(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![
            ev_with_skip("a1", "k1", 1000),
            ev("a2", "k1", 1500),
            ev("b1", "k2", 5000),
        ],
    )
    .await;
    let all = s
        .contacts_matching(&DeliveryFilter::default())
        .await
        .unwrap();
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(d, k)| ((*d).to_owned(), (*k).to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(all, pairs(&[(DEST, "k1"), (DEST, "k2"), (OTHER, "k1")]));
    let range = DeliveryFilter {
        destination: Some(DEST.to_owned()),
        since_ms: Some(0),
        until_ms: Some(5000),
        ..DeliveryFilter::default()
    };
    assert_eq!(
        s.contacts_matching(&range).await.unwrap(),
        pairs(&[(DEST, "k1")])
    );
}

/// Field metadata is kept per account; a newer fetch replaces it, an older one does not.
pub async fn field_metadata_newest_wins(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert_eq!(s.field_metadata("acct").await.unwrap(), None);
    let at = |fetched_at_ms: i64, body: &[u8]| FieldMetadata {
        fetched_at_ms,
        body: body.to_vec(),
    };
    s.put_field_metadata("acct", at(1000, b"[1]"))
        .await
        .unwrap();
    assert_eq!(
        s.field_metadata("acct").await.unwrap(),
        Some(at(1000, b"[1]"))
    );
    s.put_field_metadata("acct", at(2000, b"[2]"))
        .await
        .unwrap();
    // Another node's slower fetch, started earlier, lands last: it must not win.
    s.put_field_metadata("acct", at(1500, b"[old]"))
        .await
        .unwrap();
    assert_eq!(
        s.field_metadata("acct").await.unwrap(),
        Some(at(2000, b"[2]"))
    );
    assert_eq!(s.field_metadata("other").await.unwrap(), None);
}

/// The quota ledger sums calls per account since a time, at one-second granularity.
pub async fn quota_ledger_windows(fx: &mut dyn Fixture) {
    let s = fx.store();
    s.record_calls("acct", 10_500, 3).await.unwrap();
    s.record_calls("acct", 10_999, 2).await.unwrap();
    s.record_calls("acct", 11_000, 1).await.unwrap();
    s.record_calls("acct", 70_000, 4).await.unwrap();
    s.record_calls("other", 70_000, 100).await.unwrap();
    assert_eq!(s.calls_since("acct", 0).await.unwrap(), 10);
    assert_eq!(s.calls_since("acct", 10_000).await.unwrap(), 10);
    assert_eq!(s.calls_since("acct", 11_000).await.unwrap(), 5);
    assert_eq!(s.calls_since("acct", 12_000).await.unwrap(), 4);
    assert_eq!(s.calls_since("acct", 71_000).await.unwrap(), 0);
    assert_eq!(s.calls_since("nobody", 0).await.unwrap(), 0);
    // Pruning keeps the recent hour.
    s.prune(0, 0).await.unwrap();
    assert_eq!(s.calls_since("acct", 0).await.unwrap(), 10);
}

/// Reservations never let the ledger pass the caps: of ten requests for the hour's last three
/// slots, exactly three are granted. (The cross-node race itself is exercised by the
/// multi-node integration test.)
pub async fn quota_reservations_respect_the_caps(fx: &mut dyn Fixture) {
    let s = fx.store();
    // Minute cap 5, hour cap 8.
    for i in 0..5 {
        assert!(s.reserve_calls("acct", 100_000 + i, 1, 5, 8).await.unwrap());
    }
    assert!(
        !s.reserve_calls("acct", 100_010, 1, 5, 8).await.unwrap(),
        "minute full"
    );
    assert_eq!(s.calls_since("acct", 0).await.unwrap(), 5);
    // A minute later the minute has room, the hour has 3 left.
    let later = 100_000 + 63_000;
    let mut granted = 0;
    for i in 0..10 {
        if s.reserve_calls("acct", later + i, 1, 5, 8).await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3, "exactly the hour's remaining slots are granted");
    assert_eq!(s.calls_since("acct", 0).await.unwrap(), 8);
    assert!(
        !s.reserve_calls("acct", later + 61_000, 1, 5, 8)
            .await
            .unwrap(),
        "hour full"
    );
    assert!(
        s.reserve_calls("other", later, 1, 5, 8).await.unwrap(),
        "per account"
    );
}

/// Queue figures per destination follow appends and settlements.
pub async fn stats_figures(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![
            ev_with_skip("a1", "k1", 1000),
            ev("b1", "k2", 1500),
            ev("a2", "k1", 2000),
        ],
    )
    .await;
    s.append(AppendBatch {
        rejected: vec![RejectedInput {
            source: None,
            raw: b"{}".to_vec(),
            reason: "empty".to_owned(),
            received_at_ms: 1000,
        }],
        ..AppendBatch::default()
    })
    .await
    .unwrap();
    let st = s.stats().await.unwrap();
    assert_eq!((st.events, st.rejected), (3, 1));
    let crm = st
        .destinations
        .iter()
        .find(|d| d.destination == DEST)
        .unwrap();
    assert_eq!(
        (crm.pending, crm.delivered, crm.skipped, crm.dead),
        (3, 0, 0, 0)
    );
    assert_eq!(crm.pending_contacts, 2);
    assert_eq!(crm.oldest_pending_received_ms, Some(1000));
    assert_eq!(crm.next_attempt_ms, Some(1000));

    let lease = lease_key(s, "k1", 3000).await;
    let p = pending(s, &lease).await;
    s.settle(
        &lease,
        3000,
        vec![
            (p[0].delivery_id, Settlement::Delivered),
            (p[1].delivery_id, refused("400")),
        ],
        None,
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();
    let st = s.stats().await.unwrap();
    let crm = st
        .destinations
        .iter()
        .find(|d| d.destination == DEST)
        .unwrap();
    assert_eq!(
        (crm.pending, crm.delivered, crm.skipped, crm.dead),
        (1, 1, 0, 1)
    );
    assert_eq!(crm.pending_contacts, 1);
    assert_eq!(crm.oldest_pending_received_ms, Some(1500));
    assert_eq!(crm.next_attempt_ms, Some(1500));
    // The cheap gauges agree with the full figures; a destination with nothing pending or dead
    // is left out.
    assert_eq!(
        s.depths().await.unwrap(),
        [QueueDepth {
            destination: DEST.to_owned(),
            pending: 1,
            dead: 1,
        }]
    );
    let other = st
        .destinations
        .iter()
        .find(|d| d.destination == OTHER)
        .unwrap();
    assert_eq!((other.pending, other.skipped), (0, 1));
    assert_eq!(other.oldest_pending_received_ms, None);
}

/// Prune removes old finished events and dedup entries, keeps dead and pending.
pub async fn prune_keeps_dead_and_pending(fx: &mut dyn Fixture) {
    let s = fx.store();
    let mut skipped_only = ev("s1", "k4", 1000);
    skipped_only.deliveries[0].skip_reason = Some("opt-out".to_owned());
    append_all(
        s,
        vec![
            ev("del", "k1", 1000),
            ev("dead", "k2", 1000),
            ev("pend", "k3", 1000),
            skipped_only,
            ev("new", "k5", 10_000),
        ],
    )
    .await;
    for lease in lease_all(s, 10_000).await {
        let p = pending(s, &lease).await;
        let settlement = match lease.contact_key.as_str() {
            "k1" | "k5" => Settlement::Delivered,
            "k2" => refused("400"),
            _ => {
                s.release(&lease, None).await.unwrap();
                continue;
            }
        };
        let id = p[0].delivery_id;
        s.settle(
            &lease,
            10_001,
            vec![(id, settlement)],
            Some(attempt(&[id], 10_001, 200, "x")),
        )
        .await
        .unwrap();
        s.release(&lease, None).await.unwrap();
    }
    let out = s.prune(5000, 5000).await.unwrap();
    assert_eq!(
        out.events, 2,
        "the delivered and the skipped-only old events"
    );
    assert_eq!(
        out.dedup_entries, 2,
        "the entries of the two pruned events; dead and pending stay traceable"
    );
    assert!(s.event_traces("del").await.unwrap().is_empty());
    assert!(s.event_traces("s1").await.unwrap().is_empty());
    for kept in ["dead", "pend", "new"] {
        assert_eq!(s.event_traces(kept).await.unwrap().len(), 1, "{kept} kept");
    }
    assert_eq!(s.stats().await.unwrap().events, 3);
    assert_eq!(
        s.dead_letters(&DeliveryFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        mids(&pending(s, &lease_key(s, "k3", 20_000).await).await),
        ["pend"]
    );
    // The dedup entry of a pruned event is gone: the same messageId is accepted again.
    let out = s.append(batch(vec![ev("del", "k1", 5500)])).await.unwrap();
    assert_eq!(out.accepted, 1);
    assert!(s.integrity_check().await.unwrap().is_empty());
}

/// A messageId accepted again after the window keeps both events findable: traces and the
/// listing's search find the old one and the new one, and once the new one is pruned while the
/// old one is kept (a dead letter), the old one is still found.
pub async fn renewed_message_ids_stay_findable(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("m1", "k1", 1000)]).await;
    let lease = lease_key(s, "k1", 2000).await;
    let first = pending(s, &lease).await[0].delivery_id;
    s.settle(
        &lease,
        2000,
        vec![(first, refused("400"))],
        Some(attempt(&[first], 2000, 400, "x")),
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();
    let late = 1000 + WINDOW_MS + 1;
    let out = s.append(batch(vec![ev("m1", "k1", late)])).await.unwrap();
    assert_eq!(out.accepted, 1, "past the window");
    let by_message = || EventQuery {
        message_id: Some("m1".to_owned()),
        limit: 10,
        ..EventQuery::default()
    };
    assert_eq!(s.event_traces("m1").await.unwrap().len(), 2);
    assert_eq!(s.list_events(&by_message()).await.unwrap().len(), 2);
    let lease = lease_key(s, "k1", late + 1).await;
    let second = pending(s, &lease).await[0].delivery_id;
    s.settle(
        &lease,
        late + 1,
        vec![(second, Settlement::Delivered)],
        Some(attempt(&[second], late + 1, 200, "x")),
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();
    let out = s.prune(late + 1, late + 1).await.unwrap();
    assert_eq!(out.events, 1, "the delivered one; the dead letter stays");
    let traces = s.event_traces("m1").await.unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].received_at_ms, 1000);
    assert_eq!(s.list_events(&by_message()).await.unwrap().len(), 1);
    assert!(s.integrity_check().await.unwrap().is_empty());
}

/// Traces list every delivery with its attempts, coalesced attempts included.
pub async fn traces_show_attempts(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![ev_with_skip("m1", "k1", 1000), ev("m2", "k1", 1001)],
    )
    .await;
    let mut ios = ev("m1", "k9", 1000);
    ios.source = "ios".to_owned();
    append_all(s, vec![ios]).await;
    let lease = lease_key(s, "k1", 1000).await;
    let p = pending(s, &lease).await;
    let (d1, d2) = (p[0].delivery_id, p[1].delivery_id);
    s.settle(
        &lease,
        1100,
        vec![(
            d1,
            Settlement::Retry {
                at_ms: 2000,
                error: "503".to_owned(),
            },
        )],
        Some(attempt(&[d1], 1100, 503, "retry: 503")),
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();
    let traces = s.event_traces("m1").await.unwrap();
    assert_eq!(traces.len(), 2, "one per source");
    let web = traces.iter().find(|t| t.source == "web").unwrap();
    assert_eq!(web.contact_key, "k1");
    assert_eq!(web.raw, r#"{"messageId":"m1","userId":"k1"}"#);
    let crm = web
        .deliveries
        .iter()
        .find(|d| d.destination == DEST)
        .unwrap();
    assert_eq!(crm.status, DeliveryStatus::Pending);
    assert_eq!(crm.next_attempt_ms, Some(2000));
    assert_eq!(crm.attempts.len(), 1);
    assert_eq!(crm.attempts[0].status, Some(503));

    // One coalesced exchange for both deliveries.
    let lease = lease_key(s, "k1", 2000).await;
    let mut coalesced = attempt(&[d1, d2], 2000, 200, "delivered");
    coalesced.status = None;
    coalesced.response_body = Some("connection reset".to_owned());
    coalesced.request_body = None;
    s.settle(
        &lease,
        2001,
        vec![(d1, Settlement::Delivered), (d2, Settlement::Delivered)],
        Some(coalesced.clone()),
    )
    .await
    .unwrap();
    let traces = s.event_traces("m1").await.unwrap();
    let web = traces.iter().find(|t| t.source == "web").unwrap();
    let crm = web
        .deliveries
        .iter()
        .find(|d| d.destination == DEST)
        .unwrap();
    assert_eq!(crm.status, DeliveryStatus::Delivered);
    assert_eq!(crm.next_attempt_ms, None);
    assert_eq!(crm.attempts.len(), 2, "oldest first");
    assert_eq!(crm.attempts[0].outcome, "retry: 503");
    assert_eq!(crm.attempts[0].delivery_ids, [d1]);
    assert_eq!(crm.attempts[1], coalesced);
    let m2 = &s.event_traces("m2").await.unwrap()[0].deliveries[0];
    assert_eq!(m2.attempts, [coalesced]);
    let p2 = s.dead_letters(&DeliveryFilter::default()).await.unwrap();
    assert!(p2.is_empty());
    assert!(s.event_traces("nope").await.unwrap().is_empty());
}

/// Everything committed survives closing and reopening the store.
pub async fn survives_reopen(fx: &mut dyn Fixture) {
    append_all(fx.store(), vec![ev("a1", "k1", 1000), ev("a2", "k1", 1001)]).await;
    {
        let s = fx.store();
        let lease = lease_key(s, "k1", 1000).await;
        let id = pending(s, &lease).await[0].delivery_id;
        s.settle(&lease, 1002, vec![(id, Settlement::Delivered)], None)
            .await
            .unwrap();
        s.release(&lease, None).await.unwrap();
        s.put_shadow(DEST, "k1", b"{}".to_vec()).await.unwrap();
        s.record_calls("acct", 1000, 7).await.unwrap();
        s.put_field_metadata(
            "acct",
            FieldMetadata {
                fetched_at_ms: 1000,
                body: b"[]".to_vec(),
            },
        )
        .await
        .unwrap();
    }
    fx.reopen().await;
    let s = fx.store();
    let lease = lease_key(s, "k1", 2000).await;
    assert_eq!(mids(&pending(s, &lease).await), ["a2"]);
    assert_eq!(s.shadow(DEST, "k1").await.unwrap().unwrap(), b"{}");
    assert_eq!(s.calls_since("acct", 0).await.unwrap(), 7);
    assert_eq!(
        s.field_metadata("acct").await.unwrap().map(|m| m.body),
        Some(b"[]".to_vec())
    );
    let out = s.append(batch(vec![ev("a1", "k1", 3000)])).await.unwrap();
    assert_eq!(out.duplicates, 1, "dedup survives a restart");
    assert!(s.integrity_check().await.unwrap().is_empty());
}

/// A closed store answers `Closed` to writes; closing twice is harmless.
pub async fn closed_store_refuses_writes(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("a1", "k1", 1000)]).await;
    s.close().await;
    assert!(matches!(
        s.append(batch(vec![ev("a2", "k1", 1000)]))
            .await
            .unwrap_err(),
        StoreError::Closed
    ));
    assert!(matches!(
        s.put_shadow(DEST, "k1", vec![]).await.unwrap_err(),
        StoreError::Closed
    ));
    // Closing twice is harmless.
    s.close().await;
}

fn rejected_input(n: usize, bytes: usize, at: i64) -> RejectedInput {
    RejectedInput {
        source: Some("web".to_owned()),
        raw: format!("{n:>width$}", width = bytes).into_bytes(),
        reason: format!("bad {n}"),
        received_at_ms: at,
    }
}

/// Rejected inputs go by age, then oldest first until the rest fit the byte bound.
pub async fn rejected_pruned_by_age_and_bytes(fx: &mut dyn Fixture) {
    let s = fx.store();
    // Ten inputs of 100 bytes, received at 1000, 1001, … 1009.
    let rejected = (0..10)
        .map(|n| rejected_input(n, 100, 1000 + i64::try_from(n).unwrap()))
        .collect();
    s.append(AppendBatch {
        events: Vec::new(),
        rejected,
        dedup_window_ms: WINDOW_MS,
    })
    .await
    .unwrap();
    // Nothing is old enough, all fits: nothing goes.
    assert_eq!(s.prune_rejected(1000, 10_000).await.unwrap(), 0);
    // The two received before 1002 go by age.
    assert_eq!(s.prune_rejected(1002, 10_000).await.unwrap(), 2);
    // 800 bytes left; a 450-byte bound keeps the newest four (400 bytes).
    assert_eq!(s.prune_rejected(0, 450).await.unwrap(), 4);
    let left = s.rejected(100).await.unwrap();
    let reasons: Vec<&str> = left.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons, ["bad 9", "bad 8", "bad 7", "bad 6"]);
    assert_eq!(s.stats().await.unwrap().rejected, 4);
    // A bound smaller than one input empties the table.
    assert_eq!(s.prune_rejected(0, 50).await.unwrap(), 4);
    assert!(s.rejected(100).await.unwrap().is_empty());
}

fn sighting(destination: &str, key: &str, count: u64, at: i64) -> UnmappedTrait {
    UnmappedTrait {
        destination: destination.to_owned(),
        key: key.to_owned(),
        count,
        first_seen_ms: at,
        last_seen_ms: at,
    }
}

/// Unmapped trait keys add up per destination, long keys are cut, and only the most recently
/// seen keys of a destination are kept.
pub async fn unmapped_traits_counted_and_bounded(fx: &mut dyn Fixture) {
    let s = fx.store();
    s.record_unmapped_traits(vec![
        sighting(DEST, "plan", 2, 1000),
        sighting(DEST, "plan", 1, 3000),
        sighting(OTHER, "plan", 1, 1500),
        sighting(DEST, "seats", 1, 2000),
    ])
    .await
    .unwrap();
    s.record_unmapped_traits(vec![sighting(DEST, "plan", 4, 500)])
        .await
        .unwrap();
    let rows = s.unmapped_traits(DEST, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].key.as_str(),
            rows[0].count,
            rows[0].first_seen_ms,
            rows[0].last_seen_ms
        ),
        ("plan", 7, 500, 3000)
    );
    assert_eq!((rows[1].key.as_str(), rows[1].count), ("seats", 1));
    assert_eq!(s.unmapped_traits(OTHER, 10).await.unwrap().len(), 1);
    assert_eq!(s.unmapped_traits(DEST, 1).await.unwrap().len(), 1);
    // A key longer than the bound is cut on a character boundary.
    let long = "é".repeat(MAX_UNMAPPED_KEY_BYTES);
    s.record_unmapped_traits(vec![sighting(OTHER, &long, 1, 2000)])
        .await
        .unwrap();
    let other = s.unmapped_traits(OTHER, 10).await.unwrap();
    assert!(other.iter().all(|t| t.key.len() <= MAX_UNMAPPED_KEY_BYTES));
    assert!(other.iter().any(|t| t.key.starts_with("éé")));
    // Past the bound, the least recently seen keys go; other destinations are untouched.
    let flood: Vec<UnmappedTrait> = (0..MAX_UNMAPPED_TRAITS_PER_DESTINATION + 10)
        .map(|i| {
            sighting(
                DEST,
                &format!("random-{i:05}"),
                1,
                10_000 + i64::try_from(i).unwrap(),
            )
        })
        .collect();
    s.record_unmapped_traits(flood).await.unwrap();
    let rows = s.unmapped_traits(DEST, usize::MAX / 2).await.unwrap();
    assert_eq!(rows.len(), MAX_UNMAPPED_TRAITS_PER_DESTINATION);
    assert!(
        rows.iter()
            .all(|t| t.key != "plan" && t.key != "random-00000")
    );
    assert_eq!(s.unmapped_traits(OTHER, 10).await.unwrap().len(), 2);
}

/// An identify from `key` with `email` in its traits, received at `at`.
fn identify_with_email(message_id: &str, key: &str, email: &str, at: i64) -> NewEvent {
    let mut e = ev(message_id, key, at);
    e.raw = format!(
        r#"{{"type":"identify","messageId":"{message_id}","userId":"{key}","traits":{{"email":"{email}"}}}}"#
    )
    .into_bytes();
    e.event_type = "identify".into();
    e.email = Some(email.into());
    e
}

/// The console's event search: every filter, newest first, a page at a time by keyset.
pub async fn events_listed_newest_first_by_keyset(fx: &mut dyn Fixture) {
    let s = fx.store();
    let mut track = ev("t1", "k1", 1003);
    track.event_type = "track".to_owned();
    let mut other_source = ev("o1", "k3", 1004);
    other_source.source = "backend".to_owned();
    append_all(
        s,
        vec![
            identify_with_email("i1", "k1", "Ann@Example.com", 1000),
            identify_with_email("i2", "k2", "bob@example.com", 1001),
            ev("i3", "k1", 1002),
            track,
            other_source,
        ],
    )
    .await;
    let list = |q: EventQuery| async move {
        s.list_events(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message_id)
            .collect::<Vec<_>>()
    };
    let page = |limit| EventQuery {
        limit,
        ..EventQuery::default()
    };
    assert_eq!(list(page(10)).await, ["o1", "t1", "i3", "i2", "i1"]);
    let first = s.list_events(&page(2)).await.unwrap();
    assert_eq!(first.len(), 2);
    let next = EventQuery {
        before_id: Some(first[1].event_id),
        ..page(2)
    };
    assert_eq!(
        list(next).await,
        ["i3", "i2"],
        "the next page starts after the last row"
    );
    assert_eq!(first[0].deliveries.len(), 1);
    assert_eq!(first[0].deliveries[0].status, DeliveryStatus::Pending);
    assert_eq!(first[0].source, "backend");

    let by = |f: fn(&mut EventQuery)| {
        let mut q = page(10);
        f(&mut q);
        q
    };
    assert_eq!(
        list(by(|q| q.contact_key = Some("k1".into()))).await,
        ["t1", "i3", "i1"]
    );
    assert_eq!(
        list(by(|q| q.email = Some("ann@EXAMPLE.com".into()))).await,
        ["t1", "i3", "i1"],
        "an email finds its contact's events, whatever the case"
    );
    assert_eq!(
        list(by(|q| q.event_type = Some("track".into()))).await,
        ["t1"]
    );
    assert_eq!(
        list(by(|q| q.source = Some("backend".into()))).await,
        ["o1"]
    );
    assert_eq!(list(by(|q| q.message_id = Some("i2".into()))).await, ["i2"]);
    assert_eq!(
        list(by(|q| {
            q.since_ms = Some(1001);
            q.until_ms = Some(1003);
        }))
        .await,
        ["i3", "i2"]
    );
    assert!(
        list(by(|q| q.status = Some(DeliveryStatus::Dead)))
            .await
            .is_empty()
    );

    let lease = lease_key(s, "k2", 2000).await;
    let p = pending(s, &lease).await;
    s.settle(
        &lease,
        2000,
        vec![(p[0].delivery_id, refused("400: email is invalid"))],
        Some(attempt(&[p[0].delivery_id], 2000, 400, "dead-lettered")),
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();
    let dead = s
        .list_events(&by(|q| q.status = Some(DeliveryStatus::Dead)))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, "i2");
    assert_eq!(
        dead[0].deliveries[0].reason.as_deref(),
        Some("400: email is invalid")
    );
    assert!(dead[0].raw.contains("bob@example.com"), "{}", dead[0].raw);
    assert_eq!(
        s.delivery_messages(&[p[0].delivery_id, 999_999])
            .await
            .unwrap(),
        [(p[0].delivery_id, "i2".to_owned())],
        "unknown ids are left out"
    );
    let one = DeliveryFilter {
        delivery_id: Some(p[0].delivery_id),
        ..DeliveryFilter::default()
    };
    assert_eq!(s.dead_letters(&one).await.unwrap().len(), 1);
    assert_eq!(s.requeue_dead(&one, 3000).await.unwrap(), 1);
}

/// A time range lists newest receive time first (then newest id), page after page with the
/// previous page's last id as cursor, even where ids do not follow receive times (several nodes,
/// clock steps): every event of the range exactly once, none outside it.
pub async fn time_range_pages_by_receive_time(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![
            ev("a", "k1", 1005),
            ev("b", "k2", 1001),
            ev("c", "k1", 1003),
            ev("d", "k3", 1003),
            ev("e", "k2", 1010),
            ev("f", "k1", 999),
        ],
    )
    .await;
    let walk = |since: Option<i64>, until: Option<i64>, limit: usize| async move {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = s
                .list_events(&EventQuery {
                    since_ms: since,
                    until_ms: until,
                    before_id: before,
                    limit,
                    ..EventQuery::default()
                })
                .await
                .unwrap();
            seen.extend(page.iter().map(|e| e.message_id.clone()));
            match page.last() {
                Some(last) if page.len() == limit => before = Some(last.event_id),
                _ => return seen,
            }
        }
    };
    assert_eq!(walk(Some(1000), Some(1010), 10).await, ["a", "d", "c", "b"]);
    assert_eq!(
        walk(Some(1000), Some(1010), 1).await,
        ["a", "d", "c", "b"],
        "one row per page, cursor by cursor"
    );
    assert_eq!(walk(Some(1000), None, 2).await, ["e", "a", "d", "c", "b"]);
    assert_eq!(walk(None, Some(1004), 2).await, ["d", "c", "b", "f"]);
}

/// The backlog read from indexes agrees with the full `stats()` count.
pub async fn backlog_agrees_with_stats(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert!(s.backlog().await.unwrap().is_empty());
    append_all(
        s,
        vec![
            ev("a1", "k1", 1000),
            ev("a2", "k1", 1500),
            ev("b1", "k2", 2000),
        ],
    )
    .await;
    let lease = lease_key(s, "k1", 3000).await;
    let p = pending(s, &lease).await;
    s.settle(&lease, 3000, vec![(p[0].delivery_id, refused("no"))], None)
        .await
        .unwrap();
    s.release(&lease, None).await.unwrap();
    let backlog = s.backlog().await.unwrap();
    let stats = s.stats().await.unwrap();
    assert_eq!(backlog.len(), 1);
    let (b, st) = (&backlog[0], &stats.destinations[0]);
    assert_eq!(b.destination, DEST);
    assert_eq!((b.pending, b.pending_contacts, b.dead), (2, 2, 1));
    assert_eq!(
        (b.pending, b.pending_contacts, b.dead),
        (st.pending, st.pending_contacts, st.dead)
    );
    assert_eq!(b.oldest_pending_received_ms, Some(1500));
    assert_eq!(b.oldest_pending_received_ms, st.oldest_pending_received_ms);
    assert_eq!(b.next_attempt_ms, st.next_attempt_ms);
}

/// `ev_with_skip` of one call type.
fn typed(message_id: &str, key: &str, at: i64, event_type: &str) -> NewEvent {
    let mut e = ev_with_skip(message_id, key, at);
    e.event_type = event_type.to_owned();
    e
}

/// The count of one (destination, kind, status) in `kind_counts`.
async fn kind_count(
    s: &dyn freshgate_store::Store,
    destination: &str,
    event_type: &str,
    status: DeliveryStatus,
) -> u64 {
    s.kind_counts()
        .await
        .unwrap()
        .iter()
        .filter(|k| {
            k.destination == destination && k.event_type == event_type && k.status == status
        })
        .map(|k| k.count)
        .sum()
}

/// `(kind, pending, oldest)` of one destination's backlog.
async fn backlog_kinds(
    s: &dyn freshgate_store::Store,
    destination: &str,
) -> Vec<(String, u64, Option<i64>)> {
    s.backlog()
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.destination == destination)
        .flat_map(|b| b.kinds)
        .map(|k| (k.event_type, k.pending, k.oldest_pending_received_ms))
        .collect()
}

/// The doctor's recount of every delivery agrees with the counters.
async fn counters_agree(s: &dyn freshgate_store::Store, step: &str) {
    assert_eq!(
        s.integrity_check().await.unwrap(),
        Vec::<String>::new(),
        "after {step}"
    );
}

/// The delivery counters and the per-kind backlog follow every path that moves a delivery:
/// append (pending and skipped), settle, dead-letter replay, replay, late routing, and prune
/// with its cascade; after each step the doctor's recount agrees with them.
pub async fn counters_follow_every_path(fx: &mut dyn Fixture) {
    use DeliveryStatus::{Dead, Delivered, Pending, Skipped};
    let s = fx.store();
    let kinds = |v: &[(&str, u64, Option<i64>)]| -> Vec<(String, u64, Option<i64>)> {
        v.iter()
            .map(|(t, n, at)| ((*t).to_owned(), *n, *at))
            .collect()
    };
    append_all(
        s,
        vec![
            typed("i1", "k1", 1000, "identify"),
            typed("t1", "k1", 1100, "track"),
            typed("t2", "k2", 1200, "track"),
            typed("g1", "k2", 1300, "group"),
        ],
    )
    .await;
    counters_agree(s, "append").await;
    assert_eq!(kind_count(s, DEST, "track", Pending).await, 2);
    assert_eq!(kind_count(s, OTHER, "track", Skipped).await, 2);
    assert_eq!(kind_count(s, OTHER, "group", Skipped).await, 1);
    assert_eq!(
        backlog_kinds(s, DEST).await,
        kinds(&[
            ("group", 1, Some(1300)),
            ("identify", 1, Some(1000)),
            ("track", 2, Some(1100))
        ])
    );
    let stats = s.stats().await.unwrap();
    assert_eq!(stats.events, 4);

    // Settle: the identify delivered, the first track dead-lettered.
    let lease = lease_key(s, "k1", 2000).await;
    let p = pending(s, &lease).await;
    s.settle(
        &lease,
        2000,
        vec![
            (p[0].delivery_id, delivered()),
            (p[1].delivery_id, refused("no")),
        ],
        None,
    )
    .await
    .unwrap();
    s.release(&lease, None).await.unwrap();
    counters_agree(s, "settle").await;
    assert_eq!(kind_count(s, DEST, "identify", Delivered).await, 1);
    assert_eq!(kind_count(s, DEST, "track", Dead).await, 1);
    assert_eq!(
        backlog_kinds(s, DEST).await,
        kinds(&[("group", 1, Some(1300)), ("track", 1, Some(1200))])
    );
    let b = &s.backlog().await.unwrap()[0];
    assert_eq!((b.destination.as_str(), b.pending, b.dead), (DEST, 2, 1));
    assert_eq!(b.oldest_pending_received_ms, Some(1200));

    // The dead letter replayed: pending again, and the oldest track again.
    let dest_only = DeliveryFilter {
        destination: Some(DEST.to_owned()),
        ..DeliveryFilter::default()
    };
    assert_eq!(s.requeue_dead(&dest_only, 3000).await.unwrap(), 1);
    counters_agree(s, "dead-letter replay").await;
    assert_eq!(kind_count(s, DEST, "track", Dead).await, 0);
    assert_eq!(
        backlog_kinds(s, DEST).await,
        kinds(&[("group", 1, Some(1300)), ("track", 2, Some(1100))])
    );

    // A replay of the delivered identify.
    assert_eq!(replay_matching(s, &dest_only, 3000).await, 1);
    counters_agree(s, "replay").await;
    assert_eq!(kind_count(s, DEST, "identify", Delivered).await, 0);
    assert_eq!(kind_count(s, DEST, "identify", Pending).await, 1);

    // Late routing to a destination added since: its kind comes from the stored event.
    let g1 = &s.event_traces("g1").await.unwrap()[0];
    let added = s
        .add_deliveries(
            vec![LateDelivery {
                event_id: g1.event_id,
                contact_key: "k2".to_owned(),
                delivery: NewDelivery {
                    destination: "late".to_owned(),
                    skip_reason: None,
                    skip_code: None,
                },
            }],
            4000,
        )
        .await
        .unwrap();
    assert_eq!(added, 1);
    counters_agree(s, "late routing").await;
    assert_eq!(
        backlog_kinds(s, "late").await,
        kinds(&[("group", 1, Some(1300))])
    );

    // Deliver everything, then prune: the cascade from the events takes the counts to zero.
    // (k2 was leased beside k1 at 2000 and never released: wait its lease out.)
    let now = 2000 + LEASE_MS + 1;
    let mut leases = lease_all(s, now).await;
    leases.extend(
        s.lease_contacts("late", "worker-1", now, LEASE_MS, 100)
            .await
            .unwrap(),
    );
    for lease in leases {
        let settlements = pending(s, &lease)
            .await
            .iter()
            .map(|p| (p.delivery_id, delivered()))
            .collect();
        s.settle(&lease, now, settlements, None).await.unwrap();
        s.release(&lease, None).await.unwrap();
    }
    counters_agree(s, "deliver all").await;
    let left = s.backlog().await.unwrap();
    assert!(left.iter().all(|b| b.kinds.is_empty()), "{left:?}");
    s.prune(now, now).await.unwrap();
    counters_agree(s, "prune").await;
    assert_eq!(s.kind_counts().await.unwrap(), Vec::new());
    let stats = s.stats().await.unwrap();
    assert_eq!(stats.events, 0);
    assert!(
        stats
            .destinations
            .iter()
            .all(|d| d.pending == 0 && d.delivered == 0 && d.dead == 0),
        "{stats:?}"
    );
}

/// Events and calls per minute, for the console's charts.
pub async fn per_minute_counts(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(
        s,
        vec![
            ev("a1", "k1", 60_000),
            ev("a2", "k1", 119_999),
            ev("a3", "k2", 120_000),
        ],
    )
    .await;
    let per = s.events_per_minute(0).await.unwrap();
    let counts: Vec<(i64, u64)> = per.iter().map(|m| (m.minute_ms, m.count)).collect();
    assert_eq!(counts, [(60_000, 2), (120_000, 1)]);
    assert_eq!(s.events_per_minute(120_000).await.unwrap().len(), 1);
    s.record_calls("acct", 61_000, 2).await.unwrap();
    s.record_calls("acct", 62_500, 1).await.unwrap();
    s.record_calls("acct", 185_000, 4).await.unwrap();
    s.record_calls("other", 61_000, 9).await.unwrap();
    let calls: Vec<(i64, u64)> = s
        .calls_per_minute("acct", 0)
        .await
        .unwrap()
        .iter()
        .map(|m| (m.minute_ms, m.count))
        .collect();
    assert_eq!(calls, [(60_000, 3), (180_000, 4)]);
}

/// A pause is recorded for other processes to see, and cleared on resume.
pub async fn pauses_recorded_and_cleared(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert!(s.pauses().await.unwrap().is_empty());
    let pause = DestinationPause {
        destination: DEST.to_owned(),
        reason: "401: the API key was refused".to_owned(),
        since_ms: 1000,
        until_ms: 61_000,
    };
    s.set_pause(DEST, Some(pause.clone())).await.unwrap();
    s.set_pause(
        DEST,
        Some(DestinationPause {
            since_ms: 5000,
            until_ms: 121_000,
            ..pause.clone()
        }),
    )
    .await
    .unwrap();
    let got = s.pauses().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].since_ms, 1000, "a renewed pause keeps its start");
    assert_eq!(got[0].until_ms, 121_000, "and moves its next probe");
    fx.reopen().await;
    let s = fx.store();
    assert_eq!(s.pauses().await.unwrap().len(), 1, "kept across restarts");
    s.set_pause(DEST, None).await.unwrap();
    assert!(s.pauses().await.unwrap().is_empty());
}

/// Only pauses whose next probe is overdue are cleared; a pause another node holds stays.
pub async fn expired_pauses_cleared_others_kept(fx: &mut dyn Fixture) {
    let s = fx.store();
    let pause = |destination: &str, until_ms| DestinationPause {
        destination: destination.to_owned(),
        reason: "401: the API key was refused".to_owned(),
        since_ms: 1000,
        until_ms,
    };
    s.set_pause(DEST, Some(pause(DEST, 61_000))).await.unwrap();
    s.set_pause(OTHER, Some(pause(OTHER, 200_000)))
        .await
        .unwrap();
    assert_eq!(
        s.clear_expired_pauses(61_000).await.unwrap(),
        0,
        "due, not overdue"
    );
    assert_eq!(s.clear_expired_pauses(100_000).await.unwrap(), 1);
    assert_eq!(s.pauses().await.unwrap(), [pause(OTHER, 200_000)]);
    assert_eq!(s.clear_expired_pauses(100_000).await.unwrap(), 0);
}

/// A dead letter counts every attempt its trace shows, also those before a requeue.
pub async fn dead_letter_counts_every_attempt(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("a1", "k1", 1000)]).await;
    for at in [2000, 3000] {
        let lease = lease_key(s, "k1", at).await;
        let p = pending(s, &lease).await;
        s.settle(
            &lease,
            at,
            vec![(p[0].delivery_id, refused("400"))],
            Some(attempt(&[p[0].delivery_id], at, 400, "dead-lettered")),
        )
        .await
        .unwrap();
        s.release(&lease, None).await.unwrap();
        if at == 2000 {
            s.requeue_dead(&DeliveryFilter::default(), at + 1)
                .await
                .unwrap();
        }
    }
    let dead = s.dead_letters(&DeliveryFilter::default()).await.unwrap();
    let trace = s.event_traces("a1").await.unwrap();
    assert_eq!(trace[0].deliveries[0].attempts.len(), 2);
    assert_eq!(dead[0].attempts, 2, "the list agrees with the trace");
}

/// Contact ids are upserted in batches (the last id of a key wins) and read back in batch, in
/// key order, per destination.
pub async fn contact_ids_upserted_and_read_in_batch(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert!(
        s.contact_ids(DEST, vec!["u1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    s.put_contact_ids(DEST, Vec::new()).await.unwrap();
    s.put_contact_ids(
        DEST,
        vec![("u2".into(), 20), ("u1".into(), 10), ("u2".into(), 21)],
    )
    .await
    .unwrap();
    s.put_contact_ids(OTHER, vec![("u1".into(), 99)])
        .await
        .unwrap();
    // A contact merged or re-created in the CRM gets its new id.
    s.put_contact_ids(DEST, vec![("u1".into(), 11)])
        .await
        .unwrap();
    assert_eq!(
        s.contact_ids(
            DEST,
            vec!["u3".into(), "u2".into(), "u1".into(), "u2".into()]
        )
        .await
        .unwrap(),
        vec![("u1".to_owned(), 11), ("u2".to_owned(), 21)]
    );
    assert_eq!(
        s.contact_ids(OTHER, vec!["u1".into()]).await.unwrap(),
        vec![("u1".to_owned(), 99)]
    );
}

/// Account shadows are kept per destination and account key, replaced whole.
pub async fn account_shadow_get_put(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert_eq!(s.account_shadow(DEST, "group:g1").await.unwrap(), None);
    s.put_account_shadow(DEST, "group:g1", b"{\"a\":1}".to_vec())
        .await
        .unwrap();
    s.put_account_shadow(DEST, "group:g1", b"{\"a\":2}".to_vec())
        .await
        .unwrap();
    s.put_account_shadow(OTHER, "group:g1", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(
        s.account_shadow(DEST, "group:g1").await.unwrap(),
        Some(b"{\"a\":2}".to_vec())
    );
    assert_eq!(s.account_shadow(DEST, "company:g1").await.unwrap(), None);
    // Contact shadows and account shadows do not share keys.
    assert_eq!(s.shadow(DEST, "group:g1").await.unwrap(), None);
}

/// One owner at a time may find or create a list; a claim expires; the first recorded id wins
/// and ends every claim.
pub async fn list_created_once_by_one_claimant(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert_eq!(s.list_id(DEST, "vip").await.unwrap(), None);
    assert_eq!(
        s.claim_list(DEST, "vip", "node-a", 1000, 500)
            .await
            .unwrap(),
        ListClaim::Claimed
    );
    assert_eq!(
        s.claim_list(DEST, "vip", "node-b", 1100, 500)
            .await
            .unwrap(),
        ListClaim::Busy { until_ms: 1500 }
    );
    // The holder may renew its claim.
    assert_eq!(
        s.claim_list(DEST, "vip", "node-a", 1200, 500)
            .await
            .unwrap(),
        ListClaim::Claimed
    );
    assert_eq!(s.list_id(DEST, "vip").await.unwrap(), None);
    // The holder crashed: once the claim has expired another owner takes it.
    assert_eq!(
        s.claim_list(DEST, "vip", "node-b", 1700, 500)
            .await
            .unwrap(),
        ListClaim::Claimed
    );
    assert_eq!(s.put_list_id(DEST, "vip", 70).await.unwrap(), 70);
    // A late second creator does not replace the recorded id.
    assert_eq!(s.put_list_id(DEST, "vip", 71).await.unwrap(), 70);
    assert_eq!(s.list_id(DEST, "vip").await.unwrap(), Some(70));
    assert_eq!(
        s.claim_list(DEST, "vip", "node-a", 9000, 500)
            .await
            .unwrap(),
        ListClaim::Known(70)
    );
    // Found by name without a claim; other destinations and names are apart.
    assert_eq!(s.put_list_id(DEST, "churn", 5).await.unwrap(), 5);
    assert_eq!(s.list_id(OTHER, "vip").await.unwrap(), None);
}

/// Several callers racing for one list: exactly one gets the claim.
pub async fn list_claim_race_has_one_winner(fx: &mut dyn Fixture) {
    let s = fx.store();
    let claims = futures::future::join_all((0..8).map(|i| async move {
        s.claim_list(DEST, "race", &format!("n{i}"), 1000, 60_000)
            .await
    }))
    .await;
    let won = claims
        .into_iter()
        .map(Result::unwrap)
        .filter(|c| *c == ListClaim::Claimed)
        .count();
    assert_eq!(won, 1);
}

/// An activity intent is recorded once: the second attempt sees the first (in doubt), a created
/// one is final, a refused call's intent can be cleared, and old intents are pruned.
pub async fn activity_intents_prevent_duplicates(fx: &mut dyn Fixture) {
    let s = fx.store();
    assert_eq!(s.intend_activity(DEST, "m1", 1000).await.unwrap(), None);
    // A crash after the call: the retry finds the intent and must not create blindly.
    assert_eq!(
        s.intend_activity(DEST, "m1", 2000).await.unwrap(),
        Some(ActivityIntent::Intended { at_ms: 1000 })
    );
    s.activity_created(DEST, "m1", 555).await.unwrap();
    assert_eq!(
        s.intend_activity(DEST, "m1", 3000).await.unwrap(),
        Some(ActivityIntent::Created { activity_id: 555 })
    );
    // A refused call: cleared, so a later attempt may try again. A created one stays.
    assert_eq!(s.intend_activity(DEST, "m2", 1000).await.unwrap(), None);
    s.clear_activity_intent(DEST, "m2").await.unwrap();
    s.clear_activity_intent(DEST, "m1").await.unwrap();
    assert_eq!(s.intend_activity(DEST, "m2", 4000).await.unwrap(), None);
    assert_eq!(s.intend_activity(OTHER, "m1", 4000).await.unwrap(), None);
    assert_eq!(
        s.activity_intents(DEST, vec!["m2".into(), "m9".into(), "m1".into()])
            .await
            .unwrap(),
        vec![
            (
                "m1".to_owned(),
                ActivityIntent::Created { activity_id: 555 }
            ),
            ("m2".to_owned(), ActivityIntent::Intended { at_ms: 4000 }),
        ]
    );
    assert_eq!(s.prune_activity_intents(3000).await.unwrap(), 1);
    assert_eq!(
        s.activity_intents(DEST, vec!["m1".into(), "m2".into()])
            .await
            .unwrap(),
        vec![("m2".to_owned(), ActivityIntent::Intended { at_ms: 4000 })]
    );
}

/// Concurrent intents for one message: exactly one caller may make the call.
pub async fn activity_intent_race_has_one_caller(fx: &mut dyn Fixture) {
    let s = fx.store();
    let answers =
        futures::future::join_all((0..8).map(|_| s.intend_activity(DEST, "race", 1000))).await;
    let fresh = answers
        .into_iter()
        .map(Result::unwrap)
        .filter(Option::is_none)
        .count();
    assert_eq!(fresh, 1);
}

/// Field metadata of other entities is kept per account and entity, apart from contact fields,
/// newest fetch winning.
pub async fn entity_field_metadata_by_entity(fx: &mut dyn Fixture) {
    let s = fx.store();
    let at = |fetched_at_ms: i64, body: &[u8]| FieldMetadata {
        fetched_at_ms,
        body: body.to_vec(),
    };
    assert_eq!(
        s.entity_field_metadata("acct", "sales_account")
            .await
            .unwrap(),
        None
    );
    s.put_entity_field_metadata("acct", "sales_account", at(2000, b"[a]"))
        .await
        .unwrap();
    s.put_entity_field_metadata("acct", "sales_account", at(1000, b"[old]"))
        .await
        .unwrap();
    s.put_entity_field_metadata("acct", "deal", at(500, b"[d]"))
        .await
        .unwrap();
    assert_eq!(
        s.entity_field_metadata("acct", "sales_account")
            .await
            .unwrap(),
        Some(at(2000, b"[a]"))
    );
    assert_eq!(
        s.entity_field_metadata("acct", "deal").await.unwrap(),
        Some(at(500, b"[d]"))
    );
    assert_eq!(s.field_metadata("acct").await.unwrap(), None);
}

fn membership(list: &str, key: &str, action: ListAction, ts_ms: i64) -> MembershipChange {
    MembershipChange {
        list: list.into(),
        contact_key: key.into(),
        action,
        ts_ms,
        contact_id: None,
        delivery_id: None,
    }
}

fn finished(d: &DueMembership, contact_id: Option<i64>, end: MembershipEnd) -> MembershipResult {
    MembershipResult {
        list: d.list.clone(),
        contact_key: d.contact_key.clone(),
        action: d.action,
        ts_ms: d.ts_ms,
        contact_id,
        end,
    }
}

/// List memberships: newest event per (list, contact) wins; taken rows are held from other
/// takers; a finish applies only to the version taken; a repeat of a sent membership costs
/// nothing; retries come back when due; dead ones keep their reason out of the way.
pub async fn list_memberships_newest_wins_and_finish(fx: &mut dyn Fixture) {
    let s = fx.store();
    s.record_memberships(
        DEST,
        vec![
            membership("vip", "u1", ListAction::Add, 100),
            membership("vip", "u2", ListAction::Add, 100),
            // Older than what is recorded next for u1/churn: ignored.
            membership("churn", "u1", ListAction::Add, 300),
            membership("churn", "u1", ListAction::Remove, 200),
        ],
        1000,
    )
    .await
    .unwrap();
    s.record_memberships(
        OTHER,
        vec![membership("vip", "u1", ListAction::Add, 1)],
        1000,
    )
    .await
    .unwrap();
    let due = s.take_memberships(DEST, 1000, 5000, 10).await.unwrap();
    let mut got: Vec<(String, String, ListAction, i64)> = due
        .iter()
        .map(|d| (d.list.clone(), d.contact_key.clone(), d.action, d.ts_ms))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("churn".into(), "u1".into(), ListAction::Add, 300),
            ("vip".into(), "u1".into(), ListAction::Add, 100),
            ("vip".into(), "u2".into(), ListAction::Add, 100),
        ]
    );
    // Held: nobody else takes them before the hold ends.
    assert!(
        s.take_memberships(DEST, 2000, 5000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A newer change of u2 arrives while its older version is in flight.
    s.record_memberships(
        DEST,
        vec![membership("vip", "u2", ListAction::Remove, 150)],
        2000,
    )
    .await
    .unwrap();
    let by = |key: &str, list: &str| {
        due.iter()
            .find(|d| d.contact_key == key && d.list == list)
            .unwrap()
            .clone()
    };
    s.finish_memberships(
        DEST,
        vec![
            finished(&by("u1", "vip"), Some(11), MembershipEnd::Done),
            finished(&by("u2", "vip"), Some(12), MembershipEnd::Done),
            finished(
                &by("u1", "churn"),
                None,
                MembershipEnd::Retry {
                    at_ms: 3000,
                    error: "HTTP 503".into(),
                },
            ),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    // u2's newer removal is still pending (the finish named the older version) and due now.
    let again = s.take_memberships(DEST, 3000, 5000, 10).await.unwrap();
    let mut got: Vec<(String, String, ListAction, u32, Option<i64>)> = again
        .iter()
        .map(|d| {
            (
                d.list.clone(),
                d.contact_key.clone(),
                d.action,
                d.attempts,
                d.contact_id,
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("churn".into(), "u1".into(), ListAction::Add, 1, None),
            ("vip".into(), "u2".into(), ListAction::Remove, 0, Some(12)),
        ]
    );
    let churn = again.iter().find(|d| d.list == "churn").unwrap();
    s.finish_memberships(
        DEST,
        vec![finished(
            churn,
            None,
            MembershipEnd::Dead {
                reason: "no contact with external_id u1".into(),
            },
        )],
        Vec::new(),
    )
    .await
    .unwrap();
    // A repeat of u1's sent membership stays done: no call for it.
    s.record_memberships(
        DEST,
        vec![membership("vip", "u1", ListAction::Add, 400)],
        4000,
    )
    .await
    .unwrap();
    let counts = s.membership_counts(DEST).await.unwrap();
    assert_eq!(
        counts,
        MembershipCounts {
            pending: 1,
            done: 1,
            dead: 1
        }
    );
    let last = s.take_memberships(DEST, 9000, 5000, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].contact_key, "u2");
    assert_eq!(
        s.membership_counts(OTHER).await.unwrap(),
        MembershipCounts {
            pending: 1,
            done: 0,
            dead: 0
        }
    );
}

/// The list call the flusher made for a membership joins the trace of the event it came from,
/// after the hand-off; a pruned (unknown) delivery id is skipped.
pub async fn list_membership_call_joins_the_event_trace(fx: &mut dyn Fixture) {
    let s = fx.store();
    append_all(s, vec![ev("m1", "k1", 1000)]).await;
    let lease = lease_key(s, "k1", 1000).await;
    let delivery_id = pending(s, &lease).await[0].delivery_id;
    s.record_memberships(
        DEST,
        vec![MembershipChange {
            delivery_id: Some(delivery_id),
            ..membership("vip", "k1", ListAction::Add, 1000)
        }],
        1000,
    )
    .await
    .unwrap();
    let due = s.take_memberships(DEST, 1000, 5000, 10).await.unwrap();
    assert_eq!(due[0].delivery_id, Some(delivery_id));
    let mut call = attempt(
        &[delivery_id, 999_999],
        1500,
        200,
        "list membership sent: 1 contacts in this call",
    );
    call.request_line = "PUT /crm/sales/api/lists/7/add_contacts".into();
    s.finish_memberships(
        DEST,
        vec![finished(&due[0], Some(5), MembershipEnd::Done)],
        vec![call],
    )
    .await
    .unwrap();
    let traces = s.event_traces("m1").await.unwrap();
    let attempts = &traces[0].deliveries[0].attempts;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].request_line,
        "PUT /crm/sales/api/lists/7/add_contacts"
    );
    assert_eq!(
        s.membership_counts(DEST).await.unwrap().done,
        1,
        "finished with its attempt"
    );
    // A list deleted in the CRM is forgotten (only the id that was deleted), then found again.
    assert_eq!(s.put_list_id(DEST, "vip", 7).await.unwrap(), 7);
    s.forget_list_id(DEST, "vip", 8).await.unwrap();
    assert_eq!(s.list_id(DEST, "vip").await.unwrap(), Some(7));
    s.forget_list_id(DEST, "vip", 7).await.unwrap();
    assert_eq!(s.list_id(DEST, "vip").await.unwrap(), None);
    assert_eq!(
        s.claim_list(DEST, "vip", "n1", 2000, 500).await.unwrap(),
        ListClaim::Claimed
    );
}

/// What `replay` does once routing has decided to take everything: every finished delivery
/// matching `filter` put back to pending. Returns how many.
async fn replay_matching(
    s: &dyn freshgate_store::Store,
    filter: &DeliveryFilter,
    now_ms: i64,
) -> u64 {
    let finished = s.finished_deliveries(filter, 0, 10_000).await.unwrap();
    let ids = finished.iter().map(|f| f.delivery_id).collect();
    s.reopen(ids, Reopen::Replay, now_ms).await.unwrap()
}
