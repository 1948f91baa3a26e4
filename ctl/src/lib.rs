//! manxctl, the Manx admin CLI: calicoctl's commands over the Manx datastore.
//!
//! The binary is thin; each command's logic is here so tests drive it
//! directly.

pub mod checksystem;
pub mod cli;
pub mod datastore_config;
pub mod node_status;
pub mod resources;
pub mod table;
