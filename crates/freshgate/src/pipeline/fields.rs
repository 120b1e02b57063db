//! The account's contact field metadata, cached with a TTL and refreshed early when a trait
//! matches nothing (an admin may just have created the field), at most once a minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use freshgate_core::mapping::FieldIndex;
use freshworks_client::{FreshworksClient, FreshworksError};
use tokio::sync::Mutex;

/// Refreshing because of an unmapped trait happens at most this often.
const MIN_REFRESH: Duration = Duration::from_secs(60);

struct Cached {
    index: Arc<FieldIndex>,
    fetched: Instant,
}

/// The cache of one destination.
pub struct FieldCache {
    ttl: Duration,
    cached: Mutex<Option<Cached>>,
}

/// Why fields could not be had.
pub enum FieldsError {
    /// The quota is spent until this time (Unix ms).
    Budget(i64),
    /// The call failed.
    Call(FreshworksError),
}

impl FieldCache {
    /// An empty cache.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The field index, fetched when missing or stale. `fetch` is charged to the budget by the
    /// caller's closure.
    ///
    /// # Errors
    /// When a fetch was needed and failed.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<FieldIndex>, FieldsError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<FieldIndex, FieldsError>>,
    {
        let mut guard = self.cached.lock().await;
        if let Some(c) = guard.as_ref()
            && c.fetched.elapsed() < self.ttl
        {
            return Ok(Arc::clone(&c.index));
        }
        let index = Arc::new(fetch().await?);
        *guard = Some(Cached {
            index: Arc::clone(&index),
            fetched: Instant::now(),
        });
        Ok(index)
    }

    /// Forget the cache if it is old enough to be worth refreshing for an unmapped trait.
    /// Returns whether it was forgotten.
    pub async fn invalidate_for_unmapped(&self) -> bool {
        let mut guard = self.cached.lock().await;
        match guard.as_ref() {
            Some(c) if c.fetched.elapsed() >= MIN_REFRESH => {
                *guard = None;
                true
            }
            _ => false,
        }
    }
}

/// Fetch the field index from the account.
///
/// # Errors
/// The client's error.
pub async fn fetch(client: &FreshworksClient) -> Result<FieldIndex, FreshworksError> {
    let exchange = client.contact_fields().await?;
    Ok(FieldIndex::new(&exchange.body.fields))
}
