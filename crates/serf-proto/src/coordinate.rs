//! Network coordinates (Vivaldi), as Serf keeps them: every node has a
//! position in an 8-dimensional space plus a height, updated after each
//! direct probe from the round-trip time and the probed node's own
//! coordinate (carried in the ack). The distance between two coordinates
//! estimates the round trip between the two nodes without measuring it
//! (`gossip rtt`, RPC `get-coordinate`).
//!
//! The model and its constants are Serf's (`coordinate.DefaultConfig`):
//! 8 dimensions, error at most 1.5, CE = CC = 0.25, an adjustment window
//! of 20 samples, a minimum height of 10 µs, a median filter over the last
//! 3 round trips per node, gravity ρ = 150. On the wire the coordinate is
//! the ack payload: version byte 1, then a MessagePack map `Vec`, `Error`,
//! `Adjustment`, `Height`.
//!
//! Sans-IO: [`Client::update`] takes the measured round trip; randomness
//! (for two nodes at the same spot) comes from a seeded [`Rng`].

use std::collections::HashMap;
use std::time::Duration;

use rmpv::Value;

use crate::core::Rng;
use crate::wire::{self, WireError};

/// Serf's `PingVersion`: the first byte of the ack payload.
pub const PING_VERSION: u8 = 1;
/// The model's constants (Serf's defaults).
pub const DIMENSIONS: usize = 8;
const ERROR_MAX: f64 = 1.5;
const CE: f64 = 0.25;
const CC: f64 = 0.25;
const ADJUSTMENT_WINDOW: usize = 20;
const HEIGHT_MIN: f64 = 10.0e-6;
const LATENCY_FILTER: usize = 3;
const GRAVITY_RHO: f64 = 150.0;
const ZERO: f64 = 1.0e-6;
/// Round trips longer than this are not samples (Serf's `maxRTT`).
const MAX_RTT: Duration = Duration::from_secs(10);

/// A node's position.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinate {
    pub vec: Vec<f64>,
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

impl Default for Coordinate {
    /// Where every node starts: the origin, with the largest error.
    fn default() -> Coordinate {
        Coordinate {
            vec: vec![0.0; DIMENSIONS],
            error: ERROR_MAX,
            adjustment: 0.0,
            height: HEIGHT_MIN,
        }
    }
}

fn add_scaled(a: &mut [f64], b: &[f64], k: f64) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y * k;
    }
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

impl Coordinate {
    /// Every component is a finite number.
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|x| x.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// Euclidean distance plus both heights, in seconds.
    fn raw_distance(&self, other: &Coordinate) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height
    }

    /// The estimated round trip to `other`; `None` when the two cannot be
    /// compared (not the same number of dimensions, or a component that is
    /// not a finite number: coordinates read from RPC are not checked).
    pub fn distance_to(&self, other: &Coordinate) -> Option<Duration> {
        if !self.is_compatible_with(other) || !self.is_valid() || !other.is_valid() {
            return None;
        }
        let raw = self.raw_distance(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        let secs = if adjusted > 0.0 { adjusted } else { raw };
        if !secs.is_finite() {
            return None;
        }
        Some(Duration::from_secs_f64(secs.clamp(0.0, 1.0e9)))
    }

    /// Moves by `force` seconds along the direction away from `other`
    /// (towards it when negative); the height follows the same force.
    fn apply_force(&self, force: f64, other: &Coordinate, rng: &mut Rng) -> Coordinate {
        let mut ret = self.clone();
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec, rng);
        add_scaled(&mut ret.vec, &unit, force);
        if mag > ZERO {
            ret.height = ((ret.height + other.height) * force / mag + ret.height).max(HEIGHT_MIN);
        }
        ret
    }

    /// The ack payload: version byte, then the MessagePack map of
    /// [`Coordinate::to_value`].
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = vec![PING_VERSION];
        rmpv::encode::write_value(&mut out, &self.to_value()).expect("vec write");
        out
    }

    /// Reads an ack payload; an empty one (a peer without coordinates) is
    /// `Ok(None)`.
    pub fn decode_payload(payload: &[u8]) -> Result<Option<Coordinate>, WireError> {
        let Some((&version, rest)) = payload.split_first() else {
            return Ok(None);
        };
        if version != PING_VERSION {
            return Err(WireError::Msgpack(format!(
                "unsupported ping payload version {version}"
            )));
        }
        let (v, _) = wire::read_value(rest)?;
        Coordinate::from_value(&v).map(Some)
    }

    /// From a decoded MessagePack map (ack payload or RPC response).
    pub fn from_value(v: &Value) -> Result<Coordinate, WireError> {
        let Value::Map(entries) = v else {
            return Err(WireError::Msgpack("expected a map".into()));
        };
        // Go-decoder style: the first entry of a key (str or bin) counts,
        // missing ones are zero, unknown ones are ignored.
        let get = |k: &str| {
            entries.iter().find_map(|(key, v)| {
                let name = match key {
                    Value::String(s) => s.as_bytes(),
                    Value::Binary(b) => b.as_slice(),
                    _ => return None,
                };
                (name == k.as_bytes()).then_some(v)
            })
        };
        let num = |k: &'static str| -> Result<f64, WireError> {
            match get(k) {
                None | Some(Value::Nil) => Ok(0.0),
                Some(v) => as_f64(v).ok_or(WireError::Field(k)),
            }
        };
        let vec = match get("Vec") {
            None | Some(Value::Nil) => Vec::new(),
            Some(Value::Array(a)) if a.len() <= 64 => a
                .iter()
                .map(|x| as_f64(x).ok_or(WireError::Field("Vec")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(WireError::Field("Vec")),
        };
        Ok(Coordinate {
            vec,
            error: num("Error")?,
            adjustment: num("Adjustment")?,
            height: num("Height")?,
        })
    }

    /// As a MessagePack map (Go's field names), for acks and RPC replies.
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (
                Value::from("Vec"),
                Value::Array(self.vec.iter().map(|x| Value::F64(*x)).collect()),
            ),
            (Value::from("Error"), Value::F64(self.error)),
            (Value::from("Adjustment"), Value::F64(self.adjustment)),
            (Value::from("Height"), Value::F64(self.height)),
        ])
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F64(x) => Some(*x),
        Value::F32(x) => Some(f64::from(*x)),
        _ => v
            .as_i64()
            .map(|i| i as f64)
            .or_else(|| v.as_u64().map(|u| u as f64)),
    }
}

/// The unit vector from `b` to `a` and the distance between them; two
/// points at the same spot get a random direction (and distance 0).
fn unit_vector_at(a: &[f64], b: &[f64], rng: &mut Rng) -> (Vec<f64>, f64) {
    let mut ret = diff(a, b);
    let mag = magnitude(&ret);
    if mag > ZERO {
        ret.iter_mut().for_each(|x| *x /= mag);
        return (ret, mag);
    }
    for x in ret.iter_mut() {
        *x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
    }
    let mag = magnitude(&ret);
    if mag > ZERO {
        ret.iter_mut().for_each(|x| *x /= mag);
        return (ret, 0.0);
    }
    let mut ret = vec![0.0; a.len()];
    if let Some(first) = ret.first_mut() {
        *first = 1.0;
    }
    (ret, 0.0)
}

/// Why a sample was not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("coordinate has {0} dimensions, expected {DIMENSIONS}")]
    Dimensions(usize),
    #[error("coordinate has a component that is not a finite number")]
    Invalid,
    #[error("round trip {0:?} is not between 0 and 10 s")]
    Rtt(Duration),
}

/// This node's coordinate and what updates it.
#[derive(Debug, Clone)]
pub struct Client {
    coord: Coordinate,
    adjustment_index: usize,
    adjustment_samples: [f64; ADJUSTMENT_WINDOW],
    latency: HashMap<String, Vec<f64>>,
    rng: Rng,
    /// Times the coordinate went invalid and was reset (`coordinate_resets`).
    pub resets: u64,
}

impl Client {
    pub fn new(seed: u64) -> Client {
        Client {
            coord: Coordinate::default(),
            adjustment_index: 0,
            adjustment_samples: [0.0; ADJUSTMENT_WINDOW],
            latency: HashMap::new(),
            rng: Rng::new(seed),
            resets: 0,
        }
    }

    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// Drops the round-trip history of a node that is gone.
    pub fn forget(&mut self, node: &str) {
        self.latency.remove(node);
    }

    /// The median of the last few round trips to `node`, this one included.
    fn filter(&mut self, node: &str, rtt: f64) -> f64 {
        let samples = self.latency.entry(node.to_string()).or_default();
        samples.push(rtt);
        if samples.len() > LATENCY_FILTER {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    /// One probe of `node`, whose coordinate is `other`, took `rtt`.
    pub fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<&Coordinate, Rejected> {
        if !self.coord.is_compatible_with(other) {
            return Err(Rejected::Dimensions(other.vec.len()));
        }
        if !other.is_valid() {
            return Err(Rejected::Invalid);
        }
        if rtt > MAX_RTT {
            return Err(Rejected::Rtt(rtt));
        }
        let rtt = self.filter(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt);
        self.update_adjustment(other, rtt);
        self.update_gravity();
        if !self.coord.is_valid() {
            self.resets += 1;
            self.coord = Coordinate::default();
        }
        Ok(&self.coord)
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64) {
        let rtt = rtt.max(ZERO);
        let dist = self
            .coord
            .distance_to(other)
            .map_or(0.0, |d| d.as_secs_f64());
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total_error;
        self.coord.error =
            (CE * weight * wrongness + self.coord.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (rtt - dist);
        self.coord = self.coord.apply_force(force, other, &mut self.rng);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance(other);
        self.adjustment_index = (self.adjustment_index + 1) % ADJUSTMENT_WINDOW;
        self.coord.adjustment =
            self.adjustment_samples.iter().sum::<f64>() / (2.0 * ADJUSTMENT_WINDOW as f64);
    }

    /// A pull towards the origin, growing with the square of the distance,
    /// so the whole cluster does not drift away.
    fn update_gravity(&mut self) {
        let origin = Coordinate::default();
        let dist = origin
            .distance_to(&self.coord)
            .map_or(0.0, |d| d.as_secs_f64());
        let force = -(dist / GRAVITY_RHO).powi(2);
        self.coord = self.coord.apply_force(force, &origin, &mut self.rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_bad_payloads() {
        let c = Coordinate {
            vec: (0..8).map(|i| f64::from(i) * 0.001).collect(),
            error: 0.4,
            adjustment: -0.0002,
            height: 0.00003,
        };
        let p = c.encode_payload();
        assert_eq!(p[0], PING_VERSION);
        assert_eq!(Coordinate::decode_payload(&p).unwrap(), Some(c));
        assert_eq!(Coordinate::decode_payload(&[]).unwrap(), None);
        assert!(Coordinate::decode_payload(&[2, 0x80]).is_err());
        assert!(Coordinate::decode_payload(&[1]).is_err());
        assert!(Coordinate::decode_payload(&[1, 0x81, 0xa3, b'V', b'e', b'c', 0x05]).is_err());
        // Huge or non-finite components: no estimate, no panic.
        let huge = Coordinate {
            vec: vec![f64::MAX; DIMENSIONS],
            adjustment: f64::MIN,
            ..Coordinate::default()
        };
        assert_eq!(huge.distance_to(&Coordinate::default()), None);
        let nan = Coordinate {
            error: f64::NAN,
            ..Coordinate::default()
        };
        assert_eq!(nan.distance_to(&Coordinate::default()), None);
    }

    #[test]
    fn rejects_what_serf_rejects() {
        let mut c = Client::new(1);
        let mut other = Coordinate::default();
        other.vec.pop();
        assert_eq!(
            c.update("a", &other, Duration::from_millis(1)),
            Err(Rejected::Dimensions(7))
        );
        let other = Coordinate {
            height: f64::NAN,
            ..Coordinate::default()
        };
        assert_eq!(
            c.update("a", &other, Duration::from_millis(1)),
            Err(Rejected::Invalid)
        );
        assert!(matches!(
            c.update("a", &Coordinate::default(), Duration::from_secs(11)),
            Err(Rejected::Rtt(_))
        ));
        assert_eq!(c.coordinate(), &Coordinate::default());
    }

    /// Nodes on a line, 10 ms apart, probing each other: after a while the
    /// estimated round trips are close to the real ones.
    #[test]
    fn estimates_converge_to_the_real_round_trips() {
        let n = 6;
        let rtt = |i: usize, j: usize| Duration::from_millis(10 * (i.abs_diff(j) as u64) + 1);
        let mut clients: Vec<Client> = (0..n).map(|i| Client::new(i as u64 + 7)).collect();
        let mut rng = Rng::new(42);
        for _ in 0..3000 {
            let i = rng.below(n);
            let j = rng.below(n);
            if i == j {
                continue;
            }
            let other = clients[j].coordinate().clone();
            clients[i]
                .update(&format!("n{j}"), &other, rtt(i, j))
                .unwrap();
        }
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let est = clients[i]
                    .coordinate()
                    .distance_to(clients[j].coordinate())
                    .unwrap()
                    .as_secs_f64();
                let real = rtt(i, j).as_secs_f64();
                assert!(
                    (est - real).abs() < 0.25 * real + 0.002,
                    "n{i} <-> n{j}: estimated {est:.4} s, real {real:.4} s"
                );
            }
        }
        assert!(clients
            .iter()
            .all(|c| c.coordinate().error < 0.5 && c.resets == 0));
    }
}
