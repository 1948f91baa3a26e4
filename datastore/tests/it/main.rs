//! The datastore's integration tests, one binary (each test binary links
//! the whole crate graph). `conformance_processes` stays a binary of its
//! own: it re-runs itself as the competing processes.

mod bulk_write;
mod client_crud;
mod conformance;
mod conformance_tls;
mod heavy_etcd_cluster;
mod model_errors;
mod model_manifests;
mod model_roundtrip_prop;
mod model_selector;
mod model_validation;
