//! `cargo xtask`: see the crate docs in `lib.rs` and the README.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::process::Command;

use xtask::{bench, images, lab, prereq, project};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Images, lab tasks, tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile the binaries (release) and build every stage of both images.
    Images {
        /// Build the stages up to this task only.
        #[arg(long, default_value_t = images::LAST_STAGE)]
        upto: u8,
    },
    /// Reproduce lab task N (0-6, or `all`) end to end, with checks and
    /// deliverables.
    Task {
        n: String,
        /// Leave the stack running at the end and print its URLs.
        #[arg(long)]
        keep: bool,
    },
    /// Run lab tasks 0-6 (refreshing logs/ and report/assets/), then check
    /// that every link of report/README.md holds and every deliverable is
    /// linked.
    Report,
    /// Remove every lab container and the heig network.
    Down,
    /// The whole test suite: installs what is missing, builds the images,
    /// checks formatting and lints, runs every test.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The final stage through docker/compose.yaml: up, scale 2 -> 5 -> 1
    /// under load, encrypted gossip, a missing key refused; then down.
    Compose,
    /// The final stage as a stack on a single-node Docker Swarm (made with
    /// `docker swarm init --advertise-addr 127.0.0.1` when needed, left
    /// after): deploy, scale the web apps to 5 and to 2; then removed.
    Swarm,
    /// The final stage under a steady load while faults are injected at
    /// random (web apps started, stopped, killed, paused, partitioned; ha's
    /// agent and ha restarted); after each, HAProxy and the agents must
    /// agree; no request may fail. Writes target/chaos/chaos.{md,json}.
    Chaos {
        /// Inject faults for this many minutes.
        #[arg(long, default_value_t = 5)]
        minutes: u64,
        /// Replay the run of this seed (a fresh one is printed otherwise).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Redraw the report's charts from the data kept next to them
    /// (report/assets/task6-timeline.json, report/assets/bench/*.json).
    Charts,
    /// Our parts against their peers, same run; prints ratios. Each group's
    /// rows are also kept in report/assets/bench/GROUP.json for the charts.
    Bench {
        /// One benchmark only.
        name: Option<String>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Images { upto } => {
            if upto > images::LAST_STAGE {
                bail!("--upto {upto}: the last stage is {}", images::LAST_STAGE);
            }
            tokio::runtime::Runtime::new()?.block_on(images::build_images(upto))
        }
        Cmd::Task { n, keep } => run_tasks(&n, keep),
        Cmd::Report => {
            run_tasks("all", false)?;
            let links = xtask::report::check_project_report()?;
            println!(
                "{}: {links} links, all present; every file of logs/ and report/assets/ linked",
                project::root().join(xtask::report::REPORT).display()
            );
            Ok(())
        }
        Cmd::Down => tokio::runtime::Runtime::new()?.block_on(lab::down()),
        Cmd::Test { args } => test(&args),
        Cmd::Compose => {
            let rt = tokio::runtime::Runtime::new()?;
            let checks = rt.block_on(xtask::deploy::compose())?;
            println!("{checks}");
            if !checks.passed() {
                bail!("the compose scenario failed");
            }
            Ok(())
        }
        Cmd::Swarm => {
            let rt = tokio::runtime::Runtime::new()?;
            let checks = rt.block_on(xtask::deploy::swarm())?;
            println!("{checks}");
            if !checks.passed() {
                bail!("the swarm scenario failed");
            }
            Ok(())
        }
        Cmd::Chaos { minutes, seed } => {
            if minutes == 0 {
                bail!("--minutes 0: give at least one minute of faults");
            }
            let rt = tokio::runtime::Runtime::new()?;
            let checks = rt.block_on(lab::chaos(&lab::ChaosOptions { minutes, seed }))?;
            println!("{checks}");
            if !checks.passed() {
                bail!("the chaos scenario failed");
            }
            Ok(())
        }
        Cmd::Charts => {
            for svg in xtask::charts::redraw_all()? {
                println!("drawn: {}", svg.display());
            }
            Ok(())
        }
        Cmd::Bench { name } => {
            let rows = bench::run(name.as_deref())?;
            if rows.iter().any(|r| !r.passed) {
                bail!("some benchmark goals were not met");
            }
            Ok(())
        }
    }
}

/// `cargo xtask task N|all`: each task's checks printed; an error naming
/// the failed ones.
fn run_tasks(n: &str, keep: bool) -> Result<()> {
    let tasks: Vec<u8> = if n == "all" {
        lab::TASKS.to_vec()
    } else {
        vec![n
            .parse()
            .with_context(|| format!("task {n:?}: expected a number 0-6 or `all`"))?]
    };
    let opts = lab::Options { keep };
    let rt = tokio::runtime::Runtime::new()?;
    let mut failed = Vec::new();
    for t in tasks {
        let checks = rt.block_on(lab::run_task(t, &opts))?;
        println!("{checks}");
        if !checks.passed() {
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!("lab task(s) {failed:?} failed");
    }
    Ok(())
}

fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(project::root())
        .args(args)
        .args(extra)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// The protocol crate does no I/O (its clippy.toml bans clocks, sockets,
/// files and threads in its code); this keeps its dependencies honest too:
/// nothing it builds with may pull in an async runtime or the OS.
fn sans_io_check() -> Result<()> {
    let tree = protocol_dependency_tree()?;
    let banned = sans_io_violations(&tree);
    if !banned.is_empty() {
        bail!("serf-proto must not depend on an async runtime or the OS, but pulls in {banned:?}");
    }
    Ok(())
}

/// `cargo tree -e normal -p serf-proto`, one crate a line.
fn protocol_dependency_tree() -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(project::root())
        .args([
            "tree",
            "-e",
            "normal",
            "-p",
            "serf-proto",
            "--prefix",
            "none",
        ])
        .output()
        .context("running cargo tree -p serf-proto")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p serf-proto failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The crates of `cargo tree --prefix none` output that do I/O for their user.
fn sans_io_violations(tree: &str) -> Vec<String> {
    const BANNED: [&str; 4] = ["tokio", "mio", "libc", "getrandom"];
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| BANNED.contains(name))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

fn test(extra: &[String]) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        prereq::ensure_test_tools().await?;
        images::build_images(images::LAST_STAGE).await
    })?;
    drop(rt);
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    sans_io_check()?;
    let mut args: Vec<String> = Vec::new();
    if !extra.is_empty() {
        args.push("--".into());
        args.extend(extra.iter().cloned());
    }
    // Run every test binary even when one fails, so one CI run shows all.
    cargo(&["test", "--workspace", "--no-fail-fast"], &args)
}

#[cfg(test)]
mod sans_io_tests {
    use super::sans_io_violations;

    #[test]
    fn a_runtime_or_the_os_among_the_protocol_crates_dependencies_is_named() {
        let clean = "serf-proto v0.1.0\nrmpv v1.3.1\naes-gcm v0.10.3\n";
        assert!(sans_io_violations(clean).is_empty());
        let dirty =
            "serf-proto v0.1.0\nrand v0.9.0\ngetrandom v0.3.1\nlibc v0.2.1\nlibc v0.2.1 (*)\n";
        assert_eq!(sans_io_violations(dirty), ["getrandom", "libc"]);
    }

    #[test]
    fn the_protocol_crate_as_built_pulls_in_none() {
        let tree = super::protocol_dependency_tree().expect("cargo tree");
        assert!(
            tree.contains("rmpv"),
            "unexpected cargo tree output: {tree}"
        );
        assert_eq!(sans_io_violations(&tree), Vec::<String>::new());
    }
}
