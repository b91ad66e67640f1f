//! The HTTP/1.1 connection loop under the router: accepting, the header read timeout,
//! malformed-HTTP accounting, and the graceful drain on shutdown.
//!
//! `axum::serve` hides hyper's connection builder, so neither a header read timeout nor the
//! errors of a connection (a slowloris client, a request hyper cannot parse) were reachable;
//! this loop is the few lines of it that wander needs, with those two exposed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// How long an idle kept-alive connection stays open after the stop signal, for a request
/// its client may be sending.
const IDLE_GRACE: Duration = Duration::from_millis(1000);

/// Counts a connection's requests in flight while alive.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

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
/// lets open connections finish their requests for up to `drain` (hyper answers them with
/// `connection: close` and closes idle ones at once), and closes what is left.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Ended {
    let app = crate::router(state.clone());
    let read_timeout = Duration::from_millis(state.config.serve.read_timeout_ms);
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
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
                let in_flight = Arc::new(AtomicUsize::new(0));
                let counter = in_flight.clone();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let busy = InFlight::enter(&counter);
                    let answer = app.clone().oneshot(req.map(Body::new));
                    async move {
                        let answer = answer.await;
                        drop(busy);
                        answer
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
                        // A busy connection finishes its request, answered with
                        // `connection: close`. An idle one may be carrying the client's
                        // next request right now: closing it under that request fails it
                        // (the HTTP/1.1 race clients may only retry when idempotent), so it
                        // gets IDLE_GRACE for a request to arrive and be answered the same way.
                        None => {
                            let deadline = tokio::time::Instant::now() + IDLE_GRACE.min(drain);
                            loop {
                                if in_flight.load(Ordering::Acquire) > 0
                                    || tokio::time::Instant::now() >= deadline
                                {
                                    conn.as_mut().graceful_shutdown();
                                    break conn.await;
                                }
                                tokio::select! {
                                    r = conn.as_mut() => break r,
                                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
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
