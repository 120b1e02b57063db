//! Marketing lists (spec §6): index, create, add/remove contacts by id, members.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, Params, paginate, parse_json, path_id};
use crate::config::Msg;
use crate::state::{EmulatorState, List, json_i64, lock};

fn list_json(l: &List) -> Value {
    json!({"id": l.id, "name": l.name, "created_at": EmulatorState::fmt_time(l.created_at)})
}

/// `GET /lists`.
pub(super) async fn index(State(st): State<EmulatorState>, q: Params) -> Response {
    let all: Vec<Value> = {
        let store = lock(&st.inner.store);
        store
            .lists
            .values()
            .map(|l| json!({"id": l.id, "name": l.name}))
            .collect()
    };
    let (page, meta) = paginate(&all, &q);
    axum::Json(json!({"lists": page, "meta": meta})).into_response()
}

/// `POST /lists` with `{"name":...}` (also `{"list":{"name":...}}`). Names are not unique.
pub(super) async fn create(
    State(st): State<EmulatorState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_json(&st, &body)?;
    let name = v
        .get("name")
        .or_else(|| v.get("list").and_then(|l| l.get("name")))
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| st.bad(Msg::Blank("Name".to_owned())))?;
    let now = st.now();
    let body = {
        let mut store = lock(&st.inner.store);
        let id = store.new_id();
        let list = List {
            id,
            name: name.to_owned(),
            members: Default::default(),
            created_at: now,
        };
        let body = json!({"list": list_json(&list)});
        store.lists.insert(id, list);
        body
    };
    Ok((st.create_status(), axum::Json(body)).into_response())
}

fn ids_of(st: &EmulatorState, v: &Value) -> Result<Vec<i64>, ApiError> {
    let items = v
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| st.bad(Msg::Required("ids")))?;
    items
        .iter()
        .map(|i| json_i64(i).ok_or_else(|| st.bad(Msg::Invalid("ids".to_owned()))))
        .collect()
}

/// `PUT /lists/{id}/add_contacts` with `{"ids":[...]}`; unknown and already-present ids are ignored.
pub(super) async fn add_contacts(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_id(&st, &id, "List")?;
    let v = parse_json(&st, &body)?;
    let ids = ids_of(&st, &v)?;
    let mut store = lock(&st.inner.store);
    let known: Vec<i64> = ids
        .into_iter()
        .filter(|c| store.contacts.contains_key(c))
        .collect();
    let list = store
        .lists
        .get_mut(&id)
        .ok_or_else(|| st.err(StatusCode::NOT_FOUND, Msg::NotFound("List")))?;
    list.members.extend(known);
    Ok(axum::Json(json!({})).into_response())
}

/// `PUT /lists/{id}/remove_contacts` with `{"ids":[...]}` or `{"all":true}`.
pub(super) async fn remove_contacts(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_id(&st, &id, "List")?;
    let v = parse_json(&st, &body)?;
    let all = v.get("all").and_then(Value::as_bool).unwrap_or(false);
    let ids = if all { Vec::new() } else { ids_of(&st, &v)? };
    let mut store = lock(&st.inner.store);
    let list = store
        .lists
        .get_mut(&id)
        .ok_or_else(|| st.err(StatusCode::NOT_FOUND, Msg::NotFound("List")))?;
    if all {
        list.members.clear();
    } else {
        for c in ids {
            list.members.remove(&c);
        }
    }
    Ok(axum::Json(json!({})).into_response())
}

/// `GET /contacts/lists/{list_id}`: members, paged.
pub(super) async fn members(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let id = path_id(&st, &id, "List")?;
    let all: Vec<Value> = {
        let store = lock(&st.inner.store);
        let list = store
            .lists
            .get(&id)
            .ok_or_else(|| st.err(StatusCode::NOT_FOUND, Msg::NotFound("List")))?;
        list.members
            .iter()
            .filter_map(|c| store.contacts.get(c))
            .map(|c| st.render_contact(&store, c, false, true))
            .collect()
    };
    let (page, meta) = paginate(&all, &q);
    Ok(axum::Json(json!({"contacts": page, "meta": meta})).into_response())
}
