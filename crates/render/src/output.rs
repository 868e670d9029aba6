//! Writing a rendered file so that readers only ever see a whole, validated
//! version: temp file in the target's directory, optional validation command
//! on that temp file, fsync, then rename over the target.
//!
//! A failed validation leaves the target untouched and returns the
//! validator's own output, so the caller can show why.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A validation command such as `haproxy -c -f {}`, split into words once
/// (shell quoting rules, but it never runs through a shell). `{}` in any
/// word is replaced by the temp file's path; with no `{}` the path is
/// appended as the last argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckCommand {
    words: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("invalid check command {0:?}: {1}")]
    BadCheck(String, &'static str),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run check command `{program}`: {source}")]
    CheckSpawn {
        program: String,
        source: std::io::Error,
    },
    #[error("validation failed ({status}), {target} left unchanged; `{command}` said:\n{output}")]
    CheckFailed {
        target: PathBuf,
        command: String,
        status: String,
        output: String,
    },
}

impl CheckCommand {
    pub fn parse(s: &str) -> Result<Self, OutputError> {
        let words = shlex::split(s).ok_or(OutputError::BadCheck(s.into(), "unbalanced quotes"))?;
        if words.is_empty() {
            return Err(OutputError::BadCheck(s.into(), "empty"));
        }
        Ok(CheckCommand { words })
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

    /// Run the check on `file`; Ok when it exits 0, else its output.
    fn run(&self, file: &Path, target: &Path) -> Result<(), OutputError> {
        let argv = self.argv(file);
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| OutputError::CheckSpawn {
                program: argv[0].clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Err(OutputError::CheckFailed {
            target: target.to_path_buf(),
            command: argv.join(" "),
            status: out.status.to_string(),
            output: output.trim_end().to_string(),
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
    fn missing_validator_is_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.cfg");
        let check = CheckCommand::parse("/nonexistent/validator {}").unwrap();
        let err = write_atomic(&f, b"x", Some(&check))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/validator"), "{err}");
        assert!(!f.exists());
    }
}
