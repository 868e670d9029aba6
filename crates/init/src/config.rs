//! Where things are and the tunables, read from the environment.
//!
//! Every path hangs off one root (`INIT_ROOT`, default `/`) so tests can run
//! a whole container layout in a temporary directory. Bad values are refused
//! with one message naming the variable and the value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::machine::{Settings, Stage2Failure};

/// The directories of the s6-overlay v1 layout under a root.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    /// The layout under `$INIT_ROOT` (or `/`).
    pub fn from_env() -> Layout {
        let root = std::env::var_os("INIT_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Layout { root }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `/etc/cont-init.d`
    pub fn cont_init(&self) -> PathBuf {
        self.at("etc/cont-init.d")
    }
    /// `/etc/services.d`
    pub fn services(&self) -> PathBuf {
        self.at("etc/services.d")
    }
    /// `/etc/cont-finish.d`
    pub fn cont_finish(&self) -> PathBuf {
        self.at("etc/cont-finish.d")
    }
    /// `/var/run/s6/container_environment`
    pub fn container_env(&self) -> PathBuf {
        self.at("var/run/s6/container_environment")
    }
    /// `/var/run/s6/services` (control points)
    pub fn control_root(&self) -> PathBuf {
        self.at("var/run/s6/services")
    }
    /// `/var/run/s6/services/NAME`
    pub fn control_dir(&self, name: &str) -> PathBuf {
        self.control_root().join(name)
    }
}

/// Output options.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// `INIT_LOG_PREFIX=1`: prefix every service output line with `NAME: `.
    pub prefix: bool,
}

fn var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{name}={v:?} is not valid UTF-8")),
    }
}

fn millis(name: &str, default: u64) -> Result<Duration, String> {
    match var(name)? {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name}={v:?} is not a number of milliseconds")),
    }
}

fn flag(name: &str) -> Result<bool, String> {
    match var(name)?.as_deref() {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(format!("{name}={v:?} must be 0 or 1")),
    }
}

/// Settings from the environment (see the crate docs for each variable).
pub fn settings_from_env(pid1: bool) -> Result<(Settings, Output), String> {
    let stage2 = match var("S6_BEHAVIOUR_IF_STAGE2_FAILS")?
        .as_deref()
        .map(str::trim)
    {
        None | Some("2") => Stage2Failure::Stop,
        Some("1") => Stage2Failure::Warn,
        Some("0") => Stage2Failure::Continue,
        Some(v) => {
            return Err(format!(
                "S6_BEHAVIOUR_IF_STAGE2_FAILS={v:?} must be 0 (continue), 1 (warn) or 2 (stop)"
            ))
        }
    };
    let settings = Settings {
        grace: millis("S6_KILL_GRACETIME", 3000)?,
        restart_delay: millis("INIT_RESTART_DELAY_MS", 1000)?,
        backoff_max: millis("INIT_BACKOFF_MAX_MS", 30_000)?,
        stable_after: millis("INIT_STABLE_MS", 10_000)?,
        finish_timeout: millis("S6_KILL_FINISH_MAXTIME", 5000)?,
        kill_wait: Duration::from_millis(2000),
        stage2,
        broadcast: pid1,
    };
    let output = Output {
        prefix: flag("INIT_LOG_PREFIX")?,
    };
    Ok((settings, output))
}

/// Entries of a script directory, sorted, hidden names skipped; a missing
/// directory is empty.
pub fn list_dir(dir: &Path, want_dirs: bool) -> Result<Vec<String>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            eprintln!(
                "init: skipping {:?} in {}: name is not UTF-8",
                entry.file_name(),
                dir.display()
            );
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks: a service may be a link to a directory.
        let is_dir = entry.path().is_dir();
        if is_dir == want_dirs {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
