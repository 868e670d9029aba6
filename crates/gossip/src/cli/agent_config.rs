//! `gossip agent`'s configuration: Serf's agent flags merged over its JSON
//! config files (read in `config_file.rs`), checked, and turned into the
//! [`AgentConfig`] that `agent::start` takes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::flags::{parse_duration, FlagError, Flags, Kind};
use super::host::{hostname, interface_ipv4};
use crate::handler::HandlerRunner;
use crate::model::AgentConfig;
use crate::rpc::LogLevel;
use crate::serf::USER_EVENT_SIZE_MAX;

const DEFAULT_PORT: u16 = 7946;

pub(super) const FLAGS: &[(&str, Kind)] = &[
    ("advertise", Kind::Value),
    ("bind", Kind::Value),
    ("broadcast-timeout", Kind::Value),
    ("coalesce-period", Kind::Value),
    ("config-dir", Kind::List),
    ("config-file", Kind::List),
    ("disable-compression", Kind::Bool),
    ("discover", Kind::Value),
    ("encrypt", Kind::Value),
    ("event-handler", Kind::List),
    ("handler-timeout", Kind::Value),
    ("iface", Kind::Value),
    ("join", Kind::List),
    ("keyring-file", Kind::Value),
    ("log-level", Kind::Value),
    ("node", Kind::Value),
    ("profile", Kind::Value),
    ("protocol", Kind::Value),
    ("quiescent-period", Kind::Value),
    ("rejoin", Kind::Bool),
    ("replay", Kind::Bool),
    ("retry-interval", Kind::Value),
    ("retry-join", Kind::List),
    ("retry-max", Kind::Value),
    ("role", Kind::Value),
    ("rpc-addr", Kind::Value),
    ("rpc-auth", Kind::Value),
    ("snapshot", Kind::Value),
    ("syslog", Kind::Bool),
    ("tag", Kind::List),
    ("tags-file", Kind::Value),
];

const HELP: &str = "
Usage: gossip agent [options]

  Starts the agent and runs until it is told to leave (RPC `leave`,
  SIGINT or SIGTERM: graceful leave; a second signal exits at once).
  Config keys skip_leave_on_interrupt=true and leave_on_terminate=false
  make SIGINT or SIGTERM exit without a leave (code 1), as in Serf.

Options (one or two dashes; Serf's JSON config keys in brackets):
  -advertise=addr           Address advertised to peers [advertise]
  -bind=0.0.0.0:7946        Gossip address [bind]
  -broadcast-timeout=5s     How long a leave waits for its messages to be
                            sent [broadcast_timeout]
  -coalesce-period=3s       Extension: member events are batched for at most
                            this long... [coalesce_period]
  -config-file=foo          JSON config file, repeatable
  -config-dir=foo           Directory of *.json config files, repeatable
  -disable-compression      Send messages uncompressed [enable_compression=false]
  -encrypt=key              Base64 gossip encryption key [encrypt_key]
  -event-handler=[filter=]script  Event handler, repeatable [event_handlers]
  -handler-timeout=30s      Kill a handler running longer than this [handler_timeout]
  -iface=eth0               Bind to this interface's address [interface]
  -join=addr                Join this address at start, repeatable [start_join]
  -keyring-file=path        Keyring file [keyring_file]
  -log-level=info           trace, debug, info, warn, err [log_level]
  -node=hostname            Node name [node_name]
  -profile=lan              lan, wan or local [profile]
  -protocol=5               Serf protocol; only 5 (serf's default) [protocol]
  -quiescent-period=1s      Extension: ...or until this long without a new one
                            (Serf hard-codes 3 s and 1 s) [quiescent_period]
  -rejoin                   Rejoin after a previous leave [rejoin_after_leave]
  -replay                   Replay past user events on join [replay_on_join]
  -retry-join=addr          Join this address, retrying, repeatable [retry_join]
  -retry-interval=30s       Time between retry-join attempts [retry_interval]
  -retry-max=0              Retry-join attempts, 0 = forever [retry_max_attempts]
  -rpc-addr=127.0.0.1:7373  RPC address [rpc_addr]
  -rpc-auth=token           RPC auth token [rpc_auth]
  -snapshot=path            Snapshot file [snapshot_path]
  -tag key=value            Tag, repeatable [tags]
  -tags-file=path           Tag persistence file [tags_file]
";

/// Everything Serf's agent takes from config files and flags, before
/// validation. Lists accumulate across files and flags; scalars: last wins.
#[derive(Debug, Default, Clone)]
pub struct AgentSettings {
    pub node_name: Option<String>,
    pub role: Option<String>,
    pub tags: Vec<(String, String)>,
    pub tags_file: Option<String>,
    pub bind: Option<String>,
    pub advertise: Option<String>,
    pub interface: Option<String>,
    pub encrypt_key: Option<String>,
    pub keyring_file: Option<String>,
    pub log_level: Option<String>,
    pub rpc_addr: Option<String>,
    pub rpc_auth: Option<String>,
    pub replay_on_join: bool,
    pub start_join: Vec<String>,
    pub event_handlers: Vec<String>,
    pub profile: Option<String>,
    pub snapshot_path: Option<String>,
    pub rejoin_after_leave: bool,
    pub disable_name_resolution: bool,
    pub disable_coordinates: bool,
    pub retry_join: Vec<String>,
    pub retry_max_attempts: Option<u32>,
    pub retry_interval: Option<String>,
    pub handler_timeout: Option<String>,
    pub coalesce_period: Option<String>,
    pub quiescent_period: Option<String>,
    pub leave_on_terminate: Option<bool>,
    pub skip_leave_on_interrupt: Option<bool>,
    pub reconnect_interval: Option<String>,
    pub reconnect_timeout: Option<String>,
    pub tombstone_timeout: Option<String>,
    pub broadcast_timeout: Option<String>,
    pub enable_compression: Option<bool>,
    pub protocol: Option<i64>,
    pub user_event_size_limit: Option<u64>,
    pub query_size_limit: Option<u64>,
    pub query_response_size_limit: Option<u64>,
}

impl AgentSettings {
    /// Applies command-line flags over the files' settings.
    pub(super) fn merge_flags(&mut self, f: &Flags) -> Result<(), String> {
        let set = |slot: &mut Option<String>, name: &str| {
            if let Some(v) = f.value(name) {
                *slot = Some(v.to_string());
            }
        };
        set(&mut self.node_name, "node");
        set(&mut self.role, "role");
        set(&mut self.tags_file, "tags-file");
        set(&mut self.bind, "bind");
        set(&mut self.advertise, "advertise");
        set(&mut self.interface, "iface");
        set(&mut self.encrypt_key, "encrypt");
        set(&mut self.keyring_file, "keyring-file");
        set(&mut self.log_level, "log-level");
        set(&mut self.rpc_addr, "rpc-addr");
        set(&mut self.rpc_auth, "rpc-auth");
        set(&mut self.profile, "profile");
        set(&mut self.snapshot_path, "snapshot");
        set(&mut self.retry_interval, "retry-interval");
        set(&mut self.handler_timeout, "handler-timeout");
        set(&mut self.coalesce_period, "coalesce-period");
        set(&mut self.quiescent_period, "quiescent-period");
        set(&mut self.broadcast_timeout, "broadcast-timeout");
        if let Some(p) = f.value("protocol") {
            self.protocol = Some(
                p.parse()
                    .map_err(|_| format!("Invalid -protocol '{p}': not a whole number"))?,
            );
        }
        if f.bool("replay", false) {
            self.replay_on_join = true;
        }
        if f.bool("rejoin", false) {
            self.rejoin_after_leave = true;
        }
        if f.bool("disable-compression", false) {
            self.enable_compression = Some(false);
        }
        if let Some(n) = f.value("retry-max") {
            self.retry_max_attempts = Some(
                n.parse()
                    .map_err(|_| format!("Invalid -retry-max '{n}': not a whole number"))?,
            );
        }
        for t in f.list("tag") {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| format!("Invalid tag: '{t}'"))?;
            self.tags.retain(|(k2, _)| k2 != k);
            self.tags.push((k.to_string(), v.to_string()));
        }
        self.start_join.extend(f.list("join"));
        self.retry_join.extend(f.list("retry-join"));
        self.event_handlers.extend(f.list("event-handler"));
        Ok(())
    }
}

/// Builds the agent configuration from `gossip agent` arguments (flags and
/// the config files they name). Returns the config and the `-join`
/// addresses, which the command joins itself after start (to print Serf's
/// "Join completed" line).
pub fn agent_config(argv: &[String]) -> Result<(AgentConfig, Vec<String>), String> {
    let f = match Flags::parse(FLAGS, argv) {
        Ok(f) => f,
        Err(FlagError::Help) => return Err(HELP.trim().to_string()),
        Err(FlagError::Bad(m)) => return Err(m),
    };
    if let Some(extra) = f.args.first() {
        return Err(format!(
            "unexpected argument '{extra}' (agent takes only flags)"
        ));
    }
    let mut s = AgentSettings::default();
    for file in f.list("config-file") {
        s.merge_file(Path::new(&file))?;
    }
    for dir in f.list("config-dir") {
        s.merge_dir(Path::new(&dir))?;
    }
    s.merge_flags(&f)?;
    if f.is_set("discover") {
        return Err("-discover (mDNS) is not supported".into());
    }
    if f.is_set("syslog") {
        return Err("-syslog is not supported: the agent logs to stdout".into());
    }
    settings_to_config(s)
}

pub(super) fn settings_to_config(
    mut s: AgentSettings,
) -> Result<(AgentConfig, Vec<String>), String> {
    let node_name = match s.node_name.take().filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => hostname().map_err(|e| format!("Error determining hostname: {e}"))?,
    };
    let mut c = AgentConfig {
        node_name,
        ..AgentConfig::default()
    };
    if let Some(role) = s.role.take() {
        s.tags.retain(|(k, _)| k != "role");
        s.tags.push(("role".into(), role));
    }
    if let Some(tf) = s.tags_file.take() {
        let path = PathBuf::from(&tf);
        if path.exists() {
            if !s.tags.is_empty() {
                return Err("Tags config not allowed while using tag files".into());
            }
            s.tags = read_tags_file(&path)?;
        }
        c.tags_file = Some(path);
    }
    c.tags = s.tags;
    if let Some(b) = s.bind.as_deref() {
        c.bind = parse_addr(b, DEFAULT_PORT).map_err(|e| format!("Invalid bind address: {e}"))?;
    }
    if let Some(iface) = s.interface.as_deref() {
        let ip = interface_ipv4(iface)?;
        if !c.bind.ip().is_unspecified() && c.bind.ip() != IpAddr::V4(ip) {
            return Err(format!(
                "Interface '{iface}' has no '{}' address",
                c.bind.ip()
            ));
        }
        c.bind = SocketAddr::new(IpAddr::V4(ip), c.bind.port());
    }
    if let Some(a) = s.advertise.as_deref() {
        c.advertise = Some(
            parse_addr(a, c.bind.port()).map_err(|e| format!("Invalid advertise address: {e}"))?,
        );
    }
    if let Some(r) = s.rpc_addr.as_deref() {
        c.rpc_addr = parse_addr(r, 7373).map_err(|e| format!("Invalid RPC address: {e}"))?;
    }
    c.rpc_auth_key = s.rpc_auth.filter(|k| !k.is_empty());
    if let Some(k) = s.encrypt_key.as_deref() {
        let key = base64::engine::general_purpose::STANDARD
            .decode(k.trim())
            .map_err(|e| format!("Invalid encryption key '{k}': {e}"))?;
        if ![16, 24, 32].contains(&key.len()) {
            return Err(format!(
                "Invalid encryption key '{k}': must be 16, 24 or 32 bytes, not {}",
                key.len()
            ));
        }
        c.encrypt_keys.push(key);
    }
    c.keyring_file = s.keyring_file.map(PathBuf::from);
    if let Some(l) = s.log_level {
        if LogLevel::parse(&l).is_none() {
            return Err(format!(
                "Invalid log level: {l}. Valid log levels are: [TRACE DEBUG INFO WARN ERR]"
            ));
        }
        c.log_level = l.to_lowercase();
    }
    if let Some(p) = s.profile {
        if !["lan", "wan", "local"].contains(&p.as_str()) {
            return Err(format!("Unknown profile: {p}"));
        }
        c.profile = p;
    }
    c.snapshot = s.snapshot_path.map(PathBuf::from);
    c.rejoin = s.rejoin_after_leave;
    c.disable_name_resolution = s.disable_name_resolution;
    c.disable_coordinates = s.disable_coordinates;
    if let Some(b) = s.leave_on_terminate {
        c.leave_on_terminate = b;
    }
    if let Some(b) = s.skip_leave_on_interrupt {
        c.skip_leave_on_interrupt = b;
    }
    c.replay = s.replay_on_join;
    c.retry_join = s.retry_join;
    c.retry_max = s.retry_max_attempts.unwrap_or(0);
    if let Some(i) = s.retry_interval {
        c.retry_interval =
            parse_duration(&i).map_err(|e| format!("Invalid retry interval: {e}"))?;
    }
    if let Some(t) = s.handler_timeout {
        c.handler_timeout =
            parse_duration(&t).map_err(|e| format!("Invalid handler timeout: {e}"))?;
    }
    if let Some(p) = s.coalesce_period {
        c.coalesce_period =
            parse_duration(&p).map_err(|e| format!("Invalid coalesce period: {e}"))?;
    }
    let durations = [
        (
            s.reconnect_interval,
            &mut c.reconnect_interval,
            "reconnect interval",
        ),
        (
            s.reconnect_timeout,
            &mut c.reconnect_timeout,
            "reconnect timeout",
        ),
        (
            s.tombstone_timeout,
            &mut c.tombstone_timeout,
            "tombstone timeout",
        ),
    ];
    for (text, slot, what) in durations {
        if let Some(t) = text {
            *slot = parse_duration(&t).map_err(|e| format!("Invalid {what}: {e}"))?;
        }
    }
    if c.reconnect_interval.is_zero() {
        return Err("Invalid reconnect interval: it must be more than 0".into());
    }
    if let Some(p) = s.protocol {
        // Serf's range is 2 to 5; this agent speaks 5 (Serf's default) only.
        if !(2..=5).contains(&p) {
            return Err(format!(
                "Protocol version '{p}' is out of range: must be in range [2, 5]"
            ));
        }
        if p != 5 {
            return Err(format!(
                "Protocol version '{p}' is not supported: this agent speaks Serf protocol 5 (serf's default) only"
            ));
        }
    }
    if let Some(b) = s.enable_compression {
        c.compress = b;
    }
    if let Some(t) = s.broadcast_timeout {
        let d = parse_duration(&t).map_err(|e| format!("Invalid broadcast timeout: {e}"))?;
        // 0 keeps the default, as serf's config merge does.
        if !d.is_zero() {
            c.broadcast_timeout = d;
        }
    }
    if let Some(n) = s.user_event_size_limit {
        if n > USER_EVENT_SIZE_MAX as u64 {
            return Err(format!(
                "user event size limit {n} exceeds limit of {USER_EVENT_SIZE_MAX} bytes"
            ));
        }
        c.user_event_size_limit = n as usize;
    }
    let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    if let Some(n) = s.query_size_limit {
        c.query_size_limit = clamp(n);
    }
    if let Some(n) = s.query_response_size_limit {
        c.query_response_size_limit = clamp(n);
    }
    if let Some(p) = s.quiescent_period {
        c.quiescent_period =
            parse_duration(&p).map_err(|e| format!("Invalid quiescent period: {e}"))?;
    }
    // Validate handler specs now, so a typo fails at start, not at the first event.
    HandlerRunner::new(&s.event_handlers, c.handler_timeout)
        .map_err(|e| format!("Invalid event script: {e}"))?;
    c.event_handlers = s.event_handlers;
    Ok((c, s.start_join))
}

/// `IP`, `IP:port`, `[v6]:port` or `:port`.
fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    if let Some(port) = s.strip_prefix(':') {
        if let Ok(p) = port.parse() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
        }
    }
    Err(format!("'{s}' is not an IP address with an optional port"))
}

fn read_tags_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("Failed to read tags file '{}': {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("Failed to decode tags file '{}': {e}", path.display()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("tags file '{}' must hold a JSON object", path.display()))?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| format!("tags file '{}': tag '{k}' is not a string", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::flags::argv;
    use std::time::Duration;

    #[test]
    fn flags_build_the_config() {
        let (c, join) = agent_config(&argv(&[
            "-node",
            "web1",
            "--bind=127.0.0.1:17946",
            "-tag",
            "role=backend",
            "--tag",
            "zone=z1",
            "-join",
            "ha:7946",
            "-retry-join=ha",
            "-retry-interval",
            "5s",
            "-retry-max=3",
            "-replay",
            "-event-handler",
            "member-join=./h.sh",
            "-rpc-addr=127.0.0.1:17373",
            "-encrypt",
            "T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s=",
            "-log-level=debug",
        ]))
        .unwrap();
        assert_eq!(c.node_name, "web1");
        assert_eq!(c.bind, "127.0.0.1:17946".parse().unwrap());
        assert_eq!(
            c.tags,
            vec![
                ("role".into(), "backend".into()),
                ("zone".into(), "z1".into())
            ]
        );
        assert_eq!(join, vec!["ha:7946"]);
        assert_eq!(c.retry_join, vec!["ha"]);
        assert_eq!(c.retry_interval, Duration::from_secs(5));
        assert_eq!(c.retry_max, 3);
        assert!(c.replay);
        assert_eq!(c.event_handlers, vec!["member-join=./h.sh"]);
        assert_eq!(c.rpc_addr, "127.0.0.1:17373".parse().unwrap());
        assert_eq!(c.encrypt_keys[0].len(), 32);
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn member_event_batching_is_tunable() {
        let (c, _) = agent_config(&argv(&["-node=a"])).unwrap();
        assert_eq!(c.coalesce_period, Duration::from_secs(3), "Serf's agent");
        assert_eq!(c.quiescent_period, Duration::from_secs(1), "Serf's agent");
        let (c, _) = agent_config(&argv(&[
            "-node=a",
            "--quiescent-period",
            "100ms",
            "-coalesce-period=1s",
        ]))
        .unwrap();
        assert_eq!(c.quiescent_period, Duration::from_millis(100));
        assert_eq!(c.coalesce_period, Duration::from_secs(1));
        let e = agent_config(&argv(&["-node=a", "-quiescent-period=soon"])).unwrap_err();
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = agent_config(&argv(&["-node=a", "-bind=nonsense"])).unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
        let e = agent_config(&argv(&["-node=a", "-encrypt=c2hvcnQ="])).unwrap_err();
        assert!(e.contains("c2hvcnQ="), "{e}");
        let e = agent_config(&argv(&["-node=a", "-event-handler=member-boom=x"])).unwrap_err();
        assert!(e.contains("member-boom"), "{e}");
        let e = agent_config(&argv(&["-node=a", "-tag", "novalue"])).unwrap_err();
        assert!(e.contains("novalue"), "{e}");
        let e = agent_config(&argv(&["-node=a", "-log-level=loud"])).unwrap_err();
        assert!(e.contains("loud"), "{e}");
    }

    #[test]
    fn addresses_take_serf_forms() {
        assert_eq!(
            parse_addr("10.0.0.1", 7946).unwrap(),
            "10.0.0.1:7946".parse().unwrap()
        );
        assert_eq!(
            parse_addr(":8000", 7946).unwrap(),
            "0.0.0.0:8000".parse().unwrap()
        );
        assert_eq!(
            parse_addr("[::1]:9", 7946).unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert!(interface_ipv4("lo").unwrap().is_loopback());
        assert!(interface_ipv4("nope0").unwrap_err().contains("nope0"));
    }
}
