//! The admin API under `/__emulator/` (no auth, not counted, not logged): state, request log, reset,
//! faults, limits, time scale, switches, `spend`, and deleting a contact as a person in the CRM
//! would (`DELETE /__emulator/contacts/{id}`).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use crate::config::Switches;
use crate::faults::Fault;
use crate::state::EmulatorState;

#[derive(Debug, Deserialize)]
struct Limits {
    hourly: u32,
    minute: u32,
}

#[derive(Debug, Deserialize)]
struct Spend {
    calls: u32,
}

#[derive(Debug, Deserialize)]
struct Scale {
    time_scale: f64,
}

/// Routes mounted at `/__emulator`.
pub(crate) fn admin_router(state: EmulatorState) -> Router {
    Router::new()
        .route("/state", get(state_get))
        .route("/requests", get(requests))
        .route("/reset", post(reset))
        .route("/faults", post(inject).delete(clear))
        .route("/limits", post(limits))
        .route("/spend", post(spend))
        .route("/quota", get(quota))
        .route("/time_scale", post(time_scale))
        .route("/switches", get(switches_get).put(switches_put))
        .route("/contacts/{id}", delete(contact_delete))
        .with_state(state)
}

async fn contact_delete(State(st): State<EmulatorState>, Path(id): Path<i64>) -> Response {
    if st.delete_contact(id) {
        axum::Json(json!({"ok": true})).into_response()
    } else {
        (StatusCode::NOT_FOUND, axum::Json(json!({"ok": false}))).into_response()
    }
}

async fn state_get(State(st): State<EmulatorState>) -> Response {
    axum::Json(st.snapshot()).into_response()
}

async fn requests(State(st): State<EmulatorState>) -> Response {
    axum::Json(st.request_log()).into_response()
}

async fn reset(State(st): State<EmulatorState>) -> Response {
    st.reset();
    axum::Json(json!({"ok": true})).into_response()
}

async fn inject(State(st): State<EmulatorState>, axum::Json(fault): axum::Json<Fault>) -> Response {
    st.inject(fault);
    axum::Json(json!({"ok": true})).into_response()
}

async fn clear(State(st): State<EmulatorState>) -> Response {
    st.clear_faults();
    axum::Json(json!({"ok": true})).into_response()
}

async fn limits(State(st): State<EmulatorState>, axum::Json(l): axum::Json<Limits>) -> Response {
    st.set_limits(l.hourly, l.minute);
    axum::Json(st.quota_snapshot()).into_response()
}

async fn spend(State(st): State<EmulatorState>, axum::Json(s): axum::Json<Spend>) -> Response {
    st.spend(s.calls);
    axum::Json(st.quota_snapshot()).into_response()
}

async fn quota(State(st): State<EmulatorState>) -> Response {
    axum::Json(st.quota_snapshot()).into_response()
}

async fn time_scale(State(st): State<EmulatorState>, axum::Json(s): axum::Json<Scale>) -> Response {
    if !(s.time_scale.is_finite() && s.time_scale > 0.0) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "time_scale must be > 0"})),
        )
            .into_response();
    }
    st.set_time_scale(s.time_scale);
    axum::Json(st.quota_snapshot()).into_response()
}

async fn switches_get(State(st): State<EmulatorState>) -> Response {
    axum::Json(st.switches()).into_response()
}

async fn switches_put(
    State(st): State<EmulatorState>,
    axum::Json(sw): axum::Json<Switches>,
) -> Response {
    if !matches!(sw.create_status, 200 | 201) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "create_status must be 200 or 201"})),
        )
            .into_response();
    }
    st.set_switches(sw);
    axum::Json(st.switches()).into_response()
}
