//! The shared store: one Redis hash per session, changed only by Lua
//! scripts (each one atomic on the server), every operation bounded by a
//! timeout. The design and its reasons are in the [`super`] module doc.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{RedisResult, Script};
use tower_sessions::session::{Id, Record};
use tower_sessions::{session_store, SessionStore};
use tracing::{info, warn};

use super::setting::RedisTarget;
use super::StoreUnavailable;

/// Every session's hash is `webapp:session:<id>`.
pub const KEY_PREFIX: &str = "webapp:session:";

/// At most one warning per this long while the store fails; the next one
/// says how many failures it stood for.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The least TCP_USER_TIMEOUT (see [`RedisSessions::new`]).
const USER_TIMEOUT: Duration = Duration::from_secs(5);

/// How many fresh ids `create` and `start` draw before giving up (128 random bits:
/// one is always enough unless the server misbehaves).
const CREATE_TRIES: usize = 8;

/// KEYS[1] the session; ARGV[1] idle ms; ARGV[2], when present, the request
/// id. Returns the visit's number, or nil for a session that is gone.
const VISIT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local request = ARGV[2]
if request then
  local last = redis.call('HMGET', KEYS[1], 'req', 'req_views')
  if last[1] == request and last[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return tonumber(last[2])
  end
end
local views = redis.call('HINCRBY', KEYS[1], 'views', 1)
if request then
  redis.call('HSET', KEYS[1], 'req', request, 'req_views', views)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return views
";

/// KEYS[1] the new session; ARGV[1] the record; ARGV[2] idle ms; ARGV[3]
/// its count (0: created, 1: created by its first visit); ARGV[4], when
/// present, that visit's request id. Returns 0, changing nothing, when the
/// id is taken.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if ARGV[4] then
  redis.call('HSET', KEYS[1], 'record', ARGV[1], 'views', ARGV[3],
             'req', ARGV[4], 'req_views', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'record', ARGV[1], 'views', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS[1] the session; ARGV[1] the record; ARGV[2] idle ms. Returns 0,
/// changing nothing, when the session is gone.
const SAVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'record', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS[1] the session; ARGV[1] idle ms. The record, or nil; a load is a
/// use, as in the memory store (moka's time to idle).
const LOAD: &str = r"
local record = redis.call('HGET', KEYS[1], 'record')
if record then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return record
";

/// Sessions in a Redis server shared by every web app.
#[derive(Clone)]
pub struct RedisSessions(Arc<Inner>);

struct Inner {
    conn: ConnectionManager,
    target: RedisTarget,
    idle_ms: u64,
    timeout: Duration,
    visit: Script,
    create: Script,
    save: Script,
    load: Script,
    health: Health,
}

impl fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessions")
            .field("target", &self.0.target)
            .field("timeout", &self.0.timeout)
            .finish()
    }
}

/// The key of session `id`.
pub fn key(id: &Id) -> String {
    format!("{KEY_PREFIX}{id}")
}

impl RedisSessions {
    /// A store that connects on first use and reconnects by itself; a server
    /// that is not up yet is no error here. Must run inside a tokio runtime.
    pub fn new(target: &RedisTarget, idle: Duration, timeout: Duration) -> RedisResult<Self> {
        let tcp = TcpSettings::default()
            // Small requests answered one by one: no Nagle delay.
            .set_nodelay(true)
            // A server that vanished (no RST) is noticed when a request
            // goes unacknowledged this long: the connection is closed and
            // the manager reconnects. A stopped but live server still
            // acknowledges, and is only slow.
            .set_user_timeout(USER_TIMEOUT.max(timeout * 2));
        let client = redis::Client::open(target.info.clone().set_tcp_settings(tcp))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            // Responses are bounded by `run`, with one message for all.
            .set_response_timeout(None)
            // A short backoff: requests do not wait for it (each is bounded
            // by `timeout`), and it is how soon a returning server is used.
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisSessions(Arc::new(Inner {
            conn,
            target: target.clone(),
            idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            timeout,
            visit: Script::new(VISIT),
            create: Script::new(CREATE),
            save: Script::new(SAVE),
            load: Script::new(LOAD),
            health: Health::default(),
        })))
    }

    /// Where the store is (no credentials).
    pub fn target(&self) -> &RedisTarget {
        &self.0.target
    }

    /// Counts one visit of session `id` and returns its number, `None` when
    /// the session is gone (it is not re-created). With a `request` id, a
    /// replay of the last counted request gets that request's number again.
    pub async fn visit(
        &self,
        id: &Id,
        request: Option<&str>,
    ) -> Result<Option<u64>, StoreUnavailable> {
        let mut conn = self.0.conn.clone();
        let mut call = self.0.visit.prepare_invoke();
        call.key(key(id)).arg(self.0.idle_ms);
        if let Some(request) = request {
            call.arg(request);
        }
        self.run("visit", async move { call.invoke_async(&mut conn).await })
            .await
    }

    /// Starts a session with `record` and counts its first visit, in one
    /// round trip: the new session's count is 1 and, with a `request` id,
    /// that id is remembered as the visit's (see [`Self::visit`]). Returns
    /// the session's id: `record.id`, or a fresh one if that one is taken
    /// (a live session is never overwritten).
    pub async fn start(
        &self,
        mut record: Record,
        request: Option<&str>,
    ) -> session_store::Result<Id> {
        self.insert_new(&mut record, 1, request).await?;
        Ok(record.id)
    }

    /// Writes `record` under a fresh id (re-drawn while taken) with the
    /// count `views`.
    async fn insert_new(
        &self,
        record: &mut Record,
        views: u64,
        request: Option<&str>,
    ) -> session_store::Result<()> {
        let what = if views == 0 { "create" } else { "start" };
        for _ in 0..CREATE_TRIES {
            // The record carries its id: encoded again for each new one.
            let bytes = encode(record)?;
            let mut conn = self.0.conn.clone();
            let mut call = self.0.create.prepare_invoke();
            call.key(key(&record.id))
                .arg(bytes)
                .arg(self.0.idle_ms)
                .arg(views);
            if let Some(request) = request {
                call.arg(request);
            }
            let created: bool = self
                .run(what, async move { call.invoke_async(&mut conn).await })
                .await?;
            if created {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(format!(
            "{what}: {CREATE_TRIES} fresh session ids in a row were taken"
        )))
    }

    /// One round trip to the server.
    pub async fn ping(&self) -> Result<(), StoreUnavailable> {
        let mut conn = self.0.conn.clone();
        self.run("ping", async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Runs `op` within the timeout; a failure is logged (rate-limited) and
    /// becomes a [`StoreUnavailable`].
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreUnavailable> {
        let failure = match stall_aware_timeout(self.0.timeout, op).await {
            Ok(Ok(value)) => {
                self.0.health.ok(&self.0.target);
                return Ok(value);
            }
            Ok(Err(e)) => format!("{what}: {e}"),
            Err(_) => format!("{what}: no answer within {} ms", self.0.timeout.as_millis()),
        };
        self.0.health.failed(&self.0.target, &failure);
        Err(StoreUnavailable { detail: failure })
    }
}

/// `op` within `limit`, unless this process itself was not running: a
/// deadline noticed a whole `limit` late means the process was stopped
/// (`docker pause`, SIGSTOP, a stalled VM) or starved, and Redis's answer
/// may be waiting in the socket unread. Such a miss gets one more `limit`
/// from the moment the process runs again; a store that is really slow or
/// gone still fails within two. Without this, every request in a Redis
/// call when its web app was paused failed on resume.
async fn stall_aware_timeout<F: Future>(
    limit: Duration,
    op: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut op = std::pin::pin!(op);
    let deadline = tokio::time::Instant::now() + limit;
    match tokio::time::timeout_at(deadline, &mut op).await {
        Err(_) if deadline.elapsed() >= limit => tokio::time::timeout(limit, op).await,
        done => done,
    }
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.insert_new(record, 0, None).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let bytes = encode(record)?;
        let mut conn = self.0.conn.clone();
        let mut call = self.0.save.prepare_invoke();
        call.key(key(&record.id)).arg(bytes).arg(self.0.idle_ms);
        // 0 (the session is gone) is fine: it stays gone.
        let _saved: bool = self
            .run("save", async move { call.invoke_async(&mut conn).await })
            .await?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let mut conn = self.0.conn.clone();
        let mut call = self.0.load.prepare_invoke();
        call.key(key(id)).arg(self.0.idle_ms);
        let bytes: Option<Vec<u8>> = self
            .run("load", async move { call.invoke_async(&mut conn).await })
            .await?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| session_store::Error::Decode(format!("session {id}: {e}")))
            })
            .transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let mut conn = self.0.conn.clone();
        let key = key(id);
        self.run("delete", async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        Ok(())
    }
}

/// The outage log: one warning when the store starts failing, then at most
/// one per [`WARN_EVERY`], and one line when it answers again.
#[derive(Default)]
struct Health {
    /// Read on every success; the lock is taken only while failing.
    failing: AtomicBool,
    outage: Mutex<Outage>,
}

#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    last_warning: Option<Instant>,
    failures: u64,
    unreported: u64,
}

impl Health {
    fn ok(&self, target: &RedisTarget) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        self.failing.store(false, Ordering::Relaxed);
        if let Some(since) = outage.since.take() {
            info!(
                "session store {target} answers again after {:.1} s ({} failed operations)",
                since.elapsed().as_secs_f64(),
                outage.failures
            );
        }
        *outage = Outage::default();
    }

    fn failed(&self, target: &RedisTarget, detail: &str) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        self.failing.store(true, Ordering::Relaxed);
        let now = Instant::now();
        outage.since.get_or_insert(now);
        outage.failures += 1;
        let due = outage
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY);
        if due {
            let more = match outage.unreported {
                0 => String::new(),
                n => format!(" ({n} more failures since the last warning)"),
            };
            warn!("session store {target} unavailable: {detail}{more}");
            outage.last_warning = Some(now);
            outage.unreported = 0;
        } else {
            outage.unreported += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stall_aware_timeout;
    use std::time::Duration;

    /// The whole process stops for four times the limit (the thread
    /// blocks, as under `docker pause`) while the answer is on its way: the
    /// deadline fires first on resume, and the answer (sent by another
    /// task, the way redis-rs's connection task hands replies over) comes a
    /// moment later. It still counts; without a stall, the limit holds.
    #[tokio::test(flavor = "current_thread")]
    async fn a_deadline_missed_while_the_process_was_stopped_gets_another_limit() {
        let limit = Duration::from_millis(50);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The connection task: its reply is due just after our deadline.
        let driver = tokio::spawn(async move {
            tokio::time::sleep(limit + Duration::from_millis(5)).await;
            let _ = tx.send(7);
        });
        let stall = tokio::spawn(async move {
            std::thread::sleep(limit * 4);
        });
        let got = stall_aware_timeout(limit, async { rx.await.unwrap() }).await;
        assert_eq!(got.ok(), Some(7));
        driver.await.unwrap();
        stall.await.unwrap();

        let never = std::future::pending::<()>();
        assert!(stall_aware_timeout(limit, never).await.is_err());
    }
}
