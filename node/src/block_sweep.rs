//! Releasing this node's empty IPAM blocks when no DEL comes (issue 17).
//!
//! A DEL through `manx-ipam` sweeps its node's blocks that have been empty
//! for the grace period (at most once a minute per host). A node whose pods
//! stopped coming and going would keep its empty blocks forever, so
//! manx-node runs the same sweep (`ipam::affinity::release_empty_blocks`,
//! Calico's release of empty blocks) every grace / 5, between 10 s and
//! 5 min. The grace is manx-ipam's: `MANX_IPAM_EMPTY_BLOCK_GRACE_SECS`,
//! default 300 s.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datastore::Datastore;

/// manx-ipam's grace variable, read by manx-node too.
pub const GRACE_ENV: &str = ipam::cni_plugin::EMPTY_BLOCK_GRACE_VAR;

/// Calico's default grace before an empty block is released.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// The grace from the environment; an unparsable value is an error naming
/// the variable.
pub fn grace_from_env() -> Result<Duration, String> {
    match std::env::var(GRACE_ENV) {
        Err(_) => Ok(DEFAULT_GRACE),
        Ok(v) => v.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| {
            format!("{GRACE_ENV}={v:?} is not a whole number of seconds; set it to e.g. 300 or unset it")
        }),
    }
}

/// How often the sweep runs for `grace`.
pub fn interval(grace: Duration) -> Duration {
    (grace / 5).clamp(Duration::from_secs(10), Duration::from_secs(300))
}

/// Sweep `node`'s empty blocks every [`interval`] until the future is
/// dropped.
pub async fn run(store: Arc<dyn Datastore>, node: String, grace: Duration) {
    let every = interval(grace);
    tracing::info!(
        grace_secs = grace.as_secs(),
        interval_secs = every.as_secs(),
        "empty-block sweep running"
    );
    loop {
        tokio::time::sleep(every).await;
        match ipam::affinity::release_empty_blocks(store.clone(), &node, grace, SystemTime::now())
            .await
        {
            Ok(released) if !released.is_empty() => {
                tracing::info!(?released, "released empty IPAM blocks of this node");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "empty-block sweep failed; next try in {every:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_fifth_of_the_grace_within_bounds() {
        assert_eq!(interval(Duration::from_secs(300)), Duration::from_secs(60));
        assert_eq!(interval(Duration::ZERO), Duration::from_secs(10));
        assert_eq!(
            interval(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
    }
}
