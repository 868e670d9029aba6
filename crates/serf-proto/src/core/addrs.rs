//! A set of socket addresses sized for one entry per member: an IPv4
//! address and its port fit one `u64` (a quarter of a `SocketAddr`), so a
//! node that lists every member of a large cluster keeps 8 bytes a member
//! here, not 32. IPv6 addresses keep their full form.

use std::collections::HashSet;
use std::net::SocketAddr;

#[derive(Debug, Default, Clone)]
pub struct AddrSet {
    v4: HashSet<u64>,
    v6: HashSet<SocketAddr>,
}

/// The IPv4 address in the high 32 bits and the port in the low 16: one
/// value per address, no two alike.
fn packed(addr: &SocketAddr) -> Option<u64> {
    match addr {
        SocketAddr::V4(a) => Some((u64::from(a.ip().to_bits()) << 16) | u64::from(a.port())),
        SocketAddr::V6(_) => None,
    }
}

impl AddrSet {
    pub fn insert(&mut self, addr: SocketAddr) {
        match packed(&addr) {
            Some(k) => self.v4.insert(k),
            None => self.v6.insert(addr),
        };
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        match packed(addr) {
            Some(k) => self.v4.contains(&k),
            None => self.v6.contains(addr),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_and_port_is_its_own_member() {
        let mut s = AddrSet::default();
        let a: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let same_ip: SocketAddr = "10.0.0.1:7947".parse().unwrap();
        let same_port: SocketAddr = "10.0.0.2:7946".parse().unwrap();
        let v6: SocketAddr = "[::1]:7946".parse().unwrap();
        // The v4-mapped form is another address for the set, as for
        // HashSet<SocketAddr>.
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:7946".parse().unwrap();
        s.insert(a);
        s.insert(v6);
        s.insert(a);
        assert_eq!(s.len(), 2);
        assert!(s.contains(&a) && s.contains(&v6));
        for other in [same_ip, same_port, mapped] {
            assert!(!s.contains(&other), "{other}");
        }
        let edges: [SocketAddr; 2] = [
            "0.0.0.0:0".parse().unwrap(),
            "255.255.255.255:65535".parse().unwrap(),
        ];
        for e in edges {
            assert!(!s.contains(&e));
            s.insert(e);
            assert!(s.contains(&e));
        }
    }
}
