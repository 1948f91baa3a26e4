//! When each node's kernel got a route: a [`RouteWatch`] (rtnetlink route
//! listener) in every node.
//!
//! `bench-convergence` used to ask every other node in turn (`ip route show`,
//! a process each) whether the new block's route was there yet: at 50-100
//! nodes one round of questions took longer than the routes took to arrive,
//! so it measured itself. Here each node has a listener, subscribed before
//! the first ADD and kept for the whole run, that stamps every Manx
//! (proto 77) route notification the moment it reads it; a trial only looks
//! up those stamps. A listener whose socket overran (ENOBUFS) fails the
//! trial, naming the node, instead of reading a late time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipnetwork::IpNetwork;

use super::route_watch::{LOOK_EVERY, RouteWatch};

/// One route listener per node, from [`RouteMonitors::start`] until dropped.
#[derive(Debug)]
pub struct RouteMonitors {
    watches: Vec<RouteWatch>,
}

impl RouteMonitors {
    /// A listener in each of `netns` (node index = position); returns once
    /// every socket is subscribed, so no route added after this call can be
    /// missed.
    pub fn start(netns: &[String]) -> Result<RouteMonitors> {
        let watches = netns
            .iter()
            .map(|ns| RouteWatch::start(ns).with_context(|| format!("route listener in {ns}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(RouteMonitors { watches })
    }

    /// Wait until every node in `nodes` has had a Manx route to `dst` added
    /// since `since`; returns when each got it (its first notification), or
    /// fails at `deadline` naming the nodes that never did.
    pub fn wait_for(
        &self,
        dst: IpNetwork,
        nodes: &[usize],
        since: Instant,
        deadline: Instant,
    ) -> Result<Vec<(usize, Duration)>> {
        loop {
            let mut got = Vec::new();
            let mut missing = Vec::new();
            for &n in nodes {
                match self.watches[n].first_added(&dst, since)? {
                    Some(at) => got.push((n, at.saturating_duration_since(since))),
                    None => missing.push(self.watches[n].netns()),
                }
            }
            if missing.is_empty() {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no route to {dst} (proto 77) appeared in {} of {} nodes: {}",
                    missing.len(),
                    nodes.len(),
                    missing.join(", ")
                );
            }
            // The times come from the notifications, not from this look.
            std::thread::sleep(LOOK_EVERY);
        }
    }
}
