//! The quota gate of one Freshworks account: the pure [`freshgate_core::budget::Budget`]
//! arithmetic behind a mutex, with every call persisted in the store's ledger so a restart
//! (or a crash loop) cannot re-spend the hour.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshgate_core::budget::{Budget, BudgetConfig};
use freshgate_store::Store;

use super::{clock, now_ms};
use crate::telemetry::events;

/// Longest a worker sleeps in place for quota; longer waits release the contact instead.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(2);

/// The quota of one account, shared by every worker of the process.
pub struct BudgetGate {
    account: String,
    destination: String,
    budget: Mutex<Budget>,
    store: Arc<dyn Store>,
    /// Several nodes spend this account (PostgreSQL store): before each call, also check the
    /// shared ledger, which holds every node's spend.
    shared: bool,
}

impl BudgetGate {
    /// A gate restored from the persisted ledger.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub async fn restore(
        account: String,
        destination: String,
        config: BudgetConfig,
        store: Arc<dyn Store>,
        shared: bool,
    ) -> Result<Self, freshgate_store::StoreError> {
        let now = now_ms();
        // The ledger gives sums; placing them at the latest possible moment of their window is
        // conservative (the windows free up no earlier than they really would).
        let last_minute = store.calls_since(&account, now - 60_000).await?;
        let last_hour = store.calls_since(&account, now - 3_600_000).await?;
        let mut budget = Budget::new(config);
        let mut spent = Vec::new();
        if last_hour > last_minute {
            spent.push((
                now - 60_000,
                u32::try_from(last_hour - last_minute).unwrap_or(u32::MAX),
            ));
        }
        if last_minute > 0 {
            spent.push((now, u32::try_from(last_minute).unwrap_or(u32::MAX)));
        }
        budget.load(spent);
        Ok(Self {
            account,
            destination,
            budget: Mutex::new(budget),
            store,
            shared,
        })
    }

    /// Take `calls` from the budget, waiting in place up to a short while.
    ///
    /// # Errors
    /// `Err(until_ms)` when the budget frees up only later: the caller gives the contact back
    /// until then.
    pub async fn acquire(&self, calls: u32) -> Result<(), i64> {
        let mut refusals = 0u32;
        loop {
            let now = now_ms();
            let (verdict, config) = {
                let mut b = self
                    .budget
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let verdict = b.try_acquire(now, calls);
                let (hour, minute) = b.remaining(now);
                events::budget(&self.destination, u64::from(hour), u64::from(minute));
                (verdict, b.config())
            };
            let until = match verdict {
                Ok(()) if !self.shared => {
                    if let Err(e) = self.store.record_calls(&self.account, now, calls).await {
                        // The call is still made: losing a ledger entry only makes a restart
                        // slightly less conservative.
                        tracing::warn!(error = %e, "could not persist quota spend");
                    }
                    return Ok(());
                }
                Ok(()) => {
                    // Several nodes: the shared ledger decides, atomically, whether every
                    // node's calls together leave room for ours.
                    let reserved = self
                        .store
                        .reserve_calls(
                            &self.account,
                            now,
                            calls,
                            config.minute_cap(),
                            config.hour_cap(),
                        )
                        .await;
                    match reserved {
                        Ok(true) => return Ok(()),
                        Ok(false) | Err(_) => {
                            if let Err(e) = reserved {
                                tracing::warn!(error = %e, "cannot reserve quota in the shared ledger");
                            }
                            self.budget
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .refund(now, calls);
                            refusals += 1;
                            if refusals > 4 {
                                // Other nodes hold the window: give the contact back for a
                                // while rather than sit on its lease.
                                return Err(now + clock::clock_ms(Duration::from_secs(5)));
                            }
                            now + clock::clock_ms(Duration::from_millis(500))
                        }
                    }
                }
                Err(wait) => wait.0,
            };
            if until - now > clock::clock_ms(MAX_INLINE_WAIT) {
                return Err(until);
            }
            clock::sleep_clock_ms(until - now).await;
        }
    }

    /// When `calls` calls fit this process's budget again, if not now (nothing is taken). The
    /// dispatcher waits for it before leasing contacts, so a contact deferred for quota is not
    /// stored with a fixed time: the budget, recomputed at start from the ledger and the
    /// configured limits, decides.
    pub fn blocked_until(&self, calls: u32) -> Option<i64> {
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .free_at(now_ms(), calls)
    }

    /// The account answered 429: it is busier than our own spend says.
    pub fn observe_429(&self) {
        let mut b = self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.observe_429(now_ms());
    }

    /// The account reported how many calls remain.
    pub fn observe_remaining(&self, remaining: u32) {
        let mut b = self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.observe_remaining(now_ms(), remaining);
    }
}
