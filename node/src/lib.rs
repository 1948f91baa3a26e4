//! manx-node: the per-node agent and composition root.
//!
//! It wires the datastore, IPAM, bgpd and felix-lite together; ipam, bgpd
//! and felix-lite do not know about each other (ipam and bgpd reach the
//! datastore only through its `Datastore` trait and typed resources).
//! [`agent`] has the task diagram; [`plan`] is its pure step from the
//! cluster view to the speaker's and the dataplane's input. [`status`] serves the local status socket
//! whose protocol (shared with `manxctl`) is the `manx-status` crate.

pub mod agent;
pub mod bfdd;
pub mod block_sweep;
pub mod cluster;
pub mod config;
pub mod detached;
pub mod http;
pub mod ipam_service;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod reclaim;
pub mod reclaim_scan;
pub mod startup;
pub mod status;
pub mod udp;
