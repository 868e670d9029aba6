//! The membership source backed by the agent's Serf RPC (our `gossip` agent
//! or a real `serf agent`, through `serf_rpc::Client`): `members` for the
//! truth, a `stream` of member events for "something changed".
//!
//! Every request has a deadline ([`RPC_DEADLINE`]): an agent that accepts
//! connections but never answers (stopped, wedged, or a connection gone
//! half-dead) makes `connect`/`members` fail, the connection is dropped, and
//! [`crate::membership::follow`] reconnects with its backoff.

use std::time::Duration;

use serf_rpc::{Client, EventStream, StreamRecord};

use crate::backends::MemberInfo;
use crate::membership::MembershipSource;

/// How long one exchange with the agent may take: resolving its address,
/// connecting, the handshake (and `auth`) and the `stream` subscription
/// together; each `members` call alone. A local agent answers these in
/// milliseconds (`members` of a few thousand nodes included), so 5 s is
/// room for a loaded machine; without a deadline a stopped or wedged agent,
/// whose kernel still accepts the connection, would be waited for forever.
///
/// Waiting for the next event has no deadline: a quiet cluster sends
/// nothing, which a wedged agent cannot be told apart from. The periodic
/// resync's `members` call (`--resync-secs`) is what finds a wedged agent.
pub const RPC_DEADLINE: Duration = Duration::from_secs(5);

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

    /// Resolve, connect, handshake (and auth), subscribe; no deadline of
    /// its own ([`MembershipSource::connect`] puts one around it all).
    async fn open(&self) -> anyhow::Result<(Client, EventStream)> {
        let sa = tokio::net::lookup_host(self.addr.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("agent RPC address {:?}: {e}", self.addr))?
            .next()
            .ok_or_else(|| {
                anyhow::anyhow!("agent RPC address {:?} resolves to nothing", self.addr)
            })?;
        let client = Client::connect(sa, self.auth.as_deref()).await?;
        let stream = client.stream(FILTER).await?;
        Ok((client, stream))
    }
}

impl MembershipSource for SerfSource {
    async fn connect(&mut self) -> anyhow::Result<()> {
        // Drop the old connection first: a failed attempt leaves none.
        self.conn = None;
        let conn = tokio::time::timeout(RPC_DEADLINE, self.open())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "agent at {} did not complete connect, handshake and subscription within {RPC_DEADLINE:?}",
                    self.addr
                )
            })??;
        self.conn = Some(conn);
        Ok(())
    }

    async fn members(&mut self) -> anyhow::Result<Vec<MemberInfo>> {
        let (client, _) = self
            .conn
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not connected"))?;
        // On any failure drop the connection, and the subscription on it:
        // an agent that left a request unanswered cannot be trusted to
        // deliver events either; `follow` reconnects.
        let members = match tokio::time::timeout(RPC_DEADLINE, client.members()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                self.conn = None;
                return Err(e.into());
            }
            Err(_) => {
                self.conn = None;
                anyhow::bail!(
                    "agent at {} did not answer `members` within {RPC_DEADLINE:?}; connection dropped",
                    self.addr
                );
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
