//! The accept loop both ports share. Each connection gets a task of its own, which completes
//! the TLS handshake if there is one (bounded in time) and then serves HTTP/1.1 or HTTP/2 with
//! hyper. A client must send a request's headers within `header_read_timeout` (a client that
//! trickles them in, or connects and sends nothing, is cut off), and at most
//! `max_connections` are open at once: past that, new ones are closed as they arrive, which
//! costs the node nothing. At shutdown, idle connections close at once and busy ones get
//! `GRACE` to finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections still busy at shutdown get to finish.
const GRACE: Duration = Duration::from_secs(5);

/// How a port is served.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS, or plain text.
    pub tls: Option<Arc<ServerConfig>>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest a request's headers may take to arrive.
    pub header_read_timeout: Duration,
    /// The port's name in logs.
    pub port: &'static str,
}

/// Serves `app` (an axum `Router`, or any service of the same shape) on `listener` until
/// `shutdown` completes.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // `half_close`: a client that shuts its side of the connection after sending a request
    // still gets the answer, as rqlite's clients do. hyper otherwise reads ahead while a
    // request is served, to drop the request when the client's side closes (nothing here
    // needs that: every request has its own deadline), and that read found the buffer still
    // shared with the request's head and allocated a new 8 KiB one for every request.
    builder
        .http1()
        // One `write` of head and body (see `sliced`).
        .writev(false)
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let graceful = GracefulShutdown::new();
    let port = opts.port;
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to be freed rather than spin.
                    tracing::warn!(error = %e, port, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, port, limit = opts.max_connections, "too many connections; one closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|r: hyper::Request<Incoming>| r.map(axum::body::Body::new))
                .map_response(|r: Response| {
                    crate::idle_poll::answered();
                    r.map(crate::sliced::bounded)
                }),
        );
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = match acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%addr, port, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%addr, port, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%addr, port, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(port, "connections still open after {GRACE:?}; closing them");
    }
    Ok(())
}
