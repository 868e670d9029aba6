//! What the interoperation tests with the real serf 0.9.4 share: a serf
//! agent whose handler records every event, our agent beside it, user
//! events, keys, and the blocking serf CLI off the async runtime.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gossip::agent::{self, Agent};
use gossip::model::{AgentConfig, Event};
use testkit::{eventually_blocking, SerfAgent, SerfMember, SERF};
use tokio::sync::broadcast;

use super::config;

/// A real serf agent logging at debug, with a handler that appends every
/// event (name, user event, query name, then stdin) to `events.log` in its
/// dir and answers queries `pong-NAME`; returned once its RPC answers.
pub fn start_serf(
    name: &str,
    tags: &[(&str, &str)],
    join: Option<SocketAddr>,
    key: Option<&str>,
) -> SerfAgent {
    let mut b = SerfAgent::builder(name).tags(tags).log_level("debug");
    let events = b.dir().join("events.log");
    let handler = b.dir().join("handler.sh");
    std::fs::write(
        &handler,
        format!(
            "#!/bin/sh\n{{ echo \"EVENT $SERF_EVENT $SERF_USER_EVENT $SERF_QUERY_NAME\"; cat; echo; }} >> {}\n\
             if [ \"$SERF_EVENT\" = query ]; then printf 'pong-%s' \"$SERF_SELF_NAME\"; fi\n",
            events.display()
        ),
    )
    .unwrap();
    b = b.event_handler(&format!("sh {}", handler.display()));
    if let Some(j) = join {
        b = b.join(j);
    }
    if let Some(k) = key {
        b = b.encrypt(k);
    }
    let serf = b.start_blocking();
    eventually_blocking("serf RPC answers", Duration::from_secs(30), || {
        serf.members().ok().map(|_| ())
    });
    serf
}

/// The payload of the next user event `name` on `rx` (within `limit`).
pub async fn next_user_event(
    rx: &mut broadcast::Receiver<Event>,
    name: &str,
    limit: Duration,
) -> Vec<u8> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(Event::User {
                    name: n, payload, ..
                }) if n == name => return payload,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or_else(|_| panic!("no user event {name} within {limit:?}"))
}

/// `serf keygen`: a fresh base64 key.
pub fn keygen() -> String {
    testkit::require(SERF, "serf");
    let out = Command::new(SERF)
        .arg("keygen")
        .output()
        .expect("serf keygen");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits until what [`start_serf`]'s handler appended to its `events.log`
/// satisfies `seen` (polling off the async runtime).
pub async fn wait_handler_log(
    serf: &SerfAgent,
    what: &str,
    deadline: Duration,
    seen: impl Fn(&str) -> bool + Send + 'static,
) {
    let (f, what) = (serf.dir.path().join("events.log"), what.to_string());
    blocking(move || {
        eventually_blocking(&what, deadline, || {
            let t = std::fs::read_to_string(&f).ok()?;
            seen(&t).then_some(())
        })
    })
    .await
}

/// Our agent on loopback, with `tags`, joining `join`, with `keys`.
pub async fn start_ours(
    name: &str,
    tags: &[(&str, &str)],
    join: Vec<String>,
    keys: Vec<Vec<u8>>,
) -> Arc<Agent> {
    let cfg = AgentConfig {
        encrypt_keys: keys,
        ..config(name, tags, join)
    };
    agent::start(cfg).await.expect("our agent starts and joins")
}

/// Waits (at most `limit`, off the async runtime) until `serf` lists
/// `name` as `status` (`alive`, `failed`, `left`, ...).
pub async fn serf_sees(serf: &Arc<SerfAgent>, name: &str, status: &str, limit: Duration) {
    let what = format!("{} sees {name} {status}", serf.name);
    let status = status.to_string();
    serf_sees_member(serf, name, &what, limit, move |m| m.status == status).await;
}

/// Waits (at most `limit`, off the async runtime) until `serf` lists
/// `name` as `ok` wants it (`what` says how, for the log); returns what
/// serf listed then.
pub async fn serf_sees_member(
    serf: &Arc<SerfAgent>,
    name: &str,
    what: &str,
    limit: Duration,
    ok: impl Fn(&SerfMember) -> bool + Send + 'static,
) -> SerfMember {
    let (serf, name) = (serf.clone(), name.to_string());
    serf_eventually(what, limit, move || serf.member(&name).filter(&ok)).await
}

/// Runs the blocking serf CLI off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// [`eventually_blocking`] off the async runtime: polls `f`, which asks
/// a real serf (its CLI blocks), until it gives `Some` or `deadline` passes.
pub async fn serf_eventually<T: Send + 'static>(
    what: &str,
    deadline: Duration,
    f: impl FnMut() -> Option<T> + Send + 'static,
) -> T {
    let what = what.to_string();
    blocking(move || eventually_blocking(&what, deadline, f)).await
}
