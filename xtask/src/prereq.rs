//! Installing and starting what a fresh machine lacks.
//!
//! On a Debian-like system and as root, missing tools are installed with
//! apt from Debian's repositories and `dockerd` is started in the
//! background when no engine answers. Anywhere else we stop with one
//! sentence saying what to install: we never half-configure a machine.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::project;

/// apt must not run twice at once (tests call these helpers in parallel).
static APT: Mutex<bool> = Mutex::new(false);

fn on_path(bin: &str) -> bool {
    if bin.contains('/') {
        return Path::new(bin).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(bin).is_file()))
        .unwrap_or(false)
}

fn can_apt() -> bool {
    project::is_root() && Path::new("/etc/debian_version").exists() && on_path("apt-get")
}

/// Install Debian packages with apt (runs `apt-get update` once per process).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let mut updated = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !can_apt() {
        bail!(
            "missing Debian packages {}: install them (as root: apt-get install {})",
            packages.join(", "),
            packages.join(" ")
        );
    }
    if !*updated {
        eprintln!("xtask: apt-get update");
        let status = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status()
            .context("running apt-get update")?;
        if !status.success() {
            bail!("apt-get update failed ({status}); check the Debian sources in /etc/apt");
        }
        *updated = true;
    }
    eprintln!("xtask: apt-get install {}", packages.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", packages.join(" "));
    }
    Ok(())
}

/// Make sure `bin` is available, installing Debian package `package` if not.
pub fn ensure_tool(bin: &str, package: &str) -> Result<()> {
    if on_path(bin) {
        return Ok(());
    }
    apt_install(&[package])?;
    if !on_path(bin) {
        bail!("Debian package {package} is installed but {bin} is still not on PATH");
    }
    Ok(())
}

/// A Docker engine that answers, installing Debian's `docker.io` and
/// starting `dockerd` when needed.
pub async fn ensure_docker() -> Result<()> {
    static STARTED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = STARTED.lock().await;
    if crate::engine::answers().await {
        return Ok(());
    }
    let remote = std::env::var("DOCKER_HOST")
        .map(|h| !h.is_empty() && !h.starts_with("unix://"))
        .unwrap_or(false);
    if remote {
        bail!(
            "the Docker engine at DOCKER_HOST={} does not answer: start it or unset DOCKER_HOST",
            std::env::var("DOCKER_HOST").unwrap_or_default()
        );
    }
    if !can_apt() {
        bail!("no Docker engine answers: install and start Docker (Debian: apt-get install docker.io, then start dockerd), or set DOCKER_HOST");
    }
    if !on_path("dockerd") {
        tokio::task::spawn_blocking(|| apt_install(&["docker.io", "docker-compose"])).await??;
    }
    if crate::engine::answers().await {
        return Ok(());
    }
    let log_path = project::target_dir().join("dockerd.log");
    std::fs::create_dir_all(project::target_dir())?;
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    eprintln!(
        "xtask: starting dockerd in the background (log: {})",
        log_path.display()
    );
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if crate::engine::answers().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!(
        "dockerd did not answer within 90 s: see {}",
        log_path.display()
    )
}

/// `docker-compose` (v1, Debian's) or `docker compose` (v2): the command
/// words to call it with. Found once per process, and said once (with its
/// version).
pub fn compose_command() -> Result<Vec<String>> {
    static FOUND: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    if let Some(words) = FOUND.get() {
        return Ok(words.clone());
    }
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let words: Vec<String> = if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        ensure_tool("docker-compose", "docker-compose")?;
        vec!["docker-compose".into()]
    };
    let version = Command::new(&words[0])
        .args(&words[1..])
        .args(["version", "--short"])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    eprintln!("   .. compose tool: `{}` {version}", words.join(" "));
    Ok(FOUND.get_or_init(|| words).clone())
}

/// Below this much free space where cargo builds, a build is sure to fail
/// half-way with "No space left on device" from rustc; we say so first.
const MIN_FREE_BYTES: u64 = 1 << 30;

/// Enough free disk space for cargo's target directory, or one sentence
/// saying what to do.
pub fn ensure_disk_space() -> Result<()> {
    let target = project::target_dir();
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let stat = nix::sys::statvfs::statvfs(&target)
        .with_context(|| format!("reading the free space of {}", target.display()))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < MIN_FREE_BYTES {
        bail!(
            "only {} MiB free on the disk of {} (a build needs 1 GiB, a clean one about 4 GiB): free some space (cargo clean, docker system prune) and run again",
            free >> 20,
            target.display()
        );
    }
    Ok(())
}

/// Everything the test suite uses on the host, installed in one apt call.
pub async fn ensure_test_tools() -> Result<()> {
    ensure_disk_space()?;
    let wanted = [
        ("debootstrap", "debootstrap"),
        ("chromium", "chromium"),
        ("haproxy", "haproxy"),
        ("serf", "serf"),
        ("wrk", "wrk"),
        ("unshare", "util-linux"),
        ("docker-compose", "docker-compose"),
        ("redis-server", "redis-server"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !on_path(bin) && !on_path(&format!("/usr/sbin/{bin}")))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        tokio::task::spawn_blocking(move || apt_install(&missing)).await??;
    }
    ensure_docker().await
}
