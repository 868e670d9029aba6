//! `gossip agent`: Serf's agent flags and JSON config files turned into a
//! [`AgentConfig`], then the agent, its RPC server and its event handlers
//! started, Serf's banner printed, and a graceful leave on SIGINT or
//! SIGTERM (a second signal exits at once).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};

use super::flags::{parse_duration, FlagError, Flags, Kind};
use crate::handler::HandlerRunner;
use crate::model::{AgentConfig, AgentHandle, Event};
use crate::rpc::{LogLevel, MonitorLayer, ServeOptions};
use crate::serf::USER_EVENT_SIZE_MAX;

const DEFAULT_PORT: u16 = 7946;

const FLAGS: &[(&str, Kind)] = &[
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

/// Serf's keys we read; the others Serf knows are accepted and ignored.
const IGNORED_KEYS: &[&str] = &["syslog_facility"];

impl AgentSettings {
    /// Merges one JSON config object (Serf's keys) into these settings.
    pub fn merge_json(&mut self, v: &Value, origin: &str) -> Result<(), String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("config file {origin}: the top level must be a JSON object"))?;
        let string = |key: &str, val: &Value| -> Result<String, String> {
            val.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("config file {origin}: '{key}' must be a string"))
        };
        let strings = |key: &str, val: &Value| -> Result<Vec<String>, String> {
            val.as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
                .ok_or_else(|| format!("config file {origin}: '{key}' must be a list of strings"))
        };
        let boolean = |key: &str, val: &Value| -> Result<bool, String> {
            val.as_bool()
                .ok_or_else(|| format!("config file {origin}: '{key}' must be true or false"))
        };
        let bytes = |key: &str, val: &Value| -> Result<u64, String> {
            val.as_u64().ok_or_else(|| {
                format!("config file {origin}: '{key}' must be a whole number of bytes")
            })
        };
        for (key, val) in obj {
            match key.as_str() {
                "node_name" => self.node_name = Some(string(key, val)?),
                "role" => self.role = Some(string(key, val)?),
                "tags" => {
                    let m = val.as_object().ok_or_else(|| {
                        format!("config file {origin}: 'tags' must be an object of strings")
                    })?;
                    for (k, v) in m {
                        let v = string(&format!("tags.{k}"), v)?;
                        self.tags.retain(|(k2, _)| k2 != k);
                        self.tags.push((k.clone(), v));
                    }
                }
                "tags_file" => self.tags_file = Some(string(key, val)?),
                "bind" => self.bind = Some(string(key, val)?),
                "advertise" => self.advertise = Some(string(key, val)?),
                "interface" => self.interface = Some(string(key, val)?),
                "encrypt_key" => self.encrypt_key = Some(string(key, val)?),
                "keyring_file" => self.keyring_file = Some(string(key, val)?),
                "log_level" => self.log_level = Some(string(key, val)?),
                "rpc_addr" => self.rpc_addr = Some(string(key, val)?),
                "rpc_auth" => self.rpc_auth = Some(string(key, val)?),
                "replay_on_join" => self.replay_on_join = boolean(key, val)?,
                "start_join" => self.start_join.extend(strings(key, val)?),
                "event_handlers" => self.event_handlers.extend(strings(key, val)?),
                "profile" => self.profile = Some(string(key, val)?),
                "snapshot_path" => self.snapshot_path = Some(string(key, val)?),
                "rejoin_after_leave" => self.rejoin_after_leave = boolean(key, val)?,
                "disable_name_resolution" => self.disable_name_resolution = boolean(key, val)?,
                "disable_coordinates" => self.disable_coordinates = boolean(key, val)?,
                "leave_on_terminate" => self.leave_on_terminate = Some(boolean(key, val)?),
                "skip_leave_on_interrupt" => {
                    self.skip_leave_on_interrupt = Some(boolean(key, val)?)
                }
                "retry_join" => self.retry_join.extend(strings(key, val)?),
                "retry_max_attempts" => {
                    let n = val
                        .as_u64()
                        .filter(|n| *n <= u32::MAX as u64)
                        .ok_or_else(|| {
                            format!(
                                "config file {origin}: 'retry_max_attempts' must be a whole number"
                            )
                        })?;
                    self.retry_max_attempts = Some(n as u32);
                }
                "retry_interval" => self.retry_interval = Some(string(key, val)?),
                "handler_timeout" => self.handler_timeout = Some(string(key, val)?),
                "coalesce_period" => self.coalesce_period = Some(string(key, val)?),
                "quiescent_period" => self.quiescent_period = Some(string(key, val)?),
                "reconnect_interval" => self.reconnect_interval = Some(string(key, val)?),
                "reconnect_timeout" => self.reconnect_timeout = Some(string(key, val)?),
                "tombstone_timeout" => self.tombstone_timeout = Some(string(key, val)?),
                "broadcast_timeout" => self.broadcast_timeout = Some(string(key, val)?),
                "enable_compression" => self.enable_compression = Some(boolean(key, val)?),
                "protocol" => {
                    self.protocol = Some(val.as_i64().ok_or_else(|| {
                        format!("config file {origin}: 'protocol' must be a whole number")
                    })?)
                }
                // 0 keeps the value set before (Serf's merge).
                "user_event_size_limit" | "query_size_limit" | "query_response_size_limit" => {
                    let n = bytes(key, val)?;
                    let slot = match key.as_str() {
                        "user_event_size_limit" => &mut self.user_event_size_limit,
                        "query_size_limit" => &mut self.query_size_limit,
                        _ => &mut self.query_response_size_limit,
                    };
                    if n > 0 {
                        *slot = Some(n);
                    }
                }
                // Features we do not have: asking for one is an error, not
                // a setting silently dropped; leaving it empty or off is fine.
                "discover" | "statsd_addr" | "statsite_addr" => {
                    if !string(key, val)?.is_empty() {
                        return Err(format!(
                            "config file {origin}: '{key}' is not supported ({})",
                            if key == "discover" {
                                "mDNS discovery"
                            } else {
                                "metrics"
                            }
                        ));
                    }
                }
                "enable_syslog" => {
                    if boolean(key, val)? {
                        return Err(format!(
                            "config file {origin}: 'enable_syslog' is not supported: the agent logs to stdout"
                        ));
                    }
                }
                k if IGNORED_KEYS.contains(&k) => {}
                other => return Err(format!("config file {origin}: unknown key '{other}'")),
            }
        }
        Ok(())
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("Error reading '{}': {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("Error decoding '{}': {e}", path.display()))?;
        self.merge_json(&v, &path.display().to_string())
    }

    /// `-config-dir`: every `*.json` file in it, in name order (as Serf).
    fn merge_dir(&mut self, dir: &Path) -> Result<(), String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("Error reading '{}': {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        for f in files {
            self.merge_file(&f)?;
        }
        Ok(())
    }

    /// Applies command-line flags over the files' settings.
    fn merge_flags(&mut self, f: &Flags) -> Result<(), String> {
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

fn settings_to_config(mut s: AgentSettings) -> Result<(AgentConfig, Vec<String>), String> {
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

fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The first IPv4 address of a network interface.
fn interface_ipv4(name: &str) -> Result<Ipv4Addr, String> {
    let mut found = None;
    let mut exists = false;
    // SAFETY: getifaddrs fills a linked list we only read and then free.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return Err(format!(
                "Failed to get interface addresses: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            let ifname = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if ifname == name {
                exists = true;
                if !ifa.ifa_addr.is_null()
                    && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET
                    && found.is_none()
                {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    match (exists, found) {
        (_, Some(ip)) => Ok(ip),
        (true, None) => Err(format!("Interface '{name}' has no IPv4 addresses")),
        (false, None) => Err(format!("Invalid network interface: '{name}' not found")),
    }
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

/// `gossip agent ...`: returns the process exit code.
pub async fn run(argv: &[String]) -> i32 {
    let (config, join) = match agent_config(argv) {
        Ok(c) => c,
        Err(e) if e.starts_with("Usage:") => {
            println!("{e}");
            return 0;
        }
        Err(e) => {
            eprintln!("==> {e}");
            return 1;
        }
    };
    let level = LogLevel::parse(&config.log_level).unwrap_or(LogLevel::Info);
    {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(MonitorLayer::with_stdout(level));
        // Fails only if a subscriber is already set (tests embedding us).
        let _ = tracing::subscriber::set_global_default(sub);
    }
    let code = serve_agent(config, join, argv).await;
    // On a failed start the held-back log lines explain why.
    crate::rpc::open_stdout_gate();
    code
}

async fn serve_agent(config: AgentConfig, join: Vec<String>, argv: &[String]) -> i32 {
    println!("==> Starting Serf agent...");
    let rpc_listener = match tokio::net::TcpListener::bind(config.rpc_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "==> Error starting RPC listener on {}: {e}",
                config.rpc_addr
            );
            return 1;
        }
    };
    let runner = match HandlerRunner::new(&config.event_handlers, config.handler_timeout) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("==> Invalid event script: {e}");
            return 1;
        }
    };
    let node_name = config.node_name.clone();
    let rpc_addr = config.rpc_addr;
    let encrypted = !config.encrypt_keys.is_empty() || config.keyring_file.is_some();
    let snapshot = config.snapshot.is_some();
    let profile = config.profile.clone();
    let replay = config.replay;
    let agent = match crate::agent::start(config.clone()).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("==> Failed to start the Serf agent: {e:#}");
            return 1;
        }
    };
    // Subscribe before anything else happens so handlers see every event.
    let handler_events = agent.subscribe();
    tokio::spawn(log_events(agent.subscribe()));
    // Always running: a reload may add handlers to an agent started without.
    let runner = Arc::new(runner);
    {
        let (runner, host) = (runner.clone(), agent.clone());
        tokio::spawn(async move { runner.run(host, handler_events).await });
    }
    println!("==> Starting Serf agent RPC...");
    let left = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(crate::rpc::serve_with(
        rpc_listener,
        agent.clone(),
        ServeOptions {
            auth_key: config.rpc_auth_key.clone(),
            on_leave: Some(left.clone()),
        },
    ));
    let me = agent.local_member();
    println!("==> Serf agent running!");
    println!("                      Node name: '{node_name}'");
    println!(
        "                      Bind addr: '{}'",
        SocketAddr::new(config.bind.ip(), me.port)
    );
    if let Some(a) = config.advertise {
        println!("                 Advertise addr: '{a}'");
    }
    println!("                       RPC addr: '{rpc_addr}'");
    println!("                      Encrypted: {encrypted}");
    println!("                       Snapshot: {snapshot}");
    println!("                        Profile: {profile}");
    println!("    Message Compression Enabled: {}", config.compress);
    if !join.is_empty() {
        println!("==> Joining cluster...(replay: {replay})");
        match agent.join(join, replay).await {
            Ok(n) => println!("    Join completed. Synced with {n} initial agents"),
            Err(e) => {
                eprintln!("==> Error joining the cluster: {e:#}");
                let _ = agent.shutdown().await;
                return 1;
            }
        }
    }
    println!("\n==> Log data will now stream in as it occurs:\n");
    crate::rpc::open_stdout_gate();
    let reload = Reload {
        argv: argv.to_vec(),
        runner,
        tags: config.tags.clone(),
        tags_file: config.tags_file.is_some(),
    };
    let lost = {
        let agent = agent.clone();
        async move { agent.name_conflict_lost().await }
    };
    let leave_on = LeaveOn {
        interrupt: !config.skip_leave_on_interrupt,
        terminate: config.leave_on_terminate,
    };
    wait_for_exit(agent, left, reload, lost, leave_on).await
}

/// Which signals end in a graceful leave (the others stop the agent without
/// one, as Serf's `skip_leave_on_interrupt` and `leave_on_terminate`).
#[derive(Clone, Copy)]
struct LeaveOn {
    interrupt: bool,
    terminate: bool,
}

/// What SIGHUP re-reads: the same arguments (so the same config files)
/// give the new event handlers and tags, as Serf's reload does.
struct Reload {
    argv: Vec<String>,
    runner: Arc<HandlerRunner>,
    /// Tags from the configuration at start or the last reload.
    tags: Vec<(String, String)>,
    /// With a tags file the file, not the configuration, owns the tags.
    tags_file: bool,
}

impl Reload {
    async fn apply<A: AgentHandle + ?Sized>(&mut self, agent: &A) {
        println!("==> Reloading configuration...");
        let config = match agent_config(&self.argv) {
            Ok((c, _)) => c,
            Err(e) => {
                eprintln!("==> Failed to reload configs: {e}");
                return;
            }
        };
        if let Err(e) = self.runner.replace(&config.event_handlers) {
            eprintln!("==> Failed to reload event handlers: {e}");
            return;
        }
        if !self.tags_file && config.tags != self.tags {
            let delete: Vec<String> = self
                .tags
                .iter()
                .filter(|(k, _)| !config.tags.iter().any(|(k2, _)| k2 == k))
                .map(|(k, _)| k.clone())
                .collect();
            match agent.set_tags(config.tags.clone(), delete).await {
                Ok(()) => self.tags = config.tags,
                Err(e) => eprintln!("==> Failed to update tags: {e:#}"),
            }
        }
    }
}

/// Serf's `Received event: ...` line for every event the agent emits.
async fn log_events(mut events: tokio::sync::broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(e) => {
                let what = match &e {
                    Event::Member { kind, .. } => kind.as_str().to_string(),
                    Event::User { name, .. } => format!("user-event: {name}"),
                    Event::Query(q) => format!("query: {}", q.name),
                };
                tracing::info!(target: "agent", "Received event: {what}");
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Waits for a signal or an RPC `leave`; leaves gracefully on SIGINT or
/// SIGTERM (unless `leave_on` says otherwise: then it shuts down without a
/// leave and returns 1, as Serf), exits at once on a second signal, reloads
/// on SIGHUP; stops
/// with code 1, without a leave, when `lost` (a name-conflict vote lost:
/// the name belongs to another node, whose membership a leave would end).
async fn wait_for_exit<A: AgentHandle + ?Sized>(
    agent: Arc<A>,
    left: Arc<tokio::sync::Notify>,
    mut reload: Reload,
    lost: impl std::future::Future<Output = String>,
    leave_on: LeaveOn,
) -> i32 {
    tokio::pin!(lost);
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("==> Failed to install signal handlers");
        return 1;
    };
    let name = loop {
        tokio::select! {
            _ = int.recv() => break "interrupt",
            _ = term.recv() => break "terminated",
            _ = hup.recv() => {
                println!("==> Caught signal: hangup");
                reload.apply(&*agent).await;
            }
            _ = left.notified() => {
                // The RPC server already left and shut the agent down.
                return 0;
            }
            why = &mut lost => {
                eprintln!("==> Error: {why}; stopping");
                if let Err(e) = agent.shutdown().await {
                    eprintln!("==> Error: {e:#}");
                }
                return 1;
            }
        }
    };
    println!("==> Caught signal: {name}");
    let leave = match name {
        "interrupt" => leave_on.interrupt,
        _ => leave_on.terminate,
    };
    if !leave {
        // No leave: peers will find this node failed.
        if let Err(e) = agent.shutdown().await {
            eprintln!("==> Error: {e:#}");
        }
        return 1;
    }
    println!("==> Gracefully shutting down agent...");
    let graceful = async {
        if let Err(e) = agent.leave().await {
            eprintln!("==> Error: {e:#}");
        }
        if let Err(e) = agent.shutdown().await {
            eprintln!("==> Error: {e:#}");
        }
    };
    tokio::select! {
        _ = graceful => 0,
        _ = int.recv() => 1,
        _ = term.recv() => 1,
        _ = tokio::time::sleep(Duration::from_secs(60)) => {
            eprintln!("==> Graceful leave took too long; exiting");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

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
    fn config_files_merge_then_flags_override() {
        let mut s = AgentSettings::default();
        let v: Value = serde_json::from_str(
            r#"{"node_name":"f","tags":{"role":"lb"},"start_join":["a"],"event_handlers":["x.sh"],
                "retry_interval":"10s","enable_compression":true}"#,
        )
        .unwrap();
        s.merge_json(&v, "one.json").unwrap();
        let f = Flags::parse(FLAGS, &argv(&["-node=g", "-join=b", "-tag=role=web"])).unwrap();
        s.merge_flags(&f).unwrap();
        let (c, join) = settings_to_config(s).unwrap();
        assert_eq!(c.node_name, "g");
        assert_eq!(join, vec!["a", "b"]);
        assert_eq!(c.tags, vec![("role".into(), "web".into())]);
        assert_eq!(c.retry_interval, Duration::from_secs(10));
        let bad: Value = serde_json::from_str(r#"{"node_nam":"x"}"#).unwrap();
        let e = AgentSettings::default()
            .merge_json(&bad, "two.json")
            .unwrap_err();
        assert!(e.contains("node_nam") && e.contains("two.json"), "{e}");
    }

    #[test]
    fn reap_timings_are_read_and_missing_features_refused() {
        let mut s = AgentSettings::default();
        let v: Value = serde_json::from_str(
            r#"{"reconnect_interval":"5s","reconnect_timeout":"1h","tombstone_timeout":"90s",
                "enable_syslog":false,"discover":"","statsd_addr":"","syslog_facility":"LOCAL0",
                "leave_on_terminate":false,"skip_leave_on_interrupt":true,
                "broadcast_timeout":"2s","protocol":5,"enable_compression":false}"#,
        )
        .unwrap();
        s.merge_json(&v, "one.json").unwrap();
        let f = Flags::parse(FLAGS, &argv(&["-node=n"])).unwrap();
        s.merge_flags(&f).unwrap();
        let (c, _) = settings_to_config(s).unwrap();
        assert_eq!(c.reconnect_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect_timeout, Duration::from_secs(3600));
        assert_eq!(c.tombstone_timeout, Duration::from_secs(90));
        assert!(!c.leave_on_terminate && c.skip_leave_on_interrupt);
        assert_eq!(c.broadcast_timeout, Duration::from_secs(2));
        assert!(!c.compress);
        let d = AgentConfig::default();
        assert_eq!(d.broadcast_timeout, Duration::from_secs(5));
        assert!(d.compress);
        let (c, _) = agent_config(&argv(&[
            "-node=n",
            "-broadcast-timeout=250ms",
            "-disable-compression",
        ]))
        .unwrap();
        assert_eq!(c.broadcast_timeout, Duration::from_millis(250));
        assert!(!c.compress);
        assert!(d.leave_on_terminate && !d.skip_leave_on_interrupt);

        let refused = |json: &str, want: &str| {
            let v: Value = serde_json::from_str(json).unwrap();
            let e = AgentSettings::default()
                .merge_json(&v, "two.json")
                .unwrap_err();
            assert!(e.contains(want) && e.contains("two.json"), "{json}: {e}");
        };
        refused(
            r#"{"enable_syslog":true}"#,
            "'enable_syslog' is not supported",
        );
        refused(r#"{"discover":"web"}"#, "'discover' is not supported");
        // A later 0 keeps the earlier size limit, as serf's merge does.
        let mut s = AgentSettings::default();
        for json in [r#"{"query_size_limit":2048}"#, r#"{"query_size_limit":0}"#] {
            s.merge_json(&serde_json::from_str(json).unwrap(), "five.json")
                .unwrap();
        }
        assert_eq!(settings_to_config(s).unwrap().0.query_size_limit, 2048);
        refused(r#"{"protocol":"5"}"#, "'protocol' must be a whole number");
        refused(
            r#"{"user_event_size_limit":-1}"#,
            "'user_event_size_limit' must be a whole number of bytes",
        );
        refused(
            r#"{"statsite_addr":"127.0.0.1:8125"}"#,
            "'statsite_addr' is not supported",
        );
        refused(
            r#"{"leave_on_terminate":"no"}"#,
            "'leave_on_terminate' must be true or false",
        );
        for (args, want) in [
            (
                &["-node=n", "-protocol=3"][..],
                "Protocol version '3' is not supported",
            ),
            (
                &["-node=n", "-protocol=9"][..],
                "Protocol version '9' is out of range",
            ),
            (
                &["-node=n", "-protocol=five"][..],
                "Invalid -protocol 'five'",
            ),
            (
                &["-node=n", "-broadcast-timeout=soon"][..],
                "Invalid broadcast timeout",
            ),
            (&["-node=n", "-syslog"][..], "-syslog is not supported"),
            (
                &["-node=n", "-discover=web"][..],
                "-discover (mDNS) is not supported",
            ),
        ] {
            assert!(
                agent_config(&argv(args)).unwrap_err().contains(want),
                "{args:?}"
            );
        }
        let bad: Value = serde_json::from_str(r#"{"tombstone_timeout":"soon"}"#).unwrap();
        let mut s = AgentSettings::default();
        s.merge_json(&bad, "three.json").unwrap();
        let e = settings_to_config(s).unwrap_err();
        assert!(e.contains("tombstone timeout") && e.contains("soon"), "{e}");
        let zero: Value = serde_json::from_str(r#"{"reconnect_interval":"0"}"#).unwrap();
        let mut s = AgentSettings::default();
        s.merge_json(&zero, "four.json").unwrap();
        assert!(settings_to_config(s)
            .unwrap_err()
            .contains("reconnect interval"));
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
