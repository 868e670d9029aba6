//! Where things are: the workspace root, the cargo target directory, and the
//! folders the lab writes its deliverables to.

use std::path::PathBuf;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` like cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        }
        _ => root().join("target"),
    }
}

/// `logs/task_N/`, created if missing.
pub fn task_logs(task: u8) -> std::io::Result<PathBuf> {
    let dir = root().join("logs").join(format!("task_{task}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `report/assets/`, created if missing.
pub fn report_assets() -> std::io::Result<PathBuf> {
    let dir = root().join("report").join("assets");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// True when running as root (uid 0).
pub fn is_root() -> bool {
    // SAFETY-free: read our own status instead of calling libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
