//! The real binary's access log, which is buffered: every request's line is
//! written, in order, when the process exits on SIGTERM right after them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{ChildGuard, Signal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_access_log_line_is_lost_at_sigterm_and_the_order_stays() {
    let mut process = ChildGuard::spawn(
        "webapp",
        Command::new(env!("CARGO_BIN_EXE_webapp"))
            .args(["--bind", "127.0.0.1", "--port", "0"])
            // The default log: the access log at info.
            .env_remove("RUST_LOG")
            .env("SERVER_IP", "10.0.0.9")
            .stdout(Stdio::piped()),
    );
    let stdout = process.child_mut().stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.is_empty() {
                let _ = first_tx.send(line.clone());
            }
            lines.push(line);
        }
        lines
    });
    let first = first_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a startup line");
    let addr = first
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();

    // Many requests on one connection, each with its own path, then at
    // once SIGTERM: their lines are still in the buffer.
    const REQUESTS: usize = 500;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..REQUESTS {
        let res = client
            .get(format!("http://{addr}/seq/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    }
    process.signal(Signal::SIGTERM);
    let status = process.wait_exit_blocking(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let lines = reader.join().unwrap();

    let done: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("webapp: done status=404"))
        .collect();
    assert_eq!(
        done.len(),
        REQUESTS,
        "access log lines:\n{}",
        lines.join("\n")
    );
    for (i, line) in done.iter().enumerate() {
        assert!(
            line.contains(&format!("http{{method=GET path=/seq/{i}}}: webapp: done")),
            "line {i} out of order: {line}"
        );
    }
    assert!(
        lines.last().unwrap().contains("stopped"),
        "the last line: {:?}",
        lines.last()
    );
}
