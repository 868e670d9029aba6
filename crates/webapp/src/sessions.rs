//! The session stores: tower-sessions' records and our visit counters,
//! either in one bounded moka cache of this process ([`SessionCache`], the
//! default) or in a Redis server shared by every web app
//! ([`RedisSessions`], `--session-store redis://host:port/db`), so that a
//! user moved to another web app keeps the session and its count.
//! [`SessionBackend`] is the one the handlers see; `--session-store` is
//! parsed in [`setting`].
//!
//! # In memory
//!
//! Why one cache entry holds both the record and an [`AtomicU64`]:
//!
//! * tower-sessions loads a record, lets the handler change it and saves it
//!   back. Two concurrent requests on one cookie both load `views = n` and
//!   both save `n + 1`: the lost update the lab's Express app shows (24,007
//!   requests counted as 1,965). The counter is therefore not in the record
//!   but beside it, and a visit is one `fetch_add` on it: every visit gets
//!   its own number, with no read-modify-write window.
//! * Record and counter share one cache entry, so they are evicted and
//!   expire together: a counter can never outlive its session or restart
//!   under the same id. Two caches (tower-sessions-moka-store plus a counter
//!   cache) could drop one and keep the other, and that store's TinyLFU
//!   admission may refuse a brand-new session outright when the cache is
//!   full, so a new visitor would get a new session on every visit.
//! * An entry that is gone stays gone: `save` never re-creates a missing
//!   entry, and `create` and `start` always pick a fresh random id. A count
//!   is therefore exact for the whole life of a session id.
//!
//! Bounds: `max_capacity` caps the number of live sessions (least recently
//! used evicted first) and `time_to_idle` expires sessions that are not
//! visited. Moka applies evictions in batched maintenance passes; the server
//! also runs [`SessionCache::housekeep`] every second so that idle sessions
//! are freed even without traffic.
//!
//! # In Redis
//!
//! The same three guarantees, kept by the server:
//!
//! * One hash per session, `webapp:session:<id>`, with the fields `record`
//!   (tower-sessions' record as JSON), `views` (the counter) and, once a
//!   request id was seen, `req` and `req_views`. Everything of a session
//!   lives and expires in that one key: never a counter without its
//!   session.
//! * Every change is one Lua script (sent by EVALSHA; after a server restart
//!   the client loads it again on NOSCRIPT), atomic on the server: a visit
//!   checks that the key exists, `HINCRBY`s `views` and returns the new
//!   value, so concurrent visits from any number of web apps each get their
//!   own number. A visit on a missing key returns nil and creates nothing
//!   (the handler then starts a new session, as with the memory store);
//!   `create` and `start` write only a key that does not exist (else a
//!   fresh id is drawn); `save` writes only a key that exists.
//! * Idle expiry is the key's TTL: every visit, load, start, create and
//!   save sets it to `--session-idle-secs` (`PEXPIRE`). Redis deletes the
//!   key when it runs out, and that is the end of the session.
//! * Capacity is Redis's business (`maxmemory` and its eviction policy):
//!   `--max-sessions` bounds only the memory store. An evicted key is a
//!   session gone, as above.
//!
//! # Replays
//!
//! HAProxy may send a `GET /` again to another server (`retry-on`) when the
//! first one died after counting it but before answering. HAProxy gives
//! every request an id (`unique-id-format`, sent as `X-Request-Id` by
//! `unique-id-header`), the same on each retry. With that header, a visit
//! remembers the last request id of its session and the number it got; a
//! visit with the same id gets that number again instead of a new one. In
//! Redis the id and number are the `req`/`req_views` fields, checked and
//! set inside the visit script. In memory they sit beside the counter under
//! a small mutex, taken only when the request has an id (a request without
//! one is still a bare `fetch_add`); the id's buffer is reused, so a visit
//! allocates nothing once its session has seen one. Only the last request
//! of a session is remembered: a retry that arrives after another request
//! of the same session was counted is counted again (HAProxy retries at
//! once, so this takes two requests in flight on one cookie while a server
//! dies). Without the header every request counts.
//!
//! # New sessions
//!
//! A request without a live session is answered by [`SessionBackend::start`]:
//! the session is written with its count already 1 (and, with a request id,
//! that id as its last counted request), in one step: one Lua script in
//! Redis, one insert in memory. It used to be three Redis round trips:
//! tower-sessions' `create`, our visit, and tower-sessions' save of the
//! unchanged record after the handler (tower-sessions sends a session
//! cookie only together with that save). The handler now leaves the
//! tower-sessions `Session` untouched and sets the cookie itself (see
//! `session_layer` in the crate root). Nothing else changes: a start never
//! overwrites a live id, a gone session is never re-created, and the key's
//! TTL is set by the same script.
//!
//! # Outages
//!
//! Every Redis operation is bounded by `--session-store-timeout-ms`; a
//! request that needs the store while it is down, slow or refusing gets a
//! 503 with `{"error": "session store unavailable", "detail": ...}` within
//! that time (a deadline noticed a whole timeout late, because the web
//! app itself was stopped or starved, gets one more: the answer may be
//! waiting unread), and the log gets a warning (at most one every 10 s, counting
//! the failures in between) and one line when the store answers again.
//! `HEAD /` never touches the store, so the health check stays green and
//! the balancer keeps every web app. The client (redis-rs's connection
//! manager, RESP3) connects on first use, so a web app starts before Redis;
//! it hears at once when the connection closes and reconnects, with a short
//! backoff, without a restart. A visit whose answer is lost to the timeout
//! may still have been counted by the server: the count stays exact per
//! request that got a number, but that one number is never shown (a retry
//! with the same request id gets it); a start whose answer is lost may
//! have written a session whose cookie is never sent, which then idles out.

pub mod redis_store;
pub mod setting;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use tower_sessions::session::{Id, Record};
use tower_sessions::{session_store, SessionStore};

pub use redis_store::RedisSessions;
use setting::StoreSetting;

/// One live session.
struct Live {
    record: Mutex<Record>,
    views: AtomicU64,
    /// The last request id counted and its number (empty: none yet).
    last_request: Mutex<(String, u64)>,
}

/// A bounded, idle-expiring session store with an exact per-session counter.
#[derive(Clone)]
pub struct SessionCache {
    cache: Cache<Id, Arc<Live>, foldhash::fast::RandomState>,
}

impl SessionCache {
    pub fn new(max_sessions: u64, idle: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_sessions)
            .time_to_idle(idle)
            .eviction_policy(EvictionPolicy::lru())
            // Seeded like SipHash's RandomState, several times cheaper on the
            // 128-bit ids (moka re-hashes its table as sessions churn).
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self { cache }
    }

    /// Counts one visit of session `id` and returns its number, or `None`
    /// when the store does not know the id (never existed, expired, evicted).
    /// With a `request` id equal to the last one counted, returns that
    /// request's number without counting.
    pub fn visit(&self, id: &Id, request: Option<&str>) -> Option<u64> {
        let live = self.cache.get(id)?;
        let Some(request) = request else {
            return Some(live.views.fetch_add(1, Ordering::Relaxed) + 1);
        };
        let mut last = live.last_request.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 == request {
            return Some(last.1);
        }
        let views = live.views.fetch_add(1, Ordering::Relaxed) + 1;
        last.0.clear();
        last.0.push_str(request);
        last.1 = views;
        Some(views)
    }

    /// Starts a session with `record` and counts its first visit: see
    /// [`RedisSessions::start`]. Returns the session's id (`record.id`, or
    /// another if that one is live: a live id is never overwritten).
    pub fn start(&self, record: Record, request: Option<&str>) -> Id {
        self.insert_new(record, 1, request)
    }

    /// Inserts `record` under a fresh id (re-drawn while taken) with the
    /// count `views`; returns the id.
    fn insert_new(&self, mut record: Record, views: u64, request: Option<&str>) -> Id {
        // Ids are 128 random bits: a collision with a live session is
        // re-drawn; two creates racing on one new id are not worth moka's
        // (costly) atomic `entry` API.
        while self.cache.contains_key(&record.id) {
            record.id = Id::default();
        }
        let last_request = match request {
            Some(request) => (request.to_owned(), views),
            None => (String::new(), 0),
        };
        let id = record.id;
        let live = Live {
            record: Mutex::new(record),
            views: AtomicU64::new(views),
            last_request: Mutex::new(last_request),
        };
        self.cache.insert(id, Arc::new(live));
        id
    }

    /// Applies pending evictions and expirations now.
    pub fn housekeep(&self) {
        self.cache.run_pending_tasks();
    }

    /// The number of live sessions, after applying pending evictions.
    pub fn len(&self) -> u64 {
        self.housekeep();
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

fn lock(live: &Live) -> std::sync::MutexGuard<'_, Record> {
    // A poisoned lock only means a panic elsewhere while cloning a record;
    // the record itself is still whole.
    live.record.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl SessionStore for SessionCache {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        record.id = self.insert_new(record.clone(), 0, None);
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // Only updates a live session: a session evicted in the meantime stays
        // dead (its next visit gets a new one) rather than coming back with
        // its counter reset.
        if let Some(live) = self.cache.get(&record.id) {
            *lock(&live) = record.clone();
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        Ok(self.cache.get(id).map(|live| lock(&live).clone()))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.cache.invalidate(id);
        Ok(())
    }
}

/// The store could not be reached or did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session store unavailable: {detail}")]
pub struct StoreUnavailable {
    /// What failed, for the log and the 503's `detail`.
    pub detail: String,
}

impl From<StoreUnavailable> for session_store::Error {
    fn from(e: StoreUnavailable) -> Self {
        session_store::Error::Backend(e.detail)
    }
}

/// The store selected by `--session-store`, as the handlers see it.
#[derive(Clone, Debug)]
pub enum SessionBackend {
    Memory(SessionCache),
    Redis(RedisSessions),
}

impl SessionBackend {
    /// The store for `setting`: `max_sessions` bounds the memory store,
    /// `timeout` every Redis operation. Must run inside a tokio runtime
    /// (the Redis client spawns its tasks); connects to nothing yet.
    pub fn new(
        setting: &StoreSetting,
        max_sessions: u64,
        idle: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreUnavailable> {
        Ok(match setting {
            StoreSetting::Memory => SessionBackend::Memory(SessionCache::new(max_sessions, idle)),
            StoreSetting::Redis(target) => {
                SessionBackend::Redis(RedisSessions::new(target, idle, timeout).map_err(|e| {
                    StoreUnavailable {
                        detail: format!("redis client for {target}: {e}"),
                    }
                })?)
            }
        })
    }

    /// Counts one visit of session `id`: see [`SessionCache::visit`] and
    /// [`RedisSessions::visit`].
    pub async fn visit(
        &self,
        id: &Id,
        request: Option<&str>,
    ) -> Result<Option<u64>, StoreUnavailable> {
        match self {
            SessionBackend::Memory(cache) => Ok(cache.visit(id, request)),
            SessionBackend::Redis(redis) => redis.visit(id, request).await,
        }
    }

    /// Starts a session with `record` and counts its first visit (its count
    /// is 1), in one step: see [`SessionCache::start`] and
    /// [`RedisSessions::start`]. Returns the new session's id.
    pub async fn start(&self, record: Record, request: Option<&str>) -> session_store::Result<Id> {
        match self {
            SessionBackend::Memory(cache) => Ok(cache.start(record, request)),
            SessionBackend::Redis(redis) => redis.start(record, request).await,
        }
    }

    /// The in-memory store, if that is the one running.
    pub fn memory(&self) -> Option<&SessionCache> {
        match self {
            SessionBackend::Memory(cache) => Some(cache),
            SessionBackend::Redis(_) => None,
        }
    }

    /// For the startup log.
    pub fn describe(&self) -> String {
        match self {
            SessionBackend::Memory(_) => "memory".into(),
            SessionBackend::Redis(redis) => redis.target().to_string(),
        }
    }

    /// Runs for the server's life: the memory store's housekeeping every
    /// second; for Redis, one ping to connect early and say so in the log.
    pub async fn upkeep(self) {
        match self {
            SessionBackend::Memory(cache) => {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    cache.housekeep();
                }
            }
            SessionBackend::Redis(redis) => {
                // A failure is logged by the store and retried by the next
                // request.
                if redis.ping().await.is_ok() {
                    tracing::info!("session store {} answers", redis.target());
                }
            }
        }
    }
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            SessionBackend::Memory(cache) => cache.create(record).await,
            SessionBackend::Redis(redis) => redis.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            SessionBackend::Memory(cache) => cache.save(record).await,
            SessionBackend::Redis(redis) => redis.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            SessionBackend::Memory(cache) => cache.load(id).await,
            SessionBackend::Redis(redis) => redis.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            SessionBackend::Memory(cache) => cache.delete(id).await,
            SessionBackend::Redis(redis) => redis.delete(id).await,
        }
    }
}
