//! manx-node's integration tests, one binary (each test binary links the
//! whole crate graph).

mod allowas_tor;
mod bfd_tor;
mod bind_mode;
mod cli;
mod ecmp_tor;
mod ipam_socket;
mod kernel_vxlan6;
mod reachable_by;
mod stale_reclaim;
mod tor_routes;

mod support;
