//! The Docker engine through its API (bollard, the client testcontainers is
//! built on), for what testcontainers does not cover: the lab's network,
//! connecting and disconnecting containers, inspecting them, the
//! engine check and the `docker ps` / `docker inspect` / `docker logs`
//! deliverables, made from the API as the CLI prints them. Every call is
//! async; nothing here spawns the `docker` command.

use anyhow::{anyhow, bail, Context, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerInspectResponse, EndpointIpamConfig, EndpointSettings, Ipam, IpamConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, TopOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A client of the engine `DOCKER_HOST` names (the local socket when
/// unset). One per call: a client's connection pool belongs to the tokio
/// runtime it was first used on, and tests run one runtime each.
pub fn docker() -> Result<Docker> {
    Docker::connect_with_defaults().context("connecting to the Docker engine (DOCKER_HOST)")
}

/// True when the engine answers a ping within 5 s.
pub async fn answers() -> bool {
    let Ok(d) = docker() else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), d.ping()).await,
        Ok(Ok(_))
    )
}

/// The engine's version and API version, for messages.
pub async fn version() -> Result<String> {
    let v = docker()?.version().await?;
    Ok(format!(
        "{} (API {})",
        v.version.unwrap_or_default(),
        v.api_version.unwrap_or_default()
    ))
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// True when the image `tag` is present locally.
pub async fn image_exists(tag: &str) -> Result<bool> {
    match docker()?.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("inspecting image {tag}")),
    }
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

/// Create the network unless it exists (an existing one is reused as is);
/// it carries `label`, so a sweep finds it.
pub async fn ensure_network(spec: &NetworkSpec<'_>, label: &str) -> Result<()> {
    let d = docker()?;
    match d
        .inspect_network(
            spec.name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting network {}", spec.name)),
    }
    d.create_network(NetworkCreateRequest {
        name: spec.name.into(),
        driver: Some("bridge".into()),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(spec.subnet.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        labels: Some(HashMap::from([(label.to_string(), "1".to_string())])),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating network {} ({})", spec.name, spec.subnet))?;
    Ok(())
}

/// Remove a network; a missing one is not an error.
pub async fn remove_network(name: &str) -> Result<()> {
    match docker()?.remove_network(name).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing network {name}")),
    }
}

/// `docker network connect [--ip IP] [--alias A]... NETWORK CONTAINER`.
pub async fn connect(
    network: &str,
    container: &str,
    ip: Option<&str>,
    aliases: &[&str],
) -> Result<()> {
    docker()?
        .connect_network(
            network,
            NetworkConnectRequest {
                container: container.into(),
                endpoint_config: Some(EndpointSettings {
                    ipam_config: ip.map(|ip| EndpointIpamConfig {
                        ipv4_address: Some(ip.into()),
                        ..Default::default()
                    }),
                    aliases: Some(aliases.iter().map(|a| a.to_string()).collect()),
                    ..Default::default()
                }),
            },
        )
        .await
        .with_context(|| format!("connecting {container} to {network}"))
}

/// `docker network disconnect NETWORK CONTAINER`.
pub async fn disconnect(network: &str, container: &str) -> Result<()> {
    docker()?
        .disconnect_network(
            network,
            NetworkDisconnectRequest {
                container: container.into(),
                force: Some(false),
            },
        )
        .await
        .with_context(|| format!("disconnecting {container} from {network}"))
}

/// `docker inspect CONTAINER`, typed.
pub async fn inspect(container: &str) -> Result<ContainerInspectResponse> {
    docker()?
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .with_context(|| format!("inspecting container {container}"))
}

/// `docker inspect CONTAINER` as the CLI prints it: a JSON array, indented
/// with four spaces.
pub async fn inspect_json(container: &str) -> Result<String> {
    let info = inspect(container).await?;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&[info], &mut ser)?;
    out.push(b'\n');
    Ok(String::from_utf8(out)?)
}

/// The container's IPv4 address on `network`.
pub async fn ip_on(container: &str, network: &str) -> Result<Ipv4Addr> {
    let info = inspect(container).await?;
    let ip = info
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .unwrap_or_default();
    ip.parse()
        .with_context(|| format!("container {container} has no IPv4 address on {network}: {ip:?}"))
}

/// Where the container's TCP `port` is published on the host.
pub async fn published(container: &str, port: u16) -> Result<SocketAddr> {
    let info = inspect(container).await?;
    let bindings = info
        .network_settings
        .and_then(|s| s.ports)
        .and_then(|mut p| p.remove(&format!("{port}/tcp")))
        .flatten()
        .unwrap_or_default();
    bindings
        .iter()
        .find_map(|b| {
            let ip = b.host_ip.as_deref().unwrap_or("0.0.0.0");
            let port = b.host_port.as_deref()?;
            format!("{ip}:{port}").parse::<SocketAddr>().ok()
        })
        .with_context(|| format!("{container}:{port} is not published"))
}

/// The container's main process id on the host, and its exit code.
pub async fn state(container: &str) -> Result<(i64, Option<i64>)> {
    let st = inspect(container)
        .await?
        .state
        .with_context(|| format!("{container} has no state"))?;
    Ok((st.pid.unwrap_or(0), st.exit_code))
}

/// `docker logs CONTAINER`: its stdout, then its stderr.
pub async fn logs(container: &str) -> Result<String> {
    let d = docker()?;
    let mut stream = d.logs(
        container,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            tail: "all".into(),
            ..Default::default()
        }),
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(frame) = stream.next().await {
        match frame.with_context(|| format!("reading the logs of {container}"))? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.extend_from_slice(&message)
            }
            LogOutput::StdErr { message } => err.extend_from_slice(&message),
            LogOutput::StdIn { .. } => {}
        }
    }
    out.extend_from_slice(&err);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What a command run in a container said, and how it ended.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` in a running container (any container, by name or id),
/// waiting for it to end.
pub async fn exec_output(container: &str, cmd: &[&str]) -> Result<ExecOutput> {
    let d = docker()?;
    let created = d
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd.to_vec()),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("docker exec {container} {}", cmd.join(" ")))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    if let StartExecResults::Attached { mut output, .. } = d.start_exec(&created.id, None).await? {
        while let Some(frame) = output.next().await {
            match frame? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out.extend_from_slice(&message)
                }
                LogOutput::StdErr { message } => err.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
    }
    let code = d.inspect_exec(&created.id).await?.exit_code.unwrap_or(-1);
    Ok(ExecOutput {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

/// [`exec_output`]'s stdout; a non-zero exit is an error carrying stderr.
pub async fn exec(container: &str, cmd: &[&str]) -> Result<String> {
    let out = exec_output(container, cmd).await?;
    if out.code != 0 {
        bail!(
            "docker exec {container} {} failed (exit {}): {}",
            cmd.join(" "),
            out.code,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

/// `docker exec -d CONTAINER CMD...`: started, not waited for.
pub async fn exec_detached(container: &str, cmd: &[&str]) -> Result<()> {
    let d = docker()?;
    let what = || format!("docker exec -d {container} {}", cmd.join(" "));
    let created = d
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                ..Default::default()
            },
        )
        .await
        .with_context(what)?;
    d.start_exec(
        &created.id,
        Some(bollard::exec::StartExecOptions {
            detach: true,
            ..Default::default()
        }),
    )
    .await
    .with_context(what)?;
    Ok(())
}

/// `docker kill [--signal SIGNAL] CONTAINER`.
pub async fn kill(container: &str, signal: &str) -> Result<()> {
    docker()?
        .kill_container(
            container,
            Some(KillContainerOptions {
                signal: signal.into(),
            }),
        )
        .await
        .with_context(|| format!("docker kill --signal {signal} {container}"))
}

/// `docker rm -f -v CONTAINER`; a missing one is not an error.
pub async fn remove(container: &str) -> Result<()> {
    match docker()?
        .remove_container(
            container,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing container {container}")),
    }
}

/// `docker top CONTAINER -o pid,comm`: (pid, command name) rows.
pub async fn top(container: &str) -> Result<Vec<(String, String)>> {
    let top = docker()?
        .top_processes(
            container,
            Some(TopOptions {
                ps_args: "-o pid,comm".into(),
            }),
        )
        .await
        .with_context(|| format!("docker top {container}"))?;
    Ok(top
        .processes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|row| Some((row.first()?.clone(), row.get(1)?.clone())))
        .collect())
}

/// The containers carrying `label` (running or not), by id.
pub async fn labelled(label: &str) -> Result<Vec<String>> {
    let list = docker()?
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
            ..Default::default()
        }))
        .await
        .context("listing containers")?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Remove every container carrying `label`: what a `--keep` run left
/// running, or what a crashed run could not remove.
pub async fn remove_labelled(label: &str) -> Result<usize> {
    let ids = labelled(label).await?;
    for id in &ids {
        remove(id).await?;
    }
    Ok(ids.len())
}

/// `docker ps`: the running containers, as the CLI's table.
pub async fn ps_table() -> Result<String> {
    let list = docker()?
        .list_containers(None::<ListContainersOptions>)
        .await
        .context("listing containers")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut rows = vec![[
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
        "NAMES".into(),
    ]];
    for c in list {
        let id: String = c.id.unwrap_or_default().chars().take(12).collect();
        let mut ports = c.ports.unwrap_or_default();
        ports.sort_by_key(|p| (p.private_port, p.ip.clone()));
        let ports = ports
            .iter()
            .map(|p| {
                let proto = p.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".into());
                match (&p.ip, p.public_port) {
                    (Some(ip), Some(public)) => {
                        format!("{ip}:{public}->{}/{proto}", p.private_port)
                    }
                    _ => format!("{}/{proto}", p.private_port),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let names = c
            .names
            .unwrap_or_default()
            .iter()
            .map(|n| n.trim_start_matches('/').to_string())
            .collect::<Vec<_>>()
            .join(",");
        rows.push([
            id,
            c.image.unwrap_or_default(),
            format!("\"{}\"", ellipsis(&c.command.unwrap_or_default(), 20)),
            format!("{} ago", human_duration(now - c.created.unwrap_or(now))),
            c.status.unwrap_or_default(),
            ports,
            names,
        ]);
    }
    Ok(table(&rows))
}

/// Columns padded as Go's tabwriter does for the CLI (three spaces
/// between columns, the last one unpadded).
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                let pad = widths[i] + 3 - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// At most `max` characters, the last one `…` when cut (as the CLI does).
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// A duration in words, as Docker's `units.HumanDuration`.
fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (minutes, hours) = (secs / 60, (secs as f64 / 3600.0).round() as i64);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// An error for a container the scenario does not know.
pub fn unknown(name: &str) -> anyhow::Error {
    anyhow!("container {name} was not started by this scenario")
}

// deploy scenarios

/// `docker ps -q [-a] --filter K=V...`: the ids of the containers the
/// filters select, sent as the CLI sends them (`label` filters must all
/// match), newest first; running ones only unless `all`.
pub async fn containers_with_filters(filters: &[(&str, &str)], all: bool) -> Result<Vec<String>> {
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in filters {
        by_key.entry(k.to_string()).or_default().push(v.to_string());
    }
    let list = docker()?
        .list_containers(Some(ListContainersOptions {
            all,
            filters: Some(by_key),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing containers with filters {filters:?}"))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// The engine's swarm state (`docker info`'s `Swarm.LocalNodeState`):
/// `inactive`, `pending`, `active`, `error` or `locked`.
pub async fn swarm_state() -> Result<String> {
    let info = docker()?
        .info()
        .await
        .context("reading the engine's info (docker info)")?;
    Ok(info
        .swarm
        .and_then(|s| s.local_node_state)
        .map(|s| s.to_string())
        .unwrap_or_default())
}

/// True when the network `name` exists (`docker network inspect NAME`).
pub async fn network_exists(name: &str) -> Result<bool> {
    match docker()?
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("inspecting network {name}")),
    }
}

/// The container's hostname (`docker inspect -f '{{.Config.Hostname}}'`).
pub async fn hostname(container: &str) -> Result<String> {
    inspect(container)
        .await?
        .config
        .and_then(|c| c.hostname)
        .with_context(|| format!("container {container} has no hostname"))
}

/// The container's IPv4 addresses on all its networks, space-separated
/// (`{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}`, trimmed).
pub async fn ips(container: &str) -> Result<String> {
    let info = inspect(container).await?;
    let mut ips: Vec<String> = info
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default()
        .into_values()
        .filter_map(|e| e.ip_address)
        .filter(|ip| !ip.is_empty())
        .collect();
    ips.sort();
    Ok(ips.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_cli_prints_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(42), "42 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn the_table_pads_columns_by_three_and_cuts_long_commands() {
        let rows = [
            ["CONTAINER ID".to_string(), "NAMES".to_string()],
            ["abc".to_string(), "ha".to_string()],
        ];
        assert_eq!(table(&rows), "CONTAINER ID   NAMES\nabc            ha\n");
        assert_eq!(ellipsis("/init", 20), "/init");
        assert_eq!(
            ellipsis("docker-entrypoint.sh node index.js", 20),
            "docker-entrypoint.s…"
        );
    }
}
