//! The JSON admin API, `/api/v1/…`: thin handlers over [`super::views`], described by the
//! OpenAPI document served at `/api/v1/openapi.json` (checked against these routes by a test).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use freshgate_core::reason::DeadReason;
use freshgate_store::{DeliveryFilter, DeliveryStatus, EventQuery};
use serde::{Deserialize, Serialize};

use super::AdminState;
use super::views::{PreviewInput, ViewError};
use crate::pipeline::now_ms;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("assets/openapi.json");

/// Every route of the API as (method, path), in the OpenAPI document's notation.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/overview"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/events/{message_id}"),
    ("get", "/api/v1/dead-letters"),
    ("get", "/api/v1/dead-letters/count"),
    ("post", "/api/v1/dead-letters/replay"),
    ("get", "/api/v1/rejected"),
    ("get", "/api/v1/unmapped-traits"),
    ("get", "/api/v1/destinations"),
    ("post", "/api/v1/destinations/{name}/test"),
    ("post", "/api/v1/destinations/{name}/preview"),
    ("get", "/api/v1/openapi.json"),
];

/// An error body: `{"error": "…"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// In words.
    pub error: String,
}

impl IntoResponse for ViewError {
    fn into_response(self) -> Response {
        let status = match &self {
            ViewError::Store(e) => {
                tracing::warn!(error = %e, "admin view failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
            ViewError::NotFound(_) => StatusCode::NOT_FOUND,
            ViewError::BadInput(_) => StatusCode::BAD_REQUEST,
        };
        (
            status,
            Json(ApiError {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// A time given as RFC 3339 (or Unix milliseconds), for filters.
///
/// # Errors
/// `BadInput` naming the parameter.
pub fn parse_time(value: &str, name: &str) -> Result<i64, ViewError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    freshgate_core::segment::parse_timestamp(value)
        .map(crate::pipeline::ingest::unix_ms)
        .ok_or_else(|| {
            ViewError::BadInput(format!(
                "{name}: {value:?} is not a time; use RFC 3339, e.g. 2026-11-25T00:00:00Z"
            ))
        })
}

/// A delivery state by name.
///
/// # Errors
/// `BadInput` listing the states.
pub fn parse_status(value: &str) -> Result<DeliveryStatus, ViewError> {
    match value {
        "pending" => Ok(DeliveryStatus::Pending),
        "delivered" => Ok(DeliveryStatus::Delivered),
        "skipped" => Ok(DeliveryStatus::Skipped),
        "dead" => Ok(DeliveryStatus::Dead),
        other => Err(ViewError::BadInput(format!(
            "status: {other:?} is not one of pending, delivered, skipped, dead"
        ))),
    }
}

/// Empty form fields count as absent.
fn given(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The event search's parameters (also the console's search form).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventParams {
    /// userId (else anonymousId).
    pub user: Option<String>,
    /// Email in an identify's traits.
    pub email: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Delivery state.
    pub status: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Segment messageId.
    pub message_id: Option<String>,
    /// Received at or after (RFC 3339).
    pub since: Option<String>,
    /// Received before (RFC 3339).
    pub until: Option<String>,
    /// Keyset cursor: the events after this one in the listing (newest first; with a time
    /// range, by receive time then id).
    pub before: Option<String>,
    /// Page size.
    pub limit: Option<String>,
}

impl EventParams {
    /// The store query.
    ///
    /// # Errors
    /// `BadInput` for a bad time, state or number.
    pub fn to_query(&self) -> Result<EventQuery, ViewError> {
        let number = |v: &Option<String>, name: &str| -> Result<Option<i64>, ViewError> {
            given(v)
                .map(|s| {
                    s.parse::<i64>()
                        .map_err(|_| ViewError::BadInput(format!("{name}: {s:?} is not a number")))
                })
                .transpose()
        };
        Ok(EventQuery {
            contact_key: given(&self.user),
            email: given(&self.email),
            message_id: given(&self.message_id),
            event_type: given(&self.event_type),
            status: given(&self.status).map(|s| parse_status(&s)).transpose()?,
            source: given(&self.source),
            since_ms: given(&self.since)
                .map(|s| parse_time(&s, "since"))
                .transpose()?,
            until_ms: given(&self.until)
                .map(|s| parse_time(&s, "until"))
                .transpose()?,
            before_id: number(&self.before, "before")?,
            limit: number(&self.limit, "limit")?.map_or(super::views::DEFAULT_PAGE, |l| {
                usize::try_from(l).unwrap_or(1)
            }),
        })
    }
}

/// The dead-letter filter's parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeadLetterParams {
    /// Destination.
    pub destination: Option<String>,
    /// Text the reason contains.
    pub reason: Option<String>,
    /// The reason's code (`conflict`, `refused`, `retry_horizon`, `unreadable`, `unknown_name`,
    /// `no_owner`).
    #[serde(default)]
    pub reason_code: Option<String>,
    /// Contact key.
    pub contact: Option<String>,
    /// Source.
    pub source: Option<String>,
    /// Received at or after (RFC 3339).
    pub since: Option<String>,
    /// Received before (RFC 3339).
    pub until: Option<String>,
    /// At most this many (listing).
    pub limit: Option<String>,
}

/// The dead-letter reason codes, for an error message.
fn known_codes() -> String {
    let codes: Vec<&str> = DeadReason::ALL.iter().map(|r| r.code()).collect();
    format!("one of {}", codes.join(", "))
}

impl DeadLetterParams {
    /// The store filter.
    ///
    /// # Errors
    /// `BadInput` for a bad time or number.
    pub fn to_filter(&self) -> Result<DeliveryFilter, ViewError> {
        Ok(DeliveryFilter {
            destination: given(&self.destination),
            reason_contains: given(&self.reason),
            reason_code: given(&self.reason_code)
                .map(|c| {
                    DeadReason::from_code(&c)
                        .map(|r| r.code().to_owned())
                        .ok_or_else(|| {
                            ViewError::BadInput(format!("reason_code: {}", known_codes()))
                        })
                })
                .transpose()?,
            contact_key: given(&self.contact),
            source: given(&self.source),
            since_ms: given(&self.since)
                .map(|s| parse_time(&s, "since"))
                .transpose()?,
            until_ms: given(&self.until)
                .map(|s| parse_time(&s, "until"))
                .transpose()?,
            limit: Some(
                given(&self.limit)
                    .map(|s| {
                        s.parse::<usize>().map_err(|_| {
                            ViewError::BadInput(format!("limit: {s:?} is not a number"))
                        })
                    })
                    .transpose()?
                    .unwrap_or(100),
            ),
            ..DeliveryFilter::default()
        })
    }
}

/// Body of `POST /api/v1/dead-letters/replay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// These dead letters only; when empty, every one matching `filter`.
    #[serde(default)]
    pub delivery_ids: Vec<i64>,
    /// The filter (ignored when `delivery_ids` is given).
    #[serde(default)]
    pub filter: DeadLetterParams,
}

/// A count: `{"count": n}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Count {
    /// How many.
    pub count: u64,
}

/// `{"requeued": n}`
#[derive(Debug, Serialize, Deserialize)]
pub struct Requeued {
    /// Dead letters put back in the queue.
    pub requeued: u64,
}

/// `?limit=`
#[derive(Debug, Deserialize)]
pub struct LimitParams {
    /// At most this many.
    pub limit: Option<usize>,
}

pub(super) async fn overview(State(s): State<AdminState>) -> Result<Response, ViewError> {
    Ok(Json(s.views.overview(now_ms()).await?).into_response())
}

pub(super) async fn events(
    State(s): State<AdminState>,
    Query(p): Query<EventParams>,
) -> Result<Response, ViewError> {
    Ok(Json(s.views.events(&p.to_query()?).await?).into_response())
}

pub(super) async fn trace(
    State(s): State<AdminState>,
    Path(message_id): Path<String>,
) -> Result<Response, ViewError> {
    let traces = s.views.trace(&message_id).await?;
    if traces.is_empty() {
        return Err(ViewError::NotFound(format!(
            "no stored event has messageId {message_id:?}"
        )));
    }
    Ok(Json(traces).into_response())
}

pub(super) async fn dead_letters(
    State(s): State<AdminState>,
    Query(p): Query<DeadLetterParams>,
) -> Result<Response, ViewError> {
    Ok(Json(s.views.dead_letters(&p.to_filter()?).await?).into_response())
}

pub(super) async fn count_dead(
    State(s): State<AdminState>,
    Query(p): Query<DeadLetterParams>,
) -> Result<Response, ViewError> {
    let count = s.views.count_dead(&p.to_filter()?).await?;
    Ok(Json(Count { count }).into_response())
}

pub(super) async fn replay_dead(
    State(s): State<AdminState>,
    Json(req): Json<ReplayRequest>,
) -> Result<Response, ViewError> {
    let now = now_ms();
    let requeued = if req.delivery_ids.is_empty() {
        s.views.replay_dead(&req.filter.to_filter()?, now).await?
    } else {
        let mut n = 0;
        for id in &req.delivery_ids {
            let one = DeliveryFilter {
                delivery_id: Some(*id),
                ..DeliveryFilter::default()
            };
            n += s.views.replay_dead(&one, now).await?;
        }
        n
    };
    if requeued > 0 {
        s.wake.notify_waiters();
    }
    Ok(Json(Requeued { requeued }).into_response())
}

pub(super) async fn rejected(
    State(s): State<AdminState>,
    Query(p): Query<LimitParams>,
) -> Result<Response, ViewError> {
    Ok(Json(s.views.rejected(p.limit.unwrap_or(100)).await?).into_response())
}

pub(super) async fn unmapped(State(s): State<AdminState>) -> Result<Response, ViewError> {
    Ok(Json(s.views.unmapped_traits().await?).into_response())
}

pub(super) async fn destinations(State(s): State<AdminState>) -> Result<Response, ViewError> {
    Ok(Json(s.views.destinations().await?).into_response())
}

pub(super) async fn test_connection(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ViewError> {
    Ok(Json(s.views.test_connection(&name, now_ms()).await?).into_response())
}

pub(super) async fn preview(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Json(input): Json<PreviewInput>,
) -> Result<Response, ViewError> {
    Ok(Json(s.views.preview(&name, &input, now_ms()).await?).into_response())
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
        assert_eq!(doc["openapi"].as_str().unwrap().get(..2), Some("3."));
    }

    #[test]
    fn empty_form_fields_are_no_filter() {
        let q = EventParams {
            user: Some(String::new()),
            status: Some("dead".into()),
            since: Some("2026-11-25T00:00:00Z".into()),
            ..EventParams::default()
        }
        .to_query()
        .unwrap();
        assert_eq!(q.contact_key, None);
        assert_eq!(q.status, Some(DeliveryStatus::Dead));
        assert_eq!(q.since_ms, Some(1_795_564_800_000));
        assert!(
            EventParams {
                status: Some("lost".into()),
                ..EventParams::default()
            }
            .to_query()
            .is_err()
        );
    }
}
