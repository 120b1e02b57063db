//! Which queued writes go into the writer's next group commit.
//!
//! Two lanes. **Ingest** is an HTTP request waiting for its acknowledgement, which comes only
//! after the commit; **background** is everything else (leases, settles, records, prunes), whose
//! callers wait on nobody outside. Taken first come first served, a burst of background work
//! starves ingest: when the hourly quota window slides past an hour of backlog, bulk jobs settle
//! 100 deliveries per contact for 100 contacts each, a whole group of 5,000 rows can be settles,
//! and requests wait behind several such groups (the soak saw acknowledgements take 2.5–8.7 s).
//!
//! So each group takes the queued ingest first, up to the group limit, then background work up
//! to its own smaller limit. Each lane contributes at least one command when it has any, so
//! neither can keep the other out, and each lane stays in arrival order.

use std::collections::VecDeque;

/// Which lane a queued write travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A client's request waits for this commit.
    Ingest,
    /// Delivery bookkeeping and maintenance.
    Background,
}

/// A queued write as the planner sees it.
pub(crate) trait Queued {
    fn lane(&self) -> Lane;
    /// Rows, roughly: what it costs the group's transaction.
    fn weight(&self) -> usize;
}

/// How much one group may take from each lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupLimits {
    /// Most ingest weight per group.
    pub(crate) ingest: usize,
    /// Most background weight per group: bounds how long a request waits behind delivery work
    /// (at ~45 µs a settled row, 1,000 rows are ~45 ms).
    pub(crate) background: usize,
}

/// Writes taken off the channel, not yet in a group.
#[derive(Debug)]
pub(crate) struct GroupQueue<T> {
    limits: GroupLimits,
    ingest: VecDeque<T>,
    ingest_weight: usize,
    background: VecDeque<T>,
}

impl<T: Queued> GroupQueue<T> {
    pub(crate) fn new(limits: GroupLimits) -> Self {
        Self {
            limits: GroupLimits {
                ingest: limits.ingest.max(1),
                background: limits.background.max(1),
            },
            ingest: VecDeque::new(),
            ingest_weight: 0,
            background: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        match item.lane() {
            Lane::Ingest => {
                self.ingest_weight += item.weight();
                self.ingest.push_back(item);
            }
            Lane::Background => self.background.push_back(item),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ingest.is_empty() && self.background.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.ingest.len() + self.background.len()
    }

    /// Whether a full group of ingest is already waiting. Past this point more appends are
    /// better left in the bounded channel, where a full queue sheds them, than held here.
    pub(crate) fn has_full_ingest_group(&self) -> bool {
        self.ingest_weight >= self.limits.ingest
    }

    /// Take the next group: ingest first, then background, each within its limit and at least
    /// one command from each lane that has any. Returns the group and its total weight.
    pub(crate) fn next_group(&mut self) -> (Vec<T>, usize) {
        let mut group = Vec::new();
        let ingest = take(&mut self.ingest, self.limits.ingest, &mut group);
        self.ingest_weight -= ingest;
        let background = take(&mut self.background, self.limits.background, &mut group);
        (group, ingest + background)
    }
}

/// Move items from the front of `lane` into `group` while the weight taken is under `limit`
/// (the first always goes). Returns the weight taken.
fn take<T: Queued>(lane: &mut VecDeque<T>, limit: usize, group: &mut Vec<T>) -> usize {
    let mut taken = 0;
    while taken < limit {
        let Some(item) = lane.pop_front() else { break };
        taken += item.weight();
        group.push(item);
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Item {
        id: usize,
        lane: Lane,
        weight: usize,
    }

    impl Queued for Item {
        fn lane(&self) -> Lane {
            self.lane
        }
        fn weight(&self) -> usize {
            self.weight
        }
    }

    const LIMITS: GroupLimits = GroupLimits {
        ingest: 500,
        background: 100,
    };

    fn item_strategy() -> impl Strategy<Value = (bool, usize)> {
        (any::<bool>(), 1_usize..300)
    }

    proptest! {
        /// Against the simple model (two FIFO lanes, drained in turns): every write is served
        /// exactly once, each lane in arrival order, a lane with work is never skipped, and a
        /// group never holds more than one item past a lane's limit.
        #[test]
        fn every_write_is_served_once_in_lane_order(
            arrivals in proptest::collection::vec(
                proptest::collection::vec(item_strategy(), 0..40), 1..20),
        ) {
            let mut queue = GroupQueue::new(LIMITS);
            let mut next_id = 0;
            let mut served: Vec<Item> = Vec::new();
            let mut pushed: Vec<Item> = Vec::new();
            for wave in arrivals {
                for (ingest, weight) in wave {
                    let lane = if ingest { Lane::Ingest } else { Lane::Background };
                    let item = Item { id: next_id, lane, weight };
                    next_id += 1;
                    pushed.push(item);
                    queue.push(item);
                }
                if queue.is_empty() {
                    continue;
                }
                let had_ingest = queue.ingest.front().is_some();
                let had_background = queue.background.front().is_some();
                let (group, weight) = queue.next_group();
                prop_assert_eq!(weight, group.iter().map(|i| i.weight).sum::<usize>());
                for (lane, had, limit) in [
                    (Lane::Ingest, had_ingest, LIMITS.ingest),
                    (Lane::Background, had_background, LIMITS.background),
                ] {
                    let of_lane: Vec<&Item> = group.iter().filter(|i| i.lane == lane).collect();
                    prop_assert_eq!(had, !of_lane.is_empty(), "lane {:?} skipped or invented", lane);
                    if let Some((last, before)) = of_lane.split_last() {
                        prop_assert!(before.iter().map(|i| i.weight).sum::<usize>() < limit);
                        prop_assert!(last.weight > 0);
                    }
                }
                // Ingest comes first in the group.
                let first_background = group.iter().position(|i| i.lane == Lane::Background);
                if let Some(b) = first_background {
                    prop_assert!(group[b..].iter().all(|i| i.lane == Lane::Background));
                }
                served.extend(group);
            }
            while !queue.is_empty() {
                served.extend(queue.next_group().0);
            }
            prop_assert_eq!(served.len(), pushed.len());
            for lane in [Lane::Ingest, Lane::Background] {
                let want: Vec<usize> =
                    pushed.iter().filter(|i| i.lane == lane).map(|i| i.id).collect();
                let got: Vec<usize> =
                    served.iter().filter(|i| i.lane == lane).map(|i| i.id).collect();
                prop_assert_eq!(want, got);
            }
            prop_assert_eq!(queue.ingest_weight, 0);
        }
    }

    #[test]
    fn a_full_ingest_group_is_reported_and_taken() {
        let mut queue = GroupQueue::new(LIMITS);
        for id in 0..6 {
            queue.push(Item {
                id,
                lane: Lane::Ingest,
                weight: 100,
            });
        }
        assert!(queue.has_full_ingest_group());
        let (group, weight) = queue.next_group();
        assert_eq!((group.len(), weight), (5, 500));
        assert!(!queue.has_full_ingest_group());
        assert_eq!(queue.len(), 1);
    }
}
