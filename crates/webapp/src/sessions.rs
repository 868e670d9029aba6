//! The session stores: tower-sessions' records and our visit counters,
//! either in one bounded LRU store of this process ([`SessionCache`], the
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
//! * Record and counter share one entry, so they are evicted and expire
//!   together: a counter can never outlive its session or restart under
//!   the same id. Two caches (tower-sessions-moka-store plus a counter
//!   cache) could drop one and keep the other, and that store's TinyLFU
//!   admission may refuse a brand-new session outright when the cache is
//!   full, so a new visitor would get a new session on every visit.
//! * An entry that is gone stays gone: `save` never re-creates a missing
//!   entry, and `create` and `start` always pick a fresh random id. A count
//!   is therefore exact for the whole life of a session id.
//!
//! Bounds: `--max-sessions` caps the number of live sessions, the least
//! recently used evicted first, at the insert that would pass the cap;
//! `--session-idle-secs` expires a session not visited for that long: a
//! visit to it finds nothing, and [`SessionCache::housekeep`], run every
//! second, frees it even without traffic.
//!
//! The store is a few shards, each an LRU list (the `lru` crate) under its
//! own mutex, picked by the id's low bits (ids are random; an id a client
//! makes up is only ever looked up, never stored). A visit is one lock, one
//! hash lookup and a move to the front. It was a moka cache: its write
//! queue, frequency sketch and maintenance passes were 6 % of a
//! new-session `GET /` (perf), for an admission policy the store cannot
//! use (see above). Up to 8,192 sessions there is one shard, so the LRU
//! order is exact; above, up to 16 shards share the cap (their capacities
//! add up to it exactly), each evicting its own least recently used.
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

use std::time::Instant;

use async_trait::async_trait;
use lru::LruCache;
use serde_json::Value;
use tower_sessions::cookie::time::{self, OffsetDateTime};
use tower_sessions::session::{Id, Record};
use tower_sessions::{session_store, SessionStore};

pub use redis_store::RedisSessions;
use setting::StoreSetting;

/// The record of a session `GET /` starts: `{"seen": true}`, expiring as
/// tower-sessions' layer would set it for a browser-session cookie (now
/// plus two weeks; the stores themselves expire sessions by idle time).
pub fn initial_record(id: Id) -> Record {
    Record {
        id,
        data: [("seen".to_owned(), Value::Bool(true))]
            .into_iter()
            .collect(),
        expiry_date: initial_expiry(),
    }
}

fn initial_expiry() -> OffsetDateTime {
    OffsetDateTime::now_utc().saturating_add(time::Duration::weeks(2))
}

/// A session's record as the memory store keeps it.
enum Stored {
    /// The [`initial_record`], kept as its expiry: its data is the same for
    /// every session and is built only when tower-sessions loads it (a map
    /// and a string per new session, allocated and later freed at
    /// eviction, were 3 % of a new-session `GET /`'s CPU).
    Initial(OffsetDateTime),
    /// One given to `create` or `save`; its id is the session's.
    Record(Record),
}

/// One live session.
struct Live {
    record: Mutex<Stored>,
    views: AtomicU64,
    /// The last request id counted and its number (empty: none yet).
    last_request: Mutex<(String, u64)>,
}

/// One shard: sessions from the most to the least recently used, each with
/// the time it was last used.
struct Shard {
    lru: LruCache<Id, (Arc<Live>, Instant), foldhash::fast::RandomState>,
    /// This shard's part of `--max-sessions`.
    cap: usize,
}

impl Shard {
    /// Drops sessions idle for `idle` or longer, from the least recently
    /// used (the list's order is the order of last use).
    fn expire(&mut self, now: Instant, idle: Duration) {
        while let Some((_, (_, used))) = self.lru.peek_lru() {
            if now.duration_since(*used) < idle {
                break;
            }
            self.lru.pop_lru();
        }
    }
}

/// Sessions per shard below which the store keeps a single shard (an
/// exact LRU order).
const SHARD_MIN: u64 = 8192;
const SHARDS_MAX: u64 = 16;

/// A bounded, idle-expiring session store with an exact per-session counter.
#[derive(Clone)]
pub struct SessionCache {
    shards: Arc<[Mutex<Shard>]>,
    idle: Duration,
}

impl SessionCache {
    /// `max_sessions` live sessions at most (0 is taken as 1; the command
    /// line refuses it), each expiring after `idle` without a visit.
    pub fn new(max_sessions: u64, idle: Duration) -> Self {
        let max = max_sessions.max(1);
        // A power of two, so that a shard is picked by the id's low bits.
        let n = (max / SHARD_MIN).clamp(1, SHARDS_MAX);
        let n = if n.is_power_of_two() {
            n
        } else {
            n.next_power_of_two() / 2
        };
        let shards = (0..n)
            .map(|i| {
                // The caps add up to `max` exactly.
                let cap = max / n + u64::from(i < max % n);
                Mutex::new(Shard {
                    // Unbounded, the cap kept by hand: a bounded one would
                    // allocate its whole table up front. Seeded like
                    // SipHash's RandomState, several times cheaper on the
                    // 128-bit ids.
                    lru: LruCache::unbounded_with_hasher(foldhash::fast::RandomState::default()),
                    cap: usize::try_from(cap).unwrap_or(usize::MAX),
                })
            })
            .collect();
        Self { shards, idle }
    }

    fn shard(&self, id: &Id) -> std::sync::MutexGuard<'_, Shard> {
        // Ids are random 128-bit numbers: their low bits spread them.
        let i = (id.0 as u64 as usize) & (self.shards.len() - 1);
        // A poisoned lock only means a panic elsewhere; the list is whole.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session `id`, now its most recently used; None if unknown
    /// or idle too long (then dropped).
    fn get(&self, id: &Id) -> Option<Arc<Live>> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &Id, now: Instant) -> Option<Arc<Live>> {
        let mut shard = self.shard(id);
        let (live, used) = shard.lru.get_mut(id)?;
        if now.duration_since(*used) >= self.idle {
            shard.lru.pop(id);
            return None;
        }
        *used = now;
        Some(live.clone())
    }

    /// Counts one visit of session `id` and returns its number, or `None`
    /// when the store does not know the id (never existed, expired, evicted).
    /// With a `request` id equal to the last one counted, returns that
    /// request's number without counting.
    pub fn visit(&self, id: &Id, request: Option<&str>) -> Option<u64> {
        let live = self.get(id)?;
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
        let id = record.id;
        self.insert_new(Stored::Record(record), id, 1, request)
    }

    /// [`SessionCache::start`] with the [`initial_record`] under a new id.
    pub fn start_initial(&self, request: Option<&str>) -> Id {
        self.insert_new(Stored::Initial(initial_expiry()), Id::default(), 1, request)
    }

    /// Inserts `stored` under `id`, or a fresh id while that one is taken
    /// (a live id is never overwritten), with the count `views`, evicting
    /// the least recently used session past the cap; returns the id.
    fn insert_new(&self, mut stored: Stored, mut id: Id, views: u64, request: Option<&str>) -> Id {
        let last_request = match request {
            Some(request) => (request.to_owned(), views),
            None => (String::new(), 0),
        };
        loop {
            let mut shard = self.shard(&id);
            if shard.lru.contains(&id) {
                drop(shard);
                id = Id::default();
                continue;
            }
            if let Stored::Record(record) = &mut stored {
                record.id = id;
            }
            let live = Live {
                record: Mutex::new(stored),
                views: AtomicU64::new(views),
                last_request: Mutex::new(last_request),
            };
            shard.lru.push(id, (Arc::new(live), Instant::now()));
            while shard.lru.len() > shard.cap {
                shard.lru.pop_lru();
            }
            return id;
        }
    }

    /// Frees the sessions idle too long now (a visit would not find them
    /// anyway).
    pub fn housekeep(&self) {
        self.housekeep_at(Instant::now());
    }

    fn housekeep_at(&self, now: Instant) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expire(now, self.idle);
        }
    }

    /// The number of live sessions, after freeing the idle ones.
    pub fn len(&self) -> u64 {
        self.housekeep();
        self.entries()
    }

    /// Entries held, idle ones not yet freed included.
    fn entries(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).lru.len() as u64)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.entries())
            .field("shards", &self.shards.len())
            .finish()
    }
}

fn lock(live: &Live) -> std::sync::MutexGuard<'_, Stored> {
    // A poisoned lock only means a panic elsewhere while cloning a record;
    // the record itself is still whole.
    live.record.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl SessionStore for SessionCache {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        record.id = self.insert_new(Stored::Record(record.clone()), record.id, 0, None);
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // Only updates a live session: a session evicted in the meantime stays
        // dead (its next visit gets a new one) rather than coming back with
        // its counter reset.
        if let Some(live) = self.get(&record.id) {
            *lock(&live) = Stored::Record(record.clone());
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        Ok(self.get(id).map(|live| match &*lock(&live) {
            Stored::Initial(expiry_date) => Record {
                expiry_date: *expiry_date,
                ..initial_record(*id)
            },
            Stored::Record(record) => record.clone(),
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.shard(id).lru.pop(id);
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

/// The store selected by `--session-store`, as the handlers see it. The
/// Redis store's operations are boxed futures: unboxed, each `GET /`'s
/// future was 3 KB with the memory store too, copied a few times per
/// request (3.7 % of its CPU was `memmove`, perf).
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
            // Boxed: a Redis call's future is kilobytes, and the handler's
            // future, moved a few times per request, would be as large for
            // the memory store too (see `SessionBackend`).
            SessionBackend::Redis(redis) => Box::pin(redis.visit(id, request)).await,
        }
    }

    /// Starts a session with `record` and counts its first visit (its count
    /// is 1), in one step: see [`SessionCache::start`] and
    /// [`RedisSessions::start`]. Returns the new session's id.
    pub async fn start(&self, record: Record, request: Option<&str>) -> session_store::Result<Id> {
        match self {
            SessionBackend::Memory(cache) => Ok(cache.start(record, request)),
            SessionBackend::Redis(redis) => Box::pin(redis.start(record, request)).await,
        }
    }

    /// [`SessionBackend::start`] with the [`initial_record`] under a new id
    /// (what `GET /` does without a live session).
    pub async fn start_initial(&self, request: Option<&str>) -> session_store::Result<Id> {
        match self {
            SessionBackend::Memory(cache) => Ok(cache.start_initial(request)),
            SessionBackend::Redis(redis) => {
                Box::pin(redis.start(initial_record(Id::default()), request)).await
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: tower_sessions::cookie::time::OffsetDateTime::now_utc(),
        }
    }

    fn started(store: &SessionCache) -> Id {
        store.start(record(), None)
    }

    #[test]
    fn up_to_the_cap_the_least_recently_used_goes_first() {
        let store = SessionCache::new(3, Duration::from_secs(60));
        assert_eq!(store.shards.len(), 1);
        let ids: Vec<Id> = (0..3).map(|_| started(&store)).collect();
        // The oldest is visited, so the second is now the least recent.
        assert_eq!(store.visit(&ids[0], None), Some(2));
        let fourth = started(&store);
        assert_eq!(store.len(), 3);
        assert_eq!(store.visit(&ids[1], None), None, "evicted");
        assert_eq!(store.visit(&ids[0], None), Some(3));
        assert_eq!(store.visit(&ids[2], None), Some(2));
        assert_eq!(store.visit(&fourth, None), Some(2));
    }

    #[test]
    fn shards_share_the_cap_exactly() {
        let max = 40_001;
        let store = SessionCache::new(max, Duration::from_secs(60));
        assert_eq!(store.shards.len(), 4);
        let caps: u64 = store
            .shards
            .iter()
            .map(|s| s.lock().unwrap().cap as u64)
            .sum();
        assert_eq!(caps, max);
        for _ in 0..50_000 {
            started(&store);
        }
        // 12,500 random ids per shard on average, each capped near 10,000.
        assert_eq!(store.len(), max);
        assert_eq!(
            SessionCache::new(1 << 40, Duration::from_secs(1))
                .shards
                .len(),
            16
        );
    }

    #[test]
    fn a_session_idle_too_long_is_gone_and_a_visited_one_stays() {
        let idle = Duration::from_secs(10);
        let store = SessionCache::new(100, idle);
        let (kept, left) = (started(&store), started(&store));
        let t0 = Instant::now();
        let half = t0 + idle / 2;
        assert!(store.get_at(&kept, half).is_some());
        // Past the idle time of `left`, not of `kept` (visited halfway).
        let later = t0 + idle + Duration::from_secs(1);
        store.housekeep_at(later);
        assert_eq!(store.entries(), 1);
        assert!(store.get_at(&left, later).is_none());
        assert!(store.get_at(&kept, later).is_some());
        // A visit finds an idle session gone even before housekeeping.
        let much_later = later + idle;
        assert!(store.get_at(&kept, much_later).is_none());
        assert_eq!(store.entries(), 0);
    }

    #[test]
    fn a_live_id_is_never_overwritten_and_a_gone_one_never_comes_back() {
        let store = SessionCache::new(10, Duration::from_secs(60));
        let first = started(&store);
        assert_eq!(store.visit(&first, None), Some(2));
        let mut again = record();
        again.id = first;
        let other = store.start(again, None);
        assert_ne!(other, first, "a start on a live id draws another");
        assert_eq!(store.visit(&first, None), Some(3));
        let gone = record();
        tokio_test_block_on(store.save(&gone)).unwrap();
        let gone = gone.id;
        assert_eq!(store.visit(&gone, None), None, "save re-creates nothing");
    }

    /// A started session's record is built when loaded: the initial one,
    /// under the session's id, with the expiry it got at the start; a
    /// saved one replaces it.
    #[test]
    fn a_started_record_loads_as_the_initial_one_until_saved() {
        let store = SessionCache::new(10, Duration::from_secs(60));
        let before = initial_expiry();
        let id = store.start_initial(None);
        let loaded = tokio_test_block_on(store.load(&id)).unwrap().unwrap();
        assert_eq!(loaded.id, id);
        assert_eq!(loaded.data, initial_record(id).data);
        assert_eq!(loaded.data["seen"], Value::Bool(true));
        assert!(loaded.expiry_date >= before && loaded.expiry_date <= initial_expiry());
        let mut changed = loaded.clone();
        changed.data.insert("k".into(), Value::from(1));
        tokio_test_block_on(store.save(&changed)).unwrap();
        assert_eq!(tokio_test_block_on(store.load(&id)).unwrap(), Some(changed));
        assert_eq!(store.visit(&id, None), Some(2), "the count is untouched");
    }

    fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
