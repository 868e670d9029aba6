//! Screenshots of pages with headless Chromium (Debian's `chromium`).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Stdio;
use tokio::process::Command;

/// Render `url` to a PNG at `out`, 1280×900.
pub async fn screenshot(url: &str, out: &Path) -> Result<()> {
    tokio::task::spawn_blocking(|| crate::prereq::ensure_tool("chromium", "chromium")).await??;
    let profile = tempfile_dir()?;
    let _ = std::fs::remove_file(out);
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running chromium")?;
    let _ = std::fs::remove_dir_all(&profile);
    let png = std::fs::read(out).unwrap_or_default();
    if !png.starts_with(b"\x89PNG") {
        bail!(
            "chromium wrote no PNG for {url} ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = crate::project::target_dir().join(format!("chromium-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
