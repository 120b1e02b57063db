//! Serving: an own accept loop over hyper (so a fault can drop a connection without answering),
//! graceful shutdown, and [`RunningEmulator`] for tests (binds `127.0.0.1:0`).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::config::EmulatorConfig;
use crate::routes::{BASE, DropConnection};
use crate::state::EmulatorState;

/// Error returned to hyper so that it closes the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

/// How long in-flight connections get to finish after shutdown is requested.
const GRACE: Duration = Duration::from_secs(5);

/// Serves the emulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: EmulatorState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app: Router = crate::router(state);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Transient accept errors (e.g. EMFILE) must not stop the server.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let app = app.clone();
                    async move {
                        let resp = app.oneshot(req.map(Body::new)).await.map_err(|never| match never {})?;
                        if resp.extensions().get::<DropConnection>().is_some() {
                            return Err(Dropped);
                        }
                        Ok(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("emulator connections still open after the grace period");
    }
    Ok(())
}

/// An emulator running on a background task, for tests.
#[derive(Debug)]
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT/crm/sales/api`.
    pub base_url: String,
    /// `http://127.0.0.1:PORT/__emulator`.
    pub admin_url: String,
    /// Direct handle on the emulator's state.
    pub state: EmulatorState,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningEmulator {
    /// Builds the state and serves it on `127.0.0.1:0`.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Self> {
        let state = EmulatorState::new(config)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            // A dropped sender also means stop.
            let _ = rx.await;
        }));
        Ok(Self {
            base_url: format!("http://{addr}{BASE}"),
            admin_url: format!("http://{addr}/__emulator"),
            state,
            stop,
            task,
        })
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "emulator server failed"),
            Err(e) => tracing::warn!(error = %e, "emulator server task panicked"),
        }
    }
}
