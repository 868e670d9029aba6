//! The thin layer around the [`Machine`]: system calls only.
//!
//! One thread, one `poll(2)` loop over a signalfd (SIGCHLD, SIGTERM, SIGINT,
//! SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, all blocked so they queue there), the
//! services' control FIFOs and, with `INIT_LOG_PREFIX=1`, the services'
//! output pipes. Every child ended is reaped with `waitpid(-1)` (orphans
//! included) and reported to the machine, which ignores pids it does not
//! know. Actions are carried out in order; a spawn is answered at once with
//! its pid or its error.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid as NixPid};

use crate::config::{list_dir, settings_from_env, Layout, Output};
use crate::control::{format_status, unix_ms_now};
use crate::machine::{
    Action, Event, ExitStatus, Machine, Plan, Proc, ServiceDef, SvcCommand, Target,
};

/// One service's control FIFO, both ends held so reads never see EOF.
struct Control {
    read: File,
    _write: File,
}

/// A pipe carrying a service's stdout or stderr when prefixing is on.
struct LogPipe {
    svc: usize,
    read: File,
    write: OwnedFd,
    to_stderr: bool,
    buf: Vec<u8>,
}

struct Runtime {
    layout: Layout,
    output: Output,
    pid1: bool,
    main_argv: Vec<OsString>,
    names: Vec<String>,
    controls: Vec<Option<Control>>,
    logs: Vec<LogPipe>,
    machine: Machine,
    start: Instant,
}

/// `init [--] [CMD ARGS...]`: the whole PID 1 life. Returns the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let layout = Layout::from_env();
    let pid1 = getpid().as_raw() == 1;
    let (settings, output) = match settings_from_env(pid1) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("init: {e}");
            return 100;
        }
    };
    if !pid1 {
        // So orphans of our services are re-parented to us and reaped here,
        // as they would be under PID 1.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("init: cannot become a child subreaper: {e}");
        }
    }
    let mut handled = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        handled.add(s);
    }
    let mut blocked = handled;
    // Blocked so that giving the terminal to the CMD cannot stop us.
    blocked.add(Signal::SIGTTOU);
    blocked.add(Signal::SIGTTIN);
    if let Err(e) = blocked.thread_block() {
        eprintln!("init: cannot block signals: {e}");
        return 111;
    }
    let sfd = match SignalFd::with_flags(&handled, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("init: cannot create a signalfd: {e}");
            return 111;
        }
    };
    if let Err(e) = crate::contenv::capture(&layout.container_env()) {
        eprintln!("init: cannot capture the container environment: {e}");
        return 111;
    }
    let plan = match scan(&layout, !args.is_empty()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("init: {e}");
            return 111;
        }
    };
    let mut rt = Runtime {
        names: plan.services.iter().map(|s| s.name.clone()).collect(),
        controls: Vec::new(),
        logs: Vec::new(),
        layout,
        output,
        pid1,
        main_argv: args,
        machine: Machine::new(plan, settings),
        start: Instant::now(),
    };
    if let Err(e) = rt.setup_services() {
        eprintln!("init: {e}");
        return 111;
    }
    rt.event_loop(&sfd)
}

/// What is on disk: scripts and services.
fn scan(layout: &Layout, main: bool) -> Result<Plan, String> {
    let cont_init = list_dir(&layout.cont_init(), false)?;
    let cont_finish = list_dir(&layout.cont_finish(), false)?;
    let fix_attrs = layout.root.join("etc/fix-attrs.d");
    if list_dir(&fix_attrs, false).map_or(true, |names| !names.is_empty()) {
        eprintln!(
            "init: {} is not supported: its ownership and mode changes are not applied (do them in the image or in a cont-init.d script)",
            fix_attrs.display()
        );
    }
    let mut services = Vec::new();
    for name in list_dir(&layout.services(), true)? {
        let dir = layout.services().join(&name);
        warn_unsupported(&name, &dir);
        services.push(ServiceDef {
            normally_up: !dir.join("down").exists(),
            name,
        });
    }
    Ok(Plan {
        cont_init,
        services,
        cont_finish,
        main,
    })
}

/// s6 features of a service directory that init does not provide: said
/// once at start, so that nobody waits for a log file or a readiness
/// signal that will never come.
fn warn_unsupported(name: &str, dir: &Path) {
    if dir.join("log").is_dir() {
        eprintln!(
            "init: service {name}: its log/ directory (an s6-log logging service) is not supported; the service's output goes to the container's stdout and stderr"
        );
    }
    if dir.join("notification-fd").exists() {
        eprintln!(
            "init: service {name}: notification-fd (readiness notification) is not supported; the service counts as up once started"
        );
    }
}

fn set_nonblock(fd: &impl AsFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd().as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        fd.as_fd().as_raw_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

impl Runtime {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn svc_dir(&self, i: usize) -> PathBuf {
        self.layout.services().join(&self.names[i])
    }

    /// Control directories, FIFOs and (optionally) log pipes.
    fn setup_services(&mut self) -> Result<(), String> {
        for i in 0..self.names.len() {
            let sup = self.layout.control_dir(&self.names[i]).join("supervise");
            std::fs::create_dir_all(&sup)
                .map_err(|e| format!("cannot create {}: {e}", sup.display()))?;
            let fifo = sup.join("control");
            let _ = std::fs::remove_file(&fifo);
            nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
                .map_err(|e| format!("cannot create FIFO {}: {e}", fifo.display()))?;
            let open = |write: bool| {
                OpenOptions::new()
                    .read(!write)
                    .write(write)
                    .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
                    .open(&fifo)
                    .map_err(|e| format!("cannot open FIFO {}: {e}", fifo.display()))
            };
            let read = open(false)?;
            let write = open(true)?;
            self.controls.push(Some(Control {
                read,
                _write: write,
            }));
            if self.output.prefix {
                for to_stderr in [false, true] {
                    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                        .map_err(|e| format!("cannot create a pipe: {e}"))?;
                    set_nonblock(&r).map_err(|e| format!("cannot configure a pipe: {e}"))?;
                    self.logs.push(LogPipe {
                        svc: i,
                        read: File::from(r),
                        write: w,
                        to_stderr,
                        buf: Vec::new(),
                    });
                }
            }
            self.write_status(i);
        }
        Ok(())
    }

    /// Hands an event to the machine. Until services start, the `down`
    /// files are read again first: a cont-init script may have added or
    /// removed one (s6-overlay reads the service directories after them).
    fn feed(&mut self, ev: Event) -> Vec<Action> {
        if self.machine.before_services() {
            for (i, name) in self.names.iter().enumerate() {
                let down = self.layout.services().join(name).join("down").exists();
                self.machine.set_normally_up(i, !down);
            }
        }
        self.machine.handle(self.now(), ev)
    }

    fn event_loop(&mut self, sfd: &SignalFd) -> i32 {
        let mut queue: VecDeque<Action> = VecDeque::new();
        queue.extend(self.feed(Event::Start));
        loop {
            while let Some(action) = queue.pop_front() {
                if let Some(code) = self.perform(action, &mut queue) {
                    self.flush_logs();
                    return code;
                }
            }
            if self.machine.sweeping() {
                let mut events = Vec::new();
                self.reap(&mut events);
                for ev in events {
                    queue.extend(self.feed(ev));
                }
                if queue.is_empty() && self.machine.sweeping() && self.nobody_else() {
                    queue.extend(self.feed(Event::Alone));
                }
                if !queue.is_empty() {
                    continue;
                }
            }
            let timeout = match self.machine.next_deadline() {
                None => PollTimeout::NONE,
                Some(d) => {
                    let mut ms = d.saturating_sub(self.now()).as_millis() + 1;
                    if self.machine.sweeping() {
                        // The last stray may not be our child: look again soon.
                        ms = ms.min(100);
                    }
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut events = Vec::new();
            let (sig_ready, ctl_ready, log_ready) = {
                let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
                let mut ctl_idx = Vec::new();
                for (i, c) in self.controls.iter().enumerate() {
                    if let Some(c) = c {
                        fds.push(PollFd::new(c.read.as_fd(), PollFlags::POLLIN));
                        ctl_idx.push(i);
                    }
                }
                for l in &self.logs {
                    fds.push(PollFd::new(l.read.as_fd(), PollFlags::POLLIN));
                }
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("init: poll failed: {e}");
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let sig_ready = ready(&fds[0]);
                let ctl_ready: Vec<usize> = ctl_idx
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| ready(&fds[1 + k]))
                    .map(|(_, &i)| i)
                    .collect();
                let base = 1 + ctl_idx.len();
                let log_ready: Vec<usize> = (0..self.logs.len())
                    .filter(|k| ready(&fds[base + k]))
                    .collect();
                (sig_ready, ctl_ready, log_ready)
            };
            if sig_ready {
                while let Ok(Some(info)) = sfd.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) | Err(_) => {}
                        Ok(sig) => events.push(Event::Signal(sig)),
                    }
                }
            }
            // Reap on every turn: SIGCHLDs coalesce.
            self.reap(&mut events);
            for i in ctl_ready {
                self.read_control(i, &mut events);
            }
            for k in log_ready {
                self.pump_log(k);
            }
            if self
                .machine
                .next_deadline()
                .is_some_and(|d| d <= self.now())
            {
                events.push(Event::Tick);
            }
            for ev in events {
                queue.extend(self.feed(ev));
            }
        }
    }

    /// True when init is PID 1 and no other process is left in its PID
    /// namespace: `kill(-1, 0)` signals nobody (zombies are reaped first).
    fn nobody_else(&self) -> bool {
        self.pid1 && kill(NixPid::from_raw(-1), None) == Err(Errno::ESRCH)
    }

    fn reap(&mut self, events: &mut Vec<Event>) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => events.push(Event::Exited {
                    pid: pid.as_raw(),
                    status: ExitStatus::Code(code),
                }),
                Ok(WaitStatus::Signaled(pid, sig, _)) => events.push(Event::Exited {
                    pid: pid.as_raw(),
                    status: ExitStatus::Signal(sig as i32),
                }),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn read_control(&mut self, i: usize, events: &mut Vec<Event>) {
        let Some(c) = self.controls[i].as_mut() else {
            return;
        };
        let mut buf = [0u8; 64];
        loop {
            match c.read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        match SvcCommand::from_letter(b) {
                            Some(cmd) => events.push(Event::Control { svc: i, cmd }),
                            None if b.is_ascii_whitespace() => {}
                            None => eprintln!(
                                "init: service {}: ignoring unknown control command {:?}",
                                self.names[i], b as char
                            ),
                        }
                    }
                }
                Err(_) => break,
            }
        }
    }

    fn pump_log(&mut self, k: usize) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.logs[k].read.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.logs[k].buf.extend_from_slice(&chunk[..n]);
                    self.emit_lines(k, false);
                }
            }
        }
    }

    /// Writes the complete lines buffered for pipe `k` with the service name
    /// in front (everything, when `all`, or when a line grows too long).
    fn emit_lines(&mut self, k: usize, all: bool) {
        let name = self.names[self.logs[k].svc].clone();
        let l = &mut self.logs[k];
        let mut out = Vec::new();
        while let Some(pos) = l.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = l.buf.drain(..=pos).collect();
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&line);
        }
        if (all && !l.buf.is_empty()) || l.buf.len() > 8192 {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.append(&mut l.buf);
            out.push(b'\n');
        }
        if !out.is_empty() {
            if l.to_stderr {
                let _ = std::io::stderr().write_all(&out);
            } else {
                let mut o = std::io::stdout();
                let _ = o.write_all(&out);
                let _ = o.flush();
            }
        }
    }

    fn flush_logs(&mut self) {
        for k in 0..self.logs.len() {
            self.pump_log(k);
            self.emit_lines(k, true);
        }
        let _ = std::io::stdout().flush();
    }

    /// Carries out one action; returns the exit code on [`Action::Exit`].
    fn perform(&mut self, action: Action, queue: &mut VecDeque<Action>) -> Option<i32> {
        match action {
            Action::Spawn { proc, args } => {
                let ev = match self.spawn(proc, &args) {
                    Ok(pid) => Event::Spawned { proc, pid },
                    Err((error, missing)) => Event::SpawnFailed {
                        proc,
                        error,
                        missing,
                    },
                };
                queue.extend(self.feed(ev));
            }
            Action::Signal { target, signal } => self.signal(target, signal),
            Action::Log(msg) => eprintln!("init: {msg}"),
            Action::StatusChanged(i) => self.write_status(i),
            Action::CloseControl(i) => self.controls[i] = None,
            Action::Exit(code) => return Some(code),
        }
        None
    }

    fn signal(&self, target: Target, signal: Signal) {
        match target {
            Target::Pid(p) => {
                let _ = kill(NixPid::from_raw(p), signal);
            }
            Target::Group(p) => {
                if killpg(NixPid::from_raw(p), signal) == Err(Errno::ESRCH) {
                    let _ = kill(NixPid::from_raw(p), signal);
                }
            }
            Target::All => {
                // kill(-1) as a mere subreaper would hit every process of the
                // user: only PID 1 of a container may do it.
                if self.pid1 {
                    let _ = kill(NixPid::from_raw(-1), signal);
                }
            }
        }
    }

    fn write_status(&self, i: usize) {
        let st = self.machine.status(i);
        let age = self.now().saturating_sub(st.since).as_millis();
        let since = unix_ms_now().saturating_sub(age);
        let sup = self.layout.control_dir(&self.names[i]).join("supervise");
        let tmp = sup.join("status.new");
        let res = std::fs::write(&tmp, format_status(&st, since))
            .and_then(|_| std::fs::rename(&tmp, sup.join("status")));
        if let Err(e) = res {
            eprintln!(
                "init: service {}: cannot write status in {}: {e}",
                self.names[i],
                sup.display()
            );
        }
    }

    /// Starts a process in its own process group; `Err((why, missing))`.
    fn spawn(&mut self, proc: Proc, args: &[String]) -> Result<i32, (String, bool)> {
        let plan = self.machine.plan();
        let (mut cmd, path, svc) = match proc {
            Proc::ContInit(i) => {
                let p = self.layout.cont_init().join(&plan.cont_init[i]);
                (Command::new(&p), Some(p), None)
            }
            Proc::ContFinish(i) => {
                let p = self.layout.cont_finish().join(&plan.cont_finish[i]);
                (Command::new(&p), Some(p), None)
            }
            Proc::Run(i) | Proc::Finish(i) => {
                let dir = self.svc_dir(i);
                let file = if matches!(proc, Proc::Run(_)) {
                    "run"
                } else {
                    "finish"
                };
                let p = dir.join(file);
                if matches!(proc, Proc::Finish(_)) && !p.exists() {
                    return Err(("no finish script".to_string(), true));
                }
                let mut c = Command::new(&p);
                c.current_dir(&dir);
                (c, Some(p), Some(i))
            }
            Proc::Main => {
                let Some((prog, rest)) = self.main_argv.split_first() else {
                    return Err(("no CMD".to_string(), true));
                };
                let mut c = Command::new(prog);
                c.args(rest);
                (c, None, None)
            }
        };
        cmd.args(args).process_group(0);
        // Every child gets the container environment as it stands now (the
        // store init captured, with what cont-init scripts added, changed or
        // removed), not init's own: a script that moves a secret out of the
        // environment (ha/web app's 05-gossip-key) takes it away from every
        // later process, `with-contenv` or not.
        let env = crate::contenv::load(&self.layout.container_env())
            .map_err(|e| (format!("cannot read the container environment: {e}"), false))?;
        cmd.env_clear().envs(env);
        // SAFETY: the closure only calls sigprocmask, which is
        // async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Children must not inherit the mask we keep for the signalfd.
                let empty = SigSet::empty();
                nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&empty),
                    None,
                )
                .map_err(std::io::Error::from)
            });
        }
        if proc != Proc::Main {
            // Only the CMD may read the container's stdin.
            cmd.stdin(Stdio::null());
        }
        if let Some(i) = svc {
            for l in self.logs.iter().filter(|l| l.svc == i) {
                let fd = l
                    .write
                    .try_clone()
                    .map_err(|e| (format!("cannot duplicate a pipe: {e}"), false))?;
                if l.to_stderr {
                    cmd.stderr(Stdio::from(fd));
                } else {
                    cmd.stdout(Stdio::from(fd));
                }
            }
        }
        let mut result = cmd.spawn();
        // ETXTBSY is transient: a script just written by a process that is
        // forking elsewhere (its copy of the write fd lives until that
        // child's exec). Retry briefly rather than report it as a failure.
        for _ in 0..10 {
            match &result {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(5));
                    result = cmd.spawn();
                }
                _ => break,
            }
        }
        match result {
            Ok(child) => {
                let pid = child.id() as i32;
                if proc == Proc::Main && nix::unistd::isatty(0).unwrap_or(false) {
                    // Interactive CMD: it runs in its own group, so hand it the
                    // terminal (SIGTTOU is blocked here, so this cannot stop us).
                    let _ = nix::unistd::tcsetpgrp(std::io::stdin().as_fd(), NixPid::from_raw(pid));
                }
                Ok(pid)
            }
            Err(e) => Err(explain_spawn_error(&e, path.as_deref(), &self.main_argv)),
        }
    }
}

/// Turns an exec failure into a message that says what to fix.
fn explain_spawn_error(
    e: &std::io::Error,
    path: Option<&Path>,
    argv: &[OsString],
) -> (String, bool) {
    let what = match path {
        Some(p) => p.display().to_string(),
        None => format!(
            "CMD {:?}",
            argv.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        ),
    };
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            if let Some(p) = path.filter(|p| p.exists()) {
                let first = std::fs::read(p)
                    .ok()
                    .and_then(|b| {
                        b.split(|&c| c == b'\n')
                            .next()
                            .map(|l| String::from_utf8_lossy(l).into_owned())
                    })
                    .unwrap_or_default();
                if first.starts_with("#!") {
                    return (
                        format!("{what}: bad interpreter in shebang line {first:?} (not found)"),
                        false,
                    );
                }
                return (format!("{what}: {e}"), false);
            }
            (format!("{what}: not found"), true)
        }
        std::io::ErrorKind::PermissionDenied => (
            format!("{what}: permission denied (not executable? chmod +x)"),
            false,
        ),
        _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => (
            format!("{what}: exec format error (not a binary and no #! line)"),
            false,
        ),
        _ => (format!("{what}: {e}"), false),
    }
}
