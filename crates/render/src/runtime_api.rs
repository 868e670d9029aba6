//! HAProxy's Runtime API (the "stats socket" CLI): one command per
//! connection, over a unix socket or TCP, and the few replies the
//! reconciler needs to understand.
//!
//! In non-interactive mode HAProxy reads one line, answers, and closes the
//! connection, so a command is: connect, write `CMD\n`, read to EOF. The
//! CLI has no status codes; success is recognised by each command's known
//! reply (see [`Reply`]). Callers must never pass untrusted text: a `;` or
//! a newline would start another command (server names and options are
//! validated before they get here).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the admin socket listens: `unix:/path` or a path starting with `/`
/// or `.`; `tcp:HOST:PORT` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    Unix(PathBuf),
    Tcp(String),
}

impl FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(AdminAddr::Unix(p.into()));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(AdminAddr::Unix(s.into()));
        }
        let hp = s.strip_prefix("tcp:").unwrap_or(s);
        match hp.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(AdminAddr::Tcp(hp.to_string())),
            _ => Err(format!(
                "invalid admin socket address {s:?}: use /path/to/socket, unix:PATH, HOST:PORT or tcp:HOST:PORT"
            )),
        }
    }
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            AdminAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("HAProxy admin socket {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("HAProxy admin socket {addr}: no answer to `{command}` within {timeout:?}")]
    Timeout {
        addr: String,
        command: String,
        timeout: Duration,
    },
    #[error("HAProxy refused `{command}`: {reply}")]
    Refused { command: String, reply: String },
    #[error("cannot parse `show servers state` reply: {0}")]
    Parse(String),
}

impl ApiError {
    /// Connection-level trouble (HAProxy down or restarting), as opposed to
    /// HAProxy answering "no".
    pub fn is_transport(&self) -> bool {
        matches!(self, ApiError::Io { .. } | ApiError::Timeout { .. })
    }
}

/// A client for one admin socket.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    addr: AdminAddr,
    timeout: Duration,
}

/// One server line of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u8,
    /// srv_admin_state bit field (SRV_ADMF_*).
    pub admin_state: u8,
}

/// Bits of srv_admin_state (HAProxy's SRV_ADMF_*).
pub mod admin {
    /// Forced maintenance (`state maint`, `disable server`).
    pub const FMAINT: u8 = 0x01;
    /// Maintenance inherited from a tracked server.
    pub const IMAINT: u8 = 0x02;
    /// `disabled` in the configuration file.
    pub const CMAINT: u8 = 0x04;
    /// Forced drain (`state drain`).
    pub const FDRAIN: u8 = 0x08;
    /// Drain inherited from a tracked server.
    pub const IDRAIN: u8 = 0x10;
    /// Maintenance because DNS resolution failed.
    pub const RMAINT: u8 = 0x20;
    /// Maintenance because the FQDN changed.
    pub const HMAINT: u8 = 0x40;
    pub const ANY_MAINT: u8 = FMAINT | IMAINT | CMAINT | RMAINT | HMAINT;
    pub const ANY_DRAIN: u8 = FDRAIN | IDRAIN;
}

impl ServerState {
    pub fn in_maint(&self) -> bool {
        self.admin_state & admin::ANY_MAINT != 0
    }
    /// Ready: neither in maintenance nor draining, so it takes traffic when
    /// its checks pass.
    pub fn is_ready(&self) -> bool {
        self.admin_state & (admin::ANY_MAINT | admin::ANY_DRAIN) == 0
    }
    /// Down by HAProxy's health checks (stopped, not in maintenance).
    pub fn is_down(&self) -> bool {
        self.op_state == 0 && !self.in_maint()
    }
}

impl RuntimeApi {
    pub fn new(addr: AdminAddr) -> Self {
        RuntimeApi {
            addr,
            timeout: Duration::from_secs(5),
        }
    }

    pub fn addr(&self) -> &AdminAddr {
        &self.addr
    }

    /// Send one command, return HAProxy's whole reply.
    pub async fn raw(&self, command: &str) -> Result<String, ApiError> {
        debug_assert!(
            !command.contains(['\n', ';']),
            "one command only: {command:?}"
        );
        let addr = self.addr.to_string();
        let fut = async {
            let mut reply = Vec::new();
            match &self.addr {
                AdminAddr::Unix(p) => {
                    let mut s = tokio::net::UnixStream::connect(p).await?;
                    s.write_all(format!("{command}\n").as_bytes()).await?;
                    s.read_to_end(&mut reply).await?;
                }
                AdminAddr::Tcp(a) => {
                    let mut s = tokio::net::TcpStream::connect(a.as_str()).await?;
                    s.write_all(format!("{command}\n").as_bytes()).await?;
                    s.read_to_end(&mut reply).await?;
                }
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(source)) => Err(ApiError::Io { addr, source }),
            Err(_) => Err(ApiError::Timeout {
                addr,
                command: command.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    /// Send a command whose success reply is known; anything else is
    /// [`ApiError::Refused`] with HAProxy's words.
    pub async fn expect(&self, command: &str, ok: Reply) -> Result<String, ApiError> {
        let reply = self.raw(command).await?;
        if ok.accepts(&reply) {
            Ok(reply)
        } else {
            Err(ApiError::Refused {
                command: command.to_string(),
                reply: reply.trim().replace('\n', " / "),
            })
        }
    }

    /// `show servers state BACKEND`.
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerState>, ApiError> {
        let cmd = format!("show servers state {backend}");
        let reply = self.raw(&cmd).await?;
        parse_servers_state(&reply).map_err(|e| match e {
            ApiError::Parse(_) if !reply.starts_with('1') => ApiError::Refused {
                command: cmd,
                reply: reply.trim().to_string(),
            },
            e => e,
        })
    }
}

/// What a successful reply looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `set server … state/health`, `enable health`, `enable server`:
    /// nothing but blank lines.
    Empty,
    /// `add server`: "New server registered."
    Added,
    /// `del server`: "Server deleted."
    Deleted,
    /// `set server … addr`: "IP changed from …" or "no need to change …".
    AddrSet,
}

impl Reply {
    pub fn accepts(self, reply: &str) -> bool {
        let r = reply.trim();
        match self {
            Reply::Empty => r.is_empty(),
            Reply::Added => r == "New server registered.",
            Reply::Deleted => r == "Server deleted.",
            Reply::AddrSet => {
                r.starts_with("IP changed from") || r.starts_with("no need to change the addr")
            }
        }
    }
}

/// Parse `show servers state` (format version 1): columns are found by the
/// names in the `#` header line, so added columns do not break it.
pub fn parse_servers_state(reply: &str) -> Result<Vec<ServerState>, ApiError> {
    let mut lines = reply.lines();
    let version = lines.next().unwrap_or("").trim();
    if version != "1" {
        return Err(ApiError::Parse(format!(
            "expected format version 1, got {:?}",
            reply.trim().lines().next().unwrap_or("")
        )));
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(|| ApiError::Parse("no `#` header line".into()))?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| ApiError::Parse(format!("no column {name}")))
    };
    let (i_name, i_addr, i_port, i_op, i_admin) = (
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_port")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
    );
    let mut out = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| ApiError::Parse(format!("short line {line:?}")))
        };
        let num = |i: usize| -> Result<u64, ApiError> {
            get(i)?.parse().map_err(|_| {
                ApiError::Parse(format!("column {} not a number in {line:?}", cols[i]))
            })
        };
        out.push(ServerState {
            name: get(i_name)?.to_string(),
            addr: get(i_addr)?.to_string(),
            port: num(i_port)? as u16,
            op_state: num(i_op)? as u8,
            admin_state: num(i_admin)? as u8,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from HAProxy 2.6.12: s1 from the file, s2 `disabled` in the
    // file, s3 added at run time then moved by `set server … addr`.
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 nodes 1 s1 127.0.0.1 0 0 1 1 5 8 2 0 6 0 0 0 - 20001 - 0 0 - - 0\n3 nodes 2 s2 127.0.0.1 0 5 1 1 5 1 0 0 8 0 0 0 - 20002 - 0 0 - - 0\n3 nodes 3 s3 127.0.0.2 0 0 1 1 0 1 0 0 6 0 0 0 - 20004 - 0 0 - - 0\n\n";

    #[test]
    fn parses_servers_state() {
        let s = parse_servers_state(STATE).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[2],
            ServerState {
                name: "s3".into(),
                addr: "127.0.0.2".into(),
                port: 20004,
                op_state: 0,
                admin_state: 0
            }
        );
        assert!(s[1].in_maint() && !s[1].is_ready());
        assert!(s[0].is_ready());
    }

    #[test]
    fn empty_backend_and_errors() {
        let empty =
            "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_port\n\n";
        assert_eq!(parse_servers_state(empty).unwrap(), vec![]);
        assert!(parse_servers_state("Can't find backend.\n\n").is_err());
        assert!(parse_servers_state("1\n# srv_name\n").is_err());
    }

    #[test]
    fn replies() {
        assert!(Reply::Empty.accepts("\n"));
        assert!(!Reply::Empty.accepts("No such server.\n\n"));
        assert!(Reply::Added.accepts("New server registered.\n\n"));
        assert!(!Reply::Added.accepts("Already exists a server with the same name in backend.\n\n"));
        assert!(Reply::Deleted.accepts("Server deleted.\n"));
        assert!(!Reply::Deleted
            .accepts("Server still has connections attached to it, cannot remove it.\n"));
        assert!(Reply::AddrSet.accepts("IP changed from '127.0.0.1' to '127.0.0.2', port changed from '20003' to '20004' by 'stats socket command'\n\n"));
        assert!(Reply::AddrSet.accepts(
            "no need to change the addr, no need to change the port by 'stats socket command'\n\n"
        ));
    }

    #[test]
    fn admin_addresses() {
        assert_eq!(
            "/run/a.sock".parse(),
            Ok(AdminAddr::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            "unix:rel.sock".parse(),
            Ok(AdminAddr::Unix("rel.sock".into()))
        );
        assert_eq!(
            "127.0.0.1:9999".parse(),
            Ok(AdminAddr::Tcp("127.0.0.1:9999".into()))
        );
        assert_eq!(
            "tcp:localhost:9999".parse(),
            Ok(AdminAddr::Tcp("localhost:9999".into()))
        );
        assert!("nonsense".parse::<AdminAddr>().is_err());
        assert!("host:99999".parse::<AdminAddr>().is_err());
    }
}
