//! End-to-end harness: Manx clusters of network namespaces on one machine.
//!
//! [`netns`] has the guards (namespaces, processes) that clean up on drop;
//! [`lab`] builds whole clusters and is what `manx-lab` runs.

pub mod lab;
pub mod netns;
