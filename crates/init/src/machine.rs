//! The supervisor's decisions, as a pure state machine.
//!
//! This module owns *what* happens and *when*: which script or service to
//! start, when to restart a service and with how much backoff, what to signal
//! on a control command or at shutdown, and when to exit with which code. It
//! performs no system call and reads no clock: the caller feeds it [`Event`]s
//! stamped with a monotonic `now` and carries out the [`Action`]s it returns
//! (see `runtime.rs`). Timers are expressed by [`Machine::next_deadline`]:
//! the caller wakes up at that instant and sends [`Event::Tick`].
//!
//! Processes are identified by [`Proc`] (which role) until they are spawned,
//! then by pid; exits of pids the machine does not know (orphans reaped by
//! PID 1) are ignored.

use std::time::Duration;

use nix::sys::signal::Signal;

/// A process id as the kernel gives it.
pub type Pid = i32;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited normally with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// The code a shell would report: the exit code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// The two arguments `finish` receives, as s6 passes them: the exit code
    /// and 0, or 256 and the signal number.
    pub fn finish_args(self) -> (i32, i32) {
        match self {
            ExitStatus::Code(c) => (c, 0),
            ExitStatus::Signal(s) => (256, s),
        }
    }

    /// Human wording for messages: `exit code 1` or `signal SIGKILL`.
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Code(c) => format!("exit code {c}"),
            ExitStatus::Signal(s) => format!("signal {}", signal_name(s)),
        }
    }
}

/// `SIGTERM` for 15, or the number when unknown.
pub fn signal_name(n: i32) -> String {
    match Signal::try_from(n) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("{n}"),
    }
}

/// The role of a process the machine asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    /// `/etc/cont-init.d/<n-th script>`.
    ContInit(usize),
    /// The `run` of the n-th service.
    Run(usize),
    /// The `finish` of the n-th service.
    Finish(usize),
    /// The container's CMD.
    Main,
    /// `/etc/cont-finish.d/<n-th script>`.
    ContFinish(usize),
}

/// Whom a signal goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Exactly this process.
    Pid(Pid),
    /// The process group led by this pid (falling back to the pid alone when
    /// the process has left its group).
    Group(Pid),
    /// Every process but init (`kill(-1)`); only emitted when
    /// [`Settings::broadcast`] is set, i.e. when init is PID 1.
    All,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start this process, with these extra arguments (only `finish` has
    /// some), in its own process group. The caller answers with
    /// [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn { proc: Proc, args: Vec<String> },
    /// Send a signal.
    Signal { target: Target, signal: Signal },
    /// Print this line on init's stderr.
    Log(String),
    /// The n-th service's status changed: rewrite its status file.
    StatusChanged(usize),
    /// Stop listening to the n-th service's control point (after `-x`).
    CloseControl(usize),
    /// Exit init with this code.
    Exit(i32),
}

/// A command sent to a service (the letters of `s6-svc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvcCommand {
    /// `-u`: want up; start it if down.
    Up,
    /// `-d`: want down; TERM then CONT, no restart.
    Down,
    /// `-o`: start it if down, do not restart it when it dies.
    Once,
    /// `-r`: TERM then CONT, restart at once.
    Restart,
    /// `-x`: stop supervising it once it is down.
    Exit,
    /// `-h -t -i -k -q -1 -2 -a -b -p -c -y`: send this signal to `run`.
    Signal(Signal),
}

impl SvcCommand {
    /// The command for one `s6-svc` letter, or `None` when unknown.
    pub fn from_letter(c: u8) -> Option<SvcCommand> {
        Some(match c {
            b'u' => SvcCommand::Up,
            b'd' => SvcCommand::Down,
            b'o' => SvcCommand::Once,
            b'r' => SvcCommand::Restart,
            b'x' => SvcCommand::Exit,
            b'h' => SvcCommand::Signal(Signal::SIGHUP),
            b't' => SvcCommand::Signal(Signal::SIGTERM),
            b'i' => SvcCommand::Signal(Signal::SIGINT),
            b'k' => SvcCommand::Signal(Signal::SIGKILL),
            b'q' => SvcCommand::Signal(Signal::SIGQUIT),
            b'1' => SvcCommand::Signal(Signal::SIGUSR1),
            b'2' => SvcCommand::Signal(Signal::SIGUSR2),
            b'a' => SvcCommand::Signal(Signal::SIGALRM),
            b'b' => SvcCommand::Signal(Signal::SIGABRT),
            b'p' => SvcCommand::Signal(Signal::SIGSTOP),
            b'c' => SvcCommand::Signal(Signal::SIGCONT),
            b'y' => SvcCommand::Signal(Signal::SIGWINCH),
            _ => return None,
        })
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Begin: run cont-init, then services, then the CMD.
    Start,
    /// A requested process is running with this pid.
    Spawned { proc: Proc, pid: Pid },
    /// A requested process could not be started. `missing` is true when the
    /// file does not exist (normal for an absent `finish`).
    SpawnFailed {
        proc: Proc,
        error: String,
        missing: bool,
    },
    /// A child (any child, including reaped orphans) ended.
    Exited { pid: Pid, status: ExitStatus },
    /// init received this signal.
    Signal(Signal),
    /// A control command for the n-th service.
    Control { svc: usize, cmd: SvcCommand },
    /// The deadline from [`Machine::next_deadline`] passed.
    Tick,
    /// No process but init is left in the container (the caller checks with
    /// `kill(-1, 0)` while [`Machine::sweeping`] is true).
    Alone,
}

/// What `S6_BEHAVIOUR_IF_STAGE2_FAILS` says to do when a cont-init script
/// fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage2Failure {
    /// 0: continue silently.
    Continue,
    /// 1: print a warning and continue.
    Warn,
    /// 2: stop the container (our default).
    Stop,
}

/// Tunables (all durations on the machine's monotonic clock).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time services get between SIGTERM and SIGKILL at shutdown.
    pub grace: Duration,
    /// Base restart delay (also the minimum time between two starts).
    pub restart_delay: Duration,
    /// Cap of the crash-loop backoff.
    pub backoff_max: Duration,
    /// A run that stays up this long is healthy: backoff resets.
    pub stable_after: Duration,
    /// `finish` is killed after this long (s6: 5 s).
    pub finish_timeout: Duration,
    /// After SIGKILL, how long to wait for the processes to vanish.
    pub kill_wait: Duration,
    /// What a failing cont-init script does.
    pub stage2: Stage2Failure,
    /// Init is PID 1: also signal every process (`kill(-1)`) at shutdown.
    pub broadcast: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grace: Duration::from_millis(3000),
            restart_delay: Duration::from_millis(1000),
            backoff_max: Duration::from_millis(30_000),
            stable_after: Duration::from_millis(10_000),
            finish_timeout: Duration::from_millis(5000),
            kill_wait: Duration::from_millis(2000),
            stage2: Stage2Failure::Stop,
            broadcast: false,
        }
    }
}

/// What was found on disk at start-up.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Names of the cont-init scripts, in the order to run them.
    pub cont_init: Vec<String>,
    /// The services, in start order.
    pub services: Vec<ServiceDef>,
    /// Names of the cont-finish scripts, in order.
    pub cont_finish: Vec<String>,
    /// A CMD was given.
    pub main: bool,
}

/// One `/etc/services.d/NAME`.
#[derive(Clone, Debug)]
pub struct ServiceDef {
    /// The directory name.
    pub name: String,
    /// No `down` file: start it at boot.
    pub normally_up: bool,
}

/// Coarse state of a service, as `s6-svstat` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvcPhase {
    /// `run` is running.
    Up,
    /// `run` is not running and `finish` is not either.
    Down,
    /// `finish` is running.
    Finishing,
    /// No longer supervised (`-x`).
    Gone,
}

/// A snapshot of one service for its status file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcStatus {
    pub phase: SvcPhase,
    /// Pid of `run` when up.
    pub pid: Option<Pid>,
    /// When the current phase (up, or down) began.
    pub since: Duration,
    /// How `run` last ended.
    pub last: Option<ExitStatus>,
    pub normally_up: bool,
    pub want_up: bool,
}

#[derive(Clone, Debug)]
enum SvcState {
    Down {
        since: Duration,
        last: Option<ExitStatus>,
    },
    /// Restart scheduled at `at`.
    Waiting {
        since: Duration,
        last: Option<ExitStatus>,
        at: Duration,
    },
    Up {
        pid: Option<Pid>,
        since: Duration,
    },
    Finishing {
        pid: Option<Pid>,
        since: Duration,
        last: ExitStatus,
        deadline: Duration,
        killed: bool,
    },
    Gone,
}

#[derive(Clone, Debug)]
struct Svc {
    def: ServiceDef,
    state: SvcState,
    want_up: bool,
    /// `-o`: do not restart after the next death.
    once: bool,
    /// `-x`: stop supervising once down.
    exit_when_down: bool,
    /// `-r`: the coming death was asked for; restart at once.
    restart_now: bool,
    /// Consecutive deaths (or failed starts) within `stable_after` of start.
    streak: u32,
    /// The failure condition last reported, so each is reported once.
    reported: Option<String>,
    /// When the last start happened (for the minimum gap between starts).
    last_start: Option<Duration>,
    /// The last `finish` spawn error reported.
    finish_reported: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    ContInit {
        idx: usize,
    },
    Running,
    Stopping {
        deadline: Duration,
    },
    /// PID 1 only: every supervised process is gone; the rest of the
    /// container (daemons that left their group, orphans) got SIGTERM and
    /// has until the same deadline to go, as s6-overlay's stage 3 does.
    Sweeping {
        deadline: Duration,
    },
    Killing {
        deadline: Duration,
    },
    ContFinish {
        idx: usize,
        pid: Option<Pid>,
        deadline: Duration,
    },
    Done,
}

/// The whole supervisor state.
#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    plan: Plan,
    phase: Phase,
    svcs: Vec<Svc>,
    /// `None` before start or when no CMD; `Some(None)` while spawning.
    main: Option<Option<Pid>>,
    main_done: bool,
    /// The running cont-init script (kept across a shutdown that interrupts it).
    cont_init_pid: Option<Pid>,
    exit_code: Option<i32>,
}

impl Machine {
    /// A machine for this plan; nothing happens until [`Event::Start`].
    pub fn new(plan: Plan, settings: Settings) -> Machine {
        let svcs = plan
            .services
            .iter()
            .map(|def| Svc {
                def: def.clone(),
                state: SvcState::Down {
                    since: Duration::ZERO,
                    last: None,
                },
                want_up: false,
                once: false,
                exit_when_down: false,
                restart_now: false,
                streak: 0,
                reported: None,
                last_start: None,
                finish_reported: None,
            })
            .collect();
        Machine {
            settings,
            plan,
            phase: Phase::Idle,
            svcs,
            main: None,
            main_done: false,
            cont_init_pid: None,
            exit_code: None,
        }
    }

    /// The plan the machine runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// True once [`Action::Exit`] was emitted.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The status of the n-th service.
    pub fn status(&self, i: usize) -> SvcStatus {
        let s = &self.svcs[i];
        let (phase, pid, since, last) = match &s.state {
            SvcState::Down { since, last } | SvcState::Waiting { since, last, .. } => {
                (SvcPhase::Down, None, *since, *last)
            }
            SvcState::Up { pid, since } => (SvcPhase::Up, *pid, *since, None),
            SvcState::Finishing { since, last, .. } => {
                (SvcPhase::Finishing, None, *since, Some(*last))
            }
            SvcState::Gone => (SvcPhase::Gone, None, Duration::ZERO, None),
        };
        SvcStatus {
            phase,
            pid,
            since,
            last,
            normally_up: s.def.normally_up,
            want_up: s.want_up,
        }
    }

    /// The earliest instant at which [`Event::Tick`] must be sent, if any.
    pub fn next_deadline(&self) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        let mut consider = |d: Duration| {
            best = Some(best.map_or(d, |b: Duration| b.min(d)));
        };
        match &self.phase {
            Phase::Stopping { deadline }
            | Phase::Sweeping { deadline }
            | Phase::Killing { deadline }
            | Phase::ContFinish { deadline, .. } => consider(*deadline),
            _ => {}
        }
        for s in &self.svcs {
            match &s.state {
                SvcState::Waiting { at, .. } => consider(*at),
                SvcState::Finishing {
                    deadline, killed, ..
                } if !killed => consider(*deadline),
                SvcState::Up { since, .. } if s.reported.is_some() || s.streak > 0 => {
                    consider(*since + self.settings.stable_after)
                }
                _ => {}
            }
        }
        best
    }

    /// Feed one event; returns what to do, in order.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Done {
            return out;
        }
        match event {
            Event::Start => self.on_start(now, &mut out),
            Event::Spawned { proc, pid } => self.on_spawned(now, proc, pid, &mut out),
            Event::SpawnFailed {
                proc,
                error,
                missing,
            } => self.on_spawn_failed(now, proc, error, missing, &mut out),
            Event::Exited { pid, status } => self.on_exited(now, pid, status, &mut out),
            Event::Signal(sig) => self.on_signal(now, sig, &mut out),
            Event::Control { svc, cmd } => self.on_control(now, svc, cmd, &mut out),
            Event::Tick => self.on_tick(now, &mut out),
            Event::Alone => {
                if self.sweeping() {
                    self.next_cont_finish(now, 0, &mut out);
                }
            }
        }
        out
    }

    // ---- start-up -------------------------------------------------------

    fn on_start(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.phase != Phase::Idle {
            return;
        }
        self.next_cont_init(now, 0, out);
    }

    fn next_cont_init(&mut self, now: Duration, idx: usize, out: &mut Vec<Action>) {
        if idx < self.plan.cont_init.len() {
            self.phase = Phase::ContInit { idx };
            out.push(Action::Spawn {
                proc: Proc::ContInit(idx),
                args: vec![],
            });
        } else {
            self.enter_running(now, out);
        }
    }

    fn cont_init_done(
        &mut self,
        now: Duration,
        idx: usize,
        result: Result<(), (String, i32)>,
        out: &mut Vec<Action>,
    ) {
        if let Err((why, code)) = result {
            let name = &self.plan.cont_init[idx];
            match self.settings.stage2 {
                Stage2Failure::Continue => {}
                Stage2Failure::Warn => out.push(Action::Log(format!(
                    "cont-init script {name} failed ({why}); continuing (S6_BEHAVIOUR_IF_STAGE2_FAILS=1)"
                ))),
                Stage2Failure::Stop => {
                    out.push(Action::Log(format!(
                        "cont-init script {name} failed ({why}); stopping the container (S6_BEHAVIOUR_IF_STAGE2_FAILS=2)"
                    )));
                    self.exit_code = Some(if code == 0 { 1 } else { code });
                    self.begin_stop(now, out);
                    return;
                }
            }
        }
        self.next_cont_init(now, idx + 1, out);
    }

    fn enter_running(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.phase = Phase::Running;
        for i in 0..self.svcs.len() {
            self.svcs[i].state = SvcState::Down {
                since: now,
                last: None,
            };
            if self.svcs[i].def.normally_up {
                self.svcs[i].want_up = true;
                self.start_svc(now, i, out);
            } else {
                out.push(Action::StatusChanged(i));
            }
        }
        if self.plan.main {
            self.main = Some(None);
            out.push(Action::Spawn {
                proc: Proc::Main,
                args: vec![],
            });
        }
    }

    fn start_svc(&mut self, now: Duration, i: usize, out: &mut Vec<Action>) {
        let s = &mut self.svcs[i];
        s.state = SvcState::Up {
            pid: None,
            since: now,
        };
        s.last_start = Some(now);
        out.push(Action::Spawn {
            proc: Proc::Run(i),
            args: vec![],
        });
        out.push(Action::StatusChanged(i));
    }

    // ---- process results ------------------------------------------------

    fn on_spawned(&mut self, _now: Duration, proc: Proc, pid: Pid, out: &mut Vec<Action>) {
        match proc {
            Proc::ContInit(_) => {
                self.cont_init_pid = Some(pid);
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.signal_group(pid, Signal::SIGTERM, out);
                }
            }
            Proc::ContFinish(i) => {
                if let Phase::ContFinish { idx, pid: p, .. } = &mut self.phase {
                    if *idx == i {
                        *p = Some(pid);
                    }
                }
            }
            Proc::Main => {
                self.main = Some(Some(pid));
                // A TERM may have come while we were spawning it.
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.signal_group(pid, Signal::SIGTERM, out);
                }
            }
            Proc::Run(i) => {
                if let SvcState::Up { pid: p, .. } = &mut self.svcs[i].state {
                    *p = Some(pid);
                }
                out.push(Action::StatusChanged(i));
            }
            Proc::Finish(i) => {
                self.svcs[i].finish_reported = None;
                if let SvcState::Finishing { pid: p, .. } = &mut self.svcs[i].state {
                    *p = Some(pid);
                }
            }
        }
    }

    fn on_spawn_failed(
        &mut self,
        now: Duration,
        proc: Proc,
        error: String,
        missing: bool,
        out: &mut Vec<Action>,
    ) {
        match proc {
            Proc::ContInit(i) => {
                let code = if missing { 127 } else { 126 };
                self.cont_init_done(now, i, Err((format!("cannot run it: {error}"), code)), out);
            }
            Proc::ContFinish(i) => {
                let name = &self.plan.cont_finish[i];
                out.push(Action::Log(format!(
                    "cont-finish script {name}: cannot run it: {error}"
                )));
                self.next_cont_finish(now, i + 1, out);
            }
            Proc::Main => {
                out.push(Action::Log(format!("cannot run the CMD: {error}")));
                self.main = Some(None);
                self.main_done = true;
                self.exit_code = Some(if missing { 127 } else { 126 });
                self.begin_stop(now, out);
            }
            Proc::Run(i) => {
                let name = self.svcs[i].def.name.clone();
                let key = format!("spawn:{error}");
                if self.svcs[i].reported.as_deref() != Some(key.as_str()) {
                    out.push(Action::Log(format!(
                        "service {name}: cannot start run: {error}; retrying with backoff (reported once until it changes)"
                    )));
                    self.svcs[i].reported = Some(key);
                }
                self.svcs[i].streak += 1;
                self.svcs[i].state = SvcState::Down {
                    since: now,
                    last: None,
                };
                self.after_down(now, i, None, out);
            }
            Proc::Finish(i) => {
                let s = &mut self.svcs[i];
                if !missing && s.finish_reported.as_deref() != Some(error.as_str()) {
                    out.push(Action::Log(format!(
                        "service {}: cannot run finish: {error} (reported once until it changes)",
                        s.def.name
                    )));
                    s.finish_reported = Some(error);
                }
                self.finish_done(now, i, out);
            }
        }
    }

    fn on_exited(&mut self, now: Duration, pid: Pid, status: ExitStatus, out: &mut Vec<Action>) {
        if self.cont_init_pid == Some(pid) {
            self.cont_init_pid = None;
            if let Phase::ContInit { idx } = self.phase {
                let res = match status {
                    ExitStatus::Code(0) => Ok(()),
                    st => Err((st.describe(), st.shell_code())),
                };
                self.cont_init_done(now, idx, res, out);
            } else {
                self.check_stopped(now, out);
            }
            return;
        }
        if let Phase::ContFinish {
            idx, pid: Some(p), ..
        } = self.phase
        {
            if p == pid {
                if status != ExitStatus::Code(0) {
                    let name = &self.plan.cont_finish[idx];
                    out.push(Action::Log(format!(
                        "cont-finish script {name} failed ({})",
                        status.describe()
                    )));
                }
                self.next_cont_finish(now, idx + 1, out);
                return;
            }
        }
        if self.main == Some(Some(pid)) {
            self.main = Some(None);
            self.main_done = true;
            if self.exit_code.is_none() {
                self.exit_code = Some(status.shell_code());
            }
            self.begin_stop(now, out);
            self.check_stopped(now, out);
            return;
        }
        for i in 0..self.svcs.len() {
            match self.svcs[i].state {
                SvcState::Up {
                    pid: Some(p),
                    since,
                } if p == pid => {
                    self.run_exited(now, i, since, status, out);
                    return;
                }
                SvcState::Finishing { pid: Some(p), .. } if p == pid => {
                    self.finish_done(now, i, out);
                    return;
                }
                _ => {}
            }
        }
        // An orphan we merely reaped: nothing to decide.
    }

    fn run_exited(
        &mut self,
        now: Duration,
        i: usize,
        since: Duration,
        status: ExitStatus,
        out: &mut Vec<Action>,
    ) {
        let uptime = now.saturating_sub(since);
        let running = self.phase == Phase::Running;
        let settings = &self.settings;
        let s = &mut self.svcs[i];
        let expected = !running || !s.want_up || s.once || s.restart_now || s.exit_when_down;
        if !expected {
            let name = s.def.name.clone();
            if uptime < settings.stable_after {
                s.streak += 1;
                let key = format!("exit:{}", status.describe());
                if s.reported.as_deref() != Some(key.as_str()) {
                    out.push(Action::Log(format!(
                        "service {name}: run exited with {} after {} ms: crash loop, restarting with backoff \
                         (doubling up to {} ms; reported once until it changes)",
                        status.describe(),
                        uptime.as_millis(),
                        settings.backoff_max.as_millis()
                    )));
                    s.reported = Some(key);
                }
            } else {
                s.streak = 0;
                s.reported = None;
                out.push(Action::Log(format!(
                    "service {name}: run exited with {} after {} s; restarting",
                    status.describe(),
                    uptime.as_secs()
                )));
            }
        }
        if !matches!(self.phase, Phase::Running | Phase::Stopping { .. }) {
            // Killing, or already past it: no time left for finish scripts.
            self.svcs[i].state = SvcState::Down {
                since: now,
                last: Some(status),
            };
            out.push(Action::StatusChanged(i));
            self.check_stopped(now, out);
            return;
        }
        let deadline = match self.phase {
            Phase::Stopping { deadline } => deadline.min(now + self.settings.finish_timeout),
            _ => now + self.settings.finish_timeout,
        };
        let (code, sig) = status.finish_args();
        self.svcs[i].state = SvcState::Finishing {
            pid: None,
            since: now,
            last: status,
            deadline,
            killed: false,
        };
        out.push(Action::StatusChanged(i));
        out.push(Action::Spawn {
            proc: Proc::Finish(i),
            args: vec![code.to_string(), sig.to_string()],
        });
    }

    /// `finish` is over (or absent): the service is down; restart it or not.
    fn finish_done(&mut self, now: Duration, i: usize, out: &mut Vec<Action>) {
        let (since, last) = match self.svcs[i].state {
            SvcState::Finishing { since, last, .. } => (since, Some(last)),
            _ => return,
        };
        self.svcs[i].state = SvcState::Down { since, last };
        self.after_down(now, i, last, out);
    }

    /// The service just went down (or failed to start): decide what next.
    fn after_down(
        &mut self,
        now: Duration,
        i: usize,
        last: Option<ExitStatus>,
        out: &mut Vec<Action>,
    ) {
        let since = match self.svcs[i].state {
            SvcState::Down { since, .. } => since,
            _ => now,
        };
        let running = self.phase == Phase::Running;
        let s = &mut self.svcs[i];
        if s.once {
            s.once = false;
            s.want_up = false;
        }
        if s.exit_when_down {
            s.state = SvcState::Gone;
            out.push(Action::StatusChanged(i));
            out.push(Action::CloseControl(i));
        } else if running && s.want_up {
            if s.restart_now {
                s.restart_now = false;
                self.start_svc(now, i, out);
                return;
            }
            let delay = self.restart_delay(i, now);
            if delay.is_zero() {
                self.start_svc(now, i, out);
                return;
            }
            self.svcs[i].state = SvcState::Waiting {
                since,
                last,
                at: now + delay,
            };
            out.push(Action::StatusChanged(i));
        } else {
            s.restart_now = false;
            out.push(Action::StatusChanged(i));
        }
        self.check_stopped(now, out);
    }

    /// Delay before the next start: the base delay since the last start when
    /// healthy, doubling per consecutive quick death, capped.
    fn restart_delay(&self, i: usize, now: Duration) -> Duration {
        let s = &self.svcs[i];
        let base = self.settings.restart_delay;
        if s.streak <= 1 {
            // s6's rule: at least `base` between two starts.
            let since_start = s.last_start.map_or(base, |t| now.saturating_sub(t));
            if s.streak == 0 {
                return base.saturating_sub(since_start);
            }
            return base;
        }
        let factor = 1u32 << (s.streak - 1).min(16);
        base.saturating_mul(factor).min(self.settings.backoff_max)
    }

    // ---- signals, control, timers ----------------------------------------

    fn on_signal(&mut self, now: Duration, sig: Signal, out: &mut Vec<Action>) {
        match sig {
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                if matches!(self.phase, Phase::Stopping { .. } | Phase::Sweeping { .. }) {
                    // Asked twice (Ctrl-C again): do not wait for the grace time.
                    out.push(Action::Log(format!(
                        "second SIG{} during shutdown",
                        sig.as_str().trim_start_matches("SIG")
                    )));
                    self.enter_killing(now, out);
                } else {
                    self.begin_stop(now, out);
                }
            }
            Signal::SIGHUP | Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGWINCH => {
                if let Some(Some(pid)) = self.main {
                    out.push(Action::Signal {
                        target: Target::Pid(pid),
                        signal: sig,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_control(&mut self, now: Duration, i: usize, cmd: SvcCommand, out: &mut Vec<Action>) {
        if i >= self.svcs.len() || matches!(self.svcs[i].state, SvcState::Gone) {
            return;
        }
        let running = self.phase == Phase::Running;
        let up_pid = match self.svcs[i].state {
            SvcState::Up { pid, .. } => Some(pid),
            _ => None,
        };
        match cmd {
            SvcCommand::Up | SvcCommand::Once => {
                if !running {
                    return;
                }
                let s = &mut self.svcs[i];
                s.want_up = true;
                s.once = cmd == SvcCommand::Once;
                match s.state {
                    SvcState::Down { .. } => {
                        s.streak = 0;
                        self.start_svc(now, i, out);
                    }
                    SvcState::Waiting { .. } if cmd == SvcCommand::Once => {
                        self.start_svc(now, i, out);
                    }
                    _ => out.push(Action::StatusChanged(i)),
                }
            }
            SvcCommand::Down => {
                let s = &mut self.svcs[i];
                s.want_up = false;
                s.once = false;
                match s.state {
                    SvcState::Up { pid: Some(pid), .. } => {
                        self.term_cont(pid, out);
                        out.push(Action::StatusChanged(i));
                    }
                    SvcState::Waiting { since, last, .. } => {
                        s.state = SvcState::Down { since, last };
                        out.push(Action::StatusChanged(i));
                    }
                    _ => out.push(Action::StatusChanged(i)),
                }
            }
            SvcCommand::Restart => {
                if !running {
                    return;
                }
                self.svcs[i].want_up = true;
                match up_pid {
                    Some(Some(pid)) => {
                        self.svcs[i].restart_now = true;
                        self.term_cont(pid, out);
                    }
                    Some(None) => {}
                    None => {
                        if matches!(
                            self.svcs[i].state,
                            SvcState::Down { .. } | SvcState::Waiting { .. }
                        ) {
                            self.start_svc(now, i, out);
                        }
                    }
                }
            }
            SvcCommand::Exit => {
                let s = &mut self.svcs[i];
                s.exit_when_down = true;
                if matches!(s.state, SvcState::Down { .. } | SvcState::Waiting { .. }) {
                    s.state = SvcState::Gone;
                    out.push(Action::StatusChanged(i));
                    out.push(Action::CloseControl(i));
                }
            }
            SvcCommand::Signal(signal) => {
                if let Some(Some(pid)) = up_pid {
                    out.push(Action::Signal {
                        target: Target::Pid(pid),
                        signal,
                    });
                }
            }
        }
    }

    fn on_tick(&mut self, now: Duration, out: &mut Vec<Action>) {
        for i in 0..self.svcs.len() {
            match self.svcs[i].state {
                SvcState::Waiting { at, .. }
                    if at <= now && self.phase == Phase::Running && self.svcs[i].want_up =>
                {
                    self.start_svc(now, i, out);
                }
                SvcState::Finishing {
                    pid,
                    deadline,
                    killed: false,
                    ..
                } if deadline <= now => {
                    if let SvcState::Finishing { killed, .. } = &mut self.svcs[i].state {
                        *killed = true;
                    }
                    if let Some(pid) = pid {
                        let name = &self.svcs[i].def.name;
                        out.push(Action::Log(format!(
                            "service {name}: finish still running after {} ms; killing it",
                            self.settings.finish_timeout.as_millis()
                        )));
                        self.signal_group(pid, Signal::SIGKILL, out);
                    }
                }
                SvcState::Up { since, .. } if now >= since + self.settings.stable_after => {
                    let s = &mut self.svcs[i];
                    s.streak = 0;
                    if s.reported.take().is_some() {
                        out.push(Action::Log(format!(
                            "service {}: up for {} s again; backoff reset",
                            s.def.name,
                            now.saturating_sub(since).as_secs()
                        )));
                    }
                }
                _ => {}
            }
        }
        match self.phase {
            Phase::Stopping { deadline } | Phase::Sweeping { deadline } if deadline <= now => {
                self.enter_killing(now, out)
            }
            Phase::Killing { deadline } if deadline <= now => {
                out.push(Action::Log(
                    "some processes survived SIGKILL (uninterruptible?); going on".to_string(),
                ));
                self.next_cont_finish(now, 0, out);
            }
            Phase::ContFinish { idx, pid, deadline } if deadline <= now => {
                let name = &self.plan.cont_finish[idx];
                out.push(Action::Log(format!(
                    "cont-finish script {name} still running after {} ms; killing it",
                    self.settings.grace.as_millis()
                )));
                if let Some(pid) = pid {
                    self.signal_group(pid, Signal::SIGKILL, out);
                }
                self.next_cont_finish(now, idx + 1, out);
            }
            _ => {}
        }
    }

    // ---- shutdown -------------------------------------------------------

    fn begin_stop(&mut self, now: Duration, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Idle | Phase::ContInit { .. } | Phase::Running => {}
            _ => return,
        }
        self.phase = Phase::Stopping {
            deadline: now + self.settings.grace,
        };
        if let Some(pid) = self.cont_init_pid {
            self.signal_group(pid, Signal::SIGTERM, out);
        }
        for i in 0..self.svcs.len() {
            match self.svcs[i].state {
                SvcState::Up { pid: Some(pid), .. } => {
                    self.term_cont_group(pid, out);
                }
                SvcState::Waiting { since, last, .. } => {
                    self.svcs[i].state = SvcState::Down { since, last };
                    out.push(Action::StatusChanged(i));
                }
                _ => {}
            }
        }
        if let Some(Some(pid)) = self.main {
            self.term_cont_group(pid, out);
        }
        // Only the supervised groups now: a process that is signalled twice
        // may take the second TERM as "hurry" (serf and our agent skip their
        // graceful leave then). The rest of the container gets its TERM once
        // these are gone (the sweep in `check_stopped`).
        self.check_stopped(now, out);
    }

    /// Pids still to wait for before the cont-finish stage.
    fn live_pids(&self) -> Vec<Pid> {
        let mut v = Vec::new();
        v.extend(self.cont_init_pid);
        if let Some(Some(pid)) = self.main {
            v.push(pid);
        }
        for s in &self.svcs {
            match s.state {
                SvcState::Up { pid: Some(p), .. } | SvcState::Finishing { pid: Some(p), .. } => {
                    v.push(p)
                }
                _ => {}
            }
        }
        v
    }

    fn check_stopped(&mut self, now: Duration, out: &mut Vec<Action>) {
        if !self.live_pids().is_empty() {
            return;
        }
        match self.phase {
            Phase::Stopping { deadline } if self.settings.broadcast => {
                for signal in [Signal::SIGTERM, Signal::SIGCONT] {
                    out.push(Action::Signal {
                        target: Target::All,
                        signal,
                    });
                }
                self.phase = Phase::Sweeping { deadline };
            }
            Phase::Stopping { .. } | Phase::Killing { .. } => self.next_cont_finish(now, 0, out),
            _ => {}
        }
    }

    /// True while init waits for the unsupervised rest of the container to
    /// exit: the caller then sends [`Event::Alone`] once `kill(-1, 0)` finds
    /// nobody.
    pub fn sweeping(&self) -> bool {
        matches!(self.phase, Phase::Sweeping { .. })
    }

    /// Before services start (boot, cont-init): what is on disk may still
    /// change, since cont-init scripts may add or remove `down` files, as
    /// s6-overlay allows (it reads the service directories after them).
    pub fn before_services(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::ContInit { .. })
    }

    /// Updates whether service `i` starts at boot (its `down` file as of
    /// now); no effect once services have started.
    pub fn set_normally_up(&mut self, i: usize, up: bool) {
        if self.before_services() {
            if let Some(s) = self.svcs.get_mut(i) {
                s.def.normally_up = up;
            }
        }
    }

    fn enter_killing(&mut self, now: Duration, out: &mut Vec<Action>) {
        let live = self.live_pids();
        if !live.is_empty() {
            out.push(Action::Log(format!(
                "grace time of {} ms is over; sending SIGKILL to what remains",
                self.settings.grace.as_millis()
            )));
        }
        for pid in live {
            self.signal_group(pid, Signal::SIGKILL, out);
        }
        if self.settings.broadcast {
            out.push(Action::Signal {
                target: Target::All,
                signal: Signal::SIGKILL,
            });
        }
        self.phase = Phase::Killing {
            deadline: now + self.settings.kill_wait,
        };
        self.check_stopped(now, out);
    }

    fn next_cont_finish(&mut self, now: Duration, idx: usize, out: &mut Vec<Action>) {
        if idx < self.plan.cont_finish.len() {
            self.phase = Phase::ContFinish {
                idx,
                pid: None,
                deadline: now + self.settings.grace,
            };
            out.push(Action::Spawn {
                proc: Proc::ContFinish(idx),
                args: vec![],
            });
        } else {
            self.phase = Phase::Done;
            out.push(Action::Exit(self.exit_code.unwrap_or(0)));
        }
    }

    fn signal_group(&self, pid: Pid, signal: Signal, out: &mut Vec<Action>) {
        out.push(Action::Signal {
            target: Target::Group(pid),
            signal,
        });
    }

    /// s6's way to stop a process: TERM, then CONT in case it is stopped.
    fn term_cont(&self, pid: Pid, out: &mut Vec<Action>) {
        for signal in [Signal::SIGTERM, Signal::SIGCONT] {
            out.push(Action::Signal {
                target: Target::Pid(pid),
                signal,
            });
        }
    }

    fn term_cont_group(&self, pid: Pid, out: &mut Vec<Action>) {
        for signal in [Signal::SIGTERM, Signal::SIGCONT] {
            self.signal_group(pid, signal, out);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The machine under simulated time: no process is forked here.

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn svc(name: &str, up: bool) -> ServiceDef {
        ServiceDef {
            name: name.to_string(),
            normally_up: up,
        }
    }

    /// A machine plus a fake process table handing out pids.
    struct Sim {
        m: Machine,
        now: Duration,
        next_pid: Pid,
        /// Every action seen, in order.
        log: Vec<Action>,
        /// Pid given to each spawn, in order.
        spawned: Vec<(Proc, Pid, Vec<String>)>,
        exit: Option<i32>,
        /// Spawns of these always fail.
        failing: Vec<Proc>,
    }

    impl Sim {
        fn new(plan: Plan, settings: Settings) -> Sim {
            let mut s = Sim {
                m: Machine::new(plan, settings),
                now: Duration::ZERO,
                next_pid: 100,
                log: vec![],
                spawned: vec![],
                exit: None,
                failing: vec![],
            };
            s.send(Event::Start);
            s
        }

        /// Feeds an event; every spawn succeeds with a fresh pid.
        fn send(&mut self, ev: Event) {
            let mut pending = self.m.handle(self.now, ev);
            while !pending.is_empty() {
                let mut next = Vec::new();
                for a in pending {
                    self.log.push(a.clone());
                    match a {
                        Action::Spawn { proc, .. } if self.failing.contains(&proc) => {
                            next.extend(self.m.handle(
                                self.now,
                                Event::SpawnFailed {
                                    proc,
                                    error: "always fails".to_string(),
                                    missing: false,
                                },
                            ));
                        }
                        Action::Spawn { proc, args } => {
                            self.next_pid += 1;
                            let pid = self.next_pid;
                            self.spawned.push((proc, pid, args));
                            next.extend(self.m.handle(self.now, Event::Spawned { proc, pid }));
                        }
                        Action::Exit(c) => self.exit = Some(c),
                        _ => {}
                    }
                }
                pending = next;
            }
        }

        /// Like `send` but the next spawn of `proc` fails.
        fn fail_spawn(&mut self, proc: Proc, missing: bool) {
            self.send(Event::SpawnFailed {
                proc,
                error: "boom".to_string(),
                missing,
            });
        }

        fn advance_to(&mut self, t: Duration) {
            while let Some(d) = self.m.next_deadline() {
                if d > t {
                    break;
                }
                self.now = self.now.max(d);
                self.send(Event::Tick);
            }
            self.now = t;
        }

        fn pid_of(&self, proc: Proc) -> Pid {
            self.spawned
                .iter()
                .rev()
                .find(|(p, _, _)| *p == proc)
                .map(|x| x.1)
                .expect("spawned")
        }

        fn count_spawns(&self, proc: Proc) -> usize {
            self.spawned.iter().filter(|(p, _, _)| *p == proc).count()
        }

        fn exited(&mut self, proc: Proc, status: ExitStatus) {
            let pid = self.pid_of(proc);
            self.send(Event::Exited { pid, status });
        }

        fn logs(&self) -> Vec<String> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Log(s) => Some(s.clone()),
                    _ => None,
                })
                .collect()
        }

        fn signals(&self) -> Vec<(Target, Signal)> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Signal { target, signal } => Some((*target, *signal)),
                    _ => None,
                })
                .collect()
        }

        fn clear(&mut self) {
            self.log.clear();
        }
    }

    fn plan(services: Vec<ServiceDef>, main: bool) -> Plan {
        Plan {
            cont_init: vec![],
            services,
            cont_finish: vec![],
            main,
        }
    }

    #[test]
    fn starts_cont_init_in_order_then_services_then_main() {
        let p = Plan {
            cont_init: vec!["10-a".into(), "20-b".into()],
            services: vec![svc("ha", true), svc("off", false)],
            cont_finish: vec![],
            main: true,
        };
        let mut s = Sim::new(p, Settings::default());
        assert_eq!(s.spawned.len(), 1, "one cont-init at a time");
        s.exited(Proc::ContInit(0), ExitStatus::Code(0));
        assert_eq!(s.spawned.last().unwrap().0, Proc::ContInit(1));
        s.exited(Proc::ContInit(1), ExitStatus::Code(0));
        let order: Vec<Proc> = s.spawned.iter().map(|x| x.0).collect();
        assert_eq!(
            order,
            vec![
                Proc::ContInit(0),
                Proc::ContInit(1),
                Proc::Run(0),
                Proc::Main
            ]
        );
        assert_eq!(s.m.status(1).phase, SvcPhase::Down);
        assert!(!s.m.status(1).want_up);
        assert_eq!(s.m.status(0).phase, SvcPhase::Up);
    }

    #[test]
    fn failing_cont_init_stops_with_its_name_and_code_in_mode_2() {
        let p = Plan {
            cont_init: vec!["10-bad".into(), "20-next".into()],
            services: vec![svc("ha", true)],
            cont_finish: vec!["99-bye".into()],
            main: true,
        };
        let mut s = Sim::new(p, Settings::default());
        s.exited(Proc::ContInit(0), ExitStatus::Code(7));
        let logs = s.logs();
        assert!(
            logs.iter()
                .any(|l| l.contains("10-bad") && l.contains("exit code 7")),
            "{logs:?}"
        );
        assert_eq!(s.count_spawns(Proc::ContInit(1)), 0);
        assert_eq!(s.count_spawns(Proc::Run(0)), 0);
        assert_eq!(s.count_spawns(Proc::Main), 0);
        // cont-finish still runs, then exit with the script's code.
        s.exited(Proc::ContFinish(0), ExitStatus::Code(0));
        assert_eq!(s.exit, Some(7));
    }

    #[test]
    fn failing_cont_init_continues_in_mode_0_and_warns_in_mode_1() {
        for (mode, warns) in [
            (Stage2Failure::Continue, false),
            (Stage2Failure::Warn, true),
        ] {
            let p = Plan {
                cont_init: vec!["10-bad".into()],
                services: vec![svc("ha", true)],
                cont_finish: vec![],
                main: false,
            };
            let settings = Settings {
                stage2: mode,
                ..Settings::default()
            };
            let mut s = Sim::new(p, settings);
            s.exited(Proc::ContInit(0), ExitStatus::Code(1));
            assert_eq!(s.count_spawns(Proc::Run(0)), 1);
            assert_eq!(!s.logs().is_empty(), warns, "{mode:?}: {:?}", s.logs());
            assert_eq!(s.exit, None);
        }
    }

    #[test]
    fn finish_gets_exit_code_or_256_and_signal_then_run_restarts() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        s.now = ms(20_000);
        s.exited(Proc::Run(0), ExitStatus::Code(4));
        assert_eq!(
            s.spawned.last().unwrap().2,
            vec!["4".to_string(), "0".to_string()]
        );
        s.exited(Proc::Finish(0), ExitStatus::Code(0));
        // Up for 20 s, longer than the minimum gap: restart at once.
        assert_eq!(s.count_spawns(Proc::Run(0)), 2);
        s.now = ms(40_000);
        s.exited(Proc::Run(0), ExitStatus::Signal(9));
        assert_eq!(
            s.spawned.last().unwrap().2,
            vec!["256".to_string(), "9".to_string()]
        );
        // No finish file: restart all the same.
        s.fail_spawn(Proc::Finish(0), true);
        assert_eq!(s.count_spawns(Proc::Run(0)), 3);
        assert!(
            s.logs().iter().all(|l| !l.contains("finish")),
            "{:?}",
            s.logs()
        );
    }

    #[test]
    fn crash_loop_backs_off_doubling_to_the_cap_and_is_reported_once() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        let mut delays = Vec::new();
        for _ in 0..8 {
            let before = s.count_spawns(Proc::Run(0));
            s.exited(Proc::Run(0), ExitStatus::Code(1));
            s.fail_spawn(Proc::Finish(0), true);
            let died = s.now;
            let at = s.m.next_deadline().expect("restart scheduled");
            s.advance_to(at);
            assert_eq!(s.count_spawns(Proc::Run(0)), before + 1);
            delays.push((at - died).as_millis());
        }
        assert_eq!(
            delays,
            vec![1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        let reports: Vec<_> = s.logs().into_iter().filter(|l| l.contains("web")).collect();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(reports[0].contains("exit code 1"), "{reports:?}");
        // It stays up long enough: the backoff resets, said once.
        let t = s.now + ms(10_000);
        s.advance_to(t);
        let reports: Vec<_> = s.logs().into_iter().filter(|l| l.contains("web")).collect();
        assert_eq!(reports.len(), 2, "{reports:?}");
        s.exited(Proc::Run(0), ExitStatus::Code(1));
        s.fail_spawn(Proc::Finish(0), true);
        // Up for 10 s: the gap rule says restart at once.
        assert_eq!(s.m.next_deadline(), None);
    }

    #[test]
    fn a_new_failure_reason_is_reported_again() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        s.exited(Proc::Run(0), ExitStatus::Code(1));
        s.fail_spawn(Proc::Finish(0), true);
        let at = s.m.next_deadline().unwrap();
        s.advance_to(at);
        s.exited(Proc::Run(0), ExitStatus::Code(2));
        assert_eq!(s.logs().len(), 2, "{:?}", s.logs());
    }

    #[test]
    fn run_that_cannot_be_spawned_is_reported_once_and_retried_with_backoff() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        // Redo the first start as a failure.
        s.fail_spawn(Proc::Run(0), false);
        for _ in 0..4 {
            let at = s.m.next_deadline().unwrap();
            s.advance_to(at);
            s.fail_spawn(Proc::Run(0), false);
        }
        let logs = s.logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].contains("web") && logs[0].contains("boom"));
        assert_eq!(s.m.status(0).phase, SvcPhase::Down);
        assert!(s.m.status(0).want_up);
    }

    #[test]
    fn down_service_waits_for_up_command() {
        let mut s = Sim::new(plan(vec![svc("off", false)], false), Settings::default());
        assert_eq!(s.count_spawns(Proc::Run(0)), 0);
        s.send(Event::Control {
            svc: 0,
            cmd: SvcCommand::Up,
        });
        assert_eq!(s.count_spawns(Proc::Run(0)), 1);
        let st = s.m.status(0);
        assert_eq!(
            (st.phase, st.normally_up, st.want_up),
            (SvcPhase::Up, false, true)
        );
    }

    #[test]
    fn down_command_terms_then_conts_and_does_not_restart() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        let pid = s.pid_of(Proc::Run(0));
        s.send(Event::Control {
            svc: 0,
            cmd: SvcCommand::Down,
        });
        assert_eq!(
            s.signals(),
            vec![
                (Target::Pid(pid), Signal::SIGTERM),
                (Target::Pid(pid), Signal::SIGCONT)
            ]
        );
        s.exited(Proc::Run(0), ExitStatus::Signal(15));
        s.fail_spawn(Proc::Finish(0), true);
        s.advance_to(ms(100_000));
        assert_eq!(s.count_spawns(Proc::Run(0)), 1);
        assert_eq!(s.m.status(0).last, Some(ExitStatus::Signal(15)));
        assert!(
            s.logs().is_empty(),
            "an asked-for stop is no failure: {:?}",
            s.logs()
        );
    }

    #[test]
    fn restart_command_restarts_at_once() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        let pid = s.pid_of(Proc::Run(0));
        s.send(Event::Control {
            svc: 0,
            cmd: SvcCommand::Restart,
        });
        assert!(s.signals().contains(&(Target::Pid(pid), Signal::SIGTERM)));
        s.exited(Proc::Run(0), ExitStatus::Signal(15));
        s.fail_spawn(Proc::Finish(0), true);
        assert_eq!(s.count_spawns(Proc::Run(0)), 2);
    }

    #[test]
    fn once_command_does_not_restart() {
        let mut s = Sim::new(plan(vec![svc("job", false)], false), Settings::default());
        s.send(Event::Control {
            svc: 0,
            cmd: SvcCommand::Once,
        });
        s.exited(Proc::Run(0), ExitStatus::Code(0));
        s.fail_spawn(Proc::Finish(0), true);
        s.advance_to(ms(100_000));
        assert_eq!(s.count_spawns(Proc::Run(0)), 1);
        assert!(!s.m.status(0).want_up);
    }

    #[test]
    fn signal_commands_go_to_the_run_process() {
        let mut s = Sim::new(plan(vec![svc("ha", true)], false), Settings::default());
        let pid = s.pid_of(Proc::Run(0));
        let letters = b"htikq12abpcy";
        for &l in letters {
            s.send(Event::Control {
                svc: 0,
                cmd: SvcCommand::from_letter(l).unwrap(),
            });
        }
        let sigs: Vec<Signal> = s
            .signals()
            .into_iter()
            .map(|(t, sig)| {
                assert_eq!(t, Target::Pid(pid));
                sig
            })
            .collect();
        use Signal::*;
        assert_eq!(
            sigs,
            vec![
                SIGHUP, SIGTERM, SIGINT, SIGKILL, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGABRT,
                SIGSTOP, SIGCONT, SIGWINCH
            ]
        );
        assert_eq!(SvcCommand::from_letter(b'z'), None);
    }

    #[test]
    fn exit_command_stops_supervising_once_down() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        s.send(Event::Control {
            svc: 0,
            cmd: SvcCommand::Exit,
        });
        assert!(
            !s.log.contains(&Action::CloseControl(0)),
            "still up: keep supervising"
        );
        s.send(Event::Control {
            svc: 0,
            cmd: SvcCommand::Down,
        });
        s.exited(Proc::Run(0), ExitStatus::Signal(15));
        s.fail_spawn(Proc::Finish(0), true);
        assert!(s.log.contains(&Action::CloseControl(0)));
        assert_eq!(s.m.status(0).phase, SvcPhase::Gone);
    }

    #[test]
    fn term_stops_services_and_main_then_runs_cont_finish_and_exits_with_main_code() {
        let mut p = plan(vec![svc("a", true), svc("b", true)], true);
        p.cont_finish = vec!["99-bye".into()];
        let mut s = Sim::new(p, Settings::default());
        let (a, b, main) = (
            s.pid_of(Proc::Run(0)),
            s.pid_of(Proc::Run(1)),
            s.pid_of(Proc::Main),
        );
        s.send(Event::Signal(Signal::SIGTERM));
        let sigs = s.signals();
        for pid in [a, b, main] {
            assert!(
                sigs.contains(&(Target::Group(pid), Signal::SIGTERM)),
                "{sigs:?}"
            );
        }
        assert!(
            !sigs.iter().any(|(t, _)| *t == Target::All),
            "not PID 1: no kill(-1)"
        );
        s.exited(Proc::Run(0), ExitStatus::Signal(15));
        s.fail_spawn(Proc::Finish(0), true);
        s.exited(Proc::Run(1), ExitStatus::Code(0));
        s.fail_spawn(Proc::Finish(1), true);
        assert_eq!(s.count_spawns(Proc::ContFinish(0)), 0, "main still running");
        s.exited(Proc::Main, ExitStatus::Signal(15));
        assert_eq!(s.count_spawns(Proc::ContFinish(0)), 1);
        assert_eq!(s.exit, None);
        s.exited(Proc::ContFinish(0), ExitStatus::Code(0));
        assert_eq!(s.exit, Some(143));
        // Services are not restarted during shutdown.
        assert_eq!(s.count_spawns(Proc::Run(0)), 1);
    }

    #[test]
    fn service_ignoring_term_is_killed_after_grace() {
        let settings = Settings {
            broadcast: true,
            ..Settings::default()
        };
        let mut s = Sim::new(plan(vec![svc("stubborn", true)], false), settings);
        let pid = s.pid_of(Proc::Run(0));
        s.now = ms(50);
        s.send(Event::Signal(Signal::SIGTERM));
        assert!(s.signals().contains(&(Target::Group(pid), Signal::SIGTERM)));
        assert!(
            !s.signals().contains(&(Target::All, Signal::SIGTERM)),
            "the sweep waits for the services"
        );
        assert_eq!(s.m.next_deadline(), Some(ms(3050)));
        s.clear();
        s.advance_to(ms(3050));
        let sigs = s.signals();
        assert!(
            sigs.contains(&(Target::Group(pid), Signal::SIGKILL)),
            "{sigs:?}"
        );
        assert!(sigs.contains(&(Target::All, Signal::SIGKILL)));
        assert_eq!(s.exit, None);
        s.exited(Proc::Run(0), ExitStatus::Signal(9));
        assert_eq!(s.count_spawns(Proc::Finish(0)), 0, "no finish once killing");
        assert_eq!(s.exit, Some(0));
    }

    #[test]
    fn services_get_one_term_and_the_rest_is_swept_after_them() {
        let settings = Settings {
            broadcast: true,
            ..Settings::default()
        };
        let mut s = Sim::new(plan(vec![svc("agent", true)], false), settings);
        let pid = s.pid_of(Proc::Run(0));
        s.now = ms(10);
        s.send(Event::Signal(Signal::SIGTERM));
        let term = |s: &Sim, t: Target| {
            s.signals()
                .iter()
                .filter(|&&x| x == (t, Signal::SIGTERM))
                .count()
        };
        // A second TERM would make serf skip its graceful leave.
        assert_eq!(term(&s, Target::Group(pid)), 1);
        assert_eq!(term(&s, Target::All), 0);
        s.now = ms(900);
        s.exited(Proc::Run(0), ExitStatus::Code(0));
        s.fail_spawn(Proc::Finish(0), true);
        assert_eq!(term(&s, Target::All), 1, "strays get their TERM now");
        assert!(s.m.sweeping());
        assert_eq!(s.exit, None, "waiting for the strays");
        assert_eq!(s.m.next_deadline(), Some(ms(3010)));
        s.send(Event::Alone);
        assert_eq!(s.exit, Some(0));
    }

    #[test]
    fn strays_that_outlive_the_grace_time_are_killed() {
        let settings = Settings {
            broadcast: true,
            ..Settings::default()
        };
        let mut s = Sim::new(plan(vec![svc("web", true)], false), settings);
        s.send(Event::Signal(Signal::SIGTERM));
        s.exited(Proc::Run(0), ExitStatus::Signal(15));
        s.fail_spawn(Proc::Finish(0), true);
        assert!(s.m.sweeping());
        s.clear();
        s.advance_to(ms(3000));
        assert!(s.signals().contains(&(Target::All, Signal::SIGKILL)));
        assert_eq!(s.exit, Some(0));
    }

    #[test]
    fn without_broadcast_there_is_no_sweep() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        s.send(Event::Signal(Signal::SIGTERM));
        s.exited(Proc::Run(0), ExitStatus::Code(0));
        s.fail_spawn(Proc::Finish(0), true);
        assert!(!s.m.sweeping());
        assert_eq!(s.exit, Some(0));
    }

    #[test]
    fn unrunnable_finish_is_reported_once() {
        let mut s = Sim::new(plan(vec![svc("web", true)], false), Settings::default());
        s.failing.push(Proc::Finish(0));
        for _ in 0..5 {
            s.exited(Proc::Run(0), ExitStatus::Code(1));
            let at = s.m.next_deadline().unwrap();
            s.advance_to(at);
        }
        let finish: Vec<_> = s
            .logs()
            .into_iter()
            .filter(|l| l.contains("finish"))
            .collect();
        assert_eq!(finish.len(), 1, "{finish:?}");
        assert_eq!(s.count_spawns(Proc::Run(0)), 6);
    }

    #[test]
    fn second_term_skips_the_grace_time() {
        let mut s = Sim::new(
            plan(vec![svc("stubborn", true)], false),
            Settings::default(),
        );
        let pid = s.pid_of(Proc::Run(0));
        s.send(Event::Signal(Signal::SIGINT));
        s.clear();
        s.send(Event::Signal(Signal::SIGINT));
        assert!(s.signals().contains(&(Target::Group(pid), Signal::SIGKILL)));
        s.exited(Proc::Run(0), ExitStatus::Signal(9));
        assert_eq!(s.exit, Some(0));
    }

    #[test]
    fn main_exit_code_becomes_init_exit_code() {
        for (status, code) in [
            (ExitStatus::Code(3), 3),
            (ExitStatus::Signal(9), 137),
            (ExitStatus::Code(0), 0),
        ] {
            let mut s = Sim::new(plan(vec![svc("a", true)], true), Settings::default());
            s.exited(Proc::Main, status);
            let a = s.pid_of(Proc::Run(0));
            assert!(s.signals().contains(&(Target::Group(a), Signal::SIGTERM)));
            s.exited(Proc::Run(0), ExitStatus::Signal(15));
            s.fail_spawn(Proc::Finish(0), true);
            assert_eq!(s.exit, Some(code));
        }
    }

    #[test]
    fn missing_cmd_exits_127() {
        let mut s = Sim::new(plan(vec![], true), Settings::default());
        s.fail_spawn(Proc::Main, true);
        assert_eq!(s.exit, Some(127));
    }

    #[test]
    fn hup_usr1_usr2_are_forwarded_to_main_and_term_is_not_ignored() {
        let mut s = Sim::new(plan(vec![], true), Settings::default());
        let main = s.pid_of(Proc::Main);
        for sig in [
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
        ] {
            s.send(Event::Signal(sig));
        }
        assert_eq!(
            s.signals(),
            vec![
                (Target::Pid(main), Signal::SIGHUP),
                (Target::Pid(main), Signal::SIGUSR1),
                (Target::Pid(main), Signal::SIGUSR2),
                (Target::Pid(main), Signal::SIGWINCH)
            ]
        );
        // Without a CMD, TERM alone ends init.
        let mut s = Sim::new(plan(vec![], false), Settings::default());
        s.send(Event::Signal(Signal::SIGTERM));
        assert_eq!(s.exit, Some(0));
    }

    #[test]
    fn orphans_exiting_change_nothing() {
        let mut s = Sim::new(plan(vec![svc("a", true)], false), Settings::default());
        s.clear();
        s.send(Event::Exited {
            pid: 99_999,
            status: ExitStatus::Code(0),
        });
        assert!(s.log.is_empty());
    }

    #[test]
    fn term_during_cont_init_stops_the_script_and_exits() {
        let p = Plan {
            cont_init: vec!["10-slow".into()],
            services: vec![svc("a", true)],
            cont_finish: vec![],
            main: true,
        };
        let mut s = Sim::new(p, Settings::default());
        let pid = s.pid_of(Proc::ContInit(0));
        s.send(Event::Signal(Signal::SIGTERM));
        assert!(s.signals().contains(&(Target::Group(pid), Signal::SIGTERM)));
        s.exited(Proc::ContInit(0), ExitStatus::Signal(15));
        assert_eq!(s.count_spawns(Proc::Run(0)), 0);
        assert_eq!(s.exit, Some(0));
    }

    #[test]
    fn finish_that_hangs_is_killed() {
        let mut s = Sim::new(plan(vec![svc("a", true)], false), Settings::default());
        s.now = ms(20_000);
        s.exited(Proc::Run(0), ExitStatus::Code(0));
        let fpid = s.pid_of(Proc::Finish(0));
        s.advance_to(ms(25_000));
        assert!(s
            .signals()
            .contains(&(Target::Group(fpid), Signal::SIGKILL)));
        s.exited(Proc::Finish(0), ExitStatus::Signal(9));
        assert_eq!(s.count_spawns(Proc::Run(0)), 2);
    }
}
