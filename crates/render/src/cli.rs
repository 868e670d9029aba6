//! The `render reconcile` command line: flags (clap), logging, signals,
//! and wiring the Serf RPC membership source to the reconciler.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Map;

use crate::backends::{is_safe_name, Selector};
use crate::membership::Coalescing;
use crate::oneshot::{decode_value, load_data, var_name};
use crate::output::CheckCommand;
use crate::reconcile::{self, JoinMode, Settings, DEFAULT_TEMPLATE};
use crate::runtime_api::{AdminAddr, RuntimeApi};

/// Keep HAProxy's backend equal to the cluster's `role=backend` members,
/// through the Runtime API (no reload), and keep haproxy.cfg in step.
#[derive(Debug, Parser)]
#[command(name = "render reconcile", version)]
pub struct ReconcileArgs {
    /// Membership agent's RPC address (Serf's `-rpc-addr`).
    #[arg(long, env = "SERF_RPC_ADDR", default_value = "127.0.0.1:7373")]
    pub rpc_addr: String,
    /// RPC auth key, when the agent has one (Serf's `-rpc-auth`).
    #[arg(long, env = "SERF_RPC_AUTH", hide_env_values = true)]
    pub rpc_auth: Option<String>,
    /// HAProxy admin socket: /path/to.sock, unix:PATH, HOST:PORT or tcp:HOST:PORT.
    #[arg(
        long,
        env = "HAPROXY_ADMIN_SOCKET",
        default_value = "/var/run/haproxy.sock"
    )]
    pub admin_socket: String,
    /// The HAProxy backend to drive.
    #[arg(long, default_value = "nodes")]
    pub backend: String,
    /// Port of the backends' web servers.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Tag that holds a member's role.
    #[arg(long, default_value = "role")]
    pub role_tag: String,
    /// Role value that makes a member a backend.
    #[arg(long, default_value = "backend")]
    pub role: String,
    /// Tag whose value, when a member has it, overrides --port for it.
    #[arg(long)]
    pub port_tag: Option<String>,
    /// Options of every server (`add server` and the config file alike).
    #[arg(
        long,
        default_value = "check inter 500ms downinter 100ms fall 1 rise 1 pool-purge-delay 100ms observe layer4 error-limit 1 on-error mark-down"
    )]
    pub server_options: String,
    /// Sticky routing (the template's `sticky`): a cookie SERVERID whose
    /// value is the name of the server that answered sends a client back to
    /// that server while it is up; and an X-Request-Id on every request,
    /// kept on HAProxy's retries. `--sticky` alone means true.
    #[arg(
        long,
        env = "HA_STICKY",
        value_name = "true|false",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub sticky: bool,
    /// How a (re-)enabled server starts taking traffic.
    #[arg(long, value_enum, default_value_t = JoinMode::Probe)]
    pub join: JoinMode,
    /// haproxy.cfg template (tera); default: the one built in.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Where the rendered haproxy.cfg goes (atomically, after validation).
    #[arg(long, default_value = "/usr/local/etc/haproxy/haproxy.cfg")]
    pub config_out: PathBuf,
    /// Validation command run on the temp file; `{}` is its path. "" for none.
    #[arg(long, default_value = "haproxy -c -f {}")]
    pub check: String,
    /// Extra template variable, KEY=VALUE (JSON-decoded when valid JSON).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// JSON object file of extra template variables.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A burst of membership events ends after this many ms of quiet...
    #[arg(long, default_value_t = 200)]
    pub quiet_ms: u64,
    /// ...or this many ms after its first event.
    #[arg(long, default_value_t = 2000)]
    pub max_delay_ms: u64,
    /// Re-read the full member list this often without events (seconds).
    #[arg(long, default_value_t = 30)]
    pub resync_secs: u64,
    /// Compare HAProxy's servers with the desired set this often (seconds).
    #[arg(long, default_value_t = 5)]
    pub verify_secs: u64,
    /// When --config-out does not exist yet and HAProxy does not answer (a
    /// new container), wait this long at most for the agent's view to be
    /// synced before writing the first file (seconds).
    #[arg(long, default_value_t = 10)]
    pub first_write_wait_secs: u64,
    /// Log filter (tracing's env-filter syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Check the flags and turn them into [`Settings`]; every error is one
/// sentence naming the offending value.
pub fn settings(a: &ReconcileArgs) -> Result<Settings, String> {
    let addr: AdminAddr = a.admin_socket.parse()?;
    if !is_safe_name(&a.backend) {
        return Err(format!(
            "invalid --backend {:?}: use A-Z a-z 0-9 _ . : -",
            a.backend
        ));
    }
    if a.server_options.contains([';', '\n', '\r', '#']) {
        return Err(format!(
            "invalid --server-options {:?}: no ';', '#' or line breaks (they would end the command)",
            a.server_options
        ));
    }
    if a.server_options
        .split_whitespace()
        .any(|w| w.eq_ignore_ascii_case("cookie"))
    {
        return Err(format!(
            "invalid --server-options {:?}: HAProxy 2.6 refuses `cookie` in `add server`; sticky routing is --sticky",
            a.server_options
        ));
    }
    if a.port == 0 {
        return Err("invalid --port 0".into());
    }
    let (template_name, template) = match &a.template {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| format!("--template {}: {e}", p.display()))?,
        ),
        None => (
            "the built-in haproxy.cfg template".to_string(),
            DEFAULT_TEMPLATE.to_string(),
        ),
    };
    let check = if a.check.trim().is_empty() {
        None
    } else {
        Some(CheckCommand::parse(&a.check).map_err(|e| e.to_string())?)
    };
    let mut vars = Map::new();
    if let Some(p) = &a.data {
        vars.extend(load_data(p).map_err(|e| e.to_string())?);
    }
    for kv in &a.vars {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("invalid --var {kv:?}: expected KEY=VALUE"))?;
        let k = var_name(k).map_err(|e| format!("invalid --var {kv:?}: {e}"))?;
        vars.insert(k, decode_value(v));
    }
    // The reconciler sets these itself (see reconcile::render_config): a
    // value given as a variable would be silently overridden.
    for (var, flag) in [
        ("sticky", "--sticky"),
        ("backend_name", "--backend"),
        ("server_options", "--server-options"),
        ("backends", "the member list"),
    ] {
        if let Some(v) = vars.get(var) {
            return Err(format!(
                "invalid template variable {var}={v}: `render reconcile` sets {var} from {flag}"
            ));
        }
    }
    let positive = |v: u64, flag: &str| {
        if v == 0 {
            Err(format!("invalid {flag} 0: must be positive"))
        } else {
            Ok(v)
        }
    };
    let s = Settings {
        api: RuntimeApi::new(addr),
        backend: a.backend.clone(),
        server_options: a.server_options.clone(),
        sticky: a.sticky,
        join: a.join,
        selector: Selector {
            role_tag: a.role_tag.clone(),
            role: a.role.clone(),
            default_port: a.port,
            port_tag: a.port_tag.clone(),
        },
        template_name,
        template,
        config_out: a.config_out.clone(),
        check,
        vars,
        coalescing: Coalescing {
            quiet: Duration::from_millis(positive(a.quiet_ms, "--quiet-ms")?),
            max_delay: Duration::from_millis(positive(a.max_delay_ms, "--max-delay-ms")?),
            resync: Duration::from_secs(positive(a.resync_secs, "--resync-secs")?),
        },
        verify_every: Duration::from_secs(positive(a.verify_secs, "--verify-secs")?),
        first_write_wait: Duration::from_secs(a.first_write_wait_secs),
    };
    // A template that cannot render even an empty set is a usage error,
    // found now rather than at the first membership change.
    reconcile::render_config(&s, &Default::default()).map_err(|e| e.to_string())?;
    Ok(s)
}

/// The log filter: `RUST_LOG` when set, else `--log-level`; either one
/// that does not parse is an error naming it, not a silent "info".
fn log_filter(a: &ReconcileArgs) -> Result<tracing_subscriber::EnvFilter, String> {
    use tracing_subscriber::EnvFilter;
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("invalid RUST_LOG {v:?}: {e}"))
        }
        _ => EnvFilter::try_new(&a.log_level)
            .map_err(|e| format!("invalid --log-level {:?}: {e}", a.log_level)),
    }
}

/// `render reconcile ...`; `args[0]` is the program name. Returns the exit
/// code: 0 after SIGTERM/SIGINT, 2 for bad flags.
pub fn reconcile_main(args: Vec<String>) -> i32 {
    let a = match ReconcileArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let (s, filter) = match settings(&a).and_then(|s| Ok((s, log_filter(&a)?))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("render reconcile: {e}");
            return 2;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("render reconcile: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        tracing::info!(
            "reconciling backend {} through {} from the agent at {}{}",
            s.backend,
            s.api.addr(),
            a.rpc_addr,
            if s.sticky {
                "; sticky routing: cookie SERVERID = the server's name"
            } else {
                ""
            }
        );
        let source = crate::serf_source::SerfSource::new(a.rpc_addr.clone(), a.rpc_auth.clone());
        reconcile::run(s, source, shutdown_signal()).await;
        tracing::info!("stopping");
    });
    0
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<ReconcileArgs, clap::Error> {
        ReconcileArgs::try_parse_from(["render-reconcile"].iter().chain(extra))
    }

    #[test]
    fn sticky_flag_forms() {
        assert!(!parse(&[]).unwrap().sticky, "off unless asked for");
        assert!(parse(&["--sticky"]).unwrap().sticky);
        assert!(parse(&["--sticky", "--port", "3001"]).unwrap().sticky);
        assert!(parse(&["--sticky=true"]).unwrap().sticky);
        assert!(!parse(&["--sticky=false"]).unwrap().sticky);
        assert!(!parse(&["--sticky", "false"]).unwrap().sticky);
        let e = parse(&["--sticky=yes"]).unwrap_err().to_string();
        assert!(e.contains("yes"), "{e}");
    }

    #[test]
    fn sticky_reaches_the_template() {
        let on = settings(&parse(&["--sticky"]).unwrap()).unwrap();
        let text = reconcile::render_config(&on, &Default::default()).unwrap();
        assert!(
            text.contains("use-server %[var(txn.sticky_server)]"),
            "{text}"
        );
        assert!(text.contains("unique-id-header X-Request-Id"), "{text}");
        let off = settings(&parse(&[]).unwrap()).unwrap();
        let text = reconcile::render_config(&off, &Default::default()).unwrap();
        assert!(
            !text.contains("SERVERID") && !text.contains("X-Request-Id"),
            "{text}"
        );
    }

    #[test]
    fn variables_the_reconciler_sets_are_refused() {
        for (var, flag) in [
            ("sticky=true", "--sticky"),
            ("backend_name=web", "--backend"),
            ("server_options=check", "--server-options"),
            ("backends=[]", "the member list"),
        ] {
            let e = settings(&parse(&["--var", var]).unwrap()).unwrap_err();
            let name = var.split('=').next().unwrap();
            assert!(e.contains(name) && e.contains(flag), "{var}: {e}");
        }
    }

    #[test]
    fn a_cookie_in_server_options_is_refused() {
        let e = settings(&parse(&["--server-options", "check cookie s1"]).unwrap()).unwrap_err();
        assert!(
            e.contains("\"check cookie s1\"") && e.contains("--sticky"),
            "{e}"
        );
    }
}
