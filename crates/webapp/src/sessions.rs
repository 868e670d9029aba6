//! The session store: tower-sessions' records and our visit counters, in one
//! bounded moka cache.
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
//!   entry, and `create` always picks a fresh random id. A count is therefore
//!   exact for the whole life of a session id.
//!
//! Bounds: `max_capacity` caps the number of live sessions (least recently
//! used evicted first) and `time_to_idle` expires sessions that are not
//! visited. Moka applies evictions in batched maintenance passes; the server
//! also runs [`SessionCache::housekeep`] every second so that idle sessions
//! are freed even without traffic.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use tower_sessions::session::{Id, Record};
use tower_sessions::{session_store, SessionStore};

/// One live session.
struct Live {
    record: Mutex<Record>,
    views: AtomicU64,
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
    pub fn visit(&self, id: &Id) -> Option<u64> {
        let live = self.cache.get(id)?;
        Some(live.views.fetch_add(1, Ordering::Relaxed) + 1)
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
        // Ids are 128 random bits: a collision with a live session is
        // re-drawn; two creates racing on one new id are not worth moka's
        // (costly) atomic `entry` API.
        while self.cache.contains_key(&record.id) {
            record.id = Id::default();
        }
        let live = Live {
            record: Mutex::new(record.clone()),
            views: AtomicU64::new(0),
        };
        self.cache.insert(record.id, Arc::new(live));
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
