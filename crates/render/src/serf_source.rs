//! The membership source backed by the agent's Serf RPC (our `gossip` agent
//! or a real `serf agent`): `members` for the truth, `stream` for
//! "something changed".
//!
//! Waiting for `gossip::rpc::Client`.

use crate::backends::MemberInfo;
use crate::membership::MembershipSource;

pub struct SerfSource {
    addr: String,
    auth: Option<String>,
}

impl SerfSource {
    pub fn new(addr: String, auth: Option<String>) -> Self {
        SerfSource { addr, auth }
    }
}

impl MembershipSource for SerfSource {
    async fn connect(&mut self) -> anyhow::Result<()> {
        anyhow::bail!(
            "Serf RPC client not wired yet ({}, auth {})",
            self.addr,
            self.auth.is_some()
        )
    }
    async fn members(&mut self) -> anyhow::Result<Vec<MemberInfo>> {
        anyhow::bail!("not connected")
    }
    async fn next_event(&mut self) -> anyhow::Result<()> {
        anyhow::bail!("not connected")
    }
}
