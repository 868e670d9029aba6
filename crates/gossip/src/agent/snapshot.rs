//! Serf's snapshot file (`-snapshot`): an append-only text log of the
//! members seen alive, the three Lamport clocks and a final `leave`, in
//! serf's own line format (`alive: NAME IP:PORT`, `not-alive: NAME`,
//! `clock: N`, `event-clock: N`, `query-clock: N`, `leave`), so a restarted
//! agent keeps its clocks (old events are not replayed) and, with
//! `-rejoin`, rejoins the members it knew.
//!
//! Not done: serf's compaction of a large file (ours only grows; one line
//! per member change and per clock change, at most once a second).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an earlier run left in the snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Previous {
    /// name -> "ip:port" of the members alive when the file ended.
    pub alive: BTreeMap<String, String>,
    pub clock: u64,
    pub event_clock: u64,
    pub query_clock: u64,
    /// The previous run ended with a graceful leave.
    pub left: bool,
}

pub fn parse(text: &str) -> Previous {
    let mut p = Previous::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "leave" {
            p.left = true;
            p.alive.clear();
            continue;
        }
        let Some((key, val)) = line.split_once(": ") else {
            continue;
        };
        match key {
            "alive" => {
                if let Some((name, addr)) = val.rsplit_once(' ') {
                    p.alive.insert(name.to_string(), addr.to_string());
                    p.left = false;
                }
            }
            "not-alive" => {
                p.alive.remove(val);
            }
            "clock" => p.clock = val.parse().unwrap_or(p.clock),
            "event-clock" => p.event_clock = val.parse().unwrap_or(p.event_clock),
            "query-clock" => p.query_clock = val.parse().unwrap_or(p.query_clock),
            _ => {}
        }
    }
    p
}

pub fn load(path: &Path) -> Previous {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Appends to the snapshot; write errors are logged, never fatal.
pub struct Writer {
    path: PathBuf,
    clocks: (u64, u64, u64),
}

impl Writer {
    pub fn new(path: PathBuf, clocks: (u64, u64, u64)) -> Writer {
        Writer { path, clocks }
    }

    pub fn append(&self, text: &str) {
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = r {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the snapshot");
        }
    }

    /// Lines for changed clocks.
    pub fn clocks(&mut self, now: (u64, u64, u64)) {
        let mut out = String::new();
        if now.0 != self.clocks.0 {
            out.push_str(&format!("clock: {}\n", now.0));
        }
        if now.1 != self.clocks.1 {
            out.push_str(&format!("event-clock: {}\n", now.1));
        }
        if now.2 != self.clocks.2 {
            out.push_str(&format!("query-clock: {}\n", now.2));
        }
        self.clocks = now;
        if !out.is_empty() {
            self.append(&out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_serf_lines() {
        let p = parse(
            "alive: a 10.0.0.1:7946\nalive: b 10.0.0.2:7946\nclock: 4\nnot-alive: a\n\
             event-clock: 9\nquery-clock: 2\n# comment\n",
        );
        assert_eq!(p.alive.len(), 1);
        assert_eq!(p.alive["b"], "10.0.0.2:7946");
        assert_eq!((p.clock, p.event_clock, p.query_clock), (4, 9, 2));
        assert!(!p.left);
        assert!(parse("alive: a 1.2.3.4:1\nleave\n").left);
    }
}
