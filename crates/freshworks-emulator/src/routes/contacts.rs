//! Contact routes: upsert, create, show, update, delete and GDPR forget (spec §2, §7).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, Params, parse_json, path_id};
use crate::config::Msg;
use crate::state::{EmulatorState, lock, parse_identifier};

/// Renders `{"contact":{...}}` for a stored id.
fn contact_body(st: &EmulatorState, id: i64, with_accounts: bool) -> Result<Value, ApiError> {
    let store = lock(&st.inner.store);
    let c = store
        .contacts
        .get(&id)
        .ok_or_else(|| st.err(StatusCode::NOT_FOUND, Msg::NotFound("Contact")))?;
    Ok(json!({"contact": st.render_contact(&store, c, with_accounts, true)}))
}

fn wants_accounts(q: &Params) -> bool {
    q.get("include")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "sales_accounts"))
}

/// `POST /contacts/upsert`.
pub(super) async fn upsert(
    State(st): State<EmulatorState>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_json(&st, &body)?;
    let ident = parse_identifier(v.get("unique_identifier"))
        .ok_or_else(|| st.bad(Msg::MissingIdentifier))?;
    let sw = st.switches();
    let (id, created) = {
        let mut store = lock(&st.inner.store);
        st.upsert(
            &mut store,
            &sw,
            &ident,
            v.get("contact").unwrap_or(&Value::Null),
        )
        .map_err(|m| st.bad(m))?
    };
    let status = if created {
        st.create_status()
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(contact_body(&st, id, wants_accounts(&q))?),
    )
        .into_response())
}

/// `POST /contacts`.
pub(super) async fn create(
    State(st): State<EmulatorState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_json(&st, &body)?;
    let sw = st.switches();
    let contact = v
        .get("contact")
        .ok_or_else(|| st.bad(Msg::Required("contact")))?;
    let patch = st.parse_patch(&sw, contact).map_err(|m| st.bad(m))?;
    let id = {
        let mut store = lock(&st.inner.store);
        st.create_contact(&mut store, &sw, None, &patch)
            .map_err(|m| st.bad(m))?
    };
    Ok((
        st.create_status(),
        axum::Json(contact_body(&st, id, false)?),
    )
        .into_response())
}

/// `GET /contacts/{id}`.
pub(super) async fn show(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let id = path_id(&st, &id, "Contact")?;
    Ok(axum::Json(contact_body(&st, id, wants_accounts(&q))?).into_response())
}

/// `PUT /contacts/{id}`.
pub(super) async fn update(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_id(&st, &id, "Contact")?;
    let v = parse_json(&st, &body)?;
    let sw = st.switches();
    let patch = st
        .parse_patch(&sw, v.get("contact").unwrap_or(&Value::Null))
        .map_err(|m| st.bad(m))?;
    {
        let mut store = lock(&st.inner.store);
        st.update_contact(&mut store, &sw, id, &patch)
            .map_err(|m| match m {
                Msg::NotFound(w) => st.err(StatusCode::NOT_FOUND, Msg::NotFound(w)),
                other => st.bad(other),
            })?;
    }
    Ok(axum::Json(contact_body(&st, id, wants_accounts(&q))?).into_response())
}

/// Removes a contact and its list memberships; answers `true` like the real API.
fn remove(st: &EmulatorState, raw: &str) -> Result<Response, ApiError> {
    let id = path_id(st, raw, "Contact")?;
    if !st.delete_contact(id) {
        return Err(st.err(StatusCode::NOT_FOUND, Msg::NotFound("Contact")));
    }
    Ok(axum::Json(json!(true)).into_response())
}

/// `DELETE /contacts/{id}`.
pub(super) async fn destroy(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    remove(&st, &id)
}

/// `DELETE /contacts/{id}/forget` (GDPR hard erase; same answer, INFERRED).
pub(super) async fn forget(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    remove(&st, &id)
}
