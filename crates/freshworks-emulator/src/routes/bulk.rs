//! Bulk upsert (spec §3): `POST /contacts/bulk_upsert` answers a `job_status_url` at once; the job runs
//! asynchronously and `GET /job_statuses/{id}` reports `record_status` and `detailed_failure_report`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, BASE, parse_json, path_id};
use crate::config::{BulkDataFormat, Msg};
use crate::state::{EmulatorState, Job, lock};

/// `POST /contacts/bulk_upsert`.
pub(super) async fn bulk_upsert(
    State(st): State<EmulatorState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_json(&st, &body)?;
    let sw = st.switches();
    let items = match v.get("contacts") {
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        _ => return Err(st.bad(Msg::Required("contacts"))),
    };
    if items.len() > sw.max_bulk_size {
        return Err(st.bad(Msg::BulkTooLarge(sw.max_bulk_size)));
    }
    let now = st.now();
    let id = {
        let mut store = lock(&st.inner.store);
        let id = store.new_id();
        store.jobs.insert(
            id,
            Job {
                id,
                done: false,
                succeeded: 0,
                failed: 0,
                report: Vec::new(),
                created_at: now,
                updated_at: now,
            },
        );
        id
    };
    let worker = st.clone();
    let delay = Duration::from_millis(sw.bulk_job_delay_ms);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        worker.run_job(id, items);
    });
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    Ok(
        axum::Json(json!({"job_status_url": format!("http://{host}{BASE}/job_statuses/{id}")}))
            .into_response(),
    )
}

/// `GET /job_statuses/{id}`.
pub(super) async fn job_status(
    State(st): State<EmulatorState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&st, &id, "Job")?;
    let as_string = st.switches().bulk_data == BulkDataFormat::String;
    let store = lock(&st.inner.store);
    let job = store
        .jobs
        .get(&id)
        .ok_or_else(|| st.err(StatusCode::NOT_FOUND, Msg::NotFound("Job")))?;
    Ok(axum::Json(st.render_job(job, as_string)).into_response())
}
