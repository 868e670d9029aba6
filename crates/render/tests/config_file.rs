//! The reconciler's haproxy.cfg: rendered from the shipped template,
//! validated by the real `haproxy -c`, and never replaced by a version that
//! fails validation.

mod common;

use clap::Parser;
use common::*;
use render::backends::{Backend, BackendSet};
use render::cli::{settings, ReconcileArgs};
use render::reconcile::Reconciler;
use testkit::require;

fn set(names: &[(&str, u16)]) -> BackendSet {
    names
        .iter()
        .map(|(n, p)| {
            (
                n.to_string(),
                Backend::new(*n, "127.0.0.1".parse().unwrap(), *p),
            )
        })
        .collect()
}

fn args(dir: &std::path::Path, extra: &[String]) -> ReconcileArgs {
    let mut a = vec![
        "render-reconcile".to_string(),
        format!("--config-out={}", dir.join("haproxy.cfg").display()),
        format!("--check={HAPROXY} -c -f {{}}"),
        format!("--var=admin_socket={}", dir.join("admin.sock").display()),
        "--var=frontend_bind=127.0.0.1:18080".into(),
        "--var=stats_bind=127.0.0.1:18936".into(),
        "--var=admin_tcp=".into(),
    ];
    a.extend_from_slice(extra);
    ReconcileArgs::try_parse_from(a).unwrap()
}

#[tokio::test]
async fn shipped_template_renders_a_valid_config() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Reconciler::new(settings(&args(dir.path(), &[])).unwrap());
    rec.write_config(&set(&[("s1", 3000), ("s2", 3001)])).await;
    let text = std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap();
    for want in [
        "stats socket ",
        " level admin",
        "mode http",
        "option idle-close-on-response",
        "retries 3",
        "option redispatch 1",
        "timeout connect 1s",
        "frontend localnodes",
        "bind 127.0.0.1:18080",
        "backend nodes",
        "balance roundrobin",
        "option forwardfor",
        "http-request set-header X-Forwarded-Port %[dst_port]",
        "option httpchk HEAD /",
        "server s1 127.0.0.1:3000 check inter 500ms downinter 100ms fall 1 rise 1 pool-purge-delay 100ms observe layer4 error-limit 1 on-error mark-down",
        "server s2 127.0.0.1:3001 check",
        "listen stats",
        "stats enable",
        "stats uri /",
        "stats refresh 5s",
        "log stdout format raw local0",
        "option httplog",
        "option dontlog-normal",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("ipv4@"),
        "admin_tcp=\"\" drops the TCP socket:\n{text}"
    );
}

#[tokio::test]
async fn config_failing_validation_is_not_written() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    // A template that breaks once there are two backends.
    let tpl = dir.path().join("t.tera");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates/haproxy.cfg.tera"
    ))
    .unwrap();
    std::fs::write(
        &tpl,
        shipped.replace("backend {{ backend_name }}\n", "backend {{ backend_name }}\n{% if backends | length > 1 %}    no-such-keyword\n{% endif %}"),
    )
    .unwrap();
    let a = args(dir.path(), &[format!("--template={}", tpl.display())]);
    let mut rec = Reconciler::new(settings(&a).unwrap());
    let out = dir.path().join("haproxy.cfg");
    rec.write_config(&set(&[("s1", 3000)])).await;
    let good = std::fs::read_to_string(&out).unwrap();
    assert!(good.contains("server s1 "));
    rec.write_config(&set(&[("s1", 3000), ("s2", 3001)])).await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        good,
        "the last good config stays"
    );
    rec.write_config(&set(&[("s2", 3001)])).await;
    let next = std::fs::read_to_string(&out).unwrap();
    assert!(
        next.contains("server s2 ") && !next.contains("server s1 "),
        "{next}"
    );
}

/// The request log: failed or retried requests by default, every request
/// with `log_requests=all`, none with `log_target=""`; any other
/// `log_requests` is an error naming the value.
#[test]
fn request_log_options() {
    use render::reconcile::DEFAULT_TEMPLATE;
    let render = |vars: serde_json::Value| {
        let mut v = serde_json::json!({ "backends": [] });
        v.as_object_mut()
            .unwrap()
            .extend(vars.as_object().unwrap().clone());
        render::template::render("haproxy.cfg.tera", DEFAULT_TEMPLATE, v.as_object().unwrap())
            .map_err(|e| e.to_string())
    };
    let all = render(serde_json::json!({ "log_requests": "all" })).unwrap();
    assert!(
        all.contains("option httplog") && !all.contains("dontlog-normal"),
        "{all}"
    );
    let none = render(serde_json::json!({ "log_target": "" })).unwrap();
    assert!(
        !none.contains("    log ") && !none.contains("httplog"),
        "{none}"
    );
    let err = render(serde_json::json!({ "log_requests": "bogus" })).unwrap_err();
    assert!(err.contains("\"bogus\""), "{err}");
}
