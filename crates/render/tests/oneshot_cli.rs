//! The one-shot mode through the real binary: `render --key value < tpl`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const LAB_TEMPLATE: &str =
    "Container {{ name }} has joined the Serf cluster with the following IP address: {{ ip }}\n";

fn render(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_render"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A usage error exits before reading stdin: a broken pipe is expected.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn lab_template_with_flags() {
    let o = render(&["--name", "s1", "--ip", "10.0.0.3"], LAB_TEMPLATE);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "Container s1 has joined the Serf cluster with the following IP address: 10.0.0.3\n"
    );
}

#[test]
fn json_values_are_decoded() {
    let tpl =
        "{% for a in addresses %}{{ a.host }}={{ a.ip }};{% endfor %} n+1={{ n + 1 }} s={{ s }}";
    let o = render(
        &[
            "--addresses",
            r#"[{"host":"s1","ip":"10.0.0.3"},{"host":"s2","ip":"10.0.0.4"}]"#,
            "--n=41",
            "--s",
            "not json",
        ],
        tpl,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "s1=10.0.0.3;s2=10.0.0.4; n+1=42 s=not json");
}

#[test]
fn data_file_is_merged() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("vars.json");
    std::fs::write(&f, r#"{"name": "from-file", "ip": "10.0.0.9"}"#).unwrap();
    let o = render(
        &["--data", f.to_str().unwrap(), "--name", "s2"],
        LAB_TEMPLATE,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Container s2 has joined") && stdout(&o).contains("10.0.0.9"));
}

#[test]
fn undefined_variable_is_an_error_naming_the_line() {
    let o = render(&["--name", "s1"], "first line\n{{ name }}\n{{ ip }}\n");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "", "nothing rendered on error");
    let e = stderr(&o);
    assert!(
        e.contains("undefined variable `ip`") && e.contains("line 3"),
        "{e}"
    );
}

#[test]
fn syntax_error_names_the_line() {
    let o = render(
        &["--name", "s1"],
        "ok\n{% if name %}\n{{ name }\n{% endif %}\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("syntax error") && e.contains("line 3"), "{e}");
}

#[test]
fn usage_errors_exit_2() {
    let o = render(&["--name"], LAB_TEMPLATE);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--name needs a value"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn out_is_written_atomically_and_failed_render_keeps_old_file() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("haproxy.cfg");
    let o = render(
        &[
            "--out",
            out.to_str().unwrap(),
            "--name",
            "s1",
            "--ip",
            "1.2.3.4",
        ],
        LAB_TEMPLATE,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "--out writes nothing to stdout");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("Container s1"));
    // A failing render leaves the previous file whole.
    let o = render(
        &["--out", out.to_str().unwrap(), "--name", "s2"],
        LAB_TEMPLATE,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("Container s1"));
    assert_eq!(
        entries(d.path()),
        ["haproxy.cfg"],
        "no temp file left behind"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `--check` with the real `haproxy -c`: a broken rendering is refused with
/// HAProxy's own message and the old file stays; a good one replaces it.
#[test]
fn check_with_haproxy_keeps_old_file_on_failure() {
    testkit::require(common::HAPROXY, "haproxy");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("haproxy.cfg");
    let tpl = "defaults\n    mode http\n    timeout connect 5s\n    timeout client 5s\n    timeout server 5s\nfrontend fe\n    bind 127.0.0.1:18080\n    default_backend nodes\nbackend nodes\n    balance {{ balance }}\n    server {{ name }} {{ ip }}:3000 check\n";
    let check = format!("{} -c -f {{}}", common::HAPROXY);
    let args = |balance: &'static str| {
        vec![
            "--out".to_string(),
            out.display().to_string(),
            "--check".into(),
            check.clone(),
            "--name".into(),
            "s1".into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--balance".into(),
            balance.into(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        render(&a, tpl)
    };
    let o = run(args("roundrobin"));
    assert!(o.status.success(), "{}", stderr(&o));
    let good = std::fs::read_to_string(&out).unwrap();
    assert!(good.contains("balance roundrobin"));

    let o = run(args("no-such-algorithm"));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("validation failed"), "{e}");
    assert!(
        e.contains("balance only supports"),
        "HAProxy's own message is shown: {e}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        good,
        "old file untouched"
    );
    assert_eq!(
        entries(d.path()),
        ["haproxy.cfg"],
        "no temp file left behind"
    );
}

#[test]
fn check_without_out_validates_then_prints() {
    let o = render(
        &["--check", "grep -q s1 {}", "--name", "s1", "--ip", "x"],
        LAB_TEMPLATE,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Container s1"));
    let o = render(
        &["--check", "grep -q zz {}", "--name", "s1", "--ip", "x"],
        LAB_TEMPLATE,
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
}

#[test]
fn help_mentions_reconcile() {
    let o = render(&["--help"], "");
    assert!(o.status.success());
    assert!(stdout(&o).contains("render reconcile"));
    let o = Command::new(env!("CARGO_BIN_EXE_render"))
        .args(["reconcile", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("--admin-socket"));
}

#[test]
fn reconcile_rejects_bad_flags_with_the_value() {
    let o = Command::new(env!("CARGO_BIN_EXE_render"))
        .args(["reconcile", "--admin-socket", "nonsense", "--check", ""])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("\"nonsense\""), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_render"))
        .args([
            "reconcile",
            "--server-options",
            "check; del server nodes/x",
            "--check",
            "",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--server-options"), "{}", stderr(&o));
    // Variables, data and the log filter are as strict as in the one-shot
    // mode: each bad one is named, none is dropped or replaced by a default.
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("vars.json");
    std::fs::write(&data, "{\"a\": 1,}").unwrap();
    let data = data.to_str().unwrap();
    for (args, named) in [
        (vec!["--var", "frontend bind=x"], "\"frontend bind=x\""),
        (vec!["--var", "1st=x"], "\"1st=x\""),
        (vec!["--data", data], "invalid JSON"),
        (vec!["--log-level", "render=verbose"], "\"render=verbose\""),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_render"))
            .arg("reconcile")
            .args(&args)
            .args(["--check", "", "--admin-socket", "/nonexistent/admin.sock"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Accepted flags start the reconciler, which runs until a signal.
        use wait_timeout::ChildExt;
        if child
            .wait_timeout(std::time::Duration::from_secs(30))
            .unwrap()
            .is_none()
        {
            let _ = child.kill();
            panic!("render reconcile accepted {args:?} and started");
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{args:?}: {}", stderr(&o));
    }
}

/// What a lab-style handler script does (task 5): the shipped template with
/// `{name, ip}` entries, validated by the real HAProxy before the rename.
#[test]
fn shipped_template_from_a_handler_script() {
    testkit::require(common::HAPROXY, "haproxy");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("haproxy.cfg");
    let sock = d.path().join("admin.sock");
    let o = Command::new(env!("CARGO_BIN_EXE_render"))
        .arg("--template")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/haproxy.cfg.tera"
        ))
        .args([
            "--backends",
            r#"[{"name":"s1","ip":"10.0.0.2"},{"name":"s2","ip":"10.0.0.3"}]"#,
        ])
        .arg("--admin_socket")
        .arg(&sock)
        .arg("--out")
        .arg(&out)
        .arg("--check")
        .arg(format!("{} -c -f {{}}", common::HAPROXY))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("server s1 10.0.0.2:3000 check"), "{text}");
    assert!(text.contains("server s2 10.0.0.3:3000 check"), "{text}");
    // The admin API (level admin, no authentication) stays inside the
    // container by default.
    assert!(
        text.contains("stats socket ipv4@127.0.0.1:9999 level admin"),
        "{text}"
    );
    assert!(
        text.contains("bind *:80") && text.contains("bind *:1936"),
        "{text}"
    );
}
