//! The control surface of a supervised service, both sides.
//!
//! Each service has a directory `/var/run/s6/services/NAME` holding
//! `supervise/control`, a FIFO init reads command letters from (s6's own
//! letters: `u d o r x h t i k q 1 2 a b p c y`), and `supervise/status`, a
//! small text file init rewrites atomically on every change. `s6-svc`
//! writes letters into the FIFO; `s6-svstat` reads the status file. A FIFO
//! that nobody reads (init gone, or `-x` done) makes both report that the
//! supervisor is not running, like s6.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::machine::{signal_name, ExitStatus, SvcCommand, SvcPhase, SvcStatus};

/// The status file content for a snapshot; `since_unix_ms` is the wall time
/// at which the current phase began.
pub fn format_status(st: &SvcStatus, since_unix_ms: u128) -> String {
    let phase = match st.phase {
        SvcPhase::Up => "up",
        SvcPhase::Down => "down",
        SvcPhase::Finishing => "finishing",
        SvcPhase::Gone => "gone",
    };
    let last = match st.last {
        None => "none".to_string(),
        Some(ExitStatus::Code(c)) => format!("exit {c}"),
        Some(ExitStatus::Signal(s)) => format!("signal {s}"),
    };
    format!(
        "phase={phase}\npid={}\nsince_unix_ms={since_unix_ms}\nlast={last}\nnormally_up={}\nwant_up={}\n",
        st.pid.unwrap_or(0),
        st.normally_up as u8,
        st.want_up as u8
    )
}

/// A parsed status file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusFile {
    pub phase: String,
    pub pid: i32,
    pub since_unix_ms: u128,
    pub last: Option<ExitStatus>,
    pub normally_up: bool,
    pub want_up: bool,
}

/// Parse what [`format_status`] wrote.
pub fn parse_status(text: &str) -> Result<StatusFile, String> {
    let mut st = StatusFile::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("malformed status line {line:?}"));
        };
        let bad = || format!("malformed status value {line:?}");
        match k {
            "phase" => st.phase = v.to_string(),
            "pid" => st.pid = v.parse().map_err(|_| bad())?,
            "since_unix_ms" => st.since_unix_ms = v.parse().map_err(|_| bad())?,
            "last" => {
                st.last = match v.split_once(' ') {
                    None if v == "none" => None,
                    Some(("exit", n)) => Some(ExitStatus::Code(n.parse().map_err(|_| bad())?)),
                    Some(("signal", n)) => Some(ExitStatus::Signal(n.parse().map_err(|_| bad())?)),
                    _ => return Err(bad()),
                }
            }
            "normally_up" => st.normally_up = v == "1",
            "want_up" => st.want_up = v == "1",
            _ => {}
        }
    }
    if st.phase.is_empty() {
        return Err("status file has no phase".to_string());
    }
    Ok(st)
}

/// One `s6-svstat` line, in s6's words, e.g. `up (pid 123) 45 seconds` or
/// `down (exitcode 0) 3 seconds, normally up, want up`.
pub fn render_svstat(st: &StatusFile, now_unix_ms: u128) -> String {
    let secs = now_unix_ms.saturating_sub(st.since_unix_ms) / 1000;
    let mut s = match st.phase.as_str() {
        "up" => format!("up (pid {}) {secs} seconds", st.pid),
        _ => {
            let what = match st.last {
                None => String::new(),
                Some(ExitStatus::Code(c)) => format!(" (exitcode {c})"),
                Some(ExitStatus::Signal(n)) => format!(" (signal {})", signal_name(n)),
            };
            format!("down{what} {secs} seconds")
        }
    };
    let up = st.phase == "up";
    if up && !st.normally_up {
        s.push_str(", normally down");
    }
    if !up && st.normally_up {
        s.push_str(", normally up");
    }
    if up && !st.want_up {
        s.push_str(", want down");
    }
    if !up && st.want_up {
        s.push_str(", want up");
    }
    if st.phase == "finishing" {
        s.push_str(", finishing");
    }
    s
}

/// Milliseconds since the epoch, now.
pub fn unix_ms_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Opens the control FIFO for writing; fails with s6's exit codes (100 when
/// no supervisor listens, 111 otherwise).
fn open_control(dir: &Path, prog: &str) -> Result<std::fs::File, i32> {
    let path = dir.join("supervise/control");
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc_nonblock())
        .open(&path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {
            eprintln!(
                "{prog}: fatal: supervisor not listening on {}",
                dir.display()
            );
            Err(100)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "{prog}: fatal: {} has no supervise/control: not a supervised service directory",
                dir.display()
            );
            Err(100)
        }
        Err(e) => {
            eprintln!("{prog}: fatal: unable to control {}: {e}", dir.display());
            Err(111)
        }
    }
}

fn libc_nonblock() -> i32 {
    nix::libc::O_NONBLOCK
}

/// `s6-svc [-udorxhtikq12abpcy]... DIR...`. Returns the exit code.
pub fn svc_main(args: &[String]) -> i32 {
    const USAGE: &str = "s6-svc: usage: s6-svc [-udorx] [-htikq12abpcy] SERVICEDIR...";
    let mut letters = Vec::new();
    let mut dirs = Vec::new();
    let mut opts_done = false;
    for a in args {
        if !opts_done && a == "--" {
            opts_done = true;
        } else if !opts_done && a.starts_with('-') && a.len() > 1 {
            for c in a[1..].bytes() {
                if SvcCommand::from_letter(c).is_none() {
                    eprintln!(
                        "s6-svc: unsupported option -{} (in {a:?})\n{USAGE}",
                        c as char
                    );
                    return 100;
                }
                letters.push(c);
            }
        } else {
            opts_done = true;
            dirs.push(a.clone());
        }
    }
    if dirs.is_empty() {
        eprintln!("{USAGE}");
        return 100;
    }
    if letters.is_empty() {
        return 0;
    }
    for d in &dirs {
        let mut f = match open_control(Path::new(d), "s6-svc") {
            Ok(f) => f,
            Err(code) => return code,
        };
        if let Err(e) = f.write_all(&letters) {
            eprintln!("s6-svc: fatal: unable to control {d}: {e}");
            return 111;
        }
    }
    0
}

/// `s6-svstat DIR`. Returns the exit code.
pub fn svstat_main(args: &[String]) -> i32 {
    let dirs: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if let Some(bad) = args.iter().find(|a| a.starts_with('-')) {
        eprintln!("s6-svstat: unsupported option {bad:?}\ns6-svstat: usage: s6-svstat SERVICEDIR");
        return 100;
    }
    let [dir] = dirs.as_slice() else {
        eprintln!("s6-svstat: usage: s6-svstat SERVICEDIR");
        return 100;
    };
    let dir = Path::new(dir.as_str());
    // Checks that a supervisor listens (the open fails otherwise).
    if let Err(code) = open_control(dir, "s6-svstat") {
        return code;
    }
    let path = dir.join("supervise/status");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "s6-svstat: fatal: unable to read status for {}: {e}",
                dir.display()
            );
            return 111;
        }
    };
    match parse_status(&text) {
        Ok(st) => {
            println!("{}", render_svstat(&st, unix_ms_now()));
            0
        }
        Err(e) => {
            eprintln!("s6-svstat: fatal: {}: {e}", path.display());
            111
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(
        phase: SvcPhase,
        pid: Option<i32>,
        last: Option<ExitStatus>,
        normally_up: bool,
        want_up: bool,
    ) -> SvcStatus {
        SvcStatus {
            phase,
            pid,
            since: std::time::Duration::ZERO,
            last,
            normally_up,
            want_up,
        }
    }

    #[test]
    fn svstat_lines_in_s6_words() {
        let up = parse_status(&format_status(
            &st(SvcPhase::Up, Some(123), None, true, true),
            1000,
        ))
        .unwrap();
        assert_eq!(render_svstat(&up, 46_500), "up (pid 123) 45 seconds");
        let down = parse_status(&format_status(
            &st(SvcPhase::Down, None, Some(ExitStatus::Code(0)), true, true),
            0,
        ))
        .unwrap();
        assert_eq!(
            render_svstat(&down, 3000),
            "down (exitcode 0) 3 seconds, normally up, want up"
        );
        let killed = parse_status(&format_status(
            &st(
                SvcPhase::Down,
                None,
                Some(ExitStatus::Signal(15)),
                false,
                false,
            ),
            0,
        ))
        .unwrap();
        assert_eq!(render_svstat(&killed, 0), "down (signal SIGTERM) 0 seconds");
        let up_nd = parse_status(&format_status(
            &st(SvcPhase::Up, Some(7), None, false, false),
            0,
        ))
        .unwrap();
        assert_eq!(
            render_svstat(&up_nd, 0),
            "up (pid 7) 0 seconds, normally down, want down"
        );
    }

    #[test]
    fn malformed_status_is_an_error_naming_the_line() {
        let e = parse_status("phase=up\npid=abc\n").unwrap_err();
        assert!(e.contains("pid=abc"), "{e}");
        assert!(parse_status("").is_err());
    }
}
