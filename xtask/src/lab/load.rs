//! A steady, bounded client load through ha: a few keep-alive clients, each
//! sending one request every few milliseconds, every request one attempt
//! (no retry), until told to stop or a hard cap on time or count is hit.
//!
//! While ha itself restarts ([`Load::begin_restart`]), a request that gets
//! no HTTP answer at all (connection refused or reset: HAProxy is not
//! there) falls in the restart window and is counted apart; the window
//! closes at the first HTTP answer from the new ha ([`Load::retarget`]
//! gives its address), and from then on every request must succeed again.
//! An HTTP error status is a failure whenever it comes.
//!
//! One more client keeps its cookies, as a browser does, and follows its
//! session's `sessionViews` from answer to answer: 1, 2, 3, ... A count
//! that goes back is a reset (the session was lost: another web app, or
//! one that restarted); one that jumps is a skip (a visit counted and never
//! shown, such as a request HAProxy replayed after a web app counted it).
//!
//! Every request also counts in the phase named by the last
//! [`Load::set_phase`] when it was sent (the chaos scenario names the fault
//! in progress), with the slowest request of each phase, and in the
//! [`Timeline`]: outcomes per 250 ms by when they came, with the events
//! the scenario marked ([`Load::mark`]), for the report's chart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub failed: u64,
    /// Requests with no HTTP answer while ha itself was restarting.
    pub in_window: u64,
    /// A few failure descriptions, for the report.
    pub samples: Vec<String>,
    /// Per phase (see [`Load::set_phase`]), in order of first use.
    pub phases: Vec<(String, PhaseCounts)>,
    /// What the client holding one cookie saw of its session.
    pub session: SessionReport,
    /// Outcomes per [`BUCKET`], and the marked events.
    pub timeline: Timeline,
}

/// The width of a [`Timeline`] bucket.
pub const BUCKET: Duration = Duration::from_millis(250);

/// What the load saw over time: per [`BUCKET`] since the load started, the
/// requests that ended in it (by when their answer or error came), and the
/// events marked on the way.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Timeline {
    pub bucket_ms: u64,
    /// Answered with a success status.
    pub answered: Vec<u64>,
    /// An HTTP error status, or no answer outside ha's restart window.
    pub failed: Vec<u64>,
    /// No HTTP answer while ha itself restarted.
    pub no_answer: Vec<u64>,
    /// (seconds since the load started, what happened), in order.
    pub marks: Vec<(f64, String)>,
}

/// How a request ended, for the timeline.
#[derive(Clone, Copy)]
enum Outcome {
    Answered,
    Failed,
    NoAnswer,
}

impl Timeline {
    fn new() -> Self {
        Timeline {
            bucket_ms: BUCKET.as_millis() as u64,
            ..Timeline::default()
        }
    }

    fn count(&mut self, at: Duration, outcome: Outcome) {
        let i = (at.as_millis() / BUCKET.as_millis()) as usize;
        for v in [&mut self.answered, &mut self.failed, &mut self.no_answer] {
            if v.len() <= i {
                v.resize(i + 1, 0);
            }
        }
        let v = match outcome {
            Outcome::Answered => &mut self.answered,
            Outcome::Failed => &mut self.failed,
            Outcome::NoAnswer => &mut self.no_answer,
        };
        v[i] += 1;
    }
}

/// The cookie-keeping client's session, answer by answer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionReport {
    /// Answers with a `sessionViews`.
    pub visits: u64,
    /// Answers whose count was not above the previous one: a new session.
    pub resets: u64,
    /// Answers whose count jumped over one or more numbers.
    pub skips: u64,
    /// The count in the last answer.
    pub last: u64,
    /// The first few resets and skips ("after 41: 1", when).
    pub samples: Vec<String>,
}

impl SessionReport {
    /// Err unless the session was seen and never reset nor skipped.
    pub fn unbroken(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.visits > 0 && self.resets == 0 && self.skips == 0,
            "{} visits, {} resets, {} skips, e.g. {:?}",
            self.visits,
            self.resets,
            self.skips,
            self.samples
        );
        Ok(())
    }

    fn saw(&mut self, views: u64, at: Duration) {
        let what = match (self.visits, views) {
            (0, 1) => None,
            (0, _) => Some("skip"),
            (_, v) if v == self.last + 1 => None,
            (_, v) if v <= self.last => Some("reset"),
            _ => Some("skip"),
        };
        match what {
            Some("reset") => self.resets += 1,
            Some(_) => self.skips += 1,
            None => {}
        }
        if let Some(w) = what {
            if self.samples.len() < 5 {
                self.samples.push(format!(
                    "{w}: {} after {} ({:.1} s into the load)",
                    views,
                    self.last,
                    at.as_secs_f64()
                ));
            }
        }
        self.visits += 1;
        self.last = views;
    }
}

/// What the load saw in one phase (see [`Load::set_phase`]): the requests
/// sent while it was the current phase, however late they ended.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseCounts {
    pub sent: u64,
    /// HTTP error statuses, and requests with no answer outside ha's
    /// restart window.
    pub failed: u64,
    /// Requests with no HTTP answer while ha itself was restarting.
    pub in_window: u64,
    /// The longest request, from send to the end of its body or its error.
    pub slowest_ms: u64,
    /// Requests that took more than a second (held by a web app that does
    /// not answer, or retried after a connect timeout).
    pub over_1s: u64,
    /// The first few failure descriptions.
    pub samples: Vec<String>,
}

/// A load's limits and patience.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    /// The clients stop by themselves after this long.
    pub max_duration: Duration,
    /// How long a client waits for one answer before giving up (a
    /// failure).
    pub client_timeout: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            max_duration: MAX_DURATION,
            client_timeout: Duration::from_secs(10),
        }
    }
}

/// The current phase and every phase's counts, in order of first use.
#[derive(Debug, Default)]
struct Phases {
    current: usize,
    names: Vec<String>,
    counts: Vec<PhaseCounts>,
    /// Requests of each phase still waiting for their outcome.
    in_flight: Vec<u64>,
}

impl Phases {
    fn new() -> Self {
        Phases {
            current: 0,
            names: vec!["load".into()],
            counts: vec![PhaseCounts::default()],
            in_flight: vec![0],
        }
    }
}

/// How ha came back from a restart, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Back {
    /// From the restart's start to HAProxy's first HTTP answer.
    pub answered_after: f64,
    /// From that answer to the last web app's first answer: the time
    /// back in rotation.
    pub all_served_after: f64,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    front: Front,
    samples: Arc<Mutex<Vec<String>>>,
    seen: Seen,
    phases: Arc<Mutex<Phases>>,
    session: Arc<Mutex<SessionReport>>,
    timeline: Arc<Mutex<Timeline>>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Per `x-backend-ip`: when it first answered (since it was last forgotten)
/// and when it last answered.
type Seen = Arc<Mutex<HashMap<String, (Instant, Instant)>>>;

/// Where the clients send, and the restart window.
#[derive(Debug)]
struct FrontState {
    addr: SocketAddr,
    /// Bumped by every retarget: a request remembers which ha it went to.
    generation: u64,
    /// Open from `begin_restart` to the first HTTP answer of the new ha.
    window_open: bool,
    /// The generation whose first answer closes the window (the old ha
    /// may still answer while it stops).
    window_closer: u64,
    /// When that first answer came.
    answered_at: Option<Instant>,
    in_window: u64,
}

type Front = Arc<Mutex<FrontState>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const CLIENTS: usize = 4;
const PACE: Duration = Duration::from_millis(5);
const MAX_DURATION: Duration = Duration::from_secs(600);
const MAX_REQUESTS_PER_CLIENT: u64 = 200_000;

impl Load {
    /// Start the clients against `http://front/` (at most 10 minutes,
    /// 10 s of patience per request).
    pub fn start(front: SocketAddr) -> Load {
        Load::start_with(front, LoadConfig::default())
    }

    /// Start the clients against `http://front/` with other limits.
    pub fn start_with(front: SocketAddr, config: LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let seen: Seen = Arc::default();
        let phases = Arc::new(Mutex::new(Phases::new()));
        let session: Arc<Mutex<SessionReport>> = Arc::default();
        let timeline = Arc::new(Mutex::new(Timeline::new()));
        let front_state: Front = Arc::new(Mutex::new(FrontState {
            addr: front,
            generation: 0,
            window_open: false,
            window_closer: 0,
            answered_at: None,
            in_window: 0,
        }));
        let started = Instant::now();
        let deadline = started + config.max_duration;
        // The pace caps each client's rate; the count cap follows the time cap.
        let max_requests = MAX_REQUESTS_PER_CLIENT
            .max(config.max_duration.as_millis() as u64 / PACE.as_millis() as u64);
        // The last client keeps its cookies and follows its session.
        let tasks = (0..=CLIENTS)
            .map(|i| {
                let session = (i == CLIENTS).then(|| session.clone());
                let timeline = timeline.clone();
                let (stop, sent, failed, samples, seen, front, phases) = (
                    stop.clone(),
                    sent.clone(),
                    failed.clone(),
                    samples.clone(),
                    seen.clone(),
                    front_state.clone(),
                    phases.clone(),
                );
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .cookie_store(session.is_some())
                        .timeout(config.client_timeout)
                        .build()
                        .expect("a plain HTTP client builds");
                    let mut tick = tokio::time::interval(PACE);
                    for _ in 0..max_requests {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        tick.tick().await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let phase = {
                            let mut p = lock(&phases);
                            let i = p.current;
                            p.counts[i].sent += 1;
                            p.in_flight[i] += 1;
                            i
                        };
                        let (url, generation, window_at_send) = {
                            let f = lock(&front);
                            (format!("http://{}/", f.addr), f.generation, f.window_open)
                        };
                        let began = Instant::now();
                        let took = |p: &mut Phases| {
                            p.in_flight[phase] -= 1;
                            let ms = began.elapsed().as_millis() as u64;
                            let c = &mut p.counts[phase];
                            c.slowest_ms = c.slowest_ms.max(ms);
                            c.over_1s += u64::from(ms > 1000);
                        };
                        let response = client.get(&url).send().await;
                        if response.is_ok() {
                            let mut f = lock(&front);
                            if f.window_open && generation >= f.window_closer {
                                f.window_open = false;
                                f.answered_at = Some(Instant::now());
                            }
                        } else if window_at_send {
                            lock(&front).in_window += 1;
                            lock(&timeline).count(started.elapsed(), Outcome::NoAnswer);
                            let mut p = lock(&phases);
                            took(&mut p);
                            p.counts[phase].in_window += 1;
                            continue;
                        }
                        let outcome = match response {
                            Ok(r) if r.status().is_success() => {
                                let backend = r
                                    .headers()
                                    .get("x-backend-ip")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body = r.bytes().await.map_err(|e| chain(&e));
                                if let (Some(session), Ok(bytes)) = (&session, &body) {
                                    let views = serde_json::from_slice::<serde_json::Value>(bytes)
                                        .ok()
                                        .and_then(|v| v["sessionViews"].as_u64());
                                    if let Some(v) = views {
                                        lock(session).saw(v, began.duration_since(started));
                                    }
                                }
                                let body = body.map(|_| ());
                                if let (Ok(()), Some(ip)) = (&body, backend) {
                                    let now = Instant::now();
                                    lock(&seen).entry(ip).or_insert((now, now)).1 = now;
                                }
                                body
                            }
                            Ok(r) => Err(format!("HTTP {}", r.status())),
                            Err(e) => Err(chain(&e)),
                        };
                        lock(&timeline).count(
                            started.elapsed(),
                            match outcome {
                                Ok(()) => Outcome::Answered,
                                Err(_) => Outcome::Failed,
                            },
                        );
                        let mut p = lock(&phases);
                        took(&mut p);
                        if let Err(e) = outcome {
                            failed.fetch_add(1, Ordering::Relaxed);
                            // When, relative to ha's last restart: tells a
                            // failure at the edge of a restart window from
                            // one in steady state.
                            let since = lock(&front)
                                .answered_at
                                .map(|t| {
                                    format!(
                                        ", {} ms after ha answered again",
                                        t.elapsed().as_millis()
                                    )
                                })
                                .unwrap_or_default();
                            let e = format!(
                                "{e} (after {} ms, sent {:.1} s after the load started)",
                                began.elapsed().as_millis(),
                                began.duration_since(started).as_secs_f64()
                            );
                            let c = &mut p.counts[phase];
                            c.failed += 1;
                            if c.samples.len() < 3 {
                                c.samples.push(e.clone());
                            }
                            let mut s = lock(&samples);
                            if s.len() < 5 {
                                s.push(format!("{e}{since}"));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failed,
            front: front_state,
            samples,
            seen,
            phases,
            session,
            timeline,
            started,
            tasks,
        }
    }

    /// Mark an event (a web app started, ha restarted) on the timeline, at
    /// this moment.
    pub fn mark(&self, what: &str) {
        let at = self.started.elapsed().as_secs_f64();
        lock(&self.timeline).marks.push((at, what.to_string()));
    }

    /// What the cookie-keeping client saw of its session so far.
    pub fn session(&self) -> SessionReport {
        lock(&self.session).clone()
    }

    /// Count the requests sent from now on in phase `name` (a phase seen
    /// before goes on counting). Before any call the phase is `load`.
    pub fn set_phase(&self, name: &str) {
        let mut p = lock(&self.phases);
        let i = match p.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                p.names.push(name.into());
                p.counts.push(PhaseCounts::default());
                p.in_flight.push(0);
                p.names.len() - 1
            }
        };
        p.current = i;
    }

    /// Wait (at most `deadline`) until no request sent in an earlier phase
    /// is still waiting for its outcome: one that a web app held (paused,
    /// cut off) has been answered, or has failed. Returns how long that
    /// took; an error after `deadline` says how many are left.
    pub async fn drained(&self, deadline: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let left: u64 = {
                let p = lock(&self.phases);
                p.in_flight
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != p.current)
                    .map(|(_, n)| n)
                    .sum()
            };
            if left == 0 {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= deadline {
                anyhow::bail!(
                    "{left} request(s) of earlier phases still in flight after {deadline:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every phase's counts so far, in order of first use.
    pub fn phases(&self) -> Vec<(String, PhaseCounts)> {
        let p = lock(&self.phases);
        p.names
            .iter()
            .cloned()
            .zip(p.counts.iter().cloned())
            .collect()
    }

    /// ha is about to restart: requests with no HTTP answer count as the
    /// restart window until the first HTTP answer after [`Load::retarget`].
    pub fn begin_restart(&self) {
        let mut f = lock(&self.front);
        f.window_open = true;
        f.window_closer = f.generation + 1;
        f.answered_at = None;
    }

    /// Send to `front` from now on (ha's published port after its restart).
    pub fn retarget(&self, front: SocketAddr) {
        let mut f = lock(&self.front);
        f.addr = front;
        f.generation += 1;
    }

    /// When the restarted ha first answered (the window's end).
    pub fn answered_at(&self) -> Option<Instant> {
        lock(&self.front).answered_at
    }

    /// After ha restarted (the new address already given to
    /// [`Load::retarget`], and `ips` forgotten before the restart began at
    /// `started`): wait for its first HTTP answer, then for an answer from
    /// every web app in `ips`.
    pub async fn wait_back(&self, ips: &[String], started: Instant) -> anyhow::Result<Back> {
        let answered = super::poll(
            "HAProxy answers again",
            Duration::from_secs(120),
            || async { Ok(self.answered_at()) },
        )
        .await?;
        let last = super::poll(
            "every running web app answers through HAProxy",
            Duration::from_secs(120),
            || async {
                let firsts: Option<Vec<Instant>> =
                    ips.iter().map(|ip| self.seen(ip).map(|s| s.0)).collect();
                Ok(firsts.and_then(|f| f.into_iter().max()))
            },
        )
        .await?;
        Ok(Back {
            answered_after: answered.duration_since(started).as_secs_f64(),
            all_served_after: last.saturating_duration_since(answered).as_secs_f64(),
        })
    }

    /// Requests that fell in a restart window so far.
    pub fn in_window(&self) -> u64 {
        lock(&self.front).in_window
    }

    /// When `ip` first and last answered since it was last forgotten.
    pub fn seen(&self, ip: &str) -> Option<(Instant, Instant)> {
        lock(&self.seen).get(ip).copied()
    }

    /// Forget what `ip` answered (Docker hands a freed address to the next
    /// container).
    pub fn forget(&self, ip: &str) {
        lock(&self.seen).remove(ip);
    }

    /// Counts so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        LoadReport {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_window: lock(&self.front).in_window,
            samples: self.samples.lock().map(|s| s.clone()).unwrap_or_default(),
            phases: self.phases(),
            session: self.session(),
            timeline: lock(&self.timeline).clone(),
        }
    }
}

/// An error with its causes ("error sending request: ...: connection
/// reset by peer"): reqwest's own message names only the URL.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// HAProxy logs the requests that were not normal (failed, retried or
/// redispatched: `option dontlog-normal`): count them, and print the failed
/// ones, whose termination state and last server tell what happened.
pub async fn print_haproxy_failures(label: &str, container: &str) {
    let Ok(log) = crate::engine::logs(container).await else {
        return;
    };
    // client [date] frontend backend/server timers status bytes - - state
    // conns(…/retries) queue "request"
    let logged: Vec<Vec<&str>> = log
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|t| t.len() > 11 && t[2] == "localnodes")
        .collect();
    let failed: Vec<&Vec<&str>> = logged
        .iter()
        .filter(|t| !t[5].starts_with('2') && !t[5].starts_with('3'))
        .collect();
    eprintln!(
        "   [{label}] HAProxy logged {} request(s) that took a retry or failed; {} failed",
        logged.len(),
        failed.len()
    );
    for t in failed.iter().take(20) {
        eprintln!("      {}", t.join(" "));
    }
}
