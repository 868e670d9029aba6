//! The lab's sample web app, in Rust: `GET /` says hello with this server's
//! identity and a per-session view counter, `POST /delay` slows every later
//! `GET /` down, `HEAD /` answers HAProxy's health checks.
//!
//! [`Config`] is the command line (every flag also has an environment
//! variable), [`app`] builds the router over an [`AppState`], and [`serve`]
//! runs it (under the header and keep-alive [`Timeouts`]) until a shutdown
//! future completes, then drains in-flight requests for at most the
//! configured grace period.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tracing::{info, warn};

mod conn;
mod sessions;
pub use conn::Timeouts;
pub use sessions::SessionCache;

/// The session cookie's name, as in the lab's Express app.
pub const COOKIE_NAME: &str = "NODESESSID";
/// The largest accepted `POST /delay` value, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The response header naming the backend, as in the lab.
pub const X_BACKEND_IP: HeaderName = HeaderName::from_static("x-backend-ip");

/// Command line and environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "webapp",
    version,
    about = "The lab's sample web app (replaces the Node/Express one)"
)]
pub struct Config {
    /// TCP port to listen on (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// The `ip` reported and sent as `x-backend-ip` [default: this host's primary IPv4, else 127.0.0.1].
    #[arg(long, env = "SERVER_IP")]
    pub server_ip: Option<String>,
    /// The `host` reported [default: the hostname].
    #[arg(long, env = "SERVER_NAME")]
    pub server_name: Option<String>,
    /// The `tag` reported (`TAG` is read when `SERVER_TAG` is unset) [default: empty].
    #[arg(long, env = "SERVER_TAG")]
    pub tag: Option<String>,
    #[arg(long = "tag-fallback", env = "TAG", hide = true)]
    pub tag_fallback: Option<String>,
    /// Sessions not visited for this long expire.
    #[arg(long, env = "SESSION_IDLE_SECS", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_secs: u64,
    /// At most this many live sessions; the least recently used go first.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,
    /// On SIGTERM/SIGINT, wait at most this long for in-flight requests.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// On SIGTERM, keep accepting for this many ms before draining: time
    /// for the member to leave the cluster and the load balancer to take
    /// this server out, so that no request meets a closed port (the
    /// final-stage image sets 3000).
    #[arg(long, env = "SHUTDOWN_DELAY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub shutdown_delay_ms: u64,
    /// Close a connection whose request head (request line and headers) is
    /// not complete this many ms after the server starts waiting for it: on
    /// a new connection, and after each response on a kept-alive one (so it
    /// also bounds an idle keep-alive). Node's `headersTimeout` (60 s).
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub header_timeout_ms: u64,
    /// Close a kept-alive connection left idle (no request in progress,
    /// nothing received) this many ms after a response. Node's
    /// `keepAliveTimeout` (5 s).
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub keep_alive_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["webapp"])
    }
}

impl From<&Config> for Timeouts {
    fn from(config: &Config) -> Self {
        Timeouts {
            header: Duration::from_millis(config.header_timeout_ms),
            keep_alive: Duration::from_millis(config.keep_alive_timeout_ms),
        }
    }
}

/// Shared by all handlers.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    ip: String,
    ip_header: HeaderValue,
    host: String,
    tag: String,
    delay_ms: AtomicU64,
    sessions: SessionCache,
}

impl AppState {
    pub fn new(config: &Config) -> Self {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let ip = set(&config.server_ip).unwrap_or_else(|| primary_ipv4().to_string());
        let ip_header = HeaderValue::from_str(&ip).unwrap_or_else(|_| {
            warn!("SERVER_IP {ip:?} is not a valid header value; x-backend-ip left empty");
            HeaderValue::from_static("")
        });
        Self(Arc::new(Inner {
            ip_header,
            ip,
            host: set(&config.server_name).unwrap_or_else(hostname),
            tag: set(&config.tag)
                .or_else(|| set(&config.tag_fallback))
                .unwrap_or_default(),
            delay_ms: AtomicU64::new(0),
            sessions: SessionCache::new(
                config.max_sessions,
                Duration::from_secs(config.session_idle_secs),
            ),
        }))
    }

    /// The session store (to inspect how many sessions are live).
    pub fn sessions(&self) -> &SessionCache {
        &self.0.sessions
    }
}

/// This host's primary IPv4: the source address the kernel would pick to
/// reach a private address. Connecting a UDP socket sends nothing.
pub fn primary_ipv4() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect((Ipv4Addr::new(10, 254, 254, 254), 9))?;
        Ok(socket.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// An error answered as `{"message": ...}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

impl From<tower_sessions::session::Error> for ApiError {
    fn from(e: tower_sessions::session::Error) -> Self {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session store error: {e}"),
        )
    }
}

#[derive(Serialize)]
struct Hello<'a> {
    hello: &'static str,
    ip: &'a str,
    host: &'a str,
    tag: &'a str,
    #[serde(rename = "sessionViews")]
    session_views: u64,
    id: String,
}

/// `GET /`: waits the configured delay, counts the visit, says hello.
async fn hello(State(app): State<AppState>, session: Session) -> Result<Response, ApiError> {
    let delay = app.0.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    // The cookie's id is looked up in the store by `visit` itself: a known
    // session is counted without loading or saving its record.
    let counted = session
        .id()
        .and_then(|id| Some((id, app.0.sessions.visit(&id)?)));
    let (id, views) = match counted {
        Some(known) => known,
        None => {
            // No cookie, or an expired/evicted/forged one: start a session.
            // Saving now creates the store entry, so the id is known here.
            session.insert("seen", true).await?;
            session.save().await?;
            let id = session.id().ok_or_else(|| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "session has no id after save".into(),
                )
            })?;
            // `None` only if the brand-new entry was already evicted (tiny cap,
            // heavy load): this visit still was its first.
            (id, app.0.sessions.visit(&id).unwrap_or(1))
        }
    };
    let body = Hello {
        hello: "world!",
        ip: &app.0.ip,
        host: &app.0.host,
        tag: &app.0.tag,
        session_views: views,
        id: id.to_string(),
    };
    Ok(([(X_BACKEND_IP, app.0.ip_header.clone())], Json(body)).into_response())
}

/// `HEAD /`: HAProxy's health check. No delay, no session.
async fn health(State(app): State<AppState>) -> impl IntoResponse {
    [(X_BACKEND_IP, app.0.ip_header.clone())]
}

/// `POST /delay` with `{"delay": MS}` or `delay=MS`.
async fn set_delay(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let delay = parse_delay(&headers, &body)?;
    app.0.delay_ms.store(delay, Ordering::Relaxed);
    info!(delay_ms = delay, "GET / delay configured");
    Ok(Json(
        json!({ "message": format!("New timeout of {delay}ms configured.") }),
    ))
}

fn parse_delay(headers: &HeaderMap, body: &[u8]) -> Result<u64, ApiError> {
    let mime = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let value = if body.is_empty() {
        None
    } else if mime == "application/json" || mime.ends_with("+json") {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")))?;
        doc.get("delay").cloned()
    } else if mime == "application/x-www-form-urlencoded" {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid form body: {e}")))?;
        pairs
            .into_iter()
            .find(|(k, _)| k == "delay")
            .map(|(_, v)| Value::String(v))
    } else {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Unsupported content type {mime:?}: send application/json {{\"delay\": MS}} \
                 or application/x-www-form-urlencoded delay=MS"
            ),
        ));
    };
    // Missing or invalid values are 500s, as in the lab's app.
    let value = value.ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No delay configured: the body has no `delay` field. \
             Send JSON {\"delay\": MS} or form delay=MS."
                .into(),
        )
    })?;
    let ms = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    ms.filter(|ms| *ms <= MAX_DELAY_MS).ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "No delay configured: invalid delay {value}: expected whole milliseconds \
                 from 0 to {MAX_DELAY_MS}"
            ),
        )
    })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("Not found: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method not allowed: {method} {}", uri.path()),
    )
}

/// The router with its state, session layer and access log.
pub fn app(state: AppState) -> Router {
    let sessions = SessionManagerLayer::new(state.0.sessions.clone())
        .with_name(COOKIE_NAME)
        .with_path("/")
        .with_http_only(true)
        .with_secure(false) // plain HTTP behind HAProxy, as in the lab
        .with_same_site(SameSite::Lax)
        // A browser-session cookie, like Express's; idle expiry is the
        // store's (time-to-idle), so visits need not re-send the cookie.
        .with_expiry(Expiry::OnSessionEnd);
    let access_log = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        })
        .on_request(|_: &Request, _: &tracing::Span| tracing::debug!("started"))
        .on_response(|res: &Response, latency: Duration, _: &tracing::Span| {
            info!(status = res.status().as_u16(), latency = ?latency, "done")
        })
        .on_failure(());
    Router::new()
        .route("/", get(hello).head(health))
        .route("/delay", post(set_delay))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(sessions)
        .layer(access_log)
        .with_state(state)
}

/// Serves [`app`] for `config` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let delay = Duration::from_millis(config.shutdown_delay_ms);
    let shutdown = async move {
        shutdown.await;
        if !delay.is_zero() {
            info!("still serving for {delay:?} while the load balancer lets go of us");
            tokio::time::sleep(delay).await;
        }
    };
    let timeouts = Timeouts::from(&config);
    serve_state(listener, AppState::new(&config), timeouts, grace, shutdown).await
}

/// [`serve`] with a given state (tests keep a clone to look at the store).
/// Once `shutdown` completes, stops accepting, closes idle connections and
/// waits at most `grace` for in-flight requests; past that, the connections
/// still open are closed.
pub async fn serve_state(
    listener: TcpListener,
    state: AppState,
    timeouts: Timeouts,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    info!(
        ip = %state.0.ip, host = %state.0.host, tag = %state.0.tag,
        "listening on {}", listener.local_addr()?
    );
    let store = state.0.sessions.clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            store.housekeep();
        }
    });
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        info!("shutting down: no new connections, draining in-flight requests");
        let _ = stopping_tx.send(());
    };
    tokio::select! {
        () = conn::serve(listener, app(state), timeouts, signal) => {}
        () = async {
            match stopping_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        } => {
            warn!("in-flight requests still running after {grace:?}: stopping anyway");
        }
    }
    housekeeping.abort();
    info!("stopped");
    Ok(())
}
