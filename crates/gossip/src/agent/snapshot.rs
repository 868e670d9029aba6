//! Serf's snapshot file (`-snapshot`): an append-only text log of the
//! members seen alive, the three Lamport clocks and a final `leave`, in
//! serf's own line format (`alive: NAME IP:PORT`, `not-alive: NAME`,
//! `clock: N`, `event-clock: N`, `query-clock: N`, `leave`), so a restarted
//! agent keeps its clocks (old events are not replayed) and rejoins the
//! members it knew, as serf does:
//! - after a crash (no `leave` at the end), always;
//! - after a graceful leave, only with `-rejoin` (`rejoin_after_leave`):
//!   then the `leave` line is ignored on reading and the members are kept
//!   on leaving; without it, a `leave` forgets the members and the clocks.
//!
//! The file is compacted as serf does: once what was appended since the
//! last rewrite passes twice 128 bytes per alive member (and at least
//! [`MIN_COMPACT_SIZE`], serf's default `MinSnapshotSize`), the state is
//! written to `PATH.compact` (alive members, then the clocks), synced, and
//! renamed over the file, so a crash mid-way leaves the old file whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an earlier run left in the snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Previous {
    /// name -> "ip:port" of the members alive when the file ended: the
    /// ones to rejoin.
    pub alive: BTreeMap<String, String>,
    pub clock: u64,
    pub event_clock: u64,
    pub query_clock: u64,
    /// The previous run ended with a graceful leave.
    pub left: bool,
}

/// Read a snapshot's lines. A `leave` forgets the members and the clocks
/// (serf's replay), unless `rejoin_after_leave`.
pub fn parse(text: &str, rejoin_after_leave: bool) -> Previous {
    let mut p = Previous::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "leave" {
            if rejoin_after_leave {
                tracing::info!("ignoring the previous leave in the snapshot (-rejoin)");
            } else {
                p = Previous::default();
            }
            p.left = true;
            continue;
        }
        let Some((key, val)) = line.split_once(": ") else {
            continue;
        };
        match key {
            "alive" => match val.rsplit_once(' ') {
                Some((name, addr))
                    if writable(name) && addr.parse::<std::net::SocketAddr>().is_ok() =>
                {
                    p.alive.insert(name.to_string(), addr.to_string());
                    p.left = false;
                }
                _ => tracing::warn!("skipping snapshot line {line:?}: not a node name and address"),
            },
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

/// Can `name` be written in a line? Node names come from the network, and
/// one with a line break (or any control character) would write lines of
/// its own: a forged `leave` (the restart forgets everyone) or `alive` (it
/// joins an address of the sender's choosing). Such a member is left out
/// of the snapshot: it is not rejoined after a restart.
pub fn writable(name: &str) -> bool {
    !name.chars().any(char::is_control)
}

/// What an earlier run left in `path`, created empty when missing. A file
/// that cannot be opened for reading and appending is an error naming it,
/// as serf refuses to start then: an agent silently without its snapshot
/// would replay old events and forget whom to rejoin. A line that is not
/// UTF-8 is skipped, like any line serf cannot parse.
pub fn load(path: &Path, rejoin_after_leave: bool) -> anyhow::Result<Previous> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("cannot open the snapshot file {}", path.display()))?;
    let text: Vec<&str> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .collect();
    Ok(parse(&text.join("\n"), rejoin_after_leave))
}

/// Serf's `snapshotBytesPerNode`: the estimated size of one member's line.
const BYTES_PER_MEMBER: u64 = 128;
/// Serf's `snapshotCompactionThreshold`: compact past this many times the
/// estimated size of the state.
const COMPACTION_FACTOR: u64 = 2;
/// Serf's default `MinSnapshotSize` (128 KiB): never compact a smaller file.
pub const MIN_COMPACT_SIZE: u64 = 128 * 1024;

/// One change to record: a member seen alive at an address, or gone.
pub enum Change<'a> {
    Alive(&'a str, std::net::SocketAddr),
    NotAlive(&'a str),
}

/// Appends to the snapshot and compacts it; write errors are logged, never
/// fatal.
pub struct Writer {
    path: PathBuf,
    clocks: (u64, u64, u64),
    /// The members alive now, as a compacted file would list them.
    alive: BTreeMap<String, String>,
    /// The file ends with a graceful leave.
    left: bool,
    /// `-rejoin`: a leave keeps the members (serf's snapshotter).
    rejoin_after_leave: bool,
    /// Size of the file as far as this writer knows.
    size: u64,
    min_compact: u64,
}

impl Writer {
    /// A writer continuing `path`, whose earlier content was `prev`.
    pub fn new(path: PathBuf, prev: &Previous, clocks: (u64, u64, u64)) -> Writer {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Writer {
            path,
            clocks,
            alive: prev.alive.clone(),
            left: prev.left,
            rejoin_after_leave: false,
            size,
            min_compact: MIN_COMPACT_SIZE,
        }
    }

    /// Lowers the compaction floor (tests).
    pub fn with_min_compact(mut self, bytes: u64) -> Writer {
        self.min_compact = bytes;
        self
    }

    fn append(&mut self, text: &str) {
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        match r {
            Ok(()) => {
                self.size += text.len() as u64;
                if self.size > self.compact_at() {
                    self.compact();
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the snapshot")
            }
        }
    }

    fn compact_at(&self) -> u64 {
        (self.alive.len() as u64 * BYTES_PER_MEMBER * COMPACTION_FACTOR).max(self.min_compact)
    }

    /// Rewrites the file from the state in memory (`PATH.compact`, synced,
    /// renamed over `PATH`). On error the old file stays as it was.
    fn compact(&mut self) {
        let mut text = String::new();
        for (name, addr) in self.alive.iter().filter(|(n, _)| writable(n)) {
            text.push_str(&format!("alive: {name} {addr}\n"));
        }
        let (c, e, q) = self.clocks;
        text.push_str(&format!("clock: {c}\nevent-clock: {e}\nquery-clock: {q}\n"));
        if self.left {
            text.push_str("leave\n");
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".compact");
        let tmp = PathBuf::from(tmp);
        let r = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match r {
            Ok(()) => {
                tracing::debug!(path = %self.path.display(), from = self.size, to = text.len(), "snapshot compacted");
                self.size = text.len() as u64;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::error!(path = %self.path.display(), error = %e, "cannot compact the snapshot");
            }
        }
    }

    /// Records member changes, in order, in one write.
    pub fn members<'a>(&mut self, changes: impl IntoIterator<Item = Change<'a>>) {
        let mut out = String::new();
        for c in changes {
            let (Change::Alive(name, _) | Change::NotAlive(name)) = c;
            if !writable(name) {
                tracing::warn!(
                    "not recording member {name:?} in the snapshot: its name has control characters"
                );
                continue;
            }
            match c {
                Change::Alive(name, addr) => {
                    out.push_str(&format!("alive: {name} {addr}\n"));
                    self.alive.insert(name.to_string(), addr.to_string());
                    self.left = false;
                }
                Change::NotAlive(name) => {
                    out.push_str(&format!("not-alive: {name}\n"));
                    self.alive.remove(name);
                }
            }
        }
        if !out.is_empty() {
            self.append(&out);
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

    /// Keep the members on a leave (`-rejoin`), as serf's snapshotter.
    pub fn rejoin_after_leave(mut self, yes: bool) -> Self {
        self.rejoin_after_leave = yes;
        self
    }

    /// The graceful leave: without `-rejoin` the members are forgotten (a
    /// restart does not rejoin them), as serf does.
    pub fn leave(&mut self) {
        if !self.rejoin_after_leave {
            self.alive.clear();
        }
        self.left = true;
        self.append("leave\n");
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
            false,
        );
        assert_eq!(p.alive.len(), 1);
        assert_eq!(p.alive["b"], "10.0.0.2:7946");
        assert_eq!((p.clock, p.event_clock, p.query_clock), (4, 9, 2));
        assert!(!p.left);
        assert!(parse("alive: a 1.2.3.4:1\nleave\n", false).left);
    }

    #[test]
    fn a_leave_forgets_members_and_clocks_unless_rejoin_after_leave() {
        let text = "alive: a 10.0.0.1:7946\nclock: 4\nevent-clock: 9\nleave\n";
        let p = parse(text, false);
        assert!(p.left && p.alive.is_empty(), "{p:?}");
        assert_eq!((p.clock, p.event_clock), (0, 0), "serf zeroes the clocks");
        let p = parse(text, true);
        assert!(p.left, "{p:?}");
        assert_eq!(
            p.alive["a"], "10.0.0.1:7946",
            "-rejoin keeps whom to rejoin"
        );
        assert_eq!((p.clock, p.event_clock), (4, 9));
        // Alive again after the leave: not a leave any more.
        assert!(!parse("leave\nalive: b 10.0.0.2:7946\n", false).left);
    }

    #[test]
    fn a_writer_with_rejoin_keeps_the_members_on_leave() {
        let path = temp("rejoin-leave");
        let a: std::net::SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let mut w = Writer::new(path.clone(), &Previous::default(), (0, 0, 0))
            .with_min_compact(16)
            .rejoin_after_leave(true);
        w.members([Change::Alive("a", a), Change::Alive("b", a)]);
        w.leave();
        // Compaction after the leave keeps them too.
        w.members([Change::Alive("c", a)]);
        w.leave();
        let p = load(&path, true).unwrap();
        assert_eq!(p.alive.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(p.left);
        let p = load(&path, false).unwrap();
        assert!(p.alive.is_empty(), "{p:?}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A node name is chosen by whoever runs that node: one with a line
    /// break must not write lines of its own (a forged `leave` would make
    /// the restarted agent forget everyone, a forged `alive` would make it
    /// join an address of the attacker's choosing).
    #[test]
    fn node_names_cannot_forge_snapshot_lines() {
        let path = temp("forged");
        let a: std::net::SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let mut w = Writer::new(path.clone(), &Previous::default(), (0, 0, 0)).with_min_compact(1);
        let forged = [
            "x 10.0.0.1:7946\nalive: evil 6.6.6.6:7946",
            "y 10.0.0.1:7946\nleave",
            "z\rleave",
            "w 10.0.0.1:7946\nclock: 999",
        ];
        w.members([Change::Alive("good", a)]);
        for name in forged {
            w.members([Change::Alive(name, a)]);
        }
        w.members([Change::NotAlive("y 10.0.0.1:7946\nleave")]);
        w.clocks((5, 6, 7));
        let check = |p: Previous| {
            assert_eq!(p.alive.keys().collect::<Vec<_>>(), ["good"], "{p:?}");
            assert!(!p.left, "{p:?}");
            assert_eq!((p.clock, p.event_clock, p.query_clock), (5, 6, 7));
        };
        check(load(&path, false).unwrap());
        // Compacted (the floor is 1 byte): the same.
        w.members([Change::Alive("good", a)]);
        check(load(&path, false).unwrap());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Lines another writer (or a damaged disk) left: a member line whose
    /// address is not an address, or a name with control characters, is
    /// skipped; clocks out of range keep the last good value; the largest
    /// clock is read as it is.
    #[test]
    fn the_reader_skips_lines_it_cannot_trust() {
        let p = parse(
            "alive: a 10.0.0.1:7946\nalive: b not-an-address\nalive: c\u{7}d 10.0.0.3:7946\n\
             alive: 10.0.0.4:7946\nclock: 18446744073709551615\nevent-clock: 3\n\
             event-clock: 18446744073709551616\nquery-clock: -1\n",
            false,
        );
        assert_eq!(p.alive.keys().collect::<Vec<_>>(), ["a"], "{p:?}");
        assert_eq!((p.clock, p.event_clock, p.query_clock), (u64::MAX, 3, 0));
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gossip-snapshot-{}-{}-{name}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("snapshot")
    }

    #[test]
    fn a_growing_file_is_compacted_to_the_same_state() {
        let path = temp("compact");
        let mut w =
            Writer::new(path.clone(), &Previous::default(), (0, 0, 0)).with_min_compact(4096);
        let addr = |i: u32| {
            std::net::SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7946))
        };
        let mut written = 0usize;
        // 2000 members come and go; 10 stay; the clocks move on.
        for i in 0..2000u32 {
            let name = format!("node-{i}");
            w.members([Change::Alive(&name, addr(i))]);
            written += format!("alive: {name} {}\n", addr(i)).len();
            if i % 200 != 0 {
                w.members([Change::NotAlive(&name)]);
                written += format!("not-alive: {name}\n").len();
            }
            w.clocks((u64::from(i) + 1, u64::from(i) / 2, 3));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            (text.len() as u64) <= 4096 + 200 && text.len() < written / 10,
            "not compacted: {} bytes after {written} written",
            text.len()
        );
        let p = parse(&text, false);
        let want: BTreeMap<String, String> = (0..2000u32)
            .filter(|i| i % 200 == 0)
            .map(|i| (format!("node-{i}"), addr(i).to_string()))
            .collect();
        assert_eq!(p.alive, want);
        assert_eq!((p.clock, p.event_clock, p.query_clock), (2000, 999, 3));
        assert!(!path.with_file_name("snapshot.compact").exists());

        // A writer continuing the file keeps the state and the leave wins.
        let prev = load(&path, false).unwrap();
        let mut w = Writer::new(path.clone(), &prev, (p.clock, p.event_clock, p.query_clock))
            .with_min_compact(64);
        w.leave();
        let p = load(&path, false).unwrap();
        assert!(p.left && p.alive.is_empty(), "{p:?}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_failed_compaction_keeps_the_old_file() {
        let path = temp("readonly");
        let mut w = Writer::new(path.clone(), &Previous::default(), (0, 0, 0)).with_min_compact(16);
        // The temporary file cannot be created: a directory is in its place.
        std::fs::create_dir_all(path.with_file_name("snapshot.compact")).unwrap();
        let a: std::net::SocketAddr = "10.0.0.1:7946".parse().unwrap();
        w.members([Change::Alive("a", a), Change::Alive("b", a)]);
        w.members([Change::NotAlive("a")]);
        let p = load(&path, false).unwrap();
        assert_eq!(p.alive.keys().collect::<Vec<_>>(), ["b"]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_snapshot_that_cannot_be_opened_is_an_error_naming_it() {
        let path = temp("unopenable");
        // A directory where the file should be, and a file under a missing
        // directory.
        std::fs::create_dir_all(&path).unwrap();
        let missing = path.with_file_name("no-such-dir").join("snapshot");
        for bad in [&path, &missing] {
            let e = format!("{:#}", load(bad, false).unwrap_err());
            assert!(e.contains(&bad.display().to_string()), "{e}");
        }
        // A missing file is created; a line that is not UTF-8 is skipped.
        let fresh = path.with_file_name("fresh");
        assert_eq!(load(&fresh, false).unwrap(), Previous::default());
        assert!(fresh.is_file());
        std::fs::write(&fresh, b"alive: \xff\xfe 10.0.0.9:7946\xff\nclock: 7\n").unwrap();
        let p = load(&fresh, false).unwrap();
        assert_eq!(p.clock, 7);
        assert!(p.alive.is_empty(), "{p:?}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
