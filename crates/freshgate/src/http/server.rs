//! Serving the router on a public socket: every connection under a cap, every request head under
//! a deadline, and a graceful drain on shutdown.
//!
//! `axum::serve` has no header-read timeout and no connection cap: 200 idle connections stayed
//! open for a minute, and a slowloris could hold every file descriptor. This is the same hyper
//! HTTP/1.1 server with those limits set. The header-read timeout runs from the moment a
//! connection waits for a request head (a new connection, or a keep-alive one after its last
//! response) until the head is complete, so it is also the idle keep-alive timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::telemetry::events;

/// The connection limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From waiting for a request head (new or keep-alive connection) to having all of it.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are answered `503 too_many_connections` and closed.
    pub max_connections: usize,
}

/// Headers hyper itself accepts: more than the 100 the router answers `431` for (with a JSON
/// body), so that the usual case gets our body instead of hyper's empty one.
const HYPER_MAX_HEADERS: usize = 200;
/// Buffer for a request head: room for the router's URI and header limits and a margin.
const HYPER_MAX_BUF: usize = 256 * 1024;
/// Connections being told `503 too_many_connections` at once; past it they are just closed.
const MAX_REFUSING: usize = 64;

/// The answer to a connection over the cap.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 84\r\n\
\r\n\
{\"code\":\"too_many_connections\",\"message\":\"too many open connections; retry shortly\"}";

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting, let in-flight
/// requests finish and close idle connections.
///
/// # Errors
/// Never for a failed connection (it is logged and dropped); the type leaves room for listener
/// failures.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener survives.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            events::connection_refused();
            if let Ok(refusal) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Tell a connection over the cap why it is closed, without waiting on it for long.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // An HTTP client takes an answer that comes before its request for a protocol error:
        // wait for (a little of) the request head first.
        let mut sink = [0_u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await;
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await?;
        // Read the rest so that closing does not reset the connection before the client has
        // read the answer.
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canned_refusal_has_the_right_length() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["code"], "too_many_connections");
    }
}
