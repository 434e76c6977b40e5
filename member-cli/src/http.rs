//! The metrics endpoint: `GET /metrics` over HTTP/1.1, served with hyper.
//!
//! ```text
//! TcpListener ─► accept (at most MAX_CONNECTIONS at once, the rest closed at once)
//!   ─► hyper http1 connection (headers within HEADER_TIMEOUT, whole connection within
//!      CONNECTION_TIMEOUT)
//!   ─► GET /metrics ─► Scrape sent to the run loop, which owns the member
//!      ─► its text within SCRAPE_TIMEOUT, or 503 (the member is busy leaving)
//!      anything else ─► 404 or 405
//! ```
//!
//! The run loop renders the text itself so the member stays owned by one task.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A scrape waiting for the run loop: send the metrics text back on it.
pub(crate) type Scrape = oneshot::Sender<String>;

/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this, whatever it is doing.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The run loop must answer a scrape within this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves metrics on `listener` until the task is aborted or the run loop is gone.
pub(crate) async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Scrape>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, or a connection reset before it was accepted: the
                // listener itself is fine, so wait a moment rather than spin.
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if scrapes.is_closed() {
            return;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "metrics: {MAX_CONNECTIONS} connections open already, closing");
            continue;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, scrapes.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics: connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics: connection closed after its time"),
                Ok(Ok(())) => {}
            }
            drop(slot);
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    scrapes: mpsc::Sender<Scrape>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let (reply, text) = oneshot::channel();
    let scrape = async {
        scrapes.send(reply).await.ok()?;
        text.await.ok()
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, scrape).await {
        Ok(Some(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(cohort_membership::metrics::prometheus::CONTENT_TYPE),
            );
            Ok(response)
        }
        _ => Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the member is not taking scrapes (leaving or stopped)\n",
        )),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
