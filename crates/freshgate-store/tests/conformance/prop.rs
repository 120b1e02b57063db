//! Property: whatever the interleaving of appends and settlements on a few keys, a leased key
//! hands out exactly its unsettled deliveries in append order, only keys that are due are leased,
//! and a settled delivery never comes back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use freshgate_store::{Settlement, Store};
use proptest::prelude::*;

use crate::harness::{Backend, append_all, ev, lease_all, pending};

#[derive(Debug, Clone)]
enum Then {
    Nothing,
    Retry,
    Dead,
    Skip,
}

#[derive(Debug, Clone)]
enum Op {
    Append { key: u8, count: u8 },
    Work { deliver: usize, then: Then },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 1u8..4).prop_map(|(key, count)| Op::Append { key, count }),
        2 => (0usize..4, prop_oneof![
            Just(Then::Nothing),
            Just(Then::Retry),
            Just(Then::Dead),
            Just(Then::Skip),
        ])
        .prop_map(|(deliver, then)| Op::Work { deliver, then }),
    ]
}

/// What the store should hold, per key: pending message ids in order and when the key is due.
#[derive(Default)]
struct Model {
    queues: BTreeMap<String, VecDeque<String>>,
    due: BTreeMap<String, i64>,
    settled: BTreeSet<String>,
    next_mid: u32,
}

async fn run(store: &dyn Store, ops: Vec<Op>) {
    let mut m = Model::default();
    let mut now = 1000;
    for op in ops {
        now += 10;
        match op {
            Op::Append { key, count } => {
                let key = format!("k{key}");
                let mut events = Vec::new();
                for _ in 0..count {
                    m.next_mid += 1;
                    let mid = format!("m{}", m.next_mid);
                    events.push(ev(&mid, &key, now));
                    let q = m.queues.entry(key.clone()).or_default();
                    if q.is_empty() {
                        m.due.insert(key.clone(), now);
                    }
                    q.push_back(mid);
                }
                append_all(store, events).await;
            }
            Op::Work { deliver, then } => {
                let leases = lease_all(store, now).await;
                let leased: BTreeSet<String> =
                    leases.iter().map(|l| l.contact_key.clone()).collect();
                let expected: BTreeSet<String> = m
                    .queues
                    .iter()
                    .filter(|(k, q)| !q.is_empty() && m.due[*k] <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                assert_eq!(leased, expected, "leased keys at {now}");
                for lease in leases {
                    let got = pending(store, &lease).await;
                    let q = m.queues.get_mut(&lease.contact_key).unwrap();
                    let got_mids: Vec<&String> = got.iter().map(|p| &p.message_id).collect();
                    assert_eq!(
                        got_mids,
                        q.iter().collect::<Vec<_>>(),
                        "FIFO of {}",
                        lease.contact_key
                    );
                    assert!(got.iter().all(|p| !m.settled.contains(&p.message_id)));
                    let n = deliver.min(got.len());
                    let mut settlements: Vec<_> = got[..n]
                        .iter()
                        .map(|p| (p.delivery_id, Settlement::Delivered))
                        .collect();
                    for p in &got[..n] {
                        m.settled.insert(p.message_id.clone());
                        q.pop_front();
                    }
                    if let Some(next) = got.get(n) {
                        let s = match then {
                            Then::Nothing => None,
                            Then::Retry => {
                                m.due.insert(lease.contact_key.clone(), now + 5);
                                Some(Settlement::Retry {
                                    at_ms: now + 5,
                                    error: "503".to_owned(),
                                })
                            }
                            Then::Dead => Some(Settlement::DeadLettered {
                                code: "refused".to_owned(),
                                reason: "400".to_owned(),
                            }),
                            Then::Skip => Some(Settlement::Skipped {
                                code: "unchanged".to_owned(),
                                reason: "unchanged".to_owned(),
                            }),
                        };
                        if let Some(s) = s {
                            if !matches!(s, Settlement::Retry { .. }) {
                                m.settled.insert(next.message_id.clone());
                                q.pop_front();
                            }
                            settlements.push((next.delivery_id, s));
                        }
                    }
                    store.settle(&lease, now, settlements, None).await.unwrap();
                    store.release(&lease, None).await.unwrap();
                }
            }
        }
        // The counters the console reads agree with the model and with a recount.
        let pending: u64 = store
            .kind_counts()
            .await
            .unwrap()
            .iter()
            .filter(|k| k.status == freshgate_store::DeliveryStatus::Pending)
            .map(|k| k.count)
            .sum();
        let modelled: usize = m.queues.values().map(VecDeque::len).sum();
        assert_eq!(
            usize::try_from(pending).unwrap(),
            modelled,
            "pending at {now}"
        );
        assert_eq!(store.integrity_check().await.unwrap(), Vec::<String>::new());
    }
}

/// Run the property against one backend.
pub fn check(backend: &dyn Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        rt.block_on(async {
            let fixture = backend.fresh().await;
            run(fixture.store(), ops).await;
            fixture.store().close().await;
        });
    });
}

#[test]
fn sqlite_fifo_and_settled_never_return() {
    check(&crate::sqlite::Sqlite::as_shipped());
    check(&crate::sqlite::Sqlite::tiny_runs());
}
