//! The lab's sample web app, in Rust: `GET /` says hello with this server's
//! identity and a per-session view counter, `POST /delay` slows every later
//! `GET /` down, `HEAD /` answers HAProxy's health checks. Sessions live in
//! this process or in a Redis server shared by all web apps ([`sessions`]).
//!
//! [`Config`] is the command line (every flag also has an environment
//! variable), [`app`] builds the router over an [`AppState`], and [`serve`]
//! runs it (under the header and keep-alive [`Timeouts`], one runtime per
//! core on the sockets of [`bind`], each request's line in the
//! [`AccessLog`]) until a shutdown future completes, then drains in-flight
//! requests for at most the configured grace period ([`serve_state`]: the
//! same on one listener and the caller's runtime).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower_sessions::cookie::SameSite;
use tower_sessions::session::Id;
use tower_sessions::session_store;
#[cfg(test)]
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tracing::{info, warn};

pub mod access_log;
mod conn;
mod front;
pub mod log_out;
mod session_cookie;
pub mod sessions;
mod workers;
pub use access_log::AccessLog;
pub use conn::Timeouts;
pub use session_cookie::SessionCookie;
pub use sessions::setting::{BadStoreSetting, StoreArg, StoreSetting};
pub use sessions::{RedisSessions, SessionBackend, SessionCache, StoreUnavailable};
pub use workers::{bind, serve, Listeners};

/// The session cookie's name, as in the lab's Express app.
pub const COOKIE_NAME: &str = "NODESESSID";
/// The largest accepted `POST /delay` value, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The response header naming the backend, as in the lab.
pub const X_BACKEND_IP: HeaderName = HeaderName::from_static("x-backend-ip");
/// The request id HAProxy sets and keeps across retries: a `GET /` carrying
/// the id of its session's last counted visit is a replay, not counted again.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest accepted `X-Request-Id`, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 256;

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
    /// At most this many live sessions; the least recently used go first
    /// (the memory store; Redis's own `maxmemory` bounds Redis).
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,
    /// Where sessions live: `memory` (this process) or
    /// `redis://[[user]:password@]host[:port][/db]` (shared by all web apps).
    #[arg(long, env = "SESSION_STORE", default_value = "memory")]
    pub session_store: StoreArg,
    /// Each Redis operation gets this long; past it the request that needs
    /// the store is answered 503.
    #[arg(long, env = "SESSION_STORE_TIMEOUT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub session_store_timeout_ms: u64,
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
    /// The hello body up to its count ([`hello_head`]).
    hello_head: Vec<u8>,
    delay_ms: AtomicU64,
    sessions: SessionBackend,
    /// Where each request's line goes (none: no access log).
    access_log: OnceLock<AccessLog>,
}

/// Why the app cannot start with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    StoreSetting(#[from] BadStoreSetting),
    #[error(transparent)]
    Store(#[from] StoreUnavailable),
}

impl AppState {
    /// The state for `config`; a `--session-store` that does not parse is an
    /// error, a Redis server that is not up is not (it is connected to on
    /// first use). Must run inside a tokio runtime.
    pub fn new(config: &Config) -> Result<Self, StartError> {
        let setting = config.session_store.parse()?;
        let sessions = SessionBackend::new(
            &setting,
            config.max_sessions,
            Duration::from_secs(config.session_idle_secs),
            Duration::from_millis(config.session_store_timeout_ms),
        )?;
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let ip = set(&config.server_ip).unwrap_or_else(|| primary_ipv4().to_string());
        let ip_header = HeaderValue::from_str(&ip).unwrap_or_else(|_| {
            warn!("SERVER_IP {ip:?} is not a valid header value; x-backend-ip left empty");
            HeaderValue::from_static("")
        });
        let host = set(&config.server_name).unwrap_or_else(hostname);
        let tag = set(&config.tag)
            .or_else(|| set(&config.tag_fallback))
            .unwrap_or_default();
        Ok(Self(Arc::new(Inner {
            ip_header,
            hello_head: hello_head(&ip, &host, &tag),
            ip,
            host,
            tag,
            delay_ms: AtomicU64::new(0),
            sessions,
            access_log: OnceLock::new(),
        })))
    }

    /// Writes each request's line to `log` from now on (without one, the
    /// server keeps no access log). Only the first call counts.
    pub fn set_access_log(&self, log: AccessLog) {
        let _ = self.0.access_log.set(log);
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionBackend {
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

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// `{"message": ...}` with this status.
    Message(StatusCode, String),
    /// 503 `{"error": "session store unavailable", "detail": ...}`.
    StoreUnavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Message(status, message) => {
                (status, Json(json!({ "message": message }))).into_response()
            }
            ApiError::StoreUnavailable(detail) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "session store unavailable", "detail": detail })),
            )
                .into_response(),
        }
    }
}

impl From<StoreUnavailable> for ApiError {
    fn from(e: StoreUnavailable) -> Self {
        ApiError::StoreUnavailable(e.detail)
    }
}

impl From<session_store::Error> for ApiError {
    fn from(e: session_store::Error) -> Self {
        match e {
            // The only errors our stores' backends give: unreachable, slow.
            session_store::Error::Backend(detail) => ApiError::StoreUnavailable(detail),
            e => ApiError::Message(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("session store error: {e}"),
            ),
        }
    }
}

/// A request's `X-Request-Id`, when it has one (the last one when several:
/// HAProxy's `unique-id-header` adds its own after any the client sent).
#[derive(Debug)]
pub struct RequestId(Option<HeaderValue>);

impl RequestId {
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_ref().and_then(|v| v.to_str().ok())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        RequestId::from_headers(&parts.headers)
    }
}

impl RequestId {
    /// The request's id, or the 400 a malformed one gets.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get_all(X_REQUEST_ID).iter().next_back() else {
            return Ok(RequestId(None));
        };
        if value.is_empty() {
            return Ok(RequestId(None));
        }
        if value.len() > MAX_REQUEST_ID_LEN || value.to_str().is_err() {
            let shown: String = String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(64)
                .collect();
            return Err(ApiError::Message(
                StatusCode::BAD_REQUEST,
                format!(
                    "Invalid X-Request-Id {shown:?} ({} bytes): expected at most \
                     {MAX_REQUEST_ID_LEN} visible ASCII characters",
                    value.len()
                ),
            ));
        }
        Ok(RequestId(Some(value.clone())))
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

/// The [`Hello`] body of this server up to its count: `{"hello":
/// "world!","ip":...,"host":...,"tag":...,"sessionViews":`, serialized once;
/// each answer appends the count and the id ([`hello_body`]) instead of
/// serializing the whole struct (serde's string escaping and map writing
/// were 1.2 % of a `GET /`'s CPU; a test compares the two).
fn hello_head(ip: &str, host: &str, tag: &str) -> Vec<u8> {
    let mut whole = serde_json::to_vec(&Hello {
        hello: "world!",
        ip,
        host,
        tag,
        session_views: 0,
        id: String::new(),
    })
    .expect("strings serialize");
    let tail: &[u8] = br#"0,"id":""}"#;
    assert!(whole.ends_with(tail), "the count and the id come last");
    whole.truncate(whole.len() - tail.len());
    whole
}

/// The hello body: `head`, the count, the session id.
fn hello_body(head: &[u8], views: u64, id: &str) -> Vec<u8> {
    let mut json = Vec::with_capacity(head.len() + 64);
    json.extend_from_slice(head);
    json.extend_from_slice(itoa::Buffer::new().format(views).as_bytes());
    json.extend_from_slice(br#","id":"#);
    serde_json::to_writer(&mut json, id).expect("a string serializes");
    json.push(b'}');
    json
}

/// `GET /` through the router (the connections answer it without the
/// router: [`front`]).
async fn hello(
    State(app): State<AppState>,
    request: RequestId,
    cookie: SessionCookie,
) -> Result<Response, ApiError> {
    app.hello(request.as_str(), cookie.0).await
}

impl AppState {
    /// `GET /` with the request id `request` and the session cookie's id
    /// `cookie`: waits the configured delay, counts the visit, says hello.
    async fn hello(&self, request: Option<&str>, cookie: Option<Id>) -> Result<Response, ApiError> {
        let delay = self.0.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // The cookie's id is looked up in the store by `visit` itself: a known
        // session is counted without loading or saving its record.
        let counted = match cookie {
            Some(id) => self.0.sessions.visit(&id, request).await?.map(|n| (id, n)),
            None => None,
        };
        let (id, views, started) = match counted {
            Some((id, views)) => (id, views, false),
            None => {
                // No cookie, or an expired/evicted/forged one: start a session
                // and count this visit, its first, in one store operation. The
                // cookie is set below, as tower-sessions' layer would (see
                // `session_layer`).
                (self.0.sessions.start_initial(request).await?, 1, true)
            }
        };
        let id = id.to_string();
        let cookie = if started {
            Some(session_cookie(&id)?)
        } else {
            None
        };
        let json = hello_body(&self.0.hello_head, views, &id);
        // The headers `([(X_BACKEND_IP, ..)], Json(body))` gave, in the same
        // order, without axum's `Json`.
        let mut res = Response::new(axum::body::Body::from(json));
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(X_BACKEND_IP, self.0.ip_header.clone());
        if let Some(cookie) = cookie {
            headers.append(SET_COOKIE, cookie);
        }
        Ok(res)
    }

    /// `HEAD /`: HAProxy's health check. No delay, no session.
    fn health(&self) -> Response {
        let mut res = Response::new(axum::body::Body::empty());
        res.headers_mut()
            .insert(X_BACKEND_IP, self.0.ip_header.clone());
        res
    }
}

/// `HEAD /` through the router.
async fn health(State(app): State<AppState>) -> Response {
    app.health()
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
        let doc: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::Message(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}"))
        })?;
        doc.get("delay").cloned()
    } else if mime == "application/x-www-form-urlencoded" {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
            ApiError::Message(StatusCode::BAD_REQUEST, format!("Invalid form body: {e}"))
        })?;
        pairs
            .into_iter()
            .find(|(k, _)| k == "delay")
            .map(|(_, v)| Value::String(v))
    } else {
        return Err(ApiError::Message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Unsupported content type {mime:?}: send application/json {{\"delay\": MS}} \
                 or application/x-www-form-urlencoded delay=MS"
            ),
        ));
    };
    // Missing or invalid values are 500s, as in the lab's app.
    let value = value.ok_or_else(|| {
        ApiError::Message(
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
        ApiError::Message(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "No delay configured: invalid delay {value}: expected whole milliseconds \
                 from 0 to {MAX_DELAY_MS}"
            ),
        )
    })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::Message(
        StatusCode::NOT_FOUND,
        format!("Not found: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::Message(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method not allowed: {method} {}", uri.path()),
    )
}

/// The session cookie's attributes, for tower-sessions' layer (which reads
/// the cookie) and for `hello` (which sets it when it starts a session).
const COOKIE_PATH: &str = "/";
const COOKIE_HTTP_ONLY: bool = true;
/// Plain HTTP behind HAProxy, as in the lab.
const COOKIE_SECURE: bool = false;
const COOKIE_SAME_SITE: SameSite = SameSite::Lax;

/// tower-sessions' layer, which the app used until [`SessionCookie`] took
/// its place (the tests check that both read and remove cookies alike, and
/// that `hello` sets the cookie this layer would): it parses the cookie
/// into the `Session`'s id,
/// which `hello` hands to the store's `visit`. No handler changes the
/// `Session`, so the layer never writes to the store nor sets a cookie:
/// it sends a cookie only together with a save of a changed session, and
/// for a new session that save would be a second write (after the one
/// that created it, which must come first: the body shows the id) of a
/// record that did not change; one more store round trip per new session.
/// `hello` starts the session in one store operation and sets the cookie
/// itself ([`session_cookie`]), as the layer would have.
#[cfg(test)]
fn session_layer(store: SessionBackend) -> SessionManagerLayer<SessionBackend> {
    SessionManagerLayer::new(store)
        .with_name(COOKIE_NAME)
        .with_path(COOKIE_PATH)
        .with_http_only(COOKIE_HTTP_ONLY)
        .with_secure(COOKIE_SECURE)
        .with_same_site(COOKIE_SAME_SITE)
        // A browser-session cookie, like Express's; idle expiry is the
        // store's (time-to-idle), so visits need not re-send the cookie.
        .with_expiry(Expiry::OnSessionEnd)
}

/// The `Set-Cookie` of a session started by `hello`: the one
/// [`session_layer`] would send (a browser-session cookie: no `Max-Age`),
/// written as the cookie crate writes its attributes (`HttpOnly`,
/// `SameSite`, `Secure`, `Path`, in this order) without building a
/// `Cookie` (the test below compares the two).
fn session_cookie(id: &str) -> Result<HeaderValue, ApiError> {
    use std::fmt::Write;
    let mut text = String::with_capacity(64);
    text.push_str(COOKIE_NAME);
    text.push('=');
    text.push_str(id);
    if COOKIE_HTTP_ONLY {
        text.push_str("; HttpOnly");
    }
    let _ = write!(text, "; SameSite={COOKIE_SAME_SITE}");
    if COOKIE_SECURE {
        text.push_str("; Secure");
    }
    text.push_str("; Path=");
    text.push_str(COOKIE_PATH);
    HeaderValue::try_from(text).map_err(|e| {
        ApiError::Message(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session cookie for {id}: {e}"),
        )
    })
}

/// The router with its state and session cookie reader (the access log is
/// the connection's: [`AccessLog`]).
pub fn app(state: AppState) -> Router {
    let sessions = axum::middleware::from_fn(session_cookie::read_session_cookie);
    Router::new()
        .route("/", get(hello).head(health))
        .route("/delay", post(set_delay))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(sessions)
        .with_state(state)
}

/// Serves [`app`] over `state` on `listener`, on the calling task's runtime
/// (the binary runs [`serve`]: one runtime per core; tests use this one and
/// keep a clone of the state to look at the store). Once `shutdown` completes, stops accepting, closes idle connections and
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
        sessions = %state.0.sessions.describe(),
        "listening on {}", listener.local_addr()?
    );
    let upkeep = tokio::spawn(state.0.sessions.clone().upkeep());
    let access = state.0.access_log.get().cloned();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        info!("shutting down: no new connections, draining in-flight requests");
        let _ = stopping_tx.send(());
    };
    tokio::select! {
        () = conn::serve(listener, front::Front::new(state), access, timeouts, signal) => {}
        () = async {
            match stopping_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        } => {
            warn!("in-flight requests still running after {grace:?}: stopping anyway");
        }
    }
    upkeep.abort();
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use tower::ServiceExt;

    /// The body written from the serialized head is the one serde writes
    /// for the whole [`Hello`], for any identity, count and id.
    #[test]
    fn the_hello_body_is_serdes() {
        let names = [
            "",
            "s1",
            "10.0.0.7",
            "a \"quoted\" \\ name",
            "é ü 日本",
            "tab\tnew\nline\u{1}",
        ];
        for ip in names {
            for host in names {
                for tag in names {
                    let head = hello_head(ip, host, tag);
                    for views in [0, 1, 9, 10, 123_456, u64::MAX] {
                        for id in ["", "mWpV02TWL0sM8mHVcldJ9Q", "x\"y"] {
                            let whole = serde_json::to_vec(&Hello {
                                hello: "world!",
                                ip,
                                host,
                                tag,
                                session_views: views,
                                id: id.to_owned(),
                            })
                            .unwrap();
                            assert_eq!(hello_body(&head, views, id), whole);
                        }
                    }
                }
            }
        }
    }

    /// The cookie `hello` sets for a new session is the one tower-sessions'
    /// layer sets when a handler changes a new session.
    #[tokio::test]
    async fn the_session_cookie_is_the_one_tower_sessions_sets() {
        let store = SessionBackend::Memory(SessionCache::new(10, Duration::from_secs(60)));
        let router = Router::new()
            .route(
                "/",
                get(|session: Session| async move {
                    session.insert("k", 1).await.unwrap();
                }),
            )
            .layer(session_layer(store));
        let req = Request::get("/").body(Body::empty()).unwrap();
        let res = router.oneshot(req).await.unwrap();
        let theirs = res.headers()[SET_COOKIE].to_str().unwrap();
        let id: Id = theirs
            .strip_prefix("NODESESSID=")
            .and_then(|rest| rest.split(';').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no session id in {theirs:?}"));
        assert_eq!(session_cookie(&id.to_string()).unwrap(), theirs);
        assert!(theirs.contains("HttpOnly") && theirs.contains("SameSite=Lax"));
    }
}
