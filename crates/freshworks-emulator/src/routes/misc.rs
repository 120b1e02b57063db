//! Lookup, filtered search, field metadata, sales accounts, sales activities and selectors (spec §4.1, §7).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, Params, paginate, parse_json};
use crate::config::Msg;
use crate::state::{API_USER_ID, Account, Contact, EmulatorState, json_i64, lock, value_text};

/// Static selector data (lifecycle stages, activity types, owners, contact statuses).
const SELECTORS: &str = include_str!("../selectors.json");
/// The embedded sales account field set (`GET /settings/sales_accounts/fields`).
const ACCOUNT_FIELDS: &str = include_str!("../default_account_fields.json");

/// The ids of a selector's items (`sales_activity_types`, `users`, ...).
fn selector_ids(key: &str) -> Vec<i64> {
    let data: Value = serde_json::from_str(SELECTORS).unwrap_or(Value::Null);
    data.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("id").and_then(json_i64))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /settings/sales_accounts/fields`: same shape as the contact fields.
pub(super) async fn account_fields() -> Response {
    let body: Value =
        serde_json::from_str(ACCOUNT_FIELDS).unwrap_or_else(|_| json!({"fields": []}));
    axum::Json(body).into_response()
}

/// The value of a searchable attribute on a contact, as texts (emails can be several).
fn attribute(c: &Contact, attr: &str) -> Vec<String> {
    match attr {
        "email" | "emails" | "contact_email.email" => {
            c.emails.iter().map(|e| e.value.clone()).collect()
        }
        "id" => vec![c.id.to_string()],
        "name" => {
            let s = |k: &str| {
                c.scalars
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            vec![
                format!("{} {}", s("first_name"), s("last_name"))
                    .trim()
                    .to_owned(),
            ]
        }
        a if a.starts_with("cf_") => c.custom.get(a).map(value_text).into_iter().collect(),
        a => c
            .scalars
            .get(a)
            .filter(|v| !v.is_null())
            .map(value_text)
            .into_iter()
            .collect(),
    }
}

fn text_eq(st: &EmulatorState, attr: &str, a: &str, b: &str) -> bool {
    let is_email = matches!(attr, "email" | "emails" | "contact_email.email");
    if is_email && st.switches().email_case_insensitive {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// `GET /lookup?q=<value>&f=<field>&entities=contact` → `{"contacts":{"contacts":[...]}}`.
pub(super) async fn lookup(
    State(st): State<EmulatorState>,
    q: Params,
) -> Result<Response, ApiError> {
    let needle = q
        .get("q")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| st.bad(Msg::Required("q")))?;
    let field = q.get("f").map_or("email", String::as_str);
    let field = if field == "email" {
        "contact_email.email"
    } else {
        field
    };
    let store = lock(&st.inner.store);
    let found: Vec<Value> = store
        .contacts
        .values()
        .filter(|c| {
            attribute(c, field)
                .iter()
                .any(|v| text_eq(&st, field, v, needle))
        })
        .map(|c| st.render_contact(&store, c, false, true))
        .collect();
    Ok(axum::Json(json!({"contacts": {"contacts": found}})).into_response())
}

/// `POST /filtered_search/contact` with `filter_rule` (all rules must hold); results lack `custom_field`.
pub(super) async fn filtered_search(
    State(st): State<EmulatorState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_json(&st, &body)?;
    let rules = v
        .get("filter_rule")
        .and_then(Value::as_array)
        .ok_or_else(|| st.bad(Msg::Required("filter_rule")))?;
    let mut parsed = Vec::with_capacity(rules.len());
    for r in rules {
        let attr = r
            .get("attribute")
            .and_then(Value::as_str)
            .ok_or_else(|| st.bad(Msg::Required("attribute")))?;
        let op = r.get("operator").and_then(Value::as_str).unwrap_or("is_in");
        if !matches!(op, "is_in" | "is" | "equals" | "is_equal_to") {
            return Err(st.bad(Msg::Invalid("operator".to_owned())));
        }
        let values: Vec<String> = match r.get("value") {
            Some(Value::Array(a)) => a.iter().map(value_text).collect(),
            Some(Value::Null) | None => return Err(st.bad(Msg::Required("value"))),
            Some(other) => vec![value_text(other)],
        };
        parsed.push((attr.to_owned(), values));
    }
    let q: std::collections::HashMap<String, String> = ["page", "per_page"]
        .iter()
        .filter_map(|k| {
            v.get(*k)
                .and_then(json_i64)
                .map(|n| ((*k).to_owned(), n.to_string()))
        })
        .collect();
    let all: Vec<Value> = {
        let store = lock(&st.inner.store);
        store
            .contacts
            .values()
            .filter(|c| {
                parsed.iter().all(|(attr, values)| {
                    attribute(c, attr)
                        .iter()
                        .any(|have| values.iter().any(|want| text_eq(&st, attr, have, want)))
                })
            })
            .map(|c| st.render_contact(&store, c, false, false))
            .collect()
    };
    let (page, meta) = paginate(&all, &q);
    Ok(axum::Json(json!({"contacts": page, "meta": meta})).into_response())
}

/// `GET /settings/contacts/fields[?include=field_group]`.
pub(super) async fn fields(State(st): State<EmulatorState>, q: Params) -> Response {
    let mut body = st.inner.fields.raw.clone();
    if q.get("include").is_some_and(|v| v.contains("field_group"))
        && let Value::Object(o) = &mut body
    {
        o.entry("field_groups").or_insert_with(|| json!([]));
    }
    axum::Json(body).into_response()
}

/// `POST /sales_accounts/upsert`; identifier `name` (or `id`). Names are unique.
pub(super) async fn account_upsert(
    State(st): State<EmulatorState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_json(&st, &body)?;
    let ident = v
        .get("unique_identifier")
        .and_then(Value::as_object)
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .filter(|(k, val)| {
            matches!(k.as_str(), "name" | "id") && !value_text(val).trim().is_empty()
        })
        .map(|(k, val)| (k.clone(), value_text(val)))
        .ok_or_else(|| st.bad(Msg::MissingIdentifier))?;
    let mut fields = Map::new();
    let mut custom = Map::new();
    if let Some(Value::Object(o)) = v.get("sales_account") {
        for (k, val) in o {
            match k.as_str() {
                "custom_field" => {
                    if let Value::Object(cf) = val {
                        custom.extend(cf.clone());
                    }
                }
                "id" | "created_at" | "updated_at" | "record_type_id" => {}
                _ => {
                    fields.insert(k.clone(), val.clone());
                }
            }
        }
    }
    let now = st.now();
    let mut store = lock(&st.inner.store);
    let existing = store
        .accounts
        .values()
        .find(|a| match ident.0.as_str() {
            "id" => a.id.to_string() == ident.1,
            _ => a.fields.get("name").and_then(Value::as_str) == Some(ident.1.as_str()),
        })
        .map(|a| a.id);
    if ident.0 == "name" {
        fields.entry("name").or_insert_with(|| json!(ident.1));
    }
    let new_name = fields
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let taken = new_name.as_deref().is_some_and(|n| {
        store.accounts.values().any(|a| {
            Some(a.id) != existing && a.fields.get("name").and_then(Value::as_str) == Some(n)
        })
    });
    if taken {
        return Err(st.bad(Msg::NameTaken));
    }
    let (id, created) = match existing {
        Some(id) => {
            let a = store
                .accounts
                .get_mut(&id)
                .ok_or_else(|| st.err(StatusCode::NOT_FOUND, Msg::NotFound("Sales account")))?;
            a.fields.extend(fields);
            a.custom.extend(custom);
            a.updated_at = now;
            (id, false)
        }
        None if ident.0 == "id" => {
            return Err(st.err(StatusCode::NOT_FOUND, Msg::NotFound("Sales account")));
        }
        None => {
            let id = store.new_id();
            store.accounts.insert(
                id,
                Account {
                    id,
                    fields,
                    custom,
                    created_at: now,
                    updated_at: now,
                },
            );
            (id, true)
        }
    };
    let body = store
        .accounts
        .get(&id)
        .map(|a| st.render_account(a))
        .unwrap_or(Value::Null);
    let status = if created {
        st.create_status()
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!({"sales_account": body}))).into_response())
}

/// `POST /sales_activities`: requires title, start_date, end_date, targetable_type and an existing target.
pub(super) async fn activity_create(
    State(st): State<EmulatorState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_json(&st, &body)?;
    let Some(Value::Object(input)) = v.get("sales_activity") else {
        return Err(st.bad(Msg::Required("sales_activity")));
    };
    for (key, label) in [
        ("title", "Title"),
        ("start_date", "Start date"),
        ("end_date", "End date"),
    ] {
        if input
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            return Err(st.bad(Msg::Blank(label.to_owned())));
        }
    }
    for key in ["start_date", "end_date"] {
        let text = input.get(key).and_then(Value::as_str).unwrap_or_default();
        if time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .is_err()
        {
            return Err(st.bad(Msg::Invalid(key.to_owned())));
        }
    }
    // Type and owner must name existing records (UNVERIFIED whether each is required: switches).
    match input.get("sales_activity_type_id") {
        None | Some(Value::Null) if st.switches().activity_type_required => {
            return Err(st.bad(Msg::Blank("Sales activity type".to_owned())));
        }
        None | Some(Value::Null) => {}
        Some(v) => {
            if json_i64(v).is_none_or(|id| !selector_ids("sales_activity_types").contains(&id)) {
                return Err(st.bad(Msg::Invalid("Sales activity type".to_owned())));
            }
        }
    }
    match input.get("owner_id") {
        None | Some(Value::Null) if st.switches().activity_owner_required => {
            return Err(st.bad(Msg::Blank("Owner".to_owned())));
        }
        None | Some(Value::Null) => {}
        Some(v) => {
            if json_i64(v).is_none_or(|id| !selector_ids("users").contains(&id)) {
                return Err(st.bad(Msg::Invalid("Owner".to_owned())));
            }
        }
    }
    let ttype = input
        .get("targetable_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let target = input.get("targetable_id").and_then(json_i64);
    let mut store = lock(&st.inner.store);
    let exists = match (ttype, target) {
        ("Contact", Some(t)) => store.contacts.contains_key(&t),
        ("SalesAccount", Some(t)) => store.accounts.contains_key(&t),
        ("Deal", Some(_)) => true,
        _ => false,
    };
    if !exists {
        return Err(st.bad(Msg::Invalid("Targetable".to_owned())));
    }
    let id = store.new_id();
    let now = EmulatorState::fmt_time(st.now());
    let mut out = input.clone();
    out.insert("id".into(), json!(id));
    out.insert("creater_id".into(), json!(API_USER_ID));
    out.insert("updater_id".into(), json!(API_USER_ID));
    out.entry("owner_id").or_insert_with(|| json!(API_USER_ID));
    out.insert("created_at".into(), json!(now));
    out.insert("updated_at".into(), json!(now));
    let out = Value::Object(out);
    store.activities.push(out.clone());
    Ok((
        st.create_status(),
        axum::Json(json!({"sales_activity": out})),
    )
        .into_response())
}

/// `GET /selector/{name}`; owners answer under `users`.
pub(super) async fn selector(
    State(st): State<EmulatorState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let data: Value = serde_json::from_str(SELECTORS).unwrap_or(Value::Null);
    let key = match name.as_str() {
        "lifecycle_stages" | "sales_activity_types" | "contact_statuses" => name.as_str(),
        "owners" => "users",
        _ => return Err(st.err(StatusCode::NOT_FOUND, Msg::NotFound("Selector"))),
    };
    let items = data.get(key).cloned().unwrap_or_else(|| json!([]));
    Ok(axum::Json(json!({ key: items })).into_response())
}
