//! The event-handler runner (`-event-handler [filter=]script`) and the event
//! filters it shares with the RPC `stream` command.
//!
//! Each matching event runs `/bin/sh -c script` with Serf's environment
//! (`SERF_EVENT`, `SERF_SELF_NAME`, `SERF_SELF_ROLE`, `SERF_TAG_*`, and
//! `SERF_USER_*` / `SERF_QUERY_*`) and Serf's stdin (one member per line, or
//! the payload). Events are handled one at a time, in order. Unlike Serf, a
//! script that outlives the timeout is killed (with its process group).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::{broadcast, mpsc};

use crate::model::{AgentHandle, Event, Member};

/// Output kept per run (the last bytes), as Serf's circular buffer.
const MAX_OUTPUT: usize = 8 * 1024;
/// Events kept waiting behind a busy handler; past this, new events are
/// dropped (with a warning, counted in `serf info`). Serf's agent queues 64
/// (`eventCh`) and then blocks Serf itself, gossip included, until the
/// handler is done; its RPC streams queue 512 and drop. 1024 is two event
/// backlogs of the agent's broadcast, at most about 9 MiB of 9 KiB events.
pub const HANDLER_QUEUE: usize = 1024;
/// A run longer than this is reported as slow (Serf's warning).
const WARN_SLOW: Duration = Duration::from_secs(1);

/// One element of a filter list, as Serf parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// `*`, `member-join`, ..., `user` or `query`.
    pub event: String,
    /// For `user:NAME` / `query:NAME`: the name; empty means any.
    pub name: String,
}

impl EventFilter {
    /// Parses a comma list; an empty string means `*`. Fails naming the
    /// first unknown event type.
    pub fn parse_list(s: &str) -> Result<Vec<EventFilter>, String> {
        let s = if s.is_empty() { "*" } else { s };
        s.split(',')
            .map(|item| {
                let (event, name) = if let Some(n) = item.strip_prefix("user:") {
                    ("user", n)
                } else if let Some(n) = item.strip_prefix("query:") {
                    ("query", n)
                } else {
                    (item, "")
                };
                let f = EventFilter {
                    event: event.to_string(),
                    name: name.to_string(),
                };
                if f.valid() {
                    Ok(f)
                } else {
                    Err(format!("invalid event filter '{item}'"))
                }
            })
            .collect()
    }

    fn valid(&self) -> bool {
        matches!(
            self.event.as_str(),
            "*" | "member-join"
                | "member-leave"
                | "member-failed"
                | "member-update"
                | "member-reap"
                | "user"
                | "query"
        )
    }

    pub fn matches(&self, e: &Event) -> bool {
        if self.event == "*" {
            return true;
        }
        match e {
            Event::Member { kind, .. } => self.event == kind.as_str(),
            Event::User { name, .. } => {
                self.event == "user" && (self.name.is_empty() || &self.name == name)
            }
            Event::Query(q) => {
                self.event == "query" && (self.name.is_empty() || self.name == q.name)
            }
        }
    }
}

/// Does any filter of the list accept `e`?
pub fn any_matches(filters: &[EventFilter], e: &Event) -> bool {
    filters.iter().any(|f| f.matches(e))
}

/// One `-event-handler` value: a filter list and a shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventScript {
    pub filters: Vec<EventFilter>,
    pub script: String,
}

impl EventScript {
    /// Parses `[filter=]script` (the first `=` splits, as in Serf).
    pub fn parse(spec: &str) -> Result<EventScript, String> {
        let (filter, script) = match spec.split_once('=') {
            Some((f, s)) => (f, s),
            None => ("", spec),
        };
        if script.trim().is_empty() {
            return Err(format!("event handler '{spec}' has no script"));
        }
        let filters =
            EventFilter::parse_list(filter).map_err(|e| format!("event handler '{spec}': {e}"))?;
        Ok(EventScript {
            filters,
            script: script.to_string(),
        })
    }
}

fn parse_specs(specs: &[String]) -> Result<Vec<EventScript>, String> {
    specs.iter().map(|s| EventScript::parse(s)).collect()
}

/// The name Serf uses for an event in `SERF_EVENT`.
pub fn event_type(e: &Event) -> &'static str {
    match e {
        Event::Member { kind, .. } => kind.as_str(),
        Event::User { .. } => "user",
        Event::Query(_) => "query",
    }
}

/// What a handler run needs from the agent: who we are, and how to answer
/// a query. Every [`AgentHandle`] is one.
#[async_trait::async_trait]
pub trait HandlerHost: Send + Sync {
    fn local_member(&self) -> Member;
    async fn respond(&self, id: u64, payload: Vec<u8>) -> anyhow::Result<()>;
    /// `n` more events were dropped (the handler queue was full).
    fn events_dropped(&self, n: u64) {
        let _ = n;
    }
}

#[async_trait::async_trait]
impl<A: AgentHandle + ?Sized> HandlerHost for A {
    fn local_member(&self) -> Member {
        AgentHandle::local_member(self)
    }
    fn events_dropped(&self, n: u64) {
        AgentHandle::handler_events_dropped(self, n)
    }
    async fn respond(&self, id: u64, payload: Vec<u8>) -> anyhow::Result<()> {
        AgentHandle::respond(self, id, payload).await
    }
}

/// How one script run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exit code (None: killed by a signal), with the output kept.
    Exited { code: Option<i32>, output: Vec<u8> },
    /// Killed after the timeout.
    TimedOut { output: Vec<u8> },
    /// Could not be started.
    SpawnFailed(String),
}

/// Runs the configured scripts for each event, one at a time, in order.
/// The script list can be replaced while running (SIGHUP reload); an event
/// already being handled finishes with the list it started with.
pub struct HandlerRunner {
    scripts: Mutex<Arc<Vec<EventScript>>>,
    timeout: Duration,
}

impl HandlerRunner {
    /// From raw `-event-handler` values; fails on the first bad one.
    pub fn new(specs: &[String], timeout: Duration) -> Result<HandlerRunner, String> {
        Ok(HandlerRunner {
            scripts: Mutex::new(Arc::new(parse_specs(specs)?)),
            timeout,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// Replaces the scripts; on a bad spec the old ones stay.
    pub fn replace(&self, specs: &[String]) -> Result<(), String> {
        let new = parse_specs(specs)?;
        *self.scripts.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        Ok(())
    }

    fn current(&self) -> Arc<Vec<EventScript>> {
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Handles events from the agent's broadcast until it closes. Events
    /// are taken off the broadcast at once into a queue of their own
    /// ([`HANDLER_QUEUE`] events), so a slow handler delays the ones after
    /// it (as in Serf). When handlers are slower than events for that long,
    /// new events are dropped, never memory without bound and never gossip
    /// held up (Serf blocks): a warning when dropping starts, one with the
    /// count when the queue has room again, each drop counted on the host.
    pub async fn run<H: HandlerHost + ?Sized + 'static>(
        &self,
        host: Arc<H>,
        mut events: broadcast::Receiver<Event>,
    ) {
        let (tx, mut queue) = mpsc::channel(HANDLER_QUEUE);
        let counter = host.clone();
        let forward = tokio::spawn(async move {
            // Events dropped since the queue last had room.
            let mut dropping: u64 = 0;
            loop {
                match events.recv().await {
                    Ok(e) => match tx.try_send(e) {
                        Ok(()) => {
                            if dropping > 0 {
                                tracing::warn!(target: "agent", "event handler queue has room again: {dropping} events were dropped");
                                dropping = 0;
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(e)) => {
                            if dropping == 0 {
                                tracing::warn!(target: "agent",
                                    "event handlers fell behind: {HANDLER_QUEUE} events wait, dropping new ones (first: {})",
                                    event_type(&e));
                            }
                            dropping += 1;
                            counter.events_dropped(1);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(target: "agent", "event handlers fell behind: {n} events skipped");
                        counter.events_dropped(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        while let Some(e) = queue.recv().await {
            self.handle(&*host, &e).await;
        }
        forward.abort();
    }

    /// Handles events from a channel until it closes.
    pub async fn run_channel<H: HandlerHost + ?Sized>(
        &self,
        host: Arc<H>,
        mut events: mpsc::Receiver<Event>,
    ) {
        while let Some(e) = events.recv().await {
            self.handle(&*host, &e).await;
        }
    }

    /// Runs every script whose filter matches `event`, in configuration order.
    pub async fn handle<H: HandlerHost + ?Sized>(&self, host: &H, event: &Event) {
        let me = host.local_member();
        let scripts = self.current();
        for s in scripts.iter().filter(|s| any_matches(&s.filters, event)) {
            let outcome = invoke(&s.script, &me, event, self.timeout).await;
            let kind = event_type(event);
            match &outcome {
                RunOutcome::Exited {
                    code: Some(0),
                    output,
                } => {
                    tracing::debug!(target: "agent", "Event '{kind}' script output: {}", String::from_utf8_lossy(output));
                    if let Event::Query(q) = event {
                        if !output.is_empty() {
                            // Whole or not at all: one too big is refused
                            // (query_response_size_limit), as by Serf.
                            if let Err(e) = host.respond(q.id, output.clone()).await {
                                tracing::warn!(target: "agent", "Failed to respond to query '{}': {e:#}", q.name);
                            }
                        }
                    }
                }
                RunOutcome::Exited { code, output } => {
                    let code = code.map_or("killed by a signal".to_string(), |c| {
                        format!("exit status {c}")
                    });
                    tracing::error!(target: "agent", "Error invoking script '{}': {code}", s.script);
                    tracing::debug!(target: "agent", "Event '{kind}' script output: {}", String::from_utf8_lossy(output));
                }
                RunOutcome::TimedOut { output } => {
                    tracing::error!(target: "agent", "Script '{}' timed out after {:?} and was killed", s.script, self.timeout);
                    tracing::debug!(target: "agent", "Event '{kind}' script output: {}", String::from_utf8_lossy(output));
                }
                RunOutcome::SpawnFailed(e) => {
                    tracing::error!(target: "agent", "Error invoking script '{}': {e}", s.script);
                }
            }
        }
    }
}

/// `SERF_TAG_` + the tag name upper-cased, other characters as `_`.
fn tag_env_name(tag: &str) -> String {
    let up: String = tag
        .to_uppercase()
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("SERF_TAG_{up}")
}

/// Tabs and newlines would break the line format: escape them as Serf does.
fn clean(v: &str) -> String {
    v.replace('\t', "\\t").replace('\n', "\\n")
}

/// The stdin Serf gives a script for this event.
pub fn stdin_for(event: &Event) -> Vec<u8> {
    match event {
        Event::Member { members, .. } => {
            let mut out = String::new();
            for m in members {
                let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    clean(&m.name),
                    m.addr,
                    clean(m.tag("role").unwrap_or("")),
                    clean(&tags.join(","))
                ));
            }
            out.into_bytes()
        }
        Event::User { payload, .. } => with_newline(payload),
        Event::Query(q) => with_newline(&q.payload),
    }
}

fn with_newline(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    if !v.is_empty() && !v.ends_with(b"\n") {
        v.push(b'\n');
    }
    v
}

/// Runs one script for one event and waits for it (or kills it).
pub async fn invoke(script: &str, me: &Member, event: &Event, timeout: Duration) -> RunOutcome {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    cmd.env("SERF_EVENT", event_type(event))
        .env("SERF_SELF_NAME", &me.name)
        .env("SERF_SELF_ROLE", me.tag("role").unwrap_or(""));
    for (k, v) in &me.tags {
        cmd.env(tag_env_name(k), v);
    }
    match event {
        Event::User { name, ltime, .. } => {
            cmd.env("SERF_USER_EVENT", name)
                .env("SERF_USER_LTIME", ltime.to_string());
        }
        Event::Query(q) => {
            cmd.env("SERF_QUERY_NAME", &q.name)
                .env("SERF_QUERY_LTIME", q.ltime.to_string());
        }
        Event::Member { .. } => {}
    }
    // Its own process group, so a timeout kills what the script started too.
    cmd.process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return RunOutcome::SpawnFailed(e.to_string()),
    };
    let pgid = child.id();
    let input = stdin_for(event);
    if let Some(mut stdin) = child.stdin.take() {
        // A script that ignores stdin must not block us: write aside.
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    // Serf mixes stdout and stderr in one buffer; so do we, keeping the tail.
    let output = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        let output = output.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut out = output.lock().unwrap();
                out.extend_from_slice(&buf[..n]);
                if out.len() > MAX_OUTPUT {
                    let cut = out.len() - MAX_OUTPUT;
                    out.drain(..cut);
                }
            }
        })
    })
    .collect();
    let started = std::time::Instant::now();
    let waited = tokio::select! {
        r = tokio::time::timeout(timeout, child.wait()) => r,
        _ = async {
            tokio::time::sleep(WARN_SLOW).await;
            tracing::warn!(target: "agent", "Script '{script}' slow, execution exceeding {WARN_SLOW:?}");
            std::future::pending::<()>().await
        } => unreachable!("the slow warning never completes"),
    };
    let timed_out = waited.is_err();
    if timed_out {
        if let Some(pid) = pgid {
            // SAFETY: killpg only sends a signal; the group is the one we created.
            unsafe {
                libc::killpg(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = child.kill().await;
    }
    // Something the script left running in the background may hold the
    // pipes open: collect what is there without waiting for it for long.
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    let output = std::mem::take(&mut *output.lock().unwrap());
    tracing::trace!(target: "agent", "script '{script}' ran for {:?}", started.elapsed());
    match waited {
        Ok(Ok(status)) => RunOutcome::Exited {
            code: status.code(),
            output,
        },
        Ok(Err(e)) => RunOutcome::SpawnFailed(e.to_string()),
        Err(_) => RunOutcome::TimedOut { output },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_serf() {
        let s = EventScript::parse("member-join,user:deploy=/bin/h.sh arg=1").unwrap();
        assert_eq!(s.script, "/bin/h.sh arg=1");
        assert_eq!(s.filters.len(), 2);
        assert_eq!(s.filters[1].name, "deploy");
        let all = EventScript::parse("./h.sh").unwrap();
        assert_eq!(all.filters[0].event, "*");
        let err = EventScript::parse("member-explode=./h.sh").unwrap_err();
        assert!(err.contains("member-explode"), "{err}");
        assert!(EventScript::parse("user=").is_err());
    }

    #[test]
    fn tag_names_are_sanitised() {
        assert_eq!(tag_env_name("role"), "SERF_TAG_ROLE");
        assert_eq!(tag_env_name("web-port.v2"), "SERF_TAG_WEB_PORT_V2");
    }
}
