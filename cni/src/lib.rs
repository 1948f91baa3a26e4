//! Manx CNI plugin: pod veths, addresses and routes.
//!
//! The `manx` binary is a thin wrapper around [`plugin::run`]. Modules:
//! * [`env`], [`config`] — the `CNI_*` variables and stdin, validated;
//! * [`error`], [`version`], [`result`] — the spec's error codes, versions
//!   and per-version result shapes;
//! * [`ipam`] — delegation to an IPAM plugin through the exec protocol;
//! * [`netns`], [`dataplane`], [`names`] — namespaces, veths, routes;
//! * [`endpoint`], [`store`] — WorkloadEndpoint records in the datastore;
//! * [`plugin`] — the commands (ADD in `add`);
//! * [`timing`] — per-step timings (`MANX_CNI_TIMING`).

mod add;
pub mod config;
pub mod dataplane;
pub mod endpoint;
pub mod env;
pub mod error;
pub mod ipam;
pub mod logging;
pub mod names;
pub mod netns;
pub mod plugin;
pub mod result;
pub mod store;
pub mod timing;
pub mod version;

pub use error::{CniError, ErrorCode};
pub use plugin::{Outcome, run};
