//! The HTTP/1.1 connection loop under the router: accepting, the header read timeout,
//! malformed-HTTP accounting, and the graceful drain on shutdown.
//!
//! `axum::serve` hides hyper's connection builder, so neither a header read timeout nor the
//! errors of a connection (a slowloris client, a request hyper cannot parse) were reachable;
//! this loop is the few lines of it that wander needs, with those two exposed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::AppState;

/// The client's address, put into every request's extensions (for the access log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// How long a kept-alive connection may stay open after the stop signal for its client's
/// next request (answered with `connection: close`) before an idle one is closed.
const IDLE_GRACE: Duration = Duration::from_millis(1000);

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Every connection finished within the drain time.
    Drained,
    /// The drain time passed; the remaining connections were closed.
    DeadlinePassed {
        /// Connections still open at the deadline.
        open: usize,
    },
}

/// Serves `state`'s router on `listener` until `shutdown` resolves; then stops accepting,
/// answers every further request with `connection: close`, closes connections that stay
/// idle for [`IDLE_GRACE`], and after `drain` closes what is left.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Ended {
    let app = crate::router(state.clone());
    let read_timeout = Duration::from_millis(state.config.serve.read_timeout_ms);
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let stopping = Arc::new(AtomicBool::new(false));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        eprintln!("wander: accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let stopping = stopping.clone();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let answer = app.clone().oneshot(req.map(Body::new));
                    let stopping = stopping.clone();
                    async move {
                        let mut answer = answer.await?;
                        // Once stopping, every answer tells its client to go elsewhere, so
                        // no kept-alive connection is closed under a request on its way.
                        if stopping.load(Ordering::Acquire) {
                            answer.headers_mut().insert(
                                axum::http::header::CONNECTION,
                                axum::http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(answer)
                    }
                });
                let mut closing = closing_rx.clone();
                let state = state.clone();
                connections.spawn(async move {
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new()).header_read_timeout(read_timeout);
                    let mut conn = pin!(http.serve_connection(TokioIo::new(stream), service));
                    let finished = tokio::select! {
                        r = conn.as_mut() => Some(r),
                        _ = closing.wait_for(|c| *c) => None,
                    };
                    let result = match finished {
                        Some(r) => r,
                        // Every answer from now on carries `connection: close`, so busy
                        // connections and clients that send again end by themselves. One
                        // that stays idle for IDLE_GRACE is closed: a client sending at that
                        // moment meets the HTTP/1.1 race (only idempotent requests may be
                        // retried), which the grace makes unlikely for a client under load.
                        None => {
                            let grace = IDLE_GRACE.min(drain);
                            match tokio::time::timeout(grace, conn.as_mut()).await {
                                Ok(r) => r,
                                Err(_) => {
                                    conn.as_mut().graceful_shutdown();
                                    conn.await
                                }
                            }
                        }
                    };
                    if let Err(e) = result {
                        state.metrics.connection_error(connection_error_kind(&e));
                    }
                });
            }
        }
    }
    drop(listener);
    stopping.store(true, Ordering::Release);
    let _ = closing_tx.send(true);
    let finished = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match finished {
        Ok(()) => Ended::Drained,
        Err(_) => {
            let open = connections.len();
            connections.abort_all();
            Ended::DeadlinePassed { open }
        }
    }
}

/// The `kind` label of `wander_connection_errors_total` for a connection that ended in `e`.
/// hyper answers the parse errors itself (400, 414 or 431, without a body) before the router
/// sees a request; a header timeout closes the connection without an answer.
fn connection_error_kind(e: &hyper::Error) -> &'static str {
    if e.is_timeout() {
        "header_timeout"
    } else if e.is_parse_too_large() {
        "header_too_large"
    } else if e.is_parse() {
        "malformed_request"
    } else if e.is_incomplete_message() {
        "incomplete_request"
    } else {
        "other"
    }
}
