//! The desired backend set: which members of the cluster become HAProxy
//! servers, and under what name and address.
//!
//! A member qualifies when it is alive, carries the role tag (default
//! `role=backend`), has a usable unicast IP, and a name HAProxy accepts as
//! a server name *and* that cannot smuggle anything into a CLI command or
//! the config file: `[A-Za-z0-9_.:-]`, at most [`MAX_NAME_LEN`] bytes.
//! Members that carry the role but fail a check are reported once each
//! (same member, same reason) and left out.
//!
//! One server per address: when two qualifying members claim the same
//! `ip:port`, only the one that claimed it last is kept ([`AddressClaims`]).
//! Both would reach the same process anyway; what matters is the moment
//! that address stops answering. Docker hands a dead container's address to
//! the next container at once, while the dead member stays `alive` until
//! the agents' failure detection catches up (seconds). Kept as two servers,
//! a request retried after the address died could be redispatched to the
//! other entry of the same dead address, and again, until its retries ran
//! out (an HTTP 503 from HAProxy).

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Its address was claimed later by another member (named second).
    AddressTaken {
        name: String,
        addr: SocketAddr,
        by: String,
    },
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
            Rejection::AddressTaken { name, addr, by } => write!(f, "ignoring member {name:?}: its address {addr} now belongs to {by:?}, which claimed it later ({name:?} must have died without leaving)"),
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

/// Which member claimed each backend address, in the order the reconciler
/// first saw each claim: the latest claimant of an address is its owner.
/// Claims seen in the same member list are ordered by name, so the choice
/// is the same whatever order the agent lists members in. Only the claims
/// of the current list are remembered.
#[derive(Debug, Default)]
pub struct AddressClaims {
    next: u64,
    seen: HashMap<(String, SocketAddr), u64>,
}

impl AddressClaims {
    /// Keep one backend per address, the latest claimant's; the others are
    /// returned as rejections.
    fn resolve(&mut self, set: &mut BackendSet) -> Vec<Rejection> {
        let key = |b: &Backend| (b.name.clone(), SocketAddr::new(b.ip, b.port));
        // `set` iterates in name order: new claims get increasing numbers.
        for b in set.values() {
            let next = &mut self.next;
            self.seen.entry(key(b)).or_insert_with(|| {
                *next += 1;
                *next
            });
        }
        self.seen.retain(|(name, addr), _| {
            set.get(name)
                .is_some_and(|b| SocketAddr::new(b.ip, b.port) == *addr)
        });
        let mut owner: HashMap<SocketAddr, (u64, String)> = HashMap::new();
        for ((name, addr), seq) in &self.seen {
            let o = owner.entry(*addr).or_insert((*seq, name.clone()));
            if *seq > o.0 {
                *o = (*seq, name.clone());
            }
        }
        let mut rejected = Vec::new();
        set.retain(|name, b| {
            let addr = SocketAddr::new(b.ip, b.port);
            match owner.get(&addr) {
                Some((_, by)) if by != name => {
                    rejected.push(Rejection::AddressTaken {
                        name: name.clone(),
                        addr,
                        by: by.clone(),
                    });
                    false
                }
                _ => true,
            }
        });
        rejected
    }
}

impl Selector {
    /// The desired set from a full member list, with the members left out.
    /// `claims` carries, from one list to the next, who claimed which
    /// address first.
    pub fn select(
        &self,
        members: &[MemberInfo],
        claims: &mut AddressClaims,
    ) -> (BackendSet, Vec<Rejection>) {
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
        rejected.extend(claims.resolve(&mut set));
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
        let (set, rej) = selector().select(&ms, &mut AddressClaims::default());
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
        let (set, rej) = selector().select(&ms, &mut AddressClaims::default());
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

    fn backend(name: &str, ip: &str) -> MemberInfo {
        member(name, ip, "alive", &[("role", "backend")])
    }

    fn names(set: &BackendSet) -> Vec<&str> {
        set.keys().map(String::as_str).collect()
    }

    #[test]
    fn an_address_claimed_again_belongs_to_the_later_member() {
        let sel = selector();
        let mut claims = AddressClaims::default();
        // "s9" had 10.0.0.5; it died and Docker gave the address to "s1".
        let (set, rej) = sel.select(&[backend("s9", "10.0.0.5")], &mut claims);
        assert_eq!(names(&set), ["s9"]);
        assert!(rej.is_empty());
        let both = [backend("s1", "10.0.0.5"), backend("s9", "10.0.0.5")];
        let (set, rej) = sel.select(&both, &mut claims);
        assert_eq!(
            names(&set),
            ["s1"],
            "the later claimant, not the first name"
        );
        assert_eq!(
            rej,
            [Rejection::AddressTaken {
                name: "s9".into(),
                addr: "10.0.0.5:3000".parse().unwrap(),
                by: "s1".into(),
            }]
        );
        assert!(rej[0].to_string().contains("10.0.0.5:3000"), "{}", rej[0]);
        // Stable on the next lists, whatever their order.
        let (set, _) = sel.select(&[both[1].clone(), both[0].clone()], &mut claims);
        assert_eq!(names(&set), ["s1"]);
        // And again with a third claimant.
        let three = [both[0].clone(), both[1].clone(), backend("s5", "10.0.0.5")];
        let (set, rej) = sel.select(&three, &mut claims);
        assert_eq!(names(&set), ["s5"]);
        assert_eq!(rej.len(), 2);
        // Once the later ones are gone, the remaining claimant is kept.
        let (set, _) = sel.select(&[backend("s9", "10.0.0.5")], &mut claims);
        assert_eq!(names(&set), ["s9"]);
    }

    #[test]
    fn claims_first_seen_together_are_ordered_by_name() {
        let sel = selector();
        let list = [backend("b", "10.0.0.5"), backend("a", "10.0.0.5")];
        for _ in 0..2 {
            let (set, rej) = sel.select(&list, &mut AddressClaims::default());
            assert_eq!(names(&set), ["b"]);
            assert_eq!(rej.len(), 1);
        }
    }

    #[test]
    fn same_ip_on_other_ports_is_no_conflict() {
        let with_port = |name: &str, port: &str| {
            member(
                name,
                "10.0.0.5",
                "alive",
                &[("role", "backend"), ("port", port)],
            )
        };
        let (set, rej) = selector().select(
            &[with_port("a", "3000"), with_port("b", "3001")],
            &mut AddressClaims::default(),
        );
        assert_eq!(names(&set), ["a", "b"]);
        assert!(rej.is_empty());
    }

    #[test]
    fn a_member_that_moves_claims_its_new_address() {
        let sel = selector();
        let mut claims = AddressClaims::default();
        sel.select(
            &[backend("a", "10.0.0.5"), backend("b", "10.0.0.6")],
            &mut claims,
        );
        // "b" comes back on a's address: a fresh claim, so b owns it.
        let (set, _) = sel.select(
            &[backend("a", "10.0.0.5"), backend("b", "10.0.0.5")],
            &mut claims,
        );
        assert_eq!(names(&set), ["b"]);
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
