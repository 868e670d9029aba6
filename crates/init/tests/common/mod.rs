//! Harness for the conformance tests: a container layout in a temporary
//! directory (through `INIT_ROOT`), the real `init` binary started either as
//! a plain child (it makes itself a subreaper) or as PID 1 of a fresh PID
//! namespace (`unshare --pid --fork --mount-proc`), and polling helpers.
//! Every process a test starts is killed when its [`Init`] is dropped.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_init");
pub const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// init is a plain child of the test and a child subreaper.
    Subreaper,
    /// init is PID 1 of a new PID namespace.
    PidNs,
}

/// Polls `f` until it returns `Some`, or panics after [`DEADLINE`] saying
/// what was awaited.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary container root.
pub struct Root {
    pub dir: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Root {
    pub fn new(name: &str) -> Root {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("init-test-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        for link in ["s6-svc", "s6-svstat", "with-contenv"] {
            symlink(BIN, dir.join("bin").join(link)).unwrap();
        }
        Root { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes a file, executable when `exec`.
    pub fn write(&self, rel: &str, content: &str, exec: bool) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        let mode = if exec { 0o755 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// `/etc/services.d/NAME/run` as a `sh` script (body after the shebang).
    pub fn service(&self, name: &str, body: &str) -> PathBuf {
        self.write(
            &format!("etc/services.d/{name}/run"),
            &format!("#!/bin/sh\n{body}\n"),
            true,
        )
    }

    /// The control directory of a service (the lab's /var/run/s6/services/NAME).
    pub fn svc_dir(&self, name: &str) -> String {
        self.path(&format!("var/run/s6/services/{name}"))
            .display()
            .to_string()
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    pub fn lines(&self, rel: &str) -> Vec<String> {
        self.read(rel).lines().map(str::to_string).collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running init.
pub struct Init {
    pub child: Child,
    /// init's pid as seen from here (the host PID namespace).
    pub pid: i32,
    pub mode: Mode,
    out: PathBuf,
    err: PathBuf,
    pub status: Option<i32>,
}

/// `/proc/PID/stat` fields: (state, ppid).
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children of `pid`, with their state.
pub fn children(pid: i32) -> Vec<(i32, char)> {
    all_pids()
        .into_iter()
        .filter_map(|p| stat(p).filter(|s| s.1 == pid).map(|s| (p, s.0)))
        .collect()
}

/// All descendants of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (c, _) in children(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.0 != 'Z')
}

pub fn kill(pid: i32, sig: i32) {
    let sig = nix::sys::signal::Signal::try_from(sig).expect("valid signal");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGTERM: i32 = 15;

impl Init {
    /// Starts init on `root` with CMD `args` and extra environment.
    pub fn start(root: &Root, mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Init {
        let out = root.path("init.out");
        let err = root.path("init.err");
        let mut cmd = match mode {
            Mode::Subreaper => Command::new(BIN),
            Mode::PidNs => {
                // A shell holds PID 1 until the test has checked it, then
                // execs init in its place (same pid), so even an init that
                // exits at once is seen as PID 1 first.
                nix::unistd::mkfifo(
                    &root.path("gate"),
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                )
                .unwrap();
                let mut c = Command::new("unshare");
                c.args([
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "/bin/sh",
                    "-c",
                    "read _ < \"$0\" && exec \"$@\"",
                ])
                .arg(root.path("gate"))
                .arg(BIN);
                c
            }
        };
        cmd.args(args)
            .env("INIT_ROOT", &root.dir)
            .env(
                "PATH",
                format!(
                    "{}:/usr/bin:/bin:/usr/sbin:/sbin",
                    root.path("bin").display()
                ),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .process_group(0);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if mode == Mode::PidNs => panic!(
                "the PID-namespace conformance tests need `unshare --pid --fork --mount-proc` \
                 (util-linux, run as root); it could not be started: {e}"
            ),
            Err(e) => panic!("cannot start {BIN}: {e}"),
        };
        let top = child.id() as i32;
        let mut init = Init {
            child,
            pid: top,
            mode,
            out,
            err,
            status: None,
        };
        if mode == Mode::PidNs {
            let pid = wait_for("unshare to fork init", || {
                if let Ok(Some(st)) = init.child.try_wait() {
                    panic!(
                        "unshare exited with {st} before starting init: {}",
                        init.stderr()
                    );
                }
                children(top).first().map(|c| c.0)
            });
            init.pid = pid;
            // Make sure it really is PID 1 in its namespace.
            let nspid = wait_for("init's NSpid", || {
                let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                s.lines()
                    .find(|l| l.starts_with("NSpid:"))
                    .map(str::to_string)
            });
            assert!(
                nspid.trim_end().ends_with("\t1"),
                "init is not PID 1 in its namespace: {nspid}"
            );
            let gate = root.path("gate");
            let mut w = wait_for("the PID 1 shell to open its gate", || {
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(&gate)
                    .ok()
            });
            w.write_all(b"go\n").unwrap();
            drop(w);
            wait_for("init to replace the gate shell", || {
                // (or to have run and exited already)
                (cmdline(pid).starts_with(BIN) || !alive(pid)).then_some(())
            });
        }
        init
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        kill(self.pid, sig);
    }

    /// Waits for init to exit; returns its exit code.
    pub fn wait(&mut self) -> i32 {
        if let Some(c) = self.status {
            return c;
        }
        let child = &mut self.child;
        let st = wait_for("init to exit", || child.try_wait().unwrap());
        let code = st.code().unwrap_or_else(|| panic!("init was killed: {st}"));
        self.status = Some(code);
        code
    }

    /// init's direct children whose command line contains `needle` (a
    /// forking shell's children briefly share its command line, so deeper
    /// descendants would be ambiguous).
    pub fn children_running(&self, needle: &str) -> Vec<i32> {
        children(self.pid)
            .into_iter()
            .map(|c| c.0)
            .filter(|&p| cmdline(p).contains(needle))
            .collect()
    }

    /// Descendant pids whose command line contains `needle`.
    pub fn find(&self, needle: &str) -> Vec<i32> {
        descendants(self.pid)
            .into_iter()
            .filter(|&p| cmdline(p).contains(needle))
            .collect()
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Kill everything it started, then init (and unshare) itself.
            for p in descendants(self.child.id() as i32) {
                kill(p, SIGKILL);
            }
            kill(-(self.child.id() as i32), SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs a control command (through the multi-call link `root/bin/NAME`).
pub fn ctl(root: &Root, name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(root.path("bin").join(name))
        .args(args)
        .env("INIT_ROOT", &root.dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `s6-svstat` of a service: its output line.
pub fn svstat(root: &Root, name: &str) -> String {
    let (code, out, err) = ctl(root, "s6-svstat", &[&root.svc_dir(name)]);
    if code != 0 {
        return format!("ERROR {code}: {err}");
    }
    out.trim().to_string()
}

/// The pid `s6-svstat` shows when the service is up.
pub fn up_pid(root: &Root, name: &str) -> Option<i32> {
    let s = svstat(root, name);
    let rest = s.strip_prefix("up (pid ")?;
    rest[..rest.find(')')?].parse().ok()
}

/// `s6-svc FLAGS DIR`, asserting success.
pub fn svc(root: &Root, flags: &str, name: &str) {
    let (code, _, err) = ctl(root, "s6-svc", &[flags, &root.svc_dir(name)]);
    assert_eq!(code, 0, "s6-svc {flags} {name} failed: {err}");
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
