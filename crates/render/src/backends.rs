//! The desired backend set: which members of the cluster become HAProxy
//! servers, and under what name and address.
//!
//! A member qualifies when it is alive, carries the role tag (default
//! `role=backend`), has a usable unicast IP, and a name HAProxy accepts as
//! a server name *and* that cannot smuggle anything into a CLI command or
//! the config file: `[A-Za-z0-9_.:-]`, at most [`MAX_NAME_LEN`] bytes.
//! Members that carry the role but fail a check are reported once each
//! (same member, same reason) and left out.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

/// Longest server name accepted (HAProxy has no hard limit; this bounds
/// what a peer can make us write into logs, commands and the config).
pub const MAX_NAME_LEN: usize = 64;

/// A member as the membership agent reports it (decoupled from the RPC
/// client's own type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    pub addr: IpAddr,
    /// Serf's status word: alive, leaving, left, failed, none.
    pub status: String,
    pub tags: Vec<(String, String)>,
}

impl MemberInfo {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One HAProxy server the reconciler wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub name: String,
    pub ip: IpAddr,
    pub port: u16,
    /// `ip:port`, `[ip]:port` for IPv6: what `server` lines and `add server`
    /// take.
    pub addr: String,
}

impl Backend {
    pub fn new(name: impl Into<String>, ip: IpAddr, port: u16) -> Self {
        Backend {
            name: name.into(),
            ip,
            port,
            addr: SocketAddr::new(ip, port).to_string(),
        }
    }
}

/// Desired servers by name (sorted: stable config files and logs).
pub type BackendSet = BTreeMap<String, Backend>;

/// Which members become backends, and on which port.
#[derive(Debug, Clone)]
pub struct Selector {
    /// Tag that holds the role (`role`).
    pub role_tag: String,
    /// Role value that marks a backend (`backend`).
    pub role: String,
    /// Port of every backend (3000) unless `port_tag` says otherwise.
    pub default_port: u16,
    /// Optional tag whose value overrides the port for that member.
    pub port_tag: Option<String>,
}

/// Why a member carrying the backend role was left out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rejection {
    BadName(String),
    BadAddress(String, IpAddr),
    BadPort(String, String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::BadName(n) => write!(
                f,
                "ignoring member {n:?}: not a safe server name (allowed: A-Z a-z 0-9 _ . : -, 1 to {MAX_NAME_LEN} bytes)"
            ),
            Rejection::BadAddress(n, ip) => write!(f, "ignoring member {n:?}: address {ip} is not a unicast address"),
            Rejection::BadPort(n, p) => write!(f, "ignoring member {n:?}: port tag {p:?} is not a port number (1-65535)"),
        }
    }
}

/// Whether `name` is safe as an HAProxy server name, a CLI word and a
/// config file word.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn usable_ip(ip: IpAddr) -> bool {
    !ip.is_unspecified()
        && !ip.is_multicast()
        && match ip {
            IpAddr::V4(v4) => !v4.is_broadcast(),
            IpAddr::V6(_) => true,
        }
}

impl Selector {
    /// The desired set from a full member list, with the members left out.
    pub fn select(&self, members: &[MemberInfo]) -> (BackendSet, Vec<Rejection>) {
        let mut set = BackendSet::new();
        let mut rejected = Vec::new();
        for m in members {
            if m.status != "alive" || m.tag(&self.role_tag) != Some(self.role.as_str()) {
                continue;
            }
            if !is_safe_name(&m.name) {
                rejected.push(Rejection::BadName(m.name.clone()));
                continue;
            }
            if !usable_ip(m.addr) {
                rejected.push(Rejection::BadAddress(m.name.clone(), m.addr));
                continue;
            }
            let port = match self.port_tag.as_deref().and_then(|t| m.tag(t)) {
                None => self.default_port,
                Some(p) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => {
                        rejected.push(Rejection::BadPort(m.name.clone(), p.to_string()));
                        continue;
                    }
                },
            };
            set.insert(m.name.clone(), Backend::new(m.name.clone(), m.addr, port));
        }
        (set, rejected)
    }
}

const MAX_REMEMBERED: usize = 10_000;

/// Remembers which rejections were already logged, so a hostile or broken
/// member is reported once, not on every membership change.
#[derive(Debug, Default)]
pub struct RejectionLog {
    seen: HashSet<Rejection>,
}

impl RejectionLog {
    /// The rejections not reported before.
    pub fn fresh(&mut self, rejected: Vec<Rejection>) -> Vec<Rejection> {
        // Members are not ours to trust: bound the memory they can make us
        // use (forgetting only means some are reported again).
        if self.seen.len() > MAX_REMEMBERED {
            self.seen.clear();
        }
        rejected
            .into_iter()
            .filter(|r| self.seen.insert(r.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, ip: &str, status: &str, tags: &[(&str, &str)]) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: ip.parse().unwrap(),
            status: status.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn selector() -> Selector {
        Selector {
            role_tag: "role".into(),
            role: "backend".into(),
            default_port: 3000,
            port_tag: Some("port".into()),
        }
    }

    #[test]
    fn selects_alive_backends_only() {
        let ms = vec![
            member("ha", "10.0.0.1", "alive", &[("role", "balancer")]),
            member("s1", "10.0.0.2", "alive", &[("role", "backend")]),
            member("s2", "10.0.0.3", "left", &[("role", "backend")]),
            member("s3", "10.0.0.4", "failed", &[("role", "backend")]),
            member("s4", "10.0.0.5", "leaving", &[("role", "backend")]),
            member("s5", "10.0.0.6", "alive", &[]),
            member(
                "s6",
                "127.0.0.1",
                "alive",
                &[("role", "backend"), ("port", "20006")],
            ),
        ];
        let (set, rej) = selector().select(&ms);
        assert_eq!(set.keys().collect::<Vec<_>>(), ["s1", "s6"]);
        assert_eq!(set["s1"].addr, "10.0.0.2:3000");
        assert_eq!(set["s6"].port, 20006);
        assert!(rej.is_empty());
    }

    #[test]
    fn rejects_hostile_names_addresses_and_ports() {
        let ms = vec![
            member("a b;rm", "10.0.0.2", "alive", &[("role", "backend")]),
            member("x\nshow", "10.0.0.2", "alive", &[("role", "backend")]),
            member(
                &"n".repeat(MAX_NAME_LEN + 1),
                "10.0.0.2",
                "alive",
                &[("role", "backend")],
            ),
            member("../etc", "10.0.0.2", "alive", &[("role", "backend")]),
            member("zero", "0.0.0.0", "alive", &[("role", "backend")]),
            member("bcast", "255.255.255.255", "alive", &[("role", "backend")]),
            member(
                "badport",
                "10.0.0.3",
                "alive",
                &[("role", "backend"), ("port", "70000")],
            ),
            member("ok-1.a:b_c", "10.0.0.4", "alive", &[("role", "backend")]),
        ];
        let (set, rej) = selector().select(&ms);
        assert_eq!(set.keys().collect::<Vec<_>>(), ["ok-1.a:b_c"]);
        assert_eq!(rej.len(), 7);
        assert!(rej[0].to_string().contains("\"a b;rm\""), "{}", rej[0]);
        assert_eq!(rej[1], Rejection::BadName("x\nshow".into()));
        assert!(
            !rej[1].to_string().contains('\n'),
            "one log line: {}",
            rej[1]
        );
        assert_eq!(rej[3], Rejection::BadName("../etc".into()));
        assert_eq!(rej[6], Rejection::BadPort("badport".into(), "70000".into()));
    }

    #[test]
    fn ipv6_address_is_bracketed() {
        let b = Backend::new("s", "fd00::5".parse().unwrap(), 3000);
        assert_eq!(b.addr, "[fd00::5]:3000");
    }

    #[test]
    fn rejections_are_reported_once() {
        let mut log = RejectionLog::default();
        let r = vec![Rejection::BadName("a b".into())];
        assert_eq!(log.fresh(r.clone()).len(), 1);
        assert_eq!(log.fresh(r).len(), 0);
        assert_eq!(log.fresh(vec![Rejection::BadName("c d".into())]).len(), 1);
    }
}
