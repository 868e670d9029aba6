//! Writing a rendered file so that readers only ever see a whole, validated
//! version: temp file in the target's directory, optional validation command
//! on that temp file, fsync, then rename over the target.
//!
//! A failed validation leaves the target untouched and returns the
//! validator's own output, so the caller can show why. A validator that
//! does not finish within its timeout ([`CHECK_TIMEOUT`]) is killed; that
//! too leaves the target untouched.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

/// How long a validation command may run before it is killed. `haproxy -c`
/// on the reconciler's config (IP addresses only, no certificates) takes
/// milliseconds; 10 s leaves room for a loaded machine or a big config,
/// and bounds how long a wedged validator can hold up the reconciler's
/// config write or `render --out`. (A config naming servers by hostname
/// makes `haproxy -c` resolve them, which with a dead resolver can take
/// about that long: such a check times out instead of passing late.)
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a failed validator's output kept for the error message.
const MAX_CHECK_OUTPUT: u64 = 64 * 1024;

/// A validation command such as `haproxy -c -f {}`, split into words once
/// (shell quoting rules, but it never runs through a shell). `{}` in any
/// word is replaced by the temp file's path; with no `{}` the path is
/// appended as the last argument. It is killed when it runs longer than
/// its timeout ([`CHECK_TIMEOUT`] unless set with
/// [`CheckCommand::with_timeout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckCommand {
    words: Vec<String>,
    timeout: Duration,
}

/// Errors of [`write_atomic`] and [`check_only`]. In every case the target
/// is left as it was and no temp file stays behind. Whether the same
/// contents are worth writing again depends on the variant:
///
/// - [`OutputError::CheckFailed`] is the validator's verdict on the
///   contents (it ran to its end and did not exit 0; dying of a signal we
///   did not send counts too): the same contents will be refused again. [`OutputError::is_rejection`] is true for it, and only for it.
/// - [`OutputError::CheckTimedOut`], [`OutputError::CheckSpawn`] and
///   [`OutputError::Io`] say nothing about the contents (a wedged or
///   missing validator, a full disk, a read-only directory, ...): a later
///   attempt with the same contents can succeed.
/// - [`OutputError::BadCheck`] only comes from [`CheckCommand::parse`].
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("invalid check command {0:?}: {1}")]
    BadCheck(String, &'static str),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The validator could not be started (or waited for).
    #[error("cannot run check command `{program}`: {source}")]
    CheckSpawn {
        program: String,
        source: std::io::Error,
    },
    /// The validator ran longer than its timeout and was killed: no verdict.
    #[error("check command `{command}` timed out after {timeout:?} and was killed, {target} left unchanged")]
    CheckTimedOut {
        target: PathBuf,
        command: String,
        timeout: Duration,
    },
    /// The validator's verdict: the contents are refused.
    #[error("validation failed ({status}), {target} left unchanged; `{command}` said:\n{output}")]
    CheckFailed {
        target: PathBuf,
        command: String,
        status: String,
        output: String,
    },
}

impl OutputError {
    /// True when the validator refused the contents ([`OutputError::CheckFailed`]):
    /// writing the same contents again is pointless. False for every error
    /// that says nothing about the contents (timeout, I/O, validator not
    /// started), which a retry can get past.
    pub fn is_rejection(&self) -> bool {
        matches!(self, OutputError::CheckFailed { .. })
    }
}

impl CheckCommand {
    pub fn parse(s: &str) -> Result<Self, OutputError> {
        let words = shlex::split(s).ok_or(OutputError::BadCheck(s.into(), "unbalanced quotes"))?;
        if words.is_empty() {
            return Err(OutputError::BadCheck(s.into(), "empty"));
        }
        Ok(CheckCommand {
            words,
            timeout: CHECK_TIMEOUT,
        })
    }

    /// The same command with another timeout.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        CheckCommand { timeout, ..self }
    }

    /// How long the command may run before it is killed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The program and arguments for checking `file`.
    pub fn argv(&self, file: &Path) -> Vec<String> {
        let p = file.to_string_lossy();
        let mut argv: Vec<String> = self.words.iter().map(|w| w.replace("{}", &p)).collect();
        if !self.words.iter().any(|w| w.contains("{}")) {
            argv.push(p.into_owned());
        }
        argv
    }

    /// Run the check on `file`; Ok when it exits 0, else its output. Killed
    /// (and reaped) after the timeout.
    fn run(&self, file: &Path, target: &Path) -> Result<(), OutputError> {
        let argv = self.argv(file);
        // As a shell would take it back (quoted where needed), for messages.
        let command =
            shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
        // stdout and stderr go to one unlinked temp file, not to pipes:
        // nothing has to be drained while waiting, and a process the
        // validator leaves behind holding them open cannot keep us waiting.
        let io = |source| OutputError::Io {
            path: std::env::temp_dir(),
            source,
        };
        let mut capture = tempfile::tempfile().map_err(io)?;
        let spawn_error = |source| OutputError::CheckSpawn {
            program: argv[0].clone(),
            source,
        };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(capture.try_clone().map_err(io)?)
            .stderr(capture.try_clone().map_err(io)?)
            .spawn()
            .map_err(spawn_error)?;
        let status = match child.wait_timeout(self.timeout) {
            Ok(Some(status)) => status,
            waited => {
                // Timed out (or waiting failed): kill it and reap it, so no
                // validator or zombie outlives the call. A kill error means
                // it has just exited by itself; `wait` reaps it either way.
                let _ = child.kill();
                let _ = child.wait();
                return Err(match waited {
                    Err(source) => spawn_error(source),
                    _ => OutputError::CheckTimedOut {
                        target: target.to_path_buf(),
                        command,
                        timeout: self.timeout,
                    },
                });
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let read = capture.rewind().and_then(|_| {
            (&mut capture)
                .take(MAX_CHECK_OUTPUT)
                .read_to_end(&mut bytes)
        });
        let output = match read {
            Ok(n) if n as u64 == MAX_CHECK_OUTPUT => {
                format!(
                    "{}\n[... cut at {n} bytes]",
                    String::from_utf8_lossy(&bytes)
                )
            }
            Ok(_) => String::from_utf8_lossy(&bytes).trim_end().to_string(),
            Err(e) => format!("(its output could not be read back: {e})"),
        };
        Err(OutputError::CheckFailed {
            target: target.to_path_buf(),
            command,
            status: status.to_string(),
            output,
        })
    }
}

/// Write `contents` to `target` atomically, after `check` (if any) accepted
/// the temp file. The new file keeps the old one's permissions (0644 when
/// there was none).
pub fn write_atomic(
    target: &Path,
    contents: &[u8],
    check: Option<&CheckCommand>,
) -> Result<(), OutputError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError::Io { path, source }
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // A leading dot and the target's name make a stray temp file (after a
    // crash) recognisable and keep it out of `*.cfg` globs.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(contents).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    let mode = std::fs::metadata(target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .map_err(io(tmp.path()))?;
    if let Some(check) = check {
        check.run(tmp.path(), target)?;
    }
    tmp.persist(target).map_err(|e| OutputError::Io {
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Run `check` on `contents` in a temp file of the system temp dir (for
/// `--check` without `--out`).
pub fn check_only(contents: &[u8], check: &CheckCommand) -> Result<(), OutputError> {
    let dir = std::env::temp_dir();
    let mut tmp = tempfile::Builder::new()
        .prefix(".render.")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|source| OutputError::Io {
            path: dir.clone(),
            source,
        })?;
    tmp.write_all(contents).map_err(|source| OutputError::Io {
        path: tmp.path().to_path_buf(),
        source,
    })?;
    check.run(tmp.path(), Path::new("the output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_command_substitutes_or_appends() {
        let c = CheckCommand::parse("haproxy -c -f {}").unwrap();
        assert_eq!(c.argv(Path::new("/t/x")), ["haproxy", "-c", "-f", "/t/x"]);
        let c = CheckCommand::parse("'my tool' --file={}").unwrap();
        assert_eq!(c.argv(Path::new("/t/x")), ["my tool", "--file=/t/x"]);
        let c = CheckCommand::parse("test -s").unwrap();
        assert_eq!(c.argv(Path::new("/t/x")), ["test", "-s", "/t/x"]);
        assert!(CheckCommand::parse("  ").is_err());
        assert!(CheckCommand::parse("a 'b").is_err());
    }

    #[test]
    fn write_replaces_and_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.cfg");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&f, b"new", None).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn failed_check_keeps_old_file_and_reports_output() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.cfg");
        std::fs::write(&f, "old").unwrap();
        // `grep -q good FILE` fails on "bad": a validator with a verdict.
        let check = CheckCommand::parse("grep -q good {}").unwrap();
        let err = write_atomic(&f, b"bad", Some(&check)).unwrap_err();
        assert!(matches!(err, OutputError::CheckFailed { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "old");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        write_atomic(&f, b"good", Some(&check)).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "good");
    }

    #[test]
    fn refusal_reports_stdout_and_stderr_and_status() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.cfg");
        let check =
            CheckCommand::parse("sh -c 'echo to-stdout; echo to-stderr >&2; exit 3'").unwrap();
        let err = write_atomic(&f, b"x", Some(&check)).unwrap_err();
        assert!(err.is_rejection(), "{err:?}");
        let OutputError::CheckFailed { status, output, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(status.contains('3'), "{status}");
        assert_eq!(output, "to-stdout\nto-stderr");
        assert!(!f.exists());
    }

    #[test]
    fn check_only_times_out_too() {
        let check = CheckCommand::parse("sh -c 'exec sleep 600'")
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let err = check_only(b"x", &check).unwrap_err();
        assert!(
            matches!(err, OutputError::CheckTimedOut { timeout, .. } if timeout == Duration::from_millis(200)),
            "{err:?}"
        );
        assert!(!err.is_rejection());
        assert_eq!(
            CheckCommand::parse("true").unwrap().timeout(),
            CHECK_TIMEOUT
        );
    }

    #[test]
    fn missing_validator_is_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.cfg");
        let check = CheckCommand::parse("/nonexistent/validator {}").unwrap();
        let err = write_atomic(&f, b"x", Some(&check))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/validator"), "{err}");
        assert!(!f.exists());
        let err = write_atomic(&f, b"x", Some(&check)).unwrap_err();
        assert!(
            matches!(err, OutputError::CheckSpawn { .. }) && !err.is_rejection(),
            "{err:?}"
        );
    }
}
