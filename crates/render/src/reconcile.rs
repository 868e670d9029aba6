//! `render reconcile`: one long-lived process that keeps HAProxy's backend
//! equal to the membership agent's `role=backend` members.
//!
//! Owns the loop: member lists in (from [`crate::membership::follow`]),
//! Runtime API commands and the rendered haproxy.cfg out. The technique is
//! the one `anchors/haproxy.md` measured with zero failed requests: no
//! reload; `add server` + health checks + a join, `state maint` + a
//! background `del server` for a leave; the config file is rewritten (and
//! validated) after each change only so that a restart of HAProxy comes
//! back with the same servers.
//!
//! Why the gated join is the default: a member joins the cluster when its
//! agent starts, which can be before its web server listens. `enable
//! server` marks a server UP before any check, so HAProxy would send it
//! requests that fail (or cost a retry); the gated join (`state drain`,
//! `health down`, `state ready`) gives it traffic only after `rise`
//! successful checks (about 0.1 s with `downinter 100ms rise 1`: a server
//! held down is checked at `downinter`). The default, `--join probe`, saves
//! that wait when it can: the reconciler connects to the new server itself
//! and, when it accepts, enables it at once (HAProxy's checks run from then
//! on); a server not listening yet gets the gated join. `--join enable` is
//! there for members known to be serving when they join.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::backends::{AddressClaims, Backend, BackendSet, MemberInfo, RejectionLog, Selector};
use crate::membership::{self, Backoff, Coalescing, MembershipSource};
use crate::output::{self, CheckCommand};
use crate::plan::{kept, plan, Step, Target};
use crate::runtime_api::{ApiError, Reply, RuntimeApi};
use crate::template;

/// The default haproxy.cfg template, shipped in the binary.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/haproxy.cfg.tera");

/// How a server starts taking traffic once it is (re-)enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinMode {
    /// Connect to the server first (TCP, [`PROBE_TIMEOUT`]): when it
    /// accepts, `enable server` (UP at once, its health checks running from
    /// then on); when it does not yet, the gated join.
    Probe,
    /// `state drain`, `health down`, `state ready`: traffic only after the
    /// health checks pass.
    Gated,
    /// `enable server`: UP at once, before any check.
    Enable,
}

/// How long the probe of [`JoinMode::Probe`] waits for a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// True when something accepts TCP connections at `ip:port`.
async fn accepts(ip: std::net::IpAddr, port: u16) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((ip, port))).await,
        Ok(Ok(_))
    )
}

/// Everything the reconciler needs to know, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: RuntimeApi,
    pub backend: String,
    pub server_options: String,
    /// Sticky routing: the template's `sticky` variable. A cookie SERVERID
    /// names the server that answered; its value is the server's name, so
    /// nothing changes in the servers the reconciler adds (HAProxy 2.6
    /// refuses `cookie` in `add server`: see the template).
    pub sticky: bool,
    pub join: JoinMode,
    pub selector: Selector,
    /// haproxy.cfg: template name (for messages), its text, output path,
    /// validation command, and extra variables.
    pub template_name: String,
    pub template: String,
    pub config_out: PathBuf,
    pub check: Option<CheckCommand>,
    pub vars: Map<String, Value>,
    pub coalescing: Coalescing,
    /// Compare HAProxy's servers with the desired set this often even with
    /// no membership change (catches HAProxy restarts and manual edits).
    pub verify_every: Duration,
    /// When `config_out` does not exist at start (a new container) and
    /// HAProxy does not answer yet, the first file is written once the
    /// agent's view is synced, or after this long: HAProxy starts from that
    /// file, and one started from a fresh agent's partial view would answer
    /// 503 until the servers are added.
    pub first_write_wait: Duration,
}

/// The reconciler's state between membership changes.
pub struct Reconciler {
    s: Settings,
    /// Names in maintenance whose `del server` is being retried, with when
    /// that started and whether a slow deletion was already reported.
    deleting: std::collections::BTreeMap<String, (Instant, bool)>,
    /// The set last written to the config file (or refused by validation:
    /// either way, do not redo it until the set changes). A write that
    /// failed otherwise (I/O, a validator that did not finish) is not
    /// recorded, so the next pass retries it.
    written: Option<BackendSet>,
    /// Until when a missing config file may wait for a synced view.
    first_write_until: Option<Instant>,
}

/// What one pass changed, for the one-line log.
#[derive(Debug, Default)]
pub struct Applied {
    pub parts: Vec<String>,
}

impl Reconciler {
    pub fn new(s: Settings) -> Self {
        let first_write_until =
            (!s.config_out.exists()).then(|| Instant::now() + s.first_write_wait);
        Reconciler {
            s,
            deleting: Default::default(),
            written: None,
            first_write_until,
        }
    }

    fn srv(&self, name: &str) -> String {
        format!("{}/{}", self.s.backend, name)
    }

    /// Read HAProxy's servers, apply the difference. Repeats while the
    /// plan is not empty (bounded), so a step HAProxy refused surfaces as
    /// an error for the caller's backoff. What was done, even before an
    /// error, is in `applied`. On success, the servers kept although not
    /// desired (see [`crate::plan`]: no evidence they are gone).
    pub async fn sync(
        &mut self,
        target: &Target,
        applied: &mut Applied,
    ) -> Result<Vec<Backend>, ApiError> {
        for _ in 0..3 {
            let current = self.s.api.servers(&self.s.backend).await?;
            let pending: BTreeSet<String> = self.deleting.keys().cloned().collect();
            let steps = plan(&current, target, &pending);
            if steps.is_empty() {
                return Ok(kept(&current, target));
            }
            for step in steps {
                let what = self.apply(&step).await?;
                applied.parts.push(what);
            }
        }
        let current = self.s.api.servers(&self.s.backend).await?;
        let pending: BTreeSet<String> = self.deleting.keys().cloned().collect();
        match plan(&current, target, &pending).first() {
            None => Ok(kept(&current, target)),
            Some(step) => Err(ApiError::Refused {
                command: format!("{step:?}"),
                reply: "HAProxy's state still differs after three passes".into(),
            }),
        }
    }

    async fn apply(&mut self, step: &Step) -> Result<String, ApiError> {
        let api = &self.s.api;
        match step {
            Step::Add(b) => {
                let cmd = format!(
                    "add server {} {} {}",
                    self.srv(&b.name),
                    b.addr,
                    self.s.server_options
                );
                api.expect(&cmd, Reply::Added).await?;
                self.join(b).await?;
                Ok(format!("added {} {}", b.name, b.addr))
            }
            Step::Rejoin {
                backend: b,
                moved,
                was_serving,
            } => {
                // Cancel a queued deletion first: the entry is reused.
                self.deleting.remove(&b.name);
                if *moved {
                    if *was_serving {
                        api.expect(
                            &format!("set server {} state maint", self.srv(&b.name)),
                            Reply::Empty,
                        )
                        .await?;
                    }
                    let cmd = format!(
                        "set server {} addr {} port {}",
                        self.srv(&b.name),
                        b.ip,
                        b.port
                    );
                    api.expect(&cmd, Reply::AddrSet).await?;
                }
                self.join(b).await?;
                Ok(format!("re-enabled {} {}", b.name, b.addr))
            }
            Step::Remove(name) => {
                api.expect(
                    &format!("set server {} state maint", self.srv(name)),
                    Reply::Empty,
                )
                .await?;
                self.deleting.insert(name.clone(), (Instant::now(), false));
                Ok(format!("removed {name}"))
            }
            Step::Delete(name) => {
                self.deleting.insert(name.clone(), (Instant::now(), false));
                Ok(format!("deleting stale {name}"))
            }
        }
    }

    /// Turn health checks on and let the server take traffic, per
    /// [`JoinMode`]. A server without `check` (only possible for one from a
    /// hand-written config) cannot be gated: it is made ready directly.
    async fn join(&self, b: &Backend) -> Result<(), ApiError> {
        let api = &self.s.api;
        let srv = self.srv(&b.name);
        let reply = api.raw(&format!("enable health {srv}")).await?;
        let has_checks = if Reply::Empty.accepts(&reply) {
            true
        } else if reply.contains("not configured") {
            false
        } else {
            return Err(ApiError::Refused {
                command: format!("enable health {srv}"),
                reply: reply.trim().into(),
            });
        };
        let mode = match self.s.join {
            JoinMode::Probe if accepts(b.ip, b.port).await => JoinMode::Enable,
            JoinMode::Probe => {
                tracing::debug!(server = %b.name, addr = %b.addr, "not accepting yet: gated join");
                JoinMode::Gated
            }
            other => other,
        };
        match (mode, has_checks) {
            (JoinMode::Enable | JoinMode::Probe, _) => {
                api.expect(&format!("enable server {srv}"), Reply::Empty)
                    .await?;
            }
            (JoinMode::Gated, true) => {
                for cmd in ["state drain", "health down", "state ready"] {
                    api.expect(&format!("set server {srv} {cmd}"), Reply::Empty)
                        .await?;
                }
            }
            (JoinMode::Gated, false) => {
                api.expect(&format!("set server {srv} state ready"), Reply::Empty)
                    .await?;
            }
        }
        Ok(())
    }

    /// One round of `del server` for every queued name. Kept in the queue
    /// while HAProxy refuses (idle connections not purged yet); dropped
    /// once deleted or gone.
    pub async fn retry_deletions(&mut self) -> Result<(), ApiError> {
        let names: Vec<String> = self.deleting.keys().cloned().collect();
        for name in names {
            let reply = self
                .s
                .api
                .raw(&format!("del server {}", self.srv(&name)))
                .await?;
            let r = reply.trim();
            if Reply::Deleted.accepts(r) || r == "No such server." {
                if let Some((since, _)) = self.deleting.remove(&name) {
                    tracing::debug!(
                        "deleted {name} {} ms after maintenance",
                        since.elapsed().as_millis()
                    );
                }
            } else if let Some((since, reported)) = self.deleting.get_mut(&name) {
                if !*reported && since.elapsed() > Duration::from_secs(10) {
                    tracing::warn!("{name} still not deleted after {:?} (in maintenance, gets no traffic): HAProxy says {r:?}", since.elapsed());
                    *reported = true;
                }
            }
        }
        Ok(())
    }

    pub fn deletions_pending(&self) -> bool {
        !self.deleting.is_empty()
    }

    /// Whether the config file may be written for `target` now. After a
    /// successful sync (`kept` known) always: the file is what HAProxy
    /// has. With HAProxy unreachable, only a synced view is written (a
    /// fresh agent's partial list would drop live servers from the file
    /// HAProxy restarts from), except that a missing file is written after
    /// [`Settings::first_write_wait`] even so.
    pub fn may_write(&self, target: &Target, synced_with_haproxy: bool) -> bool {
        synced_with_haproxy
            || target.synced
            || self
                .first_write_until
                .is_some_and(|t| Instant::now() >= t && !self.s.config_out.exists())
    }

    /// Render haproxy.cfg for `servers`, validate it, write it atomically.
    /// Skipped when this set was already handled. A failure leaves the last
    /// good file in place; one the validator refused is not retried until
    /// the set changes, any other (I/O, a validator that did not finish) is
    /// retried at the next pass.
    pub async fn write_config(&mut self, servers: &BackendSet) {
        if self.written.as_ref() == Some(servers) {
            return;
        }
        let text = match render_config(&self.s, servers) {
            Ok(t) => t,
            Err(e) => {
                // The same template and set would fail again.
                self.written = Some(servers.clone());
                tracing::error!("haproxy.cfg not written, the last good one stays: {e}");
                return;
            }
        };
        let path = self.s.config_out.clone();
        let check = self.s.check.clone();
        let res = tokio::task::spawn_blocking(move || {
            output::write_atomic(&path, text.as_bytes(), check.as_ref())
        })
        .await;
        match res {
            Ok(Ok(())) => {
                self.written = Some(servers.clone());
                self.first_write_until = None;
                tracing::debug!("wrote {}", self.s.config_out.display());
            }
            Ok(Err(e)) => {
                let refused = e.is_rejection();
                if refused {
                    self.written = Some(servers.clone());
                }
                // One log line: the validator's output joined.
                tracing::error!(
                    "haproxy.cfg not written, the last good one stays{}: {}",
                    if refused {
                        ""
                    } else {
                        " (retried at the next pass)"
                    },
                    e.to_string().trim_end().replace('\n', " | ")
                );
            }
            Err(e) => tracing::error!("haproxy.cfg writer failed (retried at the next pass): {e}"),
        }
    }
}

/// What a member list means for the planner: the desired set (rejections
/// logged once), every name listed, and whether the view is synced (at
/// least two alive members: the agent itself and another).
pub fn target_of(
    selector: &Selector,
    members: &[MemberInfo],
    claims: &mut AddressClaims,
    rejections: &mut RejectionLog,
) -> Target {
    let (desired, rejected) = selector.select(members, claims);
    for r in rejections.fresh(rejected) {
        tracing::warn!("{r}");
    }
    Target {
        desired,
        listed: members.iter().map(|m| m.name.clone()).collect(),
        synced: members.iter().filter(|m| m.status == "alive").count() >= 2,
    }
}

/// The haproxy.cfg text for a backend set: the extra variables, then
/// `backends`, `backend_name`, `server_options` and `sticky` from the
/// settings.
pub fn render_config(
    s: &Settings,
    desired: &BackendSet,
) -> Result<String, template::TemplateError> {
    let mut vars = s.vars.clone();
    let list: Vec<&Backend> = desired.values().collect();
    vars.insert(
        "backends".into(),
        serde_json::to_value(list).expect("backends serialise"),
    );
    vars.insert("backend_name".into(), Value::String(s.backend.clone()));
    vars.insert(
        "server_options".into(),
        Value::String(s.server_options.clone()),
    );
    vars.insert("sticky".into(), Value::Bool(s.sticky));
    template::render(&s.template_name, &s.template, &vars)
}

/// Run until `shutdown` resolves. Never returns early on a transient
/// error: the agent and HAProxy are retried with backoff.
pub async fn run<S: MembershipSource>(
    settings: Settings,
    source: S,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (tx, mut rx) = watch::channel::<Option<Vec<MemberInfo>>>(None);
    let follower = tokio::spawn(membership::follow(source, tx, settings.coalescing));
    let selector = settings.selector.clone();
    let verify_every = settings.verify_every;
    let mut rec = Reconciler::new(settings);
    let mut rejections = RejectionLog::default();
    let mut claims = AddressClaims::default();
    // None until the agent gave a first list: never act on "no members"
    // just because the agent is not reachable yet.
    let mut desired: Option<Target> = None;
    let mut was_synced = None;
    let mut dirty = false;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut next_try = tokio::time::Instant::now();
    let mut last_error: Option<String> = None;
    let mut verify = tokio::time::interval(verify_every);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut delete_tick = tokio::time::interval(Duration::from_millis(100));
    delete_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    tracing::error!("membership follower stopped");
                    break;
                }
                let Some(members) = rx.borrow_and_update().clone() else { continue };
                let target = target_of(&selector, &members, &mut claims, &mut rejections);
                if was_synced != Some(target.synced) {
                    if target.synced {
                        tracing::info!("the agent's view is synced ({} members): servers it does not list may go once HAProxy's checks fail", members.len());
                    } else {
                        tracing::info!("the agent knows no other alive member yet: servers it does not list are kept");
                    }
                    was_synced = Some(target.synced);
                }
                if desired.as_ref() != Some(&target) {
                    desired = Some(target);
                    dirty = true;
                }
            }
            _ = tokio::time::sleep_until(next_try), if dirty => {
                let Some(target) = desired.clone() else { dirty = false; continue };
                let started = Instant::now();
                let mut applied = Applied::default();
                let res = rec.sync(&target, &mut applied).await;
                if !applied.parts.is_empty() {
                    tracing::info!("{} in {} ms", applied.parts.join(", "), started.elapsed().as_millis());
                }
                let file_set = match &res {
                    Ok(kept) => {
                        let mut all = target.desired.clone();
                        all.extend(kept.iter().map(|b| (b.name.clone(), b.clone())));
                        rec.may_write(&target, true).then_some(all)
                    }
                    Err(_) => rec.may_write(&target, false).then(|| target.desired.clone()),
                };
                match res {
                    Ok(_) => {
                        if last_error.take().is_some() {
                            tracing::info!("HAProxy at {} answers and is in sync again", rec.s.api.addr());
                        }
                        dirty = false;
                        backoff.reset();
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        // The same failure again (HAProxy still down) is
                        // not news: log it once.
                        let msg = e.to_string();
                        if last_error.as_deref() == Some(msg.as_str()) {
                            tracing::debug!("{msg}; retrying in {delay:?}");
                        } else {
                            tracing::warn!("{msg}; resynchronising in {delay:?}");
                        }
                        last_error = Some(msg);
                        next_try = tokio::time::Instant::now() + delay;
                    }
                }
                // The file follows the servers even while HAProxy is
                // unreachable (from a synced view only): if it is
                // restarting, it comes back right.
                if let Some(set) = file_set {
                    rec.write_config(&set).await;
                }
            }
            _ = verify.tick() => {
                if desired.is_some() && !dirty {
                    dirty = true;
                    next_try = tokio::time::Instant::now();
                }
            }
            _ = delete_tick.tick(), if rec.deletions_pending() => {
                if let Err(e) = rec.retry_deletions().await {
                    tracing::debug!("del server retry: {e}");
                }
            }
        }
    }
    follower.abort();
}
