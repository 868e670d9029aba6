//! The membership source backed by the agent's Serf RPC (our `gossip` agent
//! or a real `serf agent`, through `gossip::rpc::Client`): `members` for the
//! truth, a `stream` of member events for "something changed".

use gossip::rpc::{Client, EventStream, StreamRecord};

use crate::backends::MemberInfo;
use crate::membership::MembershipSource;

/// The member events that can change the backend set.
const FILTER: &str = "member-join,member-leave,member-failed,member-update,member-reap";

pub struct SerfSource {
    addr: String,
    auth: Option<String>,
    conn: Option<(Client, EventStream)>,
}

impl SerfSource {
    /// `addr` is HOST:PORT (resolved on every connect, so a name that
    /// resolves later is fine).
    pub fn new(addr: String, auth: Option<String>) -> Self {
        SerfSource {
            addr,
            auth,
            conn: None,
        }
    }
}

impl MembershipSource for SerfSource {
    async fn connect(&mut self) -> anyhow::Result<()> {
        self.conn = None;
        let sa = tokio::net::lookup_host(self.addr.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("agent RPC address {:?}: {e}", self.addr))?
            .next()
            .ok_or_else(|| {
                anyhow::anyhow!("agent RPC address {:?} resolves to nothing", self.addr)
            })?;
        let client = Client::connect(sa, self.auth.as_deref()).await?;
        let stream = client.stream(FILTER).await?;
        self.conn = Some((client, stream));
        Ok(())
    }

    async fn members(&mut self) -> anyhow::Result<Vec<MemberInfo>> {
        let (client, _) = self
            .conn
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not connected"))?;
        let members = match client.members().await {
            Ok(m) => m,
            Err(e) => {
                self.conn = None;
                return Err(e.into());
            }
        };
        Ok(members
            .into_iter()
            .map(|m| MemberInfo {
                status: m.status.as_str().to_string(),
                name: m.name,
                addr: m.addr,
                tags: m.tags,
            })
            .collect())
    }

    async fn next_event(&mut self) -> anyhow::Result<()> {
        let Some((_, stream)) = self.conn.as_mut() else {
            anyhow::bail!("not connected");
        };
        match stream.recv().await {
            Some(StreamRecord::Member { kind, members }) => {
                tracing::debug!(
                    "{} {:?}",
                    kind.as_str(),
                    members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()
                );
                Ok(())
            }
            // Not subscribed to these; harmless if an agent sends them.
            Some(_) => Ok(()),
            None => {
                self.conn = None;
                anyhow::bail!("agent closed the event stream")
            }
        }
    }
}
