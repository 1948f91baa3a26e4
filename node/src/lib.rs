//! manx-node: the per-node agent and composition root.
//!
//! It wires the datastore, IPAM, bgpd and felix-lite together; none of those
//! crates knows about the others. [`agent`] has the task diagram.

pub mod agent;
pub mod cluster;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod startup;
pub mod status;
