//! manx-node: the per-node agent and composition root.
//!
//! It wires the datastore, IPAM, bgpd and felix-lite together; none of those
//! crates knows about the others.

pub mod config;
pub mod http;
pub mod metrics;
