//! manx-node's integration tests, one binary (each test binary links the
//! whole crate graph).

mod cli;
mod kernel_vxlan6;
mod stale_reclaim;
mod tor_routes;
