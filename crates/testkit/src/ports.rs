//! Free loopback ports for servers a test starts.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A port on 127.0.0.1 free for TCP and UDP right now (serf binds both).
///
/// Taken below Linux's ephemeral range (32768+): a port the kernel hands
/// out to outgoing connections could be in use again by the time a server
/// binds it. One process never hands out the same port twice (a walk of
/// step 17, coprime with the range's 12,000, from a start drawn once from
/// the process id and the clock): a test's agents still gossip to the
/// ports of members that left, and a second test given such a port would
/// hear them. The start keeps concurrent binaries apart.
pub fn free_port() -> u16 {
    const BASE: u32 = 20000;
    const SPAN: u32 = 12000;
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = *START.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::process::id().wrapping_mul(7919).wrapping_add(nanos) % SPAN
    });
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (start + (n % SPAN) * 17) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port for TCP and UDP in 20000-31999 on 127.0.0.1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_never_gets_the_same_port_twice() {
        let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
    }

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((20000..32000).contains(&p));
            TcpListener::bind(("127.0.0.1", p)).unwrap();
            UdpSocket::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
