//! The single contact sink: one `POST /contacts/upsert` for one prepared contact.

use freshgate_core::delivery::Outcome;
use freshgate_core::mapping::{self, Identity};
use freshgate_core::shadow;

use super::call::{Endpoint, Quota};
use super::worker::quota_not_before;
use super::{DestinationWorker, Prepared, Stop};

impl DestinationWorker {
    /// Send one prepared contact and settle what came of it.
    ///
    /// # Errors
    /// `Stop::Later` when the contact must wait (quota, retry, pause), `Stop::Store`.
    pub async fn send_single(&self, p: Prepared) -> Result<(), Stop> {
        let body = mapping::upsert_body(&p.user_id, &p.email, &p.plan, &p.identity);
        // Marked before the quota is taken: the call then follows its budget slot at once, as
        // the account's own accounting sees it.
        self.mark_in_doubt(std::slice::from_ref(&p)).await?;
        let called = self
            .call(Endpoint::ContactsUpsert, Quota::Take(1), || {
                self.client.upsert_contact(&body)
            })
            .await
            .map_err(|wait| Stop::Later(quota_not_before(wait.0)))?;
        let mut attempt = called.attempt(&p.delivery_ids);
        match (&called.result, called.outcome) {
            (Ok(exchange), _) => {
                let id = exchange.body.contact.id;
                // Activity times are written in the account's offset (see `activity`).
                self.selectors.learn_offset(&exchange.body.contact.other);
                // The contact the shadow knew is gone (deleted or merged in the CRM): complete
                // the new one with every value the shadow knows, then settle.
                if let Some(full) = shadow::recreated(p.shadow.as_ref(), &p.plan, Some(id)) {
                    attempt.outcome = format!(
                        "created contact {id} anew (contact {} is gone from the CRM); its other known fields follow",
                        p.shadow
                            .as_ref()
                            .and_then(|s| s.contact_id)
                            .unwrap_or_default()
                    );
                    self.record_attempt(&p.lease, attempt).await?;
                    let again = Prepared {
                        plan: full,
                        identity: Identity::ExternalId(p.user_id.clone()),
                        ..p
                    };
                    return Box::pin(self.send_single(again)).await;
                }
                attempt.outcome = format!("delivered to contact {id}{}", p.summary);
                self.contact_delivered(&p, Some(id), attempt).await
            }
            (Err(error), Outcome::Success) => {
                attempt.outcome = format!("delivered (response unreadable: {error}){}", p.summary);
                self.contact_delivered(&p, None, attempt).await
            }
            (Err(_), outcome) => self.contact_failed(&p, outcome, attempt).await,
        }
    }
}
