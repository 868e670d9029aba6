//! A child process that never outlives its test: killed (SIGKILL) and
//! reaped when its guard is dropped, also when the test panics.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::wait::{eventually, eventually_blocking};

/// A running child process, killed and reaped on drop.
pub struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd`; `name` says what it is in panics.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        ChildGuard::try_spawn(name, cmd)
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"))
    }

    /// [`ChildGuard::spawn`], handing back the error (e.g. to tell a
    /// missing program apart).
    pub fn try_spawn(name: &str, cmd: &mut Command) -> std::io::Result<ChildGuard> {
        Ok(ChildGuard {
            name: name.into(),
            child: cmd.spawn()?,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The process itself, e.g. to take its piped stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig` (SIGINT for a graceful serf leave, SIGTERM, ...), unless
    /// the process has been reaped already.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(Pid::from_raw(self.pid()), sig);
        }
    }

    /// SIGSTOP, returning once every thread of the process is stopped (the
    /// signal is asynchronous: a thread running at that moment could still
    /// answer a request sent right after `kill` returns).
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        eventually_blocking(
            &format!("every thread of {} stopped", self.name),
            crate::DEADLINE,
            || {
                let all_stopped = std::fs::read_dir(&tasks).ok()?.all(|t| {
                    let stat = t
                        .ok()
                        .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                        .unwrap_or_default();
                    // pid (comm) STATE ...; comm may contain spaces.
                    matches!(
                        stat.rsplit_once(')')
                            .map(|(_, r)| r.trim_start().chars().next()),
                        Some(Some('T'))
                    )
                });
                all_stopped.then_some(())
            },
        );
    }

    /// SIGCONT after [`ChildGuard::pause`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Its exit status, if it has exited (without waiting).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits (polling, at most `deadline`) for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        eventually(&what, deadline, async || self.exit_status()).await
    }

    /// [`ChildGuard::wait_exit`] on a thread that may block.
    pub fn wait_exit_blocking(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        eventually_blocking(&what, deadline, || self.exit_status())
    }

    /// Waits (at most `deadline`) for the process to exit, then reads what
    /// it wrote to its piped stdout and stderr (after the exit: for small
    /// outputs, which fit in a pipe's buffer).
    pub fn output_blocking(&mut self, deadline: Duration) -> Output {
        let status = self.wait_exit_blocking(deadline);
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_end(&mut stdout);
        }
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_end(&mut stderr);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// SIGKILL (no goodbye to anyone) and reap.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_kills_and_reaps() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("600"));
        let pid = guard.pid();
        drop(guard);
        // Reaped: no process (not even a zombie) with that pid is ours.
        assert!(kill(Pid::from_raw(pid), None).is_err());
    }

    #[test]
    fn exit_status_and_signals() {
        let mut guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("600"));
        assert!(guard.is_running());
        guard.pause();
        guard.resume();
        guard.signal(Signal::SIGTERM);
        let status = guard.wait_exit_blocking(crate::DEADLINE);
        assert!(!status.success());
        assert!(!guard.is_running());
        // Signals after the reap go nowhere.
        guard.signal(Signal::SIGKILL);
    }

    #[test]
    fn output_after_the_exit() {
        let mut guard = ChildGuard::spawn(
            "sh",
            Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped()),
        );
        let o = guard.output_blocking(crate::DEADLINE);
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(
            (&o.stdout[..], &o.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }
}
