//! The web app against an Express app equivalent to the lab's (express +
//! express-session from npm), under wrk on loopback: requests/s with a new
//! session per request, session updates lost when 32 connections share one
//! cookie, and RSS after the run.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{free_port, row, rss_kib, wait_http, Guard, Row};
use crate::{prereq, project};

struct Wrk {
    requests: u64,
    per_sec: f64,
    errors: u64,
}

/// A bounded wrk run against 127.0.0.1:port.
fn wrk(port: u16, seconds: u32, cookie: Option<&str>) -> Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", &format!("-d{seconds}s"), "--timeout", "5s"]);
    if let Some(c) = cookie {
        cmd.args(["-H", &format!("Cookie: {c}")]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("wrk printed no request count: {text}"))?;
    let per_sec = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("wrk printed no Requests/sec")?;
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .flat_map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    Ok(Wrk {
        requests,
        per_sec,
        errors,
    })
}

/// One GET with an optional cookie: (set-cookie pair, sessionViews).
fn get_views(port: u16, cookie: Option<&str>) -> Result<(Option<String>, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let mut req = client.get(format!("http://127.0.0.1:{port}/"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await?;
        let set = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let body: serde_json::Value = resp.json().await?;
        let views = body["sessionViews"].as_u64().context("no sessionViews")?;
        Ok((set, views))
    })
}

/// Install express + express-session into target/bench/express and write
/// an app with the lab's behaviour (our own few lines, not the lab's file).
fn express_app() -> Result<PathBuf> {
    prereq::ensure_tool("node", "nodejs")?;
    prereq::ensure_tool("npm", "npm")?;
    let dir = project::target_dir().join("bench").join("express");
    std::fs::create_dir_all(&dir)?;
    if !dir.join("node_modules/method-override").exists() {
        std::fs::write(
            dir.join("package.json"),
            r#"{"name":"lab-express-peer","private":true}"#,
        )?;
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "express@4",
                "express-session@1",
                "morgan@1",
                "body-parser@1",
                "cookie-parser@1",
                "compression@1",
                "method-override@3",
            ])
            .current_dir(&dir)
            .status()
            .context("running npm install")?;
        if !status.success() {
            bail!(
                "npm install express express-session failed in {}",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir.join("public/css"))?;
    std::fs::write(
        dir.join("public/css/style.css"),
        "body { padding: 50px; }\n",
    )?;
    std::fs::write(dir.join("app.js"), EXPRESS_APP)?;
    Ok(dir)
}

const EXPRESS_APP: &str = r#"// A peer equivalent to the lab's web app: the same middleware on every
// request (dev access log, JSON and form body parsers, cookie parser,
// compression, static files, method override, express-session with its
// MemoryStore) and the same GET / handler. Written for this benchmark.
const express = require('express');
const session = require('express-session');
const morgan = require('morgan');
const bodyParser = require('body-parser');
const cookieParser = require('cookie-parser');
const compression = require('compression');
const methodOverride = require('method-override');
const path = require('path');
const app = express();
app.use(morgan('dev'));
app.use(bodyParser.json());
app.use(bodyParser.urlencoded({ extended: true }));
app.use(cookieParser());
app.use(compression());
app.use(express.static(path.join(__dirname, 'public')));
app.use(methodOverride());
app.use('/', session({ name: 'NODESESSID', secret: 'bench', resave: false, saveUninitialized: true }));
app.get('/', (req, res) => {
  if (req.session.views === undefined) { req.session.views = 0; }
  req.session.views += 1;
  res.status(200).header('x-backend-ip', process.env.SERVER_IP).json({
    hello: 'world!', ip: process.env.SERVER_IP, host: process.env.SERVER_NAME,
    tag: process.env.SERVER_TAG, sessionViews: req.session.views, id: req.sessionID });
});
app.listen(process.env.PORT || 3000);
"#;

struct Measured {
    rps: f64,
    errors: u64,
    rss_mib: f64,
    /// requests counted by wrk on one shared cookie, and the count the app reported
    shared_sent: u64,
    shared_counted: u64,
}

/// A started app, warmed up.
struct App {
    guard: Guard,
    port: u16,
}

fn start(mut cmd: Command, port: u16) -> Result<App> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the app under test")?;
    let guard = Guard(child);
    wait_http(port)?;
    wrk(port, 2, None)?;
    Ok(App { guard, port })
}

/// Fresh-session runs of 10 s, this many per app, alternating between the
/// two so that a slow moment of the machine does not land on one side only.
const FRESH_ROUNDS: usize = 2;

/// The fresh-session rounds (mean req/s and errors of each app), then RSS
/// and the shared-cookie run of each.
fn measure_both(ours: &App, peer: &App) -> Result<(Measured, Measured)> {
    let mut rps = [0.0f64; 2];
    let mut errors = [0u64; 2];
    for round in 0..FRESH_ROUNDS {
        for (i, app) in [ours, peer].into_iter().enumerate() {
            let w = wrk(app.port, 10, None)?;
            eprintln!(
                "   round {}: {} {:.0} req/s",
                round + 1,
                ["ours", "express"][i],
                w.per_sec
            );
            rps[i] += w.per_sec / FRESH_ROUNDS as f64;
            errors[i] += w.errors;
        }
    }
    let mut out = Vec::new();
    for (i, app) in [ours, peer].into_iter().enumerate() {
        let rss_mib = rss_kib(app.guard.0.id())? / 1024.0;
        // One session shared by 32 connections: does the count stay exact?
        let (cookie, first) = get_views(app.port, None)?;
        let cookie = cookie.context("no session cookie on the first visit")?;
        let shared = wrk(app.port, 5, Some(&cookie))?;
        let (_, last) = get_views(app.port, Some(&cookie))?;
        out.push(Measured {
            rps: rps[i],
            errors: errors[i] + shared.errors,
            rss_mib,
            shared_sent: shared.requests,
            // views before the last visit, minus the first visit
            shared_counted: last.saturating_sub(first + 1),
        });
    }
    let peer_m = out.pop().expect("two apps");
    let ours_m = out.pop().expect("two apps");
    Ok((ours_m, peer_m))
}

pub(super) fn rows() -> Result<Vec<Row>> {
    prereq::ensure_tool("wrk", "wrk")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(project::root())
        .args(["build", "--release", "--quiet", "-p", "webapp"])
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p webapp failed");
    }
    let ours_bin = project::target_dir().join("release/webapp");
    let port = free_port()?;
    let mut ours_cmd = Command::new(&ours_bin);
    ours_cmd
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .env("SERVER_IP", "127.0.0.1")
        .env("SERVER_NAME", "bench")
        // Its access log on, as the peer's morgan: both write to /dev/null.
        .env_remove("RUST_LOG");
    let ours_app = start(ours_cmd, port)?;

    let dir = express_app()?;
    let port = free_port()?;
    let mut peer_cmd = Command::new("node");
    peer_cmd
        .arg(dir.join("app.js"))
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .env("NODE_ENV", "production")
        .env("SERVER_IP", "127.0.0.1");
    let peer_app = start(peer_cmd, port)?;
    eprintln!(
        "bench: our web app and Express + express-session, wrk -t2 -c32: {FRESH_ROUNDS} alternating rounds of 10 s with a new session per request, then 5 s on one shared session"
    );
    let (ours, peer) = measure_both(&ours_app, &peer_app)?;

    let lost = |m: &Measured| m.shared_sent.saturating_sub(m.shared_counted) as f64;
    Ok(vec![
        row(
            "web app requests/s, new session per request (mean of 2 alternating runs)",
            "req/s",
            ours.rps,
            peer.rps,
            "express",
            ">= 15x express",
            ours.rps >= 15.0 * peer.rps && ours.errors == 0,
        ),
        row(
            "web app lost session updates, 32 conns on one cookie",
            "requests",
            lost(&ours),
            lost(&peer),
            "express",
            "0 lost",
            lost(&ours) == 0.0,
        ),
        row(
            "web app RSS after the fresh-session runs",
            "MiB",
            ours.rss_mib,
            peer.rss_mib,
            "express",
            "below express (bounded store)",
            ours.rss_mib < peer.rss_mib,
        ),
    ])
}
