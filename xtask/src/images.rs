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

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{BuildImageOptions, CreateImageOptions, TagImageOptions};
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::{engine, prereq, project};

/// The images of the stack and their Dockerfile folders under `docker/`,
/// with a stage per lab task.
pub const IMAGES: [&str; 2] = ["ha", "webapp"];
/// Images of the final stage only (a stage `task6` and `:latest`): the
/// shared session store.
pub const FINAL_ONLY: [&str; 1] = ["sessions"];
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

/// `name[:tag]` split as the engine's create and tag calls take it (the
/// tag `latest` when none is given); a digest reference stays whole.
fn split_reference(reference: &str) -> (String, String) {
    if reference.contains('@') {
        return (reference.to_string(), String::new());
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            reference[..name_start + i].to_string(),
            reference[name_start + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// `docker pull REFERENCE`, through the API.
async fn pull(reference: &str) -> Result<()> {
    let (from_image, tag) = split_reference(reference);
    let docker = engine::docker()?;
    let mut progress = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(from_image),
            tag: (!tag.is_empty()).then_some(tag),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(item) = progress.next().await {
        item.map_err(|e| anyhow!("pulling {reference}: {}", engine_message(&e)))?;
    }
    Ok(())
}

/// The engine's own words for an error (its message, not the Rust type).
fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerStreamError { error } => error.trim().to_string(),
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            message.trim().to_string()
        }
        other => other.to_string(),
    }
}

/// The base image to build on, making ours when nothing else is there.
pub async fn ensure_base_image() -> Result<String> {
    if let Ok(base) = std::env::var("BASE_IMAGE") {
        if !base.is_empty() {
            if !engine::image_exists(&base).await? {
                pull(&base)
                    .await
                    .with_context(|| format!("BASE_IMAGE={base} is not available locally"))?;
            }
            return Ok(base);
        }
    }
    if engine::image_exists(OFFICIAL_BASE).await? {
        return Ok(OFFICIAL_BASE.into());
    }
    if engine::image_exists(OWN_BASE).await? {
        return Ok(OWN_BASE.into());
    }
    // apt, when debootstrap is missing: a host package manager, not the engine.
    tokio::task::spawn_blocking(|| prereq::ensure_tool("debootstrap", "debootstrap")).await??;
    let rootfs = project::target_dir().join("rootfs-bookworm");
    if tokio::fs::try_exists(&rootfs).await? {
        tokio::fs::remove_dir_all(&rootfs)
            .await
            .with_context(|| format!("removing a stale {}", rootfs.display()))?;
    }
    eprintln!(
        "xtask: building {OWN_BASE} with debootstrap (minbase bookworm) in {}",
        rootfs.display()
    );
    let mirror =
        std::env::var("DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let log = project::target_dir().join("debootstrap.log");
    let status = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg(&mirror)
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .status()
        .await
        .context("running debootstrap")?;
    if !status.success() {
        bail!(
            "debootstrap of bookworm from {mirror} failed ({status}): see {}",
            log.display()
        );
    }
    // Leave no package lists or caches in the image.
    let dir = rootfs.clone();
    tokio::task::spawn_blocking(move || {
        for sub in ["var/lib/apt/lists", "var/cache/apt/archives"] {
            if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
                for entry in entries.flatten() {
                    if entry.path().is_file() {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    })
    .await?;
    import_rootfs(&rootfs, OWN_BASE).await?;
    tokio::fs::remove_dir_all(&rootfs).await.ok();
    Ok(OWN_BASE.into())
}

/// `tar -C ROOTFS -c . | docker import -c 'CMD ["bash"]' - TAG`, through
/// the API: the tree is archived as it is (owners, modes, symlinks and
/// device nodes kept, no link followed) into a file under target/, which
/// is streamed to the engine.
pub async fn import_rootfs(rootfs: &Path, tag: &str) -> Result<()> {
    let archive = project::target_dir().join(format!(
        "{}.tar",
        rootfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rootfs".into())
    ));
    let (dir, out) = (rootfs.to_path_buf(), archive.clone());
    tokio::task::spawn_blocking(move || write_rootfs_tar(&dir, &out)).await??;
    let (repo, version) = split_reference(tag);
    let docker = engine::docker()?;
    let mut progress = docker.create_image(
        Some(CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo),
            tag: Some(version),
            changes: vec![r#"CMD ["bash"]"#.into()],
            ..Default::default()
        }),
        Some(bollard::body_try_stream(file_chunks(&archive).await?)),
        None,
    );
    let mut result = Ok(());
    while let Some(item) = progress.next().await {
        if let Err(e) = item {
            result = Err(anyhow!(
                "importing {} as {tag}: {}",
                rootfs.display(),
                engine_message(&e)
            ));
            break;
        }
    }
    drop(progress);
    tokio::fs::remove_file(&archive).await.ok();
    result?;
    if !engine::image_exists(tag).await? {
        bail!(
            "importing {} as {tag}: the engine reported no error but has no image {tag}",
            rootfs.display()
        );
    }
    Ok(())
}

/// The root file system as a tar file, entries named relative to it.
fn write_rootfs_tar(rootfs: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", rootfs)
        .with_context(|| format!("archiving {}", rootfs.display()))?;
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

/// A file as a request body, streamed in chunks (a root file system is a
/// few hundred MiB). Generic over the chunk type so that bollard's body
/// helper picks its own.
async fn file_chunks<B: From<Vec<u8>> + Send + 'static>(
    path: &Path,
) -> Result<impl futures_util::Stream<Item = std::io::Result<B>> + Send + 'static> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(futures_util::stream::try_unfold(
        file,
        |mut file| async move {
            let mut buf = vec![0u8; 1 << 20];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((B::from(buf), file)))
        },
    ))
}

/// The staged build context as a tar file (`target/docker-context.tar`),
/// as the `docker build` command sends it: entries named relative to the
/// context, owned by root (uid and gid 0, no user or group names), modes and
/// contents as on disk, symlinks kept. Docker's build cache keys `COPY` on
/// those, so an unchanged context keeps hitting the cache.
pub async fn context_tar(ctx: &Path) -> Result<PathBuf> {
    let out = ctx.with_extension("tar");
    let (dir, file) = (ctx.to_path_buf(), out.clone());
    tokio::task::spawn_blocking(move || write_context_tar(&dir, &file)).await??;
    Ok(out)
}

fn write_context_tar(ctx: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    append_tree(&mut tar, ctx, Path::new(""))
        .with_context(|| format!("archiving the build context {}", ctx.display()))?;
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

/// Append `root/rel` and what is under it, sorted by name.
fn append_tree<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        // Permission bits only, as the CLI writes them: the file type bits
        // the tar crate keeps in the mode field change the engine's
        // checksum of the file, hence miss the cache of `COPY`.
        header.set_mode(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_size(0);
            header.set_path(&name)?;
            // `dir/`, with the slash the CLI writes: the engine's checksum
            // of a copied directory covers its entries' names.
            let field = &mut header.as_old_mut().name;
            let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
            if len < field.len() {
                field[len] = b'/';
            }
            header.set_cksum();
            tar.append(&header, std::io::empty())?;
            append_tree(tar, root, &name)?;
        } else if meta.file_type().is_symlink() {
            header.set_size(0);
            tar.append_link(&mut header, &name, std::fs::read_link(&path)?)?;
        } else if meta.is_file() {
            let file = std::fs::File::open(&path)?;
            tar.append_data(&mut header, &name, file)?;
        }
    }
    Ok(())
}

/// One image built from the staged context (see [`context_tar`]).
pub struct BuildSpec<'a> {
    /// The Dockerfile's path inside the context, e.g. `ha/Dockerfile`.
    pub dockerfile: &'a str,
    /// The stage to stop at (`--target`); the last one when `None`.
    pub target: Option<&'a str>,
    /// `--build-arg BASE_IMAGE=...`.
    pub base: &'a str,
    /// Every tag the image gets (at least one).
    pub tags: &'a [String],
}

/// How many lines of build output an error carries.
const BUILD_TAIL: usize = 20;

/// `docker build` through the API (classic builder): the context tar as the
/// body, the first tag given to the build, the others added after.
pub async fn build_image(context_tar: &Path, spec: &BuildSpec<'_>) -> Result<()> {
    let first = spec
        .tags
        .first()
        .with_context(|| format!("building {}: no tag given", spec.dockerfile))?;
    let docker = engine::docker()?;
    let options = BuildImageOptions {
        dockerfile: spec.dockerfile.into(),
        t: Some(first.clone()),
        target: spec.target.unwrap_or_default().into(),
        buildargs: Some(HashMap::from([(
            "BASE_IMAGE".to_string(),
            spec.base.to_string(),
        )])),
        rm: true,
        ..Default::default()
    };
    let mut output = docker.build_image(
        options,
        None,
        Some(bollard::body_try_stream(file_chunks(context_tar).await?)),
    );
    let mut tail: VecDeque<String> = VecDeque::with_capacity(BUILD_TAIL);
    let tail_text = |tail: &VecDeque<String>| {
        if tail.is_empty() {
            "(no build output)".to_string()
        } else {
            tail.iter().cloned().collect::<Vec<_>>().join("\n")
        }
    };
    while let Some(item) = output.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => bail!(
                "building {first} from {}: {}\nlast lines of the build:\n{}",
                spec.dockerfile,
                engine_message(&e),
                tail_text(&tail)
            ),
        };
        for line in info.stream.iter().flat_map(|s| s.lines()) {
            if line.trim().is_empty() {
                continue;
            }
            if tail.len() == BUILD_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.trim_end().to_string());
        }
        if let Some(detail) = info.error_detail {
            bail!(
                "building {first} from {}: {}\nlast lines of the build:\n{}",
                spec.dockerfile,
                detail.message.unwrap_or_default().trim(),
                tail_text(&tail)
            );
        }
    }
    drop(output);
    for extra in &spec.tags[1..] {
        let (repo, tag) = split_reference(extra);
        docker
            .tag_image(
                first,
                Some(TagImageOptions {
                    repo: Some(repo),
                    tag: Some(tag),
                }),
            )
            .await
            .map_err(|e| anyhow!("tagging {first} as {extra}: {}", engine_message(&e)))?;
    }
    Ok(())
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

async fn cargo_build(args: &[&str], bins: &[&str]) -> Result<()> {
    let mut cmd =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project::root());
    cmd.args(["build", "--quiet"]).args(args);
    for bin in bins {
        cmd.args(["-p", bin]);
    }
    let status = cmd.status().await.context("running cargo build")?;
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
async fn static_target_available() -> bool {
    let installed = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == STATIC_TARGET)
    };
    match tokio::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .await
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
    let added = tokio::process::Command::new("rustup")
        .args(["target", "add", STATIC_TARGET])
        .stdout(Stdio::null())
        .status()
        .await
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
pub async fn build_binaries() -> Result<PathBuf> {
    let release = project::target_dir().join("release");
    let mut from: Vec<(&'static str, PathBuf)> = Vec::new();
    if static_target_available().await {
        cargo_build(
            &["--profile", STATIC_PROFILE, "--target", STATIC_TARGET],
            &STATIC_BINARIES,
        )
        .await?;
        let dir = project::target_dir()
            .join(STATIC_TARGET)
            .join(STATIC_PROFILE);
        from.extend(STATIC_BINARIES.iter().map(|b| (*b, dir.join(b))));
        cargo_build(&["--release"], &["webapp"]).await?;
    } else {
        cargo_build(&["--release"], &BINARIES).await?;
        from.extend(STATIC_BINARIES.iter().map(|b| (*b, release.join(b))));
    }
    from.push(("webapp", release.join("webapp")));
    let out = project::target_dir().join("image-bin");
    let dir = out.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        std::fs::create_dir_all(&dir)?;
        for (name, path) in from {
            copy_if_changed(&path, &dir.join(name))?;
        }
        Ok(())
    })
    .await??;
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

/// Compile the binaries and stage the build context (host work: cargo and
/// file copies, on a blocking thread), then archive it for the engine.
pub async fn staged_context_tar() -> Result<PathBuf> {
    let binaries = build_binaries().await?;
    let ctx = tokio::task::spawn_blocking(move || stage_context(&binaries)).await??;
    context_tar(&ctx).await
}

/// Build every stage of the images up to `upto` (all of them by default;
/// the session store with the final stage).
pub async fn build_images(upto: u8) -> Result<()> {
    tokio::task::spawn_blocking(prereq::ensure_disk_space).await??;
    prereq::ensure_docker().await?;
    let base = ensure_base_image().await?;
    let context = staged_context_tar().await?;
    let builds = IMAGES
        .iter()
        .map(|image| (*image, 0..=upto))
        .chain(FINAL_ONLY.iter().map(|image| (*image, LAST_STAGE..=upto)));
    for (image, stages) in builds {
        let dockerfile = format!("{image}/Dockerfile");
        for stage in stages {
            let mut tags = vec![tag(image, stage)];
            if stage == LAST_STAGE {
                tags.push(format!("ait/{image}:latest"));
            }
            eprintln!("xtask: docker build {}", tags.join(" "));
            let target = format!("task{stage}");
            build_image(
                &context,
                &BuildSpec {
                    dockerfile: &dockerfile,
                    target: Some(&target),
                    base: &base,
                    tags: &tags,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Build the images up to `stage` once per process (tests share it); a
/// rebuild with nothing changed is cheap thanks to cargo's and Docker's caches.
pub async fn ensure_images(stage: u8) -> Result<()> {
    static BUILT: tokio::sync::Mutex<Option<u8>> = tokio::sync::Mutex::const_new(None);
    let mut built = BUILT.lock().await;
    if built.is_some_and(|b| b >= stage) {
        return Ok(());
    }
    build_images(stage).await?;
    *built = Some(stage);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag() {
        let split = |r: &str| {
            let (n, t) = split_reference(r);
            (n, t)
        };
        assert_eq!(
            split("debian:bookworm-slim"),
            ("debian".into(), "bookworm-slim".into())
        );
        assert_eq!(split("debian"), ("debian".into(), "latest".into()));
        assert_eq!(
            split("localhost:5000/ait/ha:task3"),
            ("localhost:5000/ait/ha".into(), "task3".into())
        );
        assert_eq!(
            split("localhost:5000/debian"),
            ("localhost:5000/debian".into(), "latest".into())
        );
        assert_eq!(
            split("debian@sha256:abc"),
            ("debian@sha256:abc".into(), String::new())
        );
    }

    #[test]
    fn the_context_tar_is_owned_by_root_and_keeps_modes_and_links() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ait-ctx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ctx/bin"))?;
        std::fs::write(dir.join("ctx/bin/init"), b"#!/bin/sh\n")?;
        std::fs::set_permissions(
            dir.join("ctx/bin/init"),
            std::fs::Permissions::from_mode(0o750),
        )?;
        std::os::unix::fs::symlink("init", dir.join("ctx/bin/s6-svc"))?;
        write_context_tar(&dir.join("ctx"), &dir.join("ctx.tar"))?;
        let mut archive = tar::Archive::new(std::fs::File::open(dir.join("ctx.tar"))?);
        let mut seen = Vec::new();
        for entry in archive.entries()? {
            let entry = entry?;
            let h = entry.header();
            assert_eq!((h.uid()?, h.gid()?), (0, 0));
            assert_eq!(h.username()?.unwrap_or_default(), "");
            seen.push((
                entry.path()?.display().to_string(),
                h.mode()? & 0o7777,
                h.link_name()?.map(|l| l.display().to_string()),
            ));
        }
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0].0, "bin/");
        assert_eq!(seen[1], ("bin/init".into(), 0o750, None));
        assert_eq!(seen[2].0, "bin/s6-svc");
        assert_eq!(seen[2].2.as_deref(), Some("init"));
        Ok(())
    }

    /// The import path: a two-file root file system imported as
    /// `ait/import-check:scratch`, its `CMD ["bash"]` checked, then removed.
    /// Needs the Docker engine, as the lab tests do (`cargo xtask test`
    /// starts it).
    #[tokio::test]
    async fn import_of_a_tiny_rootfs() -> Result<()> {
        const SCRATCH: &str = "ait/import-check:scratch";
        let rootfs = project::target_dir().join("import-check-rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::create_dir_all(rootfs.join("etc"))?;
        std::fs::write(rootfs.join("etc/hostname"), "scratch\n")?;
        std::os::unix::fs::symlink("/etc/hostname", rootfs.join("etc/name-link"))?;
        import_rootfs(&rootfs, SCRATCH).await?;
        let docker = engine::docker()?;
        let image = docker.inspect_image(SCRATCH).await?;
        docker
            .remove_image(
                SCRATCH,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await?;
        std::fs::remove_dir_all(&rootfs)?;
        let cmd = image.config.and_then(|c| c.cmd).unwrap_or_default();
        assert_eq!(cmd, vec!["bash".to_string()]);
        Ok(())
    }
}
