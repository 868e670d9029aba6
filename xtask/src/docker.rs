//! The Docker command line, for what the lab's deliverables are made of
//! (`docker ps`, `docker inspect`, `docker logs`) and for the few engine
//! operations testcontainers does not cover (networks, image builds).

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// Run `docker ARGS...` and return its stdout; a failure carries stderr.
pub fn run<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let out = Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker logs CONTAINER`: the container's stdout then its stderr.
pub fn logs(container: &str) -> Result<String> {
    let out = Command::new("docker")
        .args(["logs", container])
        .stdin(Stdio::null())
        .output()
        .context("running docker logs")?;
    if !out.status.success() {
        bail!(
            "docker logs {container} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

/// True when `docker ARGS` succeeds (for existence checks).
pub fn ok<I, S>(args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn image_exists(tag: &str) -> bool {
    ok(["image", "inspect", tag])
}

/// The lab's network: a user-defined bridge with Docker's embedded DNS.
pub struct NetworkSpec<'a> {
    pub name: &'a str,
    pub subnet: &'a str,
}

/// The lab's `heig` network (192.168.42.0/24, as in the lab).
pub const HEIG: NetworkSpec<'static> = NetworkSpec {
    name: "heig",
    subnet: "192.168.42.0/24",
};

/// Create the network unless it exists (an existing one is reused as is).
pub fn ensure_network(spec: &NetworkSpec) -> Result<()> {
    if ok(["network", "inspect", spec.name]) {
        return Ok(());
    }
    run([
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        spec.subnet,
        spec.name,
    ])?;
    Ok(())
}

/// Remove containers by name, ignoring the ones that do not exist.
pub fn remove_containers(names: &[&str]) {
    for name in names {
        let _ = run(["rm", "-f", "-v", name]);
    }
}

pub fn remove_network(name: &str) {
    let _ = run(["network", "rm", name]);
}

/// The container's IPv4 address on `network`.
pub fn ip_on(container: &str, network: &str) -> Result<std::net::Ipv4Addr> {
    let fmt = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let out = run(["inspect", "-f", &fmt, container])?;
    out.trim()
        .parse()
        .with_context(|| format!("container {container} has no IPv4 address on {network}: {out:?}"))
}

/// Exec a command in a running container, returning stdout.
pub fn exec(container: &str, cmd: &[&str]) -> Result<String> {
    let mut args = vec!["exec", container];
    args.extend_from_slice(cmd);
    run(args)
}
