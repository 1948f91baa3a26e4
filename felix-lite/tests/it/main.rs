//! The felix-lite crate's integration tests, one binary (each test binary links
//! the whole crate graph); shared helpers in `common`.

mod common;

mod kernel_autodetect;
mod kernel_dataplane;
mod kernel_nat;
mod kernel_vxlan6;
