//! The accept loop: each connection is served by hyper's HTTP/1 server with
//! the app ([`Front`]) as its service, under two timeouts, and drained on shutdown.
//!
//! - Header timeout: hyper's own `header_read_timeout` (with a tokio timer;
//!   `axum::serve` sets no timer, which leaves it off). hyper (1.x) starts it
//!   whenever the connection begins waiting for a request head: on a new
//!   connection, and again after each response on a kept-alive one. So it
//!   bounds the time to receive a whole head (a slowloris sending one header
//!   line every few seconds is closed), and also how long a kept-alive
//!   connection can sit idle. It is not running while a request is handled.
//! - Keep-alive timeout: hyper has no idle timer of its own, so each
//!   connection watches its own activity ([`Activity`]): once a request has
//!   been answered, no request being answered and no byte read or written for
//!   that long, the connection is shut down gracefully (closed at once, as
//!   nothing is in flight). As in Node, any byte of the next request resets
//!   it, and it does not apply before the first request (the header timeout
//!   does).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::access_log::AccessLog;
use crate::front::Front;

/// How long a client may take; see `--header-timeout-ms` and
/// `--keep-alive-timeout-ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To send a whole request head, counted from when the server starts
    /// waiting for it (hyper's `header_read_timeout`).
    pub header: Duration,
    /// To start the next request (and send each further byte of its head)
    /// after a response.
    pub keep_alive: Duration,
}

/// Accepts connections and serves `front` on each (each request's line in
/// `access`, if any) until `signal` completes; then closes the listener,
/// shuts every connection down gracefully (idle ones at once, the others
/// after their in-flight request) and returns once all are closed. Dropping
/// the future cuts the remaining connections.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Front,
    access: Option<AccessLog>,
    timeouts: Timeouts,
    signal: impl Future<Output = ()>,
) {
    // Dropping `stop` is the signal: every receiver's `changed()` completes.
    let (stop, stopped) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut signal = pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(
                        stream,
                        peer,
                        front.clone(),
                        access.clone(),
                        timeouts,
                        stopped.clone(),
                    ));
                }
                Err(e) => accept_failed(e).await,
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => reap(done),
            () = &mut signal => break,
        }
    }
    drop(listener);
    drop(stop);
    while let Some(done) = connections.join_next().await {
        reap(done);
    }
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!("a connection task panicked: {e}");
        }
    }
}

/// A connection that failed before it was accepted (reset, aborted) is
/// skipped; anything else (out of file descriptors, say) is logged and the
/// loop waits a second before accepting again, instead of spinning.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset) {
        debug!("accept: {e}");
    } else {
        warn!("accept failed: {e}; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    front: Front,
    access: Option<AccessLog>,
    timeouts: Timeouts,
    mut stopped: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let in_flight = InFlight::new(&activity);
            let line = access
                .as_ref()
                .and_then(|log| log.begin(req.method(), req.uri()));
            let answer = front.answer(req);
            async move {
                let res = answer.await;
                if let (Some(line), Ok(res)) = (line, &res) {
                    line.done(res.status());
                }
                drop(in_flight);
                res
            }
        })
    };
    let mut conn = pin!(http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(io, service));
    let why = tokio::select! {
        result = conn.as_mut() => return closed(peer, result),
        _ = stopped.changed() => "shutting down",
        () = activity.idle_for(timeouts.keep_alive) => "keep-alive timeout",
    };
    debug!(%peer, "closing the connection: {why}");
    conn.as_mut().graceful_shutdown();
    closed(peer, conn.await);
}

fn closed(peer: SocketAddr, result: hyper::Result<()>) {
    match result {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(e) if e.is_timeout() => debug!(%peer, "connection closed: header timeout"),
        Err(e) => debug!(%peer, "connection closed: {e}"),
    }
}

/// Milliseconds on the kernel's coarse monotonic clock
/// (`CLOCK_MONOTONIC_COARSE`: the same clock as tokio's, at the scheduler
/// tick's resolution, a few ms), read without the time counter: a
/// connection notes the time of every read and write, and those reads of
/// the precise clock were 1 % of a `GET /`'s CPU (perf). The keep-alive
/// timer needs no finer time than that.
fn coarse_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |t| {
        (t.tv_sec() as u64).saturating_mul(1000) + t.tv_nsec() as u64 / 1_000_000
    })
}

/// What one connection's keep-alive timer looks at.
struct Activity {
    opened: Instant,
    /// [`coarse_ms`] when the connection opened.
    opened_ms: u64,
    /// Milliseconds from `opened` to the last byte read or written, or to
    /// the last answer (on the coarse clock).
    last: AtomicU64,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Whether a request has been answered (the timer starts then).
    answered: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            opened_ms: coarse_ms(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = coarse_ms().saturating_sub(self.opened_ms);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Since when the connection has been idle: `None` while a request is
    /// in flight or before the first answer.
    fn idle_since(&self) -> Option<Instant> {
        let idle =
            self.answered.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Relaxed) == 0;
        idle.then(|| self.opened + Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Completes once the connection has been idle for `limit`. While it is
    /// not idle, it looks again every `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let now = Instant::now();
            let wake = match self.idle_since() {
                Some(since) if now >= since + limit => return,
                Some(since) => since + limit,
                None => now + limit,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request being answered; dropped when it is answered (or abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answered.store(true, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP stream, noting in [`Activity`] every byte read or written.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    fn noted<T>(&self, polled: Poll<io::Result<T>>, moved: bool) -> Poll<io::Result<T>> {
        if moved {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.noted(polled, buf.filled().len() > before)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        this.noted(polled, moved)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        this.noted(polled, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
