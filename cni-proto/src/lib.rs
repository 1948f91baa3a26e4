//! The CNI protocol both Manx plugins speak: `manx` (crate `manx-cni`) and
//! the `manx-ipam` IPAM plugin (crate `manx-ipam`). One implementation, so
//! the same bad input gets the same error code and message from either.
//!
//! * [`env`] — the `CNI_*` variables, validated (code 4);
//! * [`conf`] — the configuration's common part: JSON (code 6),
//!   `cniVersion` (codes 7 and 1), `name` (code 7), `datastore_type`
//!   (code 2);
//! * [`version`] — supported versions, negotiation, the VERSION answer;
//! * [`error`] — the spec's error codes and the error object;
//! * [`result`] — the ADD result in the 0.3.x/0.4.0/1.x shapes;
//! * [`output`] — what a plugin prints for a result or an error, and its
//!   exit code;
//! * [`logging`] — where both plugins log (`log_file_path` only, or stderr).
//!
//! No I/O beyond checking that `CNI_NETNS` exists and opening the log file;
//! no async, no netlink.

pub mod conf;
pub mod env;
pub mod error;
pub mod logging;
pub mod output;
pub mod result;
pub mod version;

pub use error::{CniError, CniResult, ErrorCode};
pub use output::Outcome;
