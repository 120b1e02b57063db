//! The console's pages: server-rendered HTML over [`super::views`], with one embedded
//! stylesheet and one embedded script (buttons, replay, preview, live updates). Charts are
//! inline SVG drawn here, so a page shows its figures even with JavaScript off.
//!
//! The HTML is written by hand with [`esc`] on every interpolated value: seven small pages do
//! not justify a template engine, and every value passes through that one function.

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use freshgate_store::{DeliveryStatus, EventSummary, MinuteCount};
use serde::Deserialize;
use serde_json::Value;

use super::AdminState;
use super::api::{DeadLetterParams, EventParams};
use super::auth::COOKIE_NAME;
use super::views::{
    CHART_WINDOW_MS, DestinationStatus, TraceView, TraitMapping, TraitOutcome, ViewError,
    past_outcome_words,
};
use crate::pipeline::now_ms;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// HTML-escape text for element content and quoted attribute values.
#[must_use]
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode a path segment or query value.
fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// RFC 3339, or `-`.
fn time(ms: Option<i64>) -> String {
    ms.and_then(|m| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000_000).ok())
        .map_or_else(|| "-".to_owned(), freshgate_core::segment::format_timestamp)
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/events", "Events"),
    ("/dead-letters", "Dead letters"),
    ("/rejected", "Rejected input"),
    ("/unmapped-traits", "Unmapped traits"),
    ("/destinations", "Destinations"),
];

fn layout(state: &AdminState, title: &str, active: &str, body: &str) -> Response {
    let mut nav = String::new();
    for (href, label) in NAV {
        let class = if *href == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{class}>{label}</a>");
    }
    let logout = if state.auth.required() {
        "<form method=\"post\" action=\"/logout\" class=\"logout\"><button type=\"submit\">Log out</button></form>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · freshgate</title>\
         <link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head>\
         <body><header><span class=\"brand\">freshgate</span><nav>{nav}</nav>{logout}</header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title)
    ))
    .into_response()
}

/// A view error as a page.
pub struct PageError(ViewError);

impl From<ViewError> for PageError {
    fn from(e: ViewError) -> Self {
        Self(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            ViewError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ViewError::NotFound(_) => StatusCode::NOT_FOUND,
            ViewError::BadInput(_) => StatusCode::BAD_REQUEST,
        };
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>freshgate</title>\
             <link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
             <body><main><h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Overview</a></p></main></body></html>",
            status.as_u16(),
            esc(&self.0.to_string())
        );
        (status, Html(body)).into_response()
    }
}

type PageResult = Result<Response, PageError>;

/// A bar chart of per-minute counts over the last 24 hours, as inline SVG.
fn chart(id: &str, label: &str, minutes: &[MinuteCount], now: i64) -> String {
    // 1,440 one-minute columns, the current minute last (x = 1439).
    let columns = CHART_WINDOW_MS / 60_000;
    let start = (now.div_euclid(60_000) - (columns - 1)) * 60_000;
    let max = minutes.iter().map(|m| m.count).max().unwrap_or(0).max(1);
    let total: u64 = minutes.iter().map(|m| m.count).sum();
    let mut bars = String::new();
    for m in minutes.iter().filter(|m| m.minute_ms >= start) {
        let x = (m.minute_ms - start) / 60_000;
        // Heights in 0..=100 of the viewBox; at least 1 so a single event shows.
        let h = (m.count * 100).div_ceil(max).max(1);
        let _ = write!(
            bars,
            "<rect x=\"{x}\" y=\"{y}\" width=\"2\" height=\"{h}\"><title>{t}: {c}</title></rect>",
            y = 100 - h,
            t = time(Some(m.minute_ms)),
            c = m.count
        );
    }
    format!(
        "<figure class=\"chart\" id=\"{id}\" data-total=\"{total}\"><figcaption>{label}: \
         <strong>{total}</strong> in 24 h, peak {peak}/min</figcaption>\
         <svg viewBox=\"0 0 1441 100\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{label} per minute\">{bars}</svg>\
         <div class=\"axis\"><span>24 h ago</span><span>now</span></div></figure>",
        label = esc(label),
        peak = if total == 0 { 0 } else { max }
    )
}

/// An age in seconds as a cell, `-` when there is none.
fn age(secs: Option<i64>) -> String {
    secs.map_or_else(|| "-".into(), |s| format!("{s} s"))
}

fn status_card(d: &DestinationStatus, now: i64) -> String {
    let name = esc(&d.destination);
    let mut out = format!(
        "<section class=\"card\" data-destination=\"{name}\"><h2>{name}</h2><table class=\"kv\">"
    );
    let row = |out: &mut String, field: &str, label: &str, value: String| {
        let _ = write!(
            out,
            "<tr><th>{label}</th><td data-field=\"{field}\">{value}</td></tr>"
        );
    };
    row(&mut out, "pending", "Pending", d.pending.to_string());
    row(
        &mut out,
        "pending_contacts",
        "Contacts waiting",
        d.pending_contacts.to_string(),
    );
    row(&mut out, "dead", "Dead letters", d.dead.to_string());
    row(
        &mut out,
        "oldest_pending_age_secs",
        "Oldest pending",
        age(d.oldest_pending_age_secs),
    );
    row(
        &mut out,
        "next_attempt",
        "Next attempt",
        d.next_attempt_ms.map_or_else(
            || "-".into(),
            |t| format!("in {} s", ((t - now).max(0) + 999) / 1000),
        ),
    );
    out.push_str("</table>");
    if !d.kinds.is_empty() {
        out.push_str(
            "<table class=\"kinds\"><thead><tr><th>Kind</th><th>Pending</th>\
             <th>Oldest pending</th></tr></thead><tbody>",
        );
        for k in &d.kinds {
            let kind = esc(&k.event_type);
            let _ = write!(
                out,
                "<tr data-kind=\"{kind}\"><td>{kind}</td><td data-field=\"kind_pending\">{}</td>\
                 <td data-field=\"kind_oldest_pending_age_secs\">{}</td></tr>",
                k.pending,
                age(k.oldest_pending_age_secs)
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(p) = &d.paused {
        let _ = write!(
            out,
            "<p class=\"paused\" data-field=\"paused\">Paused since {}: {}. Next probe {}.</p>",
            esc(&time(Some(p.since_ms))),
            esc(&p.reason),
            esc(&time(Some(p.next_probe_ms)))
        );
    }
    if let Some(b) = &d.budget {
        out.push_str("<h3>Quota</h3><table class=\"kv\">");
        row(
            &mut out,
            "left_this_hour",
            "Left this hour",
            format!(
                "{} of {} ({} spent; plan {}, headroom {})",
                b.left_this_hour, b.hour_cap, b.calls_last_hour, b.hourly_limit, b.headroom
            ),
        );
        row(
            &mut out,
            "left_this_minute",
            "Left this minute",
            format!(
                "{} of {} ({} spent; plan {})",
                b.left_this_minute, b.minute_cap, b.calls_last_minute, b.minute_limit
            ),
        );
        out.push_str("</table>");
    }
    out.push_str("</section>");
    out
}

pub(super) async fn overview(State(s): State<AdminState>) -> PageResult {
    let now = now_ms();
    let o = s.views.overview(now).await?;
    let mut body = String::from("<div class=\"cards\" id=\"destinations\">");
    for d in &o.destinations {
        body.push_str(&status_card(d, now));
    }
    if o.destinations.is_empty() {
        body.push_str("<p>No destination is configured.</p>");
    }
    body.push_str("</div>");
    body.push_str(&chart(
        "ingest-chart",
        "Events received",
        &o.ingest_per_minute,
        now,
    ));
    for c in &o.calls_per_minute {
        body.push_str(&chart(
            &format!("calls-chart-{}", url(&c.destination)),
            &format!("Freshworks calls ({})", c.destination),
            &c.minutes,
            now,
        ));
    }
    Ok(layout(&s, "Overview", "/", &body))
}

fn input(name: &str, label: &str, value: &Option<String>, placeholder: &str) -> String {
    format!(
        "<label>{label}<input name=\"{name}\" value=\"{}\" placeholder=\"{}\"></label>",
        esc(value.as_deref().unwrap_or("")),
        esc(placeholder)
    )
}

fn status_badges(e: &EventSummary) -> String {
    e.deliveries
        .iter()
        .map(|d| {
            format!(
                "<span class=\"badge {}\" title=\"{}\">{}: {}</span>",
                d.status.as_str(),
                esc(d.reason.as_deref().unwrap_or("")),
                esc(&d.destination),
                d.status.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) async fn events(
    State(s): State<AdminState>,
    Query(p): Query<EventParams>,
) -> PageResult {
    let page = s.views.events(&p.to_query()?).await?;
    let mut body = String::from("<form class=\"filters\" method=\"get\" action=\"/events\">");
    body.push_str(&input("user", "userId", &p.user, "user-42"));
    body.push_str(&input("email", "Email", &p.email, "ann@example.com"));
    body.push_str(&input("message_id", "messageId", &p.message_id, ""));
    body.push_str(&input("type", "Type", &p.event_type, "identify"));
    body.push_str(&input(
        "status",
        "Status",
        &p.status,
        "pending, delivered, skipped, dead",
    ));
    body.push_str(&input("source", "Source", &p.source, ""));
    body.push_str(&input("since", "Since", &p.since, "2026-11-25T00:00:00Z"));
    body.push_str(&input("until", "Until", &p.until, ""));
    body.push_str("<button type=\"submit\" id=\"search\">Search</button></form>");
    body.push_str(
        "<table class=\"list\" id=\"events\"><thead><tr><th>Received</th><th>Type</th>\
         <th>Contact</th><th>Source</th><th>messageId</th><th>Deliveries</th></tr></thead><tbody>",
    );
    for e in &page.events {
        let _ = write!(
            body,
            "<tr data-message-id=\"{mid}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/events/{}\">{mid}</a></td><td>{}</td></tr>",
            esc(&time(Some(e.received_at_ms))),
            esc(&e.event_type),
            esc(&e.contact_key),
            esc(&e.source),
            url(&e.message_id),
            status_badges(e),
            mid = esc(&e.message_id),
        );
    }
    body.push_str("</tbody></table>");
    if page.events.is_empty() {
        body.push_str("<p class=\"empty\">No event matches.</p>");
    }
    if let Some(before) = page.next_before {
        let next = EventParams {
            before: Some(before.to_string()),
            ..p.clone()
        };
        let query = serde_urlencoded_pairs(&next);
        let _ = write!(
            body,
            "<p><a class=\"next\" href=\"/events?{}\">Older events →</a></p>",
            esc(&query)
        );
    }
    Ok(layout(&s, "Events", "/events", &body))
}

/// The search parameters as a query string (empty ones left out).
fn serde_urlencoded_pairs(p: &EventParams) -> String {
    let pairs = [
        ("user", &p.user),
        ("email", &p.email),
        ("type", &p.event_type),
        ("status", &p.status),
        ("source", &p.source),
        ("message_id", &p.message_id),
        ("since", &p.since),
        ("until", &p.until),
        ("before", &p.before),
        ("limit", &p.limit),
    ];
    pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", url(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn pretty(raw: &str) -> String {
    serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_owned())
}

fn outcome_cells(t: &TraitMapping) -> (String, String) {
    match &t.outcome {
        TraitOutcome::Identifier => (
            "identifier".into(),
            "the contact's email (unique identifier)".into(),
        ),
        TraitOutcome::Field {
            field,
            label,
            custom,
            matched_by,
        } => (
            "field".into(),
            format!(
                "→ {} ({}{}), matched by {}",
                esc(field),
                esc(label),
                if *custom { ", custom" } else { "" },
                serde_json::to_value(matched_by)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_default()
            ),
        ),
        TraitOutcome::NameSplit => ("field".into(), "→ first_name and last_name".into()),
        TraitOutcome::Unmapped { suggestions } => (
            "unmapped".into(),
            if suggestions.is_empty() {
                "no field matches".into()
            } else {
                format!(
                    "no field matches; closest: {}",
                    esc(&suggestions.join(", "))
                )
            },
        ),
        TraitOutcome::Ambiguous { fields } => (
            "ambiguous".into(),
            format!("matches several fields: {}", esc(&fields.join(", "))),
        ),
        TraitOutcome::CoercionFailed { field, reason } => (
            "coercion-failed".into(),
            format!("{}: {}", esc(field), esc(reason)),
        ),
        TraitOutcome::OlderThanKept { field, kept_ts_ms } => (
            "older".into(),
            format!(
                "{} holds a value from a newer event ({})",
                esc(field),
                esc(&time(Some(*kept_ts_ms)))
            ),
        ),
    }
}

/// The mapping report as table rows.
pub fn mapping_rows(traits: &[TraitMapping]) -> String {
    let mut out = String::from(
        "<table class=\"list mapping\"><thead><tr><th>Trait</th><th>Value</th><th>Outcome</th></tr></thead><tbody>",
    );
    for t in traits {
        let (class, text) = outcome_cells(t);
        let _ = write!(
            out,
            "<tr class=\"{class}\" data-trait=\"{key}\"><td>{key}</td><td><code>{}</code></td><td>{text}</td></tr>",
            esc(&t.value.to_string()),
            key = esc(&t.key),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn trace_html(t: &TraceView) -> String {
    let e = &t.event;
    let mut out = format!(
        "<section class=\"trace\" data-event-id=\"{}\"><h2>{} from {} for {}</h2>\
         <p>Event time {}, received {}.</p><h3>As received</h3><pre class=\"raw\">{}</pre>",
        e.event_id,
        esc(&e.event_type),
        esc(&e.source),
        esc(&e.contact_key),
        esc(&time(Some(e.timestamp_ms))),
        esc(&time(Some(e.received_at_ms))),
        esc(&pretty(&e.raw))
    );
    for m in &t.mapping {
        let _ = write!(out, "<h3>Mapping for {}</h3>", esc(&m.destination));
        match m.fields_fetched_at_ms {
            Some(at) => {
                let _ = write!(
                    out,
                    "<p class=\"note\">With the account's fields as fetched {}.</p>{}",
                    esc(&time(Some(at))),
                    mapping_rows(&m.traits)
                );
            }
            None => out.push_str(
                "<p class=\"note\">The account's fields were never fetched, so the mapping cannot be shown yet.</p>",
            ),
        }
    }
    for d in &e.deliveries {
        let _ = write!(
            out,
            "<h3>Delivery to {}: <span class=\"badge {}\">{}</span></h3>",
            esc(&d.destination),
            d.status.as_str(),
            d.status.as_str()
        );
        if let Some(r) = &d.reason {
            let _ = write!(out, "<p class=\"reason\">{}</p>", esc(r));
        }
        if let Some(next) = d.next_attempt_ms {
            let _ = write!(out, "<p>Next attempt {}.</p>", esc(&time(Some(next))));
        }
        if !d.history.is_empty() {
            out.push_str("<p>Earlier outcomes, oldest first:</p><ol class=\"history\">");
            for p in &d.history {
                let _ = write!(out, "<li>{}</li>", esc(&past_outcome_words(p)));
            }
            out.push_str("</ol>");
        }
        if d.attempts.is_empty() && d.status == DeliveryStatus::Pending {
            out.push_str("<p class=\"note\">No call yet.</p>");
        }
        for a in &d.attempts {
            let others: Vec<String> = a
                .delivery_ids
                .iter()
                .filter_map(|id| t.merged.get(id))
                .map(|mid| format!("<a href=\"/events/{}\">{}</a>", url(mid), esc(mid)))
                .collect();
            let _ = write!(
                out,
                "<div class=\"attempt\"><p><strong>{}</strong> {} → {}: {}</p>",
                esc(&time(Some(a.at_ms))),
                esc(&a.request_line),
                a.status
                    .map_or_else(|| "no response".to_owned(), |s| s.to_string()),
                esc(&a.outcome)
            );
            if !others.is_empty() {
                let _ = write!(
                    out,
                    "<p class=\"merged\">This call also carried {}: a field it sent may come from one of them rather than from this event.</p>",
                    others.join(", ")
                );
            }
            if let Some(b) = &a.request_body {
                let _ = write!(
                    out,
                    "<details open><summary>Request</summary><pre>{}</pre></details>",
                    esc(&pretty(b))
                );
            }
            if let Some(b) = &a.response_body {
                let _ = write!(
                    out,
                    "<details><summary>Response</summary><pre>{}</pre></details>",
                    esc(&pretty(b))
                );
            }
            out.push_str("</div>");
        }
    }
    out.push_str("</section>");
    out
}

pub(super) async fn trace(
    State(s): State<AdminState>,
    Path(message_id): Path<String>,
) -> PageResult {
    let traces = s.views.trace(&message_id).await?;
    if traces.is_empty() {
        return Err(ViewError::NotFound(format!(
            "no stored event has messageId {message_id:?} (it may have been pruned after the retention period)"
        ))
        .into());
    }
    let body: String = traces.iter().map(trace_html).collect();
    Ok(layout(&s, &format!("Event {message_id}"), "/events", &body))
}

pub(super) async fn dead_letters(
    State(s): State<AdminState>,
    Query(p): Query<DeadLetterParams>,
) -> PageResult {
    let filter = p.to_filter()?;
    let dead = s.views.dead_letters(&filter).await?;
    let total = s.views.count_dead(&filter).await?;
    let mut body = String::from(
        "<form class=\"filters\" method=\"get\" action=\"/dead-letters\" id=\"dead-filter\">",
    );
    body.push_str(&input("destination", "Destination", &p.destination, ""));
    body.push_str(&input("reason", "Reason contains", &p.reason, "400"));
    body.push_str(&input("contact", "Contact", &p.contact, "user-42"));
    body.push_str(&input("since", "Since", &p.since, "2026-11-25T00:00:00Z"));
    body.push_str(&input("until", "Until", &p.until, ""));
    body.push_str("<button type=\"submit\">Filter</button></form>");
    let _ = write!(
        body,
        "<p class=\"actions\"><span id=\"dead-count\" data-count=\"{total}\">{total} matching</span> \
         <button type=\"button\" id=\"replay-selected\">Replay selected</button> \
         <button type=\"button\" id=\"replay-all\" data-count=\"{total}\">Replay all {total} matching</button> \
         <span id=\"replay-result\" role=\"status\"></span></p>"
    );
    body.push_str(
        "<table class=\"list\" id=\"dead-letters\"><thead><tr><th></th><th>Dead since</th>\
         <th>Destination</th><th>Contact</th><th>Event</th><th>Attempts</th><th>Reason</th><th></th></tr></thead><tbody>",
    );
    for d in &dead {
        let _ = write!(
            body,
            "<tr data-delivery-id=\"{id}\"><td><input type=\"checkbox\" class=\"pick\" value=\"{id}\" aria-label=\"select\"></td>\
             <td>{}</td><td>{}</td><td>{}</td><td><a href=\"/events/{}\">{} {}</a></td><td>{}</td>\
             <td class=\"reason\">{}</td><td><button type=\"button\" class=\"replay-one\" value=\"{id}\">Replay</button></td></tr>",
            esc(&time(Some(d.dead_at_ms))),
            esc(&d.destination),
            esc(&d.contact_key),
            url(&d.message_id),
            esc(&d.event_type),
            esc(&d.message_id),
            d.attempts,
            esc(&d.reason),
            id = d.delivery_id,
        );
    }
    body.push_str("</tbody></table>");
    if dead.is_empty() {
        body.push_str("<p class=\"empty\">No dead letters match.</p>");
    }
    Ok(layout(&s, "Dead letters", "/dead-letters", &body))
}

pub(super) async fn rejected(State(s): State<AdminState>) -> PageResult {
    let rows = s.views.rejected(200).await?;
    let mut body = String::from(
        "<p class=\"note\">Input that never became an event: bad items of a batch, failed signatures. Newest first.</p>\
         <table class=\"list\" id=\"rejected\"><thead><tr><th>Received</th><th>Source</th><th>Reason</th><th>As received</th></tr></thead><tbody>",
    );
    for r in &rows {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            esc(&time(Some(r.received_at_ms))),
            esc(r.source.as_deref().unwrap_or("-")),
            esc(&r.reason),
            esc(&r.raw)
        );
    }
    body.push_str("</tbody></table>");
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">Nothing was rejected.</p>");
    }
    Ok(layout(&s, "Rejected input", "/rejected", &body))
}

pub(super) async fn unmapped(State(s): State<AdminState>) -> PageResult {
    let rows = s.views.unmapped_traits().await?;
    let mut body = String::from(
        "<p class=\"note\">Trait keys of recent identifies that match no contact field, with the closest field labels. Create the field in Freshworks, or rename the trait to one of the keys listed on Destinations.</p>\
         <table class=\"list\" id=\"unmapped\"><thead><tr><th>Key</th><th>Destination</th><th>Count</th><th>Last seen</th><th>Closest labels</th></tr></thead><tbody>",
    );
    for u in &rows {
        let _ = write!(
            body,
            "<tr data-key=\"{key}\"><td>{key}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.destination),
            u.count,
            esc(&time(Some(u.last_seen_ms))),
            esc(&u.suggestions.join(", ")),
            key = esc(&u.key),
        );
    }
    body.push_str("</tbody></table>");
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">Every recent trait matched a field (or the account's fields were never fetched).</p>");
    }
    Ok(layout(&s, "Unmapped traits", "/unmapped-traits", &body))
}

pub(super) async fn destinations(State(s): State<AdminState>) -> PageResult {
    let list = s.views.destinations().await?;
    let mut body = String::new();
    for d in &list {
        let name = esc(&d.settings.name);
        let _ = write!(
            body,
            "<section class=\"destination\" data-destination=\"{name}\"><h2>{name}</h2><table class=\"kv\">"
        );
        if let Ok(Value::Object(settings)) = serde_json::to_value(&d.settings) {
            for (k, v) in settings {
                let shown = match &v {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".into(),
                    other => other.to_string(),
                };
                let _ = write!(
                    body,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    esc(&k),
                    esc(&shown)
                );
            }
        }
        let _ = write!(
            body,
            "</table><p><button type=\"button\" class=\"test-connection\" value=\"{name}\">Test connection</button> \
             <span class=\"test-result\" role=\"status\"></span></p>"
        );
        let _ = write!(
            body,
            "<h3>Mapping preview</h3><form class=\"preview\" data-destination=\"{name}\">\
             <label>userId<input name=\"user_id\" value=\"preview-user\"></label>\
             <label>Traits (JSON)<textarea name=\"traits\" rows=\"6\">{{\"email\": \"ann@example.com\", \"firstName\": \"Ann\"}}</textarea></label>\
             <button type=\"submit\">Preview</button></form>\
             <div class=\"preview-result\"></div>"
        );
        match d.fields_fetched_at_ms {
            Some(at) => {
                let _ = write!(
                    body,
                    "<h3>Fields</h3><p class=\"note\">As fetched {}. A trait reaches a field by any of its keys.</p>\
                     <table class=\"list fields\"><thead><tr><th>Field</th><th>Label</th><th>Type</th><th>Custom</th><th>Trait keys</th></tr></thead><tbody>",
                    esc(&time(Some(at)))
                );
                for f in &d.fields {
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&f.name),
                        esc(&f.label),
                        esc(&f.field_type),
                        if f.custom { "yes" } else { "" },
                        esc(&f.matched_by.join(", "))
                    );
                }
                body.push_str("</tbody></table>");
            }
            None => body.push_str(
                "<p class=\"note\">The account's fields were never fetched: test the connection to fetch them.</p>",
            ),
        }
        body.push_str("</section>");
    }
    if list.is_empty() {
        body.push_str("<p>No destination is configured.</p>");
    }
    Ok(layout(&s, "Destinations", "/destinations", &body))
}

/// `?next=` is not taken: after login the console opens on the overview.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The admin token.
    pub token: String,
}

fn login_page(message: &str) -> Response {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in · freshgate</title>\
         <link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body><main class=\"login\"><h1>freshgate console</h1>{}\
         <form method=\"post\" action=\"/login\"><label>Admin token\
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"login\">Log in</button></form>\
         <p class=\"note\">The token is the value of FRESHGATE_ADMIN_TOKEN on the gateway.</p></main></body></html>",
        if message.is_empty() {
            String::new()
        } else {
            format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(message))
        }
    ))
    .into_response()
}

pub(super) async fn login_form(State(s): State<AdminState>) -> Response {
    if !s.auth.required() {
        return Redirect::to("/").into_response();
    }
    login_page("")
}

pub(super) async fn login(State(s): State<AdminState>, Form(form): Form<LoginForm>) -> Response {
    let session = match s.auth.session_value() {
        Some(v) if s.auth.token_matches(form.token.trim()) => v,
        // The form again, with the error (200, as a form re-rendered for correction is; a 401
        // here would only add a console error in the browser).
        Some(_) => return login_page("That is not the admin token."),
        None => return Redirect::to("/").into_response(),
    };
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={session}; Path=/; HttpOnly; SameSite=Strict"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("freshgate_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn the_chart_counts_what_it_draws() {
        let now = 10 * 60_000 + CHART_WINDOW_MS;
        let svg = chart(
            "c",
            "Events",
            &[
                MinuteCount {
                    minute_ms: 0,
                    count: 99,
                },
                MinuteCount {
                    minute_ms: 20 * 60_000,
                    count: 3,
                },
            ],
            now,
        );
        assert!(svg.contains("data-total=\"102\""), "{svg}");
        assert_eq!(
            svg.matches("<rect").count(),
            1,
            "older than 24 h is not drawn"
        );
    }
}
