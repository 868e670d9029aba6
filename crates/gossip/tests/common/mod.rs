//! What the agent's own tests share: an agent's config on loopback, and
//! waiting for a member to reach a status. (What every crate's tests share
//! is the test kit's.)
#![allow(dead_code)]

pub mod cli;
pub mod interop;

use std::time::Duration;

use gossip::agent::Agent;
use gossip::model::{AgentConfig, AgentHandle, Member, MemberStatus, QueryParams};

/// An agent named `name` on 127.0.0.1 (a port of the kernel's choosing),
/// with `tags`, joining `join` at start.
pub fn config(name: &str, tags: &[(&str, &str)], join: Vec<String>) -> AgentConfig {
    AgentConfig {
        node_name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        join,
        ..AgentConfig::default()
    }
}

/// A query named `name` that asks for acks and ends after `timeout`.
pub fn acked_query(name: &str, payload: &[u8], timeout: Duration) -> QueryParams {
    QueryParams {
        name: name.into(),
        payload: payload.to_vec(),
        request_ack: true,
        timeout,
        ..Default::default()
    }
}

/// Waits (at most `limit`) until `a` lists `who` as `status`; that member.
pub async fn wait_member(a: &Agent, who: &str, status: MemberStatus, limit: Duration) -> Member {
    let what = format!("{} sees {who} {}", a.local_member().name, status.as_str());
    testkit::eventually(&what, limit, async || {
        a.members()
            .into_iter()
            .find(|m| m.name == who && m.status == status)
    })
    .await
}

/// Waits (at most `limit`) until `a` lists `n` members alive, itself
/// included.
pub async fn wait_alive(a: &Agent, n: usize, limit: Duration) {
    let what = format!("{} sees {n} members alive", a.local_member().name);
    testkit::eventually(&what, limit, async || {
        let alive = a
            .members()
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .count();
        (alive == n).then_some(())
    })
    .await
}
