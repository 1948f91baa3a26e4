//! Manx CNI plugin: pod veths, addresses and routes.
//!
//! The `manx` binary is a thin wrapper around [`plugin::run`]. Modules:
//! * [`env`], [`error`], [`version`], [`result`] — the CNI protocol, shared
//!   with `manx-ipam`: re-exports of the `manx-cni-proto` crate's modules
//!   (`CNI_*` variables, error codes, versions, per-version result shapes);
//! * [`config`] — the network configuration on stdin (its common header
//!   from `cni_proto::conf`);
//! * [`ipam`] — delegation to an IPAM plugin through the exec protocol;
//! * [`netns`], [`dataplane`], [`names`] — namespaces, veths, routes;
//! * [`endpoint`], [`store`] — WorkloadEndpoint records in the datastore;
//! * [`plugin`] — the commands (ADD in `add`);
//! * [`timing`] — per-step timings (`MANX_CNI_TIMING`).

mod add;
pub mod config;
pub mod dataplane;
pub mod endpoint;
pub mod ipam;
pub mod names;
pub mod netns;
pub mod plugin;
pub mod store;
pub mod timing;

pub use cni_proto::{CniError, ErrorCode, Outcome, env, error, result, version};
pub use plugin::run;
