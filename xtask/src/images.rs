//! Building the lab's images: one place for it.
//!
//! The binaries are compiled on the host (the supervisor, the agent and the
//! renderer statically against musl, see [`build_binaries`]; the web app
//! with the release profile) and copied into a staging build context beside the Dockerfiles; each Dockerfile has one
//! stage per lab task (`task0` … `task6`), each built on the previous one, and
//! every stage is tagged `ait/<image>:taskN` (the last one also `:latest`).
//! The base image comes from `BASE_IMAGE` when set, else `debian:bookworm-slim`
//! when present locally, else our own `ait/debian-base:bookworm` made with
//! debootstrap from Debian's packages (no registry needed).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{docker, prereq, project};

/// The images of the stack and their Dockerfile folders under `docker/`.
pub const IMAGES: [&str; 2] = ["ha", "webapp"];
/// The last lab stage (tagged `:latest` too).
pub const LAST_STAGE: u8 = 6;
/// The binaries the images ship.
pub const BINARIES: [&str; 4] = ["webapp", "init", "gossip", "render"];
/// Our own base image, built from Debian packages.
pub const OWN_BASE: &str = "ait/debian-base:bookworm";
const OFFICIAL_BASE: &str = "debian:bookworm-slim";

pub fn tag(image: &str, stage: u8) -> String {
    format!("ait/{image}:task{stage}")
}

/// The base image to build on, making ours when nothing else is there.
pub fn ensure_base_image() -> Result<String> {
    if let Ok(base) = std::env::var("BASE_IMAGE") {
        if !base.is_empty() {
            if !docker::image_exists(&base) {
                docker::run(["pull", &base])
                    .with_context(|| format!("BASE_IMAGE={base} is not available locally"))?;
            }
            return Ok(base);
        }
    }
    if docker::image_exists(OFFICIAL_BASE) {
        return Ok(OFFICIAL_BASE.into());
    }
    if docker::image_exists(OWN_BASE) {
        return Ok(OWN_BASE.into());
    }
    prereq::ensure_tool("debootstrap", "debootstrap")?;
    let rootfs = project::target_dir().join("rootfs-bookworm");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("removing a stale {}", rootfs.display()))?;
    }
    eprintln!(
        "xtask: building {OWN_BASE} with debootstrap (minbase bookworm) in {}",
        rootfs.display()
    );
    let mirror =
        std::env::var("DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let log = project::target_dir().join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg(&mirror)
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        bail!(
            "debootstrap of bookworm from {mirror} failed ({status}): see {}",
            log.display()
        );
    }
    // Leave no package lists or caches in the image.
    for dir in ["var/lib/apt/lists", "var/cache/apt/archives"] {
        let path = rootfs.join(dir);
        if let Ok(entries) = std::fs::read_dir(&path) {
            for entry in entries.flatten() {
                if entry.path().is_file() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let status = Command::new("docker")
        .args(["import", "-c", "CMD [\"bash\"]", "-", OWN_BASE])
        .stdin(tar.stdout.context("tar's stdout")?)
        .stdout(Stdio::null())
        .status()
        .context("running docker import")?;
    if !status.success() {
        bail!("docker import of {} failed ({status})", rootfs.display());
    }
    std::fs::remove_dir_all(&rootfs).ok();
    Ok(OWN_BASE.into())
}

/// The binaries linked statically against musl (small, no shared libraries
/// mapped: the supervisor and the agent run in every container, and their
/// memory is one of the project's goals); the web app stays on glibc, whose
/// allocator serves its request rate better.
pub const STATIC_BINARIES: [&str; 3] = ["init", "gossip", "render"];
/// The target and profile of [`STATIC_BINARIES`] (profile `static` in the
/// workspace's Cargo.toml: release, optimised for size).
const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";
const STATIC_PROFILE: &str = "static";

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project::root());
    cmd
}

fn cargo_build(args: &[&str], bins: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet"]).args(args);
    for bin in bins {
        cmd.args(["-p", bin]);
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!(
            "cargo build {} of {} failed",
            args.join(" "),
            bins.join(", ")
        );
    }
    Ok(())
}

/// True when rustup has (or can add) the musl target; otherwise says once
/// why the static binaries fall back to glibc.
fn static_target_available() -> bool {
    let installed = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == STATIC_TARGET)
    };
    match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) if installed(&out) => return true,
        Ok(_) => {}
        Err(_) => {
            eprintln!(
                "xtask: rustup not found; init, gossip and render are linked against glibc \
                 (more memory per process)"
            );
            return false;
        }
    }
    eprintln!("xtask: rustup target add {STATIC_TARGET}");
    let added = Command::new("rustup")
        .args(["target", "add", STATIC_TARGET])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added {
        eprintln!(
            "xtask: could not add the {STATIC_TARGET} target; init, gossip and render are \
             linked against glibc (more memory per process)"
        );
    }
    added
}

/// Compile the images' binaries on the host (init, gossip and render
/// static with musl when the target is available, the web app with the
/// release profile) and gather them in one folder, which is returned.
pub fn build_binaries() -> Result<PathBuf> {
    let release = project::target_dir().join("release");
    let mut from: Vec<(&str, PathBuf)> = Vec::new();
    if static_target_available() {
        cargo_build(
            &["--profile", STATIC_PROFILE, "--target", STATIC_TARGET],
            &STATIC_BINARIES,
        )?;
        let dir = project::target_dir()
            .join(STATIC_TARGET)
            .join(STATIC_PROFILE);
        from.extend(STATIC_BINARIES.iter().map(|b| (*b, dir.join(b))));
        cargo_build(&["--release"], &["webapp"])?;
    } else {
        cargo_build(&["--release"], &BINARIES)?;
        from.extend(STATIC_BINARIES.iter().map(|b| (*b, release.join(b))));
    }
    from.push(("webapp", release.join("webapp")));
    let out = project::target_dir().join("image-bin");
    std::fs::create_dir_all(&out)?;
    for (name, path) in from {
        copy_if_changed(&path, &out.join(name))?;
    }
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            copy_if_changed(&entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Copy keeping the destination untouched when equal, so Docker's cache
/// (keyed on content and mode) keeps hitting.
fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let same = match (std::fs::read(from), std::fs::read(to)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    } else {
        let mode = std::fs::metadata(from)?.permissions();
        std::fs::set_permissions(to, mode)?;
    }
    Ok(())
}

/// The staging build context: `docker/`, `bin/` with the binaries and
/// `render-templates/` from `crates/render/templates`.
pub fn stage_context(release: &Path) -> Result<PathBuf> {
    let ctx = project::target_dir().join("docker-context");
    copy_tree(&project::root().join("docker"), &ctx)?;
    // The haproxy.cfg template has one home, the render crate.
    copy_tree(
        &project::root().join("crates/render/templates"),
        &ctx.join("render-templates"),
    )?;
    let bin = ctx.join("bin");
    std::fs::create_dir_all(&bin)?;
    for name in BINARIES {
        copy_if_changed(&release.join(name), &bin.join(name))?;
    }
    Ok(ctx)
}

/// Build every stage of both images up to `upto` (all of them by default).
pub async fn build_images(upto: u8) -> Result<()> {
    tokio::task::spawn_blocking(move || build_images_sync(upto)).await?
}

fn build_images_sync(upto: u8) -> Result<()> {
    prereq::ensure_disk_space()?;
    // TEMP until merge
    let base = ensure_base_image()?;
    let release = build_binaries()?;
    let ctx = stage_context(&release)?;
    for image in IMAGES {
        let dockerfile = ctx.join(image).join("Dockerfile");
        for stage in 0..=upto {
            let tag = tag(image, stage);
            eprintln!("xtask: docker build {tag}");
            let mut args: Vec<String> = vec![
                "build".into(),
                "--quiet".into(),
                "--build-arg".into(),
                format!("BASE_IMAGE={base}"),
                "--target".into(),
                format!("task{stage}"),
                "-t".into(),
                tag.clone(),
            ];
            if stage == LAST_STAGE {
                args.extend(["-t".into(), format!("ait/{image}:latest")]);
            }
            args.extend(["-f".into(), dockerfile.display().to_string()]);
            args.push(ctx.display().to_string());
            docker::run(&args).with_context(|| format!("building {tag}"))?;
        }
    }
    Ok(())
}

/// Build the images up to `stage` once per process (tests share it); a
/// rebuild with nothing changed is cheap thanks to cargo's and Docker's caches.
pub async fn ensure_images(stage: u8) -> Result<()> {
    tokio::task::spawn_blocking(move || ensure_images_sync(stage)).await?
}

fn ensure_images_sync(stage: u8) -> Result<()> {
    static BUILT: std::sync::Mutex<Option<u8>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.is_some_and(|b| b >= stage) {
        return Ok(());
    }
    build_images_sync(stage)?;
    *built = Some(stage);
    Ok(())
}
