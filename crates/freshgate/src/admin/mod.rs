//! The web console and the admin API, served on their own listener (`[server] admin_listen`).
//!
//! One query layer ([`views`]) serves the JSON API ([`api`]), the server-rendered console
//! ([`pages`], with its CSS and JS embedded in the binary: it works with no internet) and the
//! CLI. [`auth`] decides who may see them. [`router`] builds everything so tests can drive it
//! without a socket; [`serve`] runs it on an already-bound listener until shutdown.

pub mod api;
pub mod auth;
pub mod names;
pub mod pages;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use auth::AdminAuth;
pub use views::Views;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The query layer.
    pub views: Views,
    /// Who may pass.
    pub auth: AdminAuth,
    /// Wakes the dispatchers after a replay, so requeued dead letters go out now.
    pub wake: Arc<Notify>,
}

/// Pages and API, behind the token check (the login page and assets are open).
pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/api/v1/overview", get(api::overview))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/events/{message_id}", get(api::trace))
        .route("/api/v1/dead-letters", get(api::dead_letters))
        .route("/api/v1/dead-letters/count", get(api::count_dead))
        .route("/api/v1/dead-letters/replay", post(api::replay_dead))
        .route("/api/v1/rejected", get(api::rejected))
        .route("/api/v1/unmapped-traits", get(api::unmapped))
        .route("/api/v1/destinations", get(api::destinations))
        .route(
            "/api/v1/destinations/{name}/test",
            post(api::test_connection),
        )
        .route("/api/v1/destinations/{name}/preview", post(api::preview))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/", get(pages::overview))
        .route("/events", get(pages::events))
        .route("/events/{message_id}", get(pages::trace))
        .route("/dead-letters", get(pages::dead_letters))
        .route("/rejected", get(pages::rejected))
        .route("/unmapped-traits", get(pages::unmapped))
        .route("/destinations", get(pages::destinations))
        .route("/logout", post(pages::logout))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(guarded)
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/assets/{file}", get(pages::asset))
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Let a request through when the token allows it; else 401 for the API, the login page for
/// a browser.
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if state.auth.allows(request.headers()) {
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(api::ApiError {
                error: format!(
                    "send Authorization: Bearer <token> ({})",
                    crate::config::ENV_ADMIN_TOKEN
                ),
            }),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    } else {
        Redirect::to("/login").into_response()
    }
}

/// The console runs no third-party code and embeds nothing: say so to the browser.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Serve the console on `listener` until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
