//! The route feed: Loc-RIB changes for the kernel programmer, collapsed per
//! prefix. The speaker actor pushes without ever waiting; a reader that
//! falls behind finds the latest state of each changed prefix, not the
//! history, so memory is O(table) however slow it is (an unbounded channel
//! of [`RouteUpdate`]s was O(churn)).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ipnetwork::IpNetwork;
use tokio::sync::Notify;

use super::RouteUpdate;

/// A cloneable handle on one feed: the speaker pushes, one reader takes.
#[derive(Debug, Clone, Default)]
pub struct RouteFeed {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: Mutex<BTreeMap<IpNetwork, RouteUpdate>>,
    ready: Notify,
}

impl RouteFeed {
    /// An empty feed.
    pub fn new() -> RouteFeed {
        RouteFeed::default()
    }

    /// Record a change; it replaces any not yet taken for the same prefix.
    pub fn push(&self, update: RouteUpdate) {
        let prefix = match &update {
            RouteUpdate::Add { prefix, .. } | RouteUpdate::Remove { prefix } => *prefix,
        };
        self.inner
            .pending
            .lock()
            .expect("route feed lock")
            .insert(prefix, update);
        // Stores a permit when nobody waits: no wake-up is lost.
        self.inner.ready.notify_one();
    }

    /// Everything pending, in prefix order (empty if nothing is).
    pub fn take(&self) -> Vec<RouteUpdate> {
        let pending = std::mem::take(&mut *self.inner.pending.lock().expect("route feed lock"));
        pending.into_values().collect()
    }

    /// Wait until something is pending, then take it all.
    pub async fn recv(&self) -> Vec<RouteUpdate> {
        loop {
            let batch = self.take();
            if !batch.is_empty() {
                return batch;
            }
            self.inner.ready.notified().await;
        }
    }

    /// How many prefixes are pending.
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().expect("route feed lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(p: &str, nh: &str) -> RouteUpdate {
        RouteUpdate::Add {
            prefix: p.parse().unwrap(),
            next_hops: vec![nh.parse().unwrap()],
            peer: nh.parse().unwrap(),
        }
    }

    fn remove(p: &str) -> RouteUpdate {
        RouteUpdate::Remove {
            prefix: p.parse().unwrap(),
        }
    }

    #[test]
    fn churn_collapses_to_the_latest_state_per_prefix() {
        let feed = RouteFeed::new();
        for round in 0..1000 {
            for i in 0..50 {
                let p = format!("10.{}.{}.0/26", i / 4, (i % 4) * 64);
                feed.push(add(&p, "192.0.2.1"));
                if round < 999 || i % 2 == 0 {
                    feed.push(remove(&p));
                }
            }
        }
        assert_eq!(feed.pending(), 50, "one entry per prefix, not per change");
        let got = feed.take();
        assert_eq!(got.len(), 50);
        let adds = got
            .iter()
            .filter(|u| matches!(u, RouteUpdate::Add { .. }))
            .count();
        assert_eq!(adds, 25, "the odd prefixes end announced");
        assert!(feed.take().is_empty());
    }

    #[tokio::test]
    async fn recv_waits_for_a_push_and_loses_no_wake_up() {
        let feed = RouteFeed::new();
        // Pushed before anyone waits: the permit is stored.
        feed.push(add("10.0.0.0/26", "192.0.2.1"));
        assert_eq!(feed.recv().await.len(), 1);
        let reader = feed.clone();
        let task = tokio::spawn(async move { reader.recv().await });
        tokio::task::yield_now().await;
        feed.push(remove("10.0.0.0/26"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("recv woke up")
            .unwrap();
        assert_eq!(got, vec![remove("10.0.0.0/26")]);
    }
}
