//! A steady, bounded client load through ha: a few keep-alive clients, each
//! sending one request every few milliseconds, every request one attempt
//! (no retry), until told to stop or a hard cap on time or count is hit.

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
    /// A few failure descriptions, for the report.
    pub samples: Vec<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    samples: Arc<Mutex<Vec<String>>>,
    seen: Seen,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Per `x-backend-ip`: when it first answered (since it was last forgotten)
/// and when it last answered.
type Seen = Arc<Mutex<HashMap<String, (Instant, Instant)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const CLIENTS: usize = 4;
const PACE: Duration = Duration::from_millis(5);
const MAX_DURATION: Duration = Duration::from_secs(600);
const MAX_REQUESTS_PER_CLIENT: u64 = 200_000;

impl Load {
    /// Start the clients against `http://front/`.
    pub fn start(front: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let seen: Seen = Arc::default();
        let deadline = Instant::now() + MAX_DURATION;
        let tasks = (0..CLIENTS)
            .map(|_| {
                let (stop, sent, failed, samples, seen) = (
                    stop.clone(),
                    sent.clone(),
                    failed.clone(),
                    samples.clone(),
                    seen.clone(),
                );
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("a plain HTTP client builds");
                    let url = format!("http://{front}/");
                    let mut tick = tokio::time::interval(PACE);
                    for _ in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        tick.tick().await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let outcome = match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                let backend = r
                                    .headers()
                                    .get("x-backend-ip")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body = r.bytes().await.map(|_| ()).map_err(|e| e.to_string());
                                if let (Ok(()), Some(ip)) = (&body, backend) {
                                    let now = Instant::now();
                                    lock(&seen).entry(ip).or_insert((now, now)).1 = now;
                                }
                                body
                            }
                            Ok(r) => Err(format!("HTTP {}", r.status())),
                            Err(e) => Err(format!("{e:#}")),
                        };
                        if let Err(e) = outcome {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let mut s = lock(&samples);
                            if s.len() < 5 {
                                s.push(e);
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
            samples,
            seen,
            tasks,
        }
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

    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        LoadReport {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            samples: self.samples.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }
}

/// HAProxy logs the requests that were not normal (failed, retried or
/// redispatched: `option dontlog-normal`): count them, and print the failed
/// ones, whose termination state and last server tell what happened.
pub fn print_haproxy_failures(label: &str, container: &str) {
    let Ok(log) = crate::docker::logs(container) else {
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
