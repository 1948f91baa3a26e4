//! Stale workload reclaim (issue 16): the pure decision.
//!
//! A runtime that never calls CNI DEL (`ctr run -d --cni`) leaves its
//! WorkloadEndpoint and its addresses behind. The node looks at each local
//! endpoint's facts (does its pod netns path exist, does its host-side
//! `cali*` veth exist) and decides, with [`decide`], whether to keep it, mark
//! it stale (record when it was first seen stale, in the endpoint's
//! [`STALE_SINCE_ANNOTATION`] annotation, so `manxctl ipam check` on any host
//! can report it), clear a mark (the workload came back), or reclaim it
//! (release its addresses by handle and delete the endpoint) once the grace
//! period ([`GRACE_ENV`], default [`DEFAULT_GRACE`]) has passed.
//!
//! Never reclaimed while its veth exists.
//!
//! The periodic scan that gathers the facts and writes the marks is
//! [`crate::reclaim_scan`]; `manxctl ipam check` reports the marks
//! ([`ipam::check::StaleWorkload`]).

use std::time::Duration;

/// Annotation on a WorkloadEndpoint: Unix seconds when this node first saw
/// it stale (netns or veth gone). Defined beside the `ipam check` report
/// that reads it.
pub use ipam::check::STALE_SINCE_ANNOTATION;

/// manx-node env var: grace period in seconds before a stale workload is
/// reclaimed.
pub const GRACE_ENV: &str = "MANX_STALE_WORKLOAD_GRACE_SECS";

/// Default grace period: 5 minutes.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// What the node observed about one local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The pod's netns path exists.
    pub netns_exists: bool,
    /// The host-side veth exists.
    pub veth_exists: bool,
    /// Now, Unix seconds.
    pub now: u64,
}

/// What to do with one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Live and unmarked: nothing to do.
    Keep,
    /// Live again but marked stale: remove the mark.
    Clear,
    /// Newly stale: record `since` (Unix seconds).
    Mark { since: u64 },
    /// Stale but within the grace period: leave the mark as is.
    Wait,
    /// Stale for longer than the grace period: release and delete.
    Reclaim,
}

/// Parses the stale-since annotation value (Unix seconds). A value that does
/// not parse is treated as absent (it is re-marked with now).
pub fn parse_since(v: Option<&str>) -> Option<u64> {
    v.and_then(|s| s.trim().parse().ok())
}

/// The grace period from the env var's value: whole seconds; absent gives
/// [`DEFAULT_GRACE`]; anything else is refused, naming the variable.
pub fn grace_from(v: Option<&str>) -> Result<Duration, String> {
    match v.map(str::trim) {
        None | Some("") => Ok(DEFAULT_GRACE),
        Some(s) => s.parse::<u64>().map(Duration::from_secs).map_err(|_| {
            format!(
                "{GRACE_ENV}={s:?} is not a whole number of seconds: set it like {GRACE_ENV}=300 (the default) or unset it"
            )
        }),
    }
}

/// The grace period from [`GRACE_ENV`].
pub fn grace_from_env() -> Result<Duration, String> {
    grace_from(std::env::var(GRACE_ENV).ok().as_deref())
}

/// The decision for one endpoint, given its current mark (`since`), the
/// facts and the grace period.
pub fn decide(since: Option<u64>, facts: Facts, grace: Duration) -> Decision {
    // A present veth means the workload's dataplane is alive: never reclaim.
    // With the veth there but the netns gone, mark it (ipam check reports it)
    // but wait for the veth to go too.
    let stale = !(facts.netns_exists && facts.veth_exists);
    match (stale, since) {
        (false, None) => Decision::Keep,
        (false, Some(_)) => Decision::Clear,
        (true, None) => Decision::Mark { since: facts.now },
        (true, Some(s)) => {
            if facts.veth_exists {
                return Decision::Wait;
            }
            // A mark in the future (clock step back) waits from now.
            let age = facts.now.saturating_sub(s);
            if age >= grace.as_secs() {
                Decision::Reclaim
            } else {
                Decision::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Duration = Duration::from_secs(300);

    fn f(netns: bool, veth: bool, now: u64) -> Facts {
        Facts {
            netns_exists: netns,
            veth_exists: veth,
            now,
        }
    }

    #[test]
    fn live_unmarked_is_kept() {
        assert_eq!(decide(None, f(true, true, 1000), G), Decision::Keep);
    }

    #[test]
    fn live_marked_is_cleared() {
        assert_eq!(decide(Some(10), f(true, true, 1000), G), Decision::Clear);
    }

    #[test]
    fn veth_gone_is_marked_with_now() {
        assert_eq!(
            decide(None, f(true, false, 1000), G),
            Decision::Mark { since: 1000 }
        );
        assert_eq!(
            decide(None, f(false, false, 1000), G),
            Decision::Mark { since: 1000 }
        );
    }

    #[test]
    fn netns_gone_is_marked_even_with_veth() {
        assert_eq!(
            decide(None, f(false, true, 1000), G),
            Decision::Mark { since: 1000 }
        );
    }

    #[test]
    fn never_reclaimed_while_veth_exists() {
        assert_eq!(decide(Some(0), f(false, true, 100_000), G), Decision::Wait);
    }

    #[test]
    fn waits_within_grace_then_reclaims() {
        assert_eq!(decide(Some(1000), f(true, false, 1299), G), Decision::Wait);
        assert_eq!(
            decide(Some(1000), f(true, false, 1300), G),
            Decision::Reclaim
        );
        assert_eq!(
            decide(Some(1000), f(false, false, 5000), G),
            Decision::Reclaim
        );
    }

    #[test]
    fn mark_in_future_waits() {
        assert_eq!(decide(Some(9999), f(false, false, 10), G), Decision::Wait);
    }

    #[test]
    fn zero_grace_reclaims_at_once_when_marked() {
        assert_eq!(
            decide(Some(5), f(false, false, 5), Duration::ZERO),
            Decision::Reclaim
        );
    }

    #[test]
    fn grace_and_since_parsing() {
        assert_eq!(grace_from(None), Ok(DEFAULT_GRACE));
        assert_eq!(grace_from(Some("")), Ok(DEFAULT_GRACE));
        let e = grace_from(Some("5m")).unwrap_err();
        assert!(e.contains(GRACE_ENV) && e.contains("\"5m\""), "{e}");
        assert_eq!(grace_from(Some(" 2 ")), Ok(Duration::from_secs(2)));
        assert_eq!(parse_since(Some("123")), Some(123));
        assert_eq!(parse_since(Some("nope")), None);
        assert_eq!(parse_since(None), None);
    }
}
