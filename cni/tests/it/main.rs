//! The cni crate's integration tests, one binary (each test binary links
//! the whole crate graph); shared helpers in `common`.

mod common;

mod errors;
mod gc;
mod host_local;
mod manx_ipam;
mod own_netns;
mod runtimes;
mod same_errors;
