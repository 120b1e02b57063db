//! The emulated `/crm/sales/api` surface (spec §10) and its gate: faults, auth, quota, request log.

mod bulk;
mod contacts;
mod lists;
mod misc;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::config::Msg;
use crate::faults::{Injected, WRAPPED_429_MESSAGE};
use crate::state::{EmulatorState, LoggedRequest, lock};

/// Base path of the API.
pub(crate) const BASE: &str = "/crm/sales/api";
/// Largest request body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Response extension telling the server loop to drop the connection without answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// Query parameters, loosely typed.
pub(crate) type Params = axum::extract::Query<HashMap<String, String>>;

/// An error answered in the service's shape: `{"errors":{"code":N,"message":["..."]}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message)
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errors": {"code": status.as_u16(), "message": [message]}})),
    )
        .into_response()
}

impl EmulatorState {
    pub(crate) fn err(&self, status: StatusCode, m: Msg) -> ApiError {
        ApiError {
            status,
            message: self.msg(m),
        }
    }

    pub(crate) fn bad(&self, m: Msg) -> ApiError {
        self.err(StatusCode::BAD_REQUEST, m)
    }

    /// Status for a create, per the `create_status` switch.
    pub(crate) fn create_status(&self) -> StatusCode {
        StatusCode::from_u16(self.switches().create_status).unwrap_or(StatusCode::OK)
    }
}

/// Parses a JSON body (an empty body reads as `null`).
pub(crate) fn parse_json(st: &EmulatorState, body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|_| st.bad(Msg::BadJson))
}

/// Parses a path id.
pub(crate) fn path_id(st: &EmulatorState, raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| st.err(StatusCode::NOT_FOUND, Msg::NotFound(what)))
}

/// `page`/`per_page` paging: `(page items, meta)`.
pub(crate) fn paginate<T: Clone>(items: &[T], q: &HashMap<String, String>) -> (Vec<T>, Value) {
    let per_page = q
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, 100);
    let page = q
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let pages = total.div_ceil(per_page);
    let slice = items
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    (slice, json!({"total_pages": pages, "total": total}))
}

/// The API router, gated; mounted under [`BASE`] by the crate's `router`.
pub(crate) fn api_router(state: EmulatorState) -> Router {
    Router::new()
        .route("/contacts", post(contacts::create))
        .route("/contacts/upsert", post(contacts::upsert))
        .route("/contacts/bulk_upsert", post(bulk::bulk_upsert))
        .route("/job_statuses/{id}", get(bulk::job_status))
        .route(
            "/contacts/{id}",
            get(contacts::show)
                .put(contacts::update)
                .delete(contacts::destroy),
        )
        .route(
            "/contacts/{id}/forget",
            axum::routing::delete(contacts::forget),
        )
        .route("/contacts/lists/{id}", get(lists::members))
        .route("/lookup", get(misc::lookup))
        .route("/filtered_search/contact", post(misc::filtered_search))
        .route("/settings/contacts/fields", get(misc::fields))
        .route("/settings/sales_accounts/fields", get(misc::account_fields))
        .route("/lists", get(lists::index).post(lists::create))
        .route("/lists/{id}/add_contacts", put(lists::add_contacts))
        .route("/lists/{id}/remove_contacts", put(lists::remove_contacts))
        .route("/sales_accounts/upsert", post(misc::account_upsert))
        .route("/sales_activities", post(misc::activity_create))
        .route("/selector/{name}", get(misc::selector))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

async fn not_found(State(st): State<EmulatorState>) -> ApiError {
    st.err(StatusCode::NOT_FOUND, Msg::NotFound("Resource"))
}

/// Checks `Authorization: Token token=<key>` (and `Token <key>` when switched on).
fn authorized(st: &EmulatorState, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let key = st.inner.api_key.as_str();
    if let Some(rest) = value.strip_prefix("Token token=") {
        return rest.trim().trim_matches('"') == key;
    }
    st.switches().accept_bare_token
        && value
            .strip_prefix("Token ")
            .is_some_and(|rest| rest.trim() == key)
}

/// Every API call passes here: dropped-connection and latency faults, auth (401), quota (429),
/// status faults, then the handler; the outcome is logged.
async fn gate(State(st): State<EmulatorState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let mut entry = LoggedRequest {
        method: parts.method.to_string(),
        path: format!("{BASE}{}", parts.uri.path()),
        query: parts.uri.query().map(str::to_owned),
        status: 0,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        counted: false,
        at: st.now(),
    };
    let (drop_it, latency) = {
        let mut faults = lock(&st.inner.faults);
        (faults.take_drop(), faults.latency_ms())
    };
    if drop_it {
        st.log(entry);
        let mut resp = Response::new(Body::empty());
        resp.extensions_mut().insert(DropConnection);
        return resp;
    }
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let sw = st.switches();
    if !authorized(&st, &parts.headers) {
        entry.status = 401;
        st.log(entry);
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"login": "failed", "message": "Incorrect or expired API key"})),
        )
            .into_response();
    }
    let granted = lock(&st.inner.quota).try_take();
    let granted = match granted {
        Ok(g) => g,
        Err(refused) => {
            entry.status = 429;
            st.log(entry);
            let mut resp =
                error_response(StatusCode::TOO_MANY_REQUESTS, &st.msg(Msg::TooManyRequests));
            if sw.rate_limit_headers {
                let h = resp.headers_mut();
                h.insert("x-ratelimit-limit", HeaderValue::from(refused.limit));
                h.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
                let secs = refused.retry_after_wall_secs.ceil().max(1.0);
                // Saturating cast of a positive finite float: the header wants whole seconds.
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
            }
            return resp;
        }
    };
    entry.counted = true;
    let injected = lock(&st.inner.faults).take_status(&entry.path);
    let mut resp = match injected {
        Some(Injected::Status { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match body {
                Some(b) => {
                    (status, [(header::CONTENT_TYPE, "application/json")], b).into_response()
                }
                None => error_response(status, status.canonical_reason().unwrap_or("Error")),
            }
        }
        Some(Injected::Wrapped429) => error_response(StatusCode::BAD_REQUEST, WRAPPED_429_MESSAGE),
        Some(Injected::Random500) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &st.msg(Msg::Injected))
        }
        None => {
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let delay = lock(&st.inner.faults).answer_delay_ms();
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            resp
        }
    };
    if sw.rate_limit_headers {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(granted.limit));
        h.insert(
            "x-ratelimit-remaining",
            HeaderValue::from(granted.remaining),
        );
    }
    entry.status = resp.status().as_u16();
    st.log(entry);
    resp
}
