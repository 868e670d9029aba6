//! Following the membership agent: the [`MembershipSource`] seam, and the
//! task that turns its event stream into coalesced, full member lists.
//!
//! Events only say "something changed"; the truth is always a fresh full
//! member list, fetched after a burst has quietened. So a missed or
//! reordered event cannot leave the reconciler wrong, and a reconnect is
//! just another full list.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backends::MemberInfo;

/// A membership agent as the reconciler needs it.
pub trait MembershipSource: Send + 'static {
    /// (Re)connect and subscribe to member events.
    fn connect(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Every member the agent knows, with its status.
    fn members(&mut self) -> impl Future<Output = anyhow::Result<Vec<MemberInfo>>> + Send;
    /// Wait for the next member event. Must be cancel-safe (it is raced
    /// against timers); an error means the subscription is lost.
    fn next_event(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Timing of [`follow`].
#[derive(Debug, Clone, Copy)]
pub struct Coalescing {
    /// A burst ends after this long without a new event.
    pub quiet: Duration,
    /// ... or this long after its first event, whichever comes first.
    pub max_delay: Duration,
    /// Fetch the full list this often even without events (a safety net).
    pub resync: Duration,
}

/// Exponential backoff between retries, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, cur: min }
    }
    pub fn next_delay(&mut self) -> Duration {
        let d = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        d
    }
    pub fn reset(&mut self) {
        self.cur = self.min;
    }
}

/// Publish the agent's full member list on `tx` at start, after every
/// burst of events, every `resync`, and after every reconnect. Never
/// returns; errors are logged and retried with backoff.
pub async fn follow<S: MembershipSource>(
    mut source: S,
    tx: watch::Sender<Option<Vec<MemberInfo>>>,
    timing: Coalescing,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut failing = false;
    loop {
        if let Err(e) = connect_and_list(&mut source, &tx).await {
            if !failing {
                tracing::warn!("membership agent unavailable, retrying with backoff: {e}");
                failing = true;
            } else {
                tracing::debug!("membership agent still unavailable: {e}");
            }
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        if failing {
            tracing::info!("membership agent connected again");
        }
        backoff.reset();
        match stream_bursts(&mut source, &tx, timing).await {
            Ok(()) => unreachable!("stream_bursts only returns on error"),
            Err(e) => {
                tracing::warn!("membership stream lost, reconnecting: {e}");
                failing = true;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn connect_and_list<S: MembershipSource>(
    source: &mut S,
    tx: &watch::Sender<Option<Vec<MemberInfo>>>,
) -> anyhow::Result<()> {
    source.connect().await?;
    let list = source.members().await?;
    tx.send_replace(Some(list));
    Ok(())
}

async fn stream_bursts<S: MembershipSource>(
    source: &mut S,
    tx: &watch::Sender<Option<Vec<MemberInfo>>>,
    timing: Coalescing,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            ev = source.next_event() => ev?,
            _ = tokio::time::sleep(timing.resync) => {
                tx.send_replace(Some(source.members().await?));
                continue;
            }
        }
        let first = Instant::now();
        let mut last = first;
        loop {
            let until = (last + timing.quiet).min(first + timing.max_delay);
            tokio::select! {
                ev = source.next_event() => { ev?; last = Instant::now(); }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        tx.send_replace(Some(source.members().await?));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    /// A source fed by the test: events through a channel, the member list
    /// through shared state; counts `members()` calls.
    struct Fed {
        events: mpsc::UnboundedReceiver<Result<(), String>>,
        list: Arc<Mutex<Vec<MemberInfo>>>,
        calls: Arc<Mutex<usize>>,
        connect_failures: usize,
    }

    impl MembershipSource for Fed {
        async fn connect(&mut self) -> anyhow::Result<()> {
            if self.connect_failures > 0 {
                self.connect_failures -= 1;
                anyhow::bail!("refused");
            }
            Ok(())
        }
        async fn members(&mut self) -> anyhow::Result<Vec<MemberInfo>> {
            *self.calls.lock().unwrap() += 1;
            Ok(self.list.lock().unwrap().clone())
        }
        async fn next_event(&mut self) -> anyhow::Result<()> {
            match self.events.recv().await {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(anyhow::anyhow!(e)),
                None => std::future::pending().await,
            }
        }
    }

    fn m(name: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: "10.0.0.1".parse().unwrap(),
            status: "alive".into(),
            tags: vec![],
        }
    }

    const TIMING: Coalescing = Coalescing {
        quiet: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        resync: Duration::from_secs(3600),
    };

    #[tokio::test(start_paused = true)]
    async fn burst_is_coalesced_into_one_list() {
        let (etx, erx) = mpsc::unbounded_channel();
        let list = Arc::new(Mutex::new(vec![m("a")]));
        let calls = Arc::new(Mutex::new(0));
        let src = Fed {
            events: erx,
            list: list.clone(),
            calls: calls.clone(),
            connect_failures: 2,
        };
        let (tx, mut rx) = watch::channel(None);
        tokio::spawn(follow(src, tx, TIMING));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().len(), 1);
        assert_eq!(
            *calls.lock().unwrap(),
            1,
            "connect failures retried, then one list"
        );
        // 10 events 50 ms apart: one burst, one fetch.
        for i in 0..10 {
            list.lock().unwrap().push(m(&format!("n{i}")));
            etx.send(Ok(())).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().len(), 11);
        assert_eq!(*calls.lock().unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_burst_is_cut_at_max_delay() {
        let (etx, erx) = mpsc::unbounded_channel();
        let calls = Arc::new(Mutex::new(0));
        let src = Fed {
            events: erx,
            list: Arc::new(Mutex::new(vec![])),
            calls: calls.clone(),
            connect_failures: 0,
        };
        let (tx, mut rx) = watch::channel(None);
        tokio::spawn(follow(src, tx, TIMING));
        rx.changed().await.unwrap();
        let start = Instant::now();
        let feeder = tokio::spawn(async move {
            for _ in 0..100 {
                if etx.send(Ok(())).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        rx.changed().await.unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= TIMING.max_delay && waited < TIMING.max_delay + Duration::from_millis(150),
            "{waited:?}"
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn lost_stream_reconnects_and_relists() {
        let (etx, erx) = mpsc::unbounded_channel();
        let calls = Arc::new(Mutex::new(0));
        let src = Fed {
            events: erx,
            list: Arc::new(Mutex::new(vec![])),
            calls: calls.clone(),
            connect_failures: 0,
        };
        let (tx, mut rx) = watch::channel(None);
        tokio::spawn(follow(src, tx, TIMING));
        rx.changed().await.unwrap();
        etx.send(Err("connection reset".into())).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*calls.lock().unwrap(), 2);
    }
}
