//! `tracing` setup: text or JSON lines on stderr, filtered by level/spec.
//!
//! The level follows `BGPConfiguration.spec.logSeverityScreen` (the node's
//! `node.<name>` object, else `default`), as calico-node's does, unless the
//! operator fixed it: `RUST_LOG`, or `MANX_LOG_LEVEL` / `--log-level`.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

type Handle = reload::Handle<EnvFilter, Registry>;

/// The filter's reload handle, when the datastore may set the level.
static FOLLOWS_DATASTORE: OnceLock<Handle> = OnceLock::new();

/// Install the global subscriber. `RUST_LOG` overrides `level` when set.
/// `explicit`: the level was given by the operator (flag or environment),
/// so `logSeverityScreen` does not change it.
pub fn init(format: &str, level: &str, explicit: bool) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = explicit || from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if format.eq_ignore_ascii_case("json") {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    if !fixed {
        let _ = FOLLOWS_DATASTORE.set(handle);
    }
}

/// Apply `logSeverityScreen` (as a tracing level name: `debug`, `info`,
/// `warn`, `error`, `off`), unless the operator fixed the level. Returns
/// whether the level was applied.
pub fn follow_datastore_level(level: &str) -> bool {
    let Some(handle) = FOLLOWS_DATASTORE.get() else {
        return false;
    };
    let Ok(filter) = EnvFilter::try_new(level) else {
        return false;
    };
    let current = handle.with_current(|f| f.to_string()).unwrap_or_default();
    if current == filter.to_string() {
        return false;
    }
    let applied = handle.reload(filter).is_ok();
    if applied {
        tracing::info!(level, "log level from BGPConfiguration logSeverityScreen");
    }
    applied
}
