//! The core's random sources: a seeded PRNG (splitmix64) for its choices
//! (probe order, gossip targets, stagger), and the host's CSPRNG for
//! AES-GCM nonces.

/// Where AES-GCM nonces come from: a cryptographically secure generator
/// the host hands in (the agent: one seeded from the OS; the simulator: a
/// seeded ChaCha20, [`crate::sim::nonce_source`]). A nonce must never repeat
/// under a key, and must not be predictable from what the PRNG below
/// reveals, so it never comes from that one.
pub type NonceSource = Box<dyn rand_core::CryptoRng + Send>;

/// A small deterministic PRNG (splitmix64) for the core's choices: the
/// core must be reproducible under the simulator; the agent seeds it from
/// the OS. Not for secrets: nonces come from a [`NonceSource`].
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
