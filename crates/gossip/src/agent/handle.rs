//! [`AgentHandle`] for [`Agent`]: every change is a [`Command`] to the
//! actor, answered once its effect shows in the view; reads (members,
//! stats, coordinates) answer from the [`View`] the actor publishes. The
//! handle runs what takes time outside the actor: resolving and
//! push-pulling joins, the waits of a graceful leave, keyring queries.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::actor::Command;
use super::net::{self, StreamCtx};
use super::view::View;
use super::Agent;
use crate::model::{
    AgentHandle, Event, KeyResponse, Member, MemberStatus, QueryParams, QueryReply, Stats,
};
use crate::serf;

/// How long a leaving agent lets its peers handle the leave intent it sent
/// them directly before it sends the dead notice.
const INTENT_HEAD_START: Duration = Duration::from_millis(20);
/// Serf's LeavePropagateDelay: how long the dead notice is given to spread.
const LEAVE_PROPAGATE_DELAY: Duration = Duration::from_secs(1);

fn stopped() -> anyhow::Error {
    anyhow::anyhow!("the agent is shut down")
}

impl Agent {
    /// Sends a command, waits for its answer.
    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Until no broadcast is queued (or nobody is left to send it to), at
    /// most `limit`.
    async fn wait_broadcasts(&self, limit: Duration) {
        let mut view = self.view.clone();
        let _ = tokio::time::timeout(
            limit,
            view.wait_for(|v| v.pending_broadcasts == 0 || v.alive_peers == 0),
        )
        .await;
    }

    /// A keyring operation across the cluster, as Serf's key manager does
    /// it: an internal query every member (us included) answers; it ends
    /// when every alive member answered or the query times out. Failures
    /// are reported in the response (`num_err`, `messages`), not as `Err`.
    async fn key_query(&self, op: &str, key: &[u8]) -> anyhow::Result<KeyResponse> {
        let num_nodes = self
            .view()
            .members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .count();
        let mut rx = self
            .query(QueryParams {
                name: format!("_serf_{op}"),
                payload: serf::encode_key_request(key),
                ..Default::default()
            })
            .await?;
        let mut resp = KeyResponse {
            num_nodes,
            ..Default::default()
        };
        while let Some(r) = rx.recv().await {
            match r {
                QueryReply::Response { from, payload } => {
                    resp.num_resp += 1;
                    match serf::decode_key_response(&payload) {
                        None => {
                            resp.num_err += 1;
                            resp.messages
                                .insert(from, "Failed to decode key response".into());
                        }
                        Some(n) => {
                            if !n.result {
                                resp.num_err += 1;
                            }
                            if !n.message.is_empty() {
                                resp.messages.insert(from, n.message);
                            }
                            for k in n.keys {
                                *resp.keys.entry(k).or_default() += 1;
                            }
                        }
                    }
                    if resp.num_resp >= num_nodes {
                        break;
                    }
                }
                QueryReply::Done => break,
                QueryReply::Ack { .. } => {}
            }
        }
        Ok(resp)
    }
}

#[async_trait::async_trait]
impl AgentHandle for Agent {
    fn local_member(&self) -> Member {
        self.view().local_member()
    }

    fn members(&self) -> Vec<Member> {
        self.view().members.to_vec()
    }

    async fn join(&self, existing: Vec<String>, replay: bool) -> anyhow::Result<usize> {
        let mut addrs = Vec::new();
        let mut errors = Vec::new();
        for s in &existing {
            match net::resolve(s).await {
                Ok(a) => addrs.extend(a),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let mut ok = 0;
        for addr in addrs {
            let pulls = self
                .call(|reply| Command::Join {
                    addr,
                    replay,
                    reply,
                })
                .await?;
            for (to, bytes) in pulls {
                let ctx = StreamCtx::new(&self.keys.borrow(), &self.budget);
                match net::push_pull(to, bytes, ctx).await {
                    Ok(msg) => {
                        if self.call(|reply| Command::JoinReply { msg, reply }).await? {
                            ok += 1;
                        }
                    }
                    Err(e) => errors.push(format!("{to}: {e:#}")),
                }
            }
        }
        if ok == 0 {
            anyhow::bail!("failed to join any of {existing:?}: {}", errors.join("; "));
        }
        self.call(|reply| Command::Joined { reply }).await?;
        Ok(ok)
    }

    async fn leave(&self) -> anyhow::Result<()> {
        // The intent must reach a peer before the dead notice does: a peer
        // that hears of the death of a member it does not know is leaving
        // records a failure (Serf's rule). Serf waits for the intent to be
        // gossiped; when every live peer was sent it directly, a moment for
        // them to handle it is enough (gossip carries it on meanwhile).
        if self.call(|reply| Command::LeaveIntent { reply }).await? {
            tokio::time::sleep(INTENT_HEAD_START).await;
        } else {
            self.wait_broadcasts(self.config.broadcast_timeout).await;
        }
        self.call(|reply| Command::LeaveMemberlist { reply })
            .await?;
        self.wait_broadcasts(self.config.broadcast_timeout).await;
        tokio::time::sleep(LEAVE_PROPAGATE_DELAY).await;
        self.call(|done| Command::SnapshotLeave { done }).await
    }

    async fn force_leave(&self, node: &str, prune: bool) -> anyhow::Result<()> {
        let node = node.to_string();
        let found = self
            .call(|reply| Command::ForceLeave {
                node: node.clone(),
                prune,
                reply,
            })
            .await?;
        anyhow::ensure!(found, "no member named {node:?}");
        Ok(())
    }

    async fn user_event(&self, name: &str, payload: Vec<u8>, coalesce: bool) -> anyhow::Result<()> {
        self.call(|reply| Command::UserEvent {
            name: name.to_string(),
            payload,
            coalesce,
            reply,
        })
        .await?
    }

    async fn set_tags(
        &self,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    ) -> anyhow::Result<()> {
        let written = self
            .call(|reply| Command::SetTags { set, delete, reply })
            .await??;
        match written {
            Some(w) => w.await.map_err(|_| stopped())?,
            None => Ok(()),
        }
    }

    async fn query(&self, params: QueryParams) -> anyhow::Result<mpsc::Receiver<QueryReply>> {
        let (replies, rx) = mpsc::channel(1024);
        self.call(|reply| Command::Query {
            params,
            replies,
            reply,
        })
        .await??;
        Ok(rx)
    }

    async fn respond(&self, id: u64, payload: Vec<u8>) -> anyhow::Result<()> {
        self.call(|reply| Command::Respond { id, payload, reply })
            .await?
    }

    /// The first subscription also gets the events emitted before it
    /// (since start); later ones only what comes after them.
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn handler_events_dropped(&self, n: u64) {
        self.handler_events_dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn coordinate(&self, node: &str) -> Option<crate::coordinate::Coordinate> {
        self.view().coordinates.get(node).cloned()
    }

    fn stats(&self) -> Stats {
        self.view().stats(vec![
            ("name", self.config.node_name.clone()),
            ("stream_buffer_peak_bytes", self.budget.peak().to_string()),
            (
                "handler_events_dropped",
                self.handler_events_dropped
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
        ])
    }

    async fn install_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        anyhow::ensure!(
            matches!(key.len(), 16 | 24 | 32),
            "key must be 16, 24 or 32 bytes, got {}",
            key.len()
        );
        self.key_query("install-key", &key).await
    }

    async fn use_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        self.key_query("use-key", &key).await
    }

    async fn remove_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        self.key_query("remove-key", &key).await
    }

    async fn list_keys(&self) -> anyhow::Result<KeyResponse> {
        self.key_query("list-keys", &[]).await
    }

    /// Stops the retry-join and the actor (its sockets are closed and its
    /// file writes flushed when this returns). Stopping twice is fine.
    async fn shutdown(&self) -> anyhow::Result<()> {
        self.stop_retry_join();
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            let _ = stopped.await;
        }
        Ok(())
    }
}
