//! The agent's file writes, off the protocol state: snapshot lines and
//! compactions, the keyring and tags files, each synced, on one thread of
//! their own, in the order the actor asked for them. A slow or stuck disk
//! delays the files, never a ping.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use tokio::sync::oneshot;

use super::snapshot;

/// How long a stopping agent waits for its last file writes.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// One write, in the order asked.
pub(super) enum Job {
    /// Member changes (name, address when alive) and the clocks after them.
    Snapshot {
        changes: Vec<(String, Option<SocketAddr>)>,
        clocks: (u64, u64, u64),
    },
    /// The graceful leave's line; `done` when it is written.
    SnapshotLeave { done: oneshot::Sender<()> },
    /// The keyring changed: rewrite the keyring file.
    Keyring(Vec<Vec<u8>>),
    /// The tags changed: rewrite the tags file, tell the caller how it went.
    Tags {
        tags: Vec<(String, String)>,
        done: oneshot::Sender<anyhow::Result<()>>,
    },
}

/// The writer thread, when the agent has any file to keep (none: no thread).
pub(super) struct Disk {
    jobs: Option<mpsc::Sender<Job>>,
    finished: Option<oneshot::Receiver<()>>,
}

/// The files the writer keeps.
pub(super) struct Files {
    pub snapshot: Option<snapshot::Writer>,
    pub keyring: Option<PathBuf>,
    pub tags: Option<PathBuf>,
}

impl Disk {
    /// Starts the writer thread if there is any file to write.
    pub(super) fn start(files: Files) -> anyhow::Result<Disk> {
        if files.snapshot.is_none() && files.keyring.is_none() && files.tags.is_none() {
            return Ok(Disk {
                jobs: None,
                finished: None,
            });
        }
        let (tx, rx) = mpsc::channel();
        let (fin_tx, fin_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("gossip-disk".into())
            .stack_size(256 << 10)
            .spawn(move || {
                write_all(files, rx);
                let _ = fin_tx.send(());
            })
            .context("cannot start the file writer thread")?;
        Ok(Disk {
            jobs: Some(tx),
            finished: Some(fin_rx),
        })
    }

    /// Queues a write (never waits). Without a writer, a job that waits
    /// for its write is answered at once.
    pub(super) fn send(&self, job: Job) {
        match &self.jobs {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    tracing::error!("the file writer is gone");
                    answer_unwritten(job);
                }
            }
            None => answer_unwritten(job),
        }
    }

    /// Stops taking writes and waits (a bounded time) for those queued.
    pub(super) async fn finish(mut self) {
        self.jobs = None;
        if let Some(fin) = self.finished.take() {
            if tokio::time::timeout(FINISH_TIMEOUT, fin).await.is_err() {
                tracing::error!(
                    "file writes still pending after {FINISH_TIMEOUT:?}; stopping without them"
                );
            }
        }
    }
}

fn answer_unwritten(job: Job) {
    match job {
        Job::SnapshotLeave { done } => {
            let _ = done.send(());
        }
        Job::Tags { done, .. } => {
            let _ = done.send(Err(anyhow::anyhow!("the file writer is not running")));
        }
        Job::Snapshot { .. } | Job::Keyring(_) => {}
    }
}

/// The thread's loop: every job in order until the actor drops its end.
fn write_all(mut files: Files, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Snapshot { changes, clocks } => {
                if let Some(w) = &mut files.snapshot {
                    w.members(changes.iter().map(|(name, addr)| match addr {
                        Some(a) => snapshot::Change::Alive(name, *a),
                        None => snapshot::Change::NotAlive(name),
                    }));
                    w.clocks(clocks);
                }
            }
            Job::SnapshotLeave { done } => {
                if let Some(w) = &mut files.snapshot {
                    w.leave();
                }
                let _ = done.send(());
            }
            Job::Keyring(keys) => {
                if let Some(path) = &files.keyring {
                    if let Err(e) = save_keyring(path, &keys) {
                        tracing::error!(error = %e, "cannot save the keyring");
                    }
                }
            }
            Job::Tags { tags, done } => {
                let r = match &files.tags {
                    Some(path) => save_tags(path, &tags),
                    None => Ok(()),
                };
                let _ = done.send(r);
            }
        }
    }
}

pub(super) fn save_tags(path: &Path, tags: &[(String, String)]) -> anyhow::Result<()> {
    let map: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    write_atomically(path, &serde_json::to_vec_pretty(&map)?)
        .with_context(|| format!("cannot write tags file {}", path.display()))
}

fn save_keyring(path: &Path, keys: &[Vec<u8>]) -> anyhow::Result<()> {
    let list: Vec<String> = keys
        .iter()
        .map(|k| base64::engine::general_purpose::STANDARD.encode(k))
        .collect();
    write_atomically(path, &serde_json::to_vec_pretty(&list)?)
        .with_context(|| format!("cannot write keyring file {}", path.display()))
}

/// Writes `PATH.tmp` (created afresh, mode 0600 as serf writes its keyring
/// and tags files: the keys are secrets), flushes it to disk, renames it
/// over `path`, then flushes the directory so the rename itself survives a
/// crash. A crash or a full disk mid-way leaves the old tags or keys whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A `.tmp` left by a crash may have any mode: never write into it.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod write_atomically_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("gossip-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keyring_file_is_0600_and_replaced_whole() {
        let dir = scratch("keyring");
        let path = dir.join("keyring.json");
        // An existing keyring, readable by all, and a stale `.tmp` left by a
        // crash, also world-readable: neither mode may survive.
        std::fs::write(&path, b"[\"old\"]").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tmp = dir.join("keyring.json.tmp");
        std::fs::write(&tmp, b"junk").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        let old_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());

        let keys = vec![vec![1u8; 32], vec![2u8; 16]];
        save_keyring(&path, &keys).unwrap();

        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "keyring file mode"
        );
        // Replaced by a rename (a new inode), not rewritten in place.
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&meta), old_inode);
        assert!(!tmp.exists(), "no temporary file left behind");
        let list: Vec<String> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(list, vec![b64.encode([1u8; 32]), b64.encode([2u8; 16])]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failed_rename_leaves_no_temporary() {
        let dir = scratch("keyring-fail");
        // The target is a non-empty directory: the rename fails, the
        // temporary (which holds the keys) must not be left behind.
        let target = dir.join("keyring.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(save_keyring(&target, &[vec![3u8; 16]]).is_err());
        assert!(
            !dir.join("keyring.json.tmp").exists(),
            "temporary removed on error"
        );
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
