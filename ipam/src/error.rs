//! The IPAM error type.

use std::net::IpAddr;

use datastore::StoreError;

use crate::block::BlockError;
use crate::blockrw::FaultPoint;

/// Errors of IPAM operations. Messages say what failed, on which object, and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The datastore failed (after retries where retrying made sense).
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    /// A stored object could not be decoded.
    #[error("{key}: cannot decode stored value: {reason}; inspect it and delete or fix it")]
    Decode { key: String, reason: String },
    /// A block operation failed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// No address could be found; the message explains why, per pool.
    #[error("no address for node {node}: {detail}")]
    Exhausted { node: String, detail: String },
    /// Too many concurrent writers on the same object.
    #[error("{what}: still conflicting after {attempts} attempts; try again later")]
    Contention { what: String, attempts: usize },
    /// The address is not in any pool / block.
    #[error("{ip}: {reason}")]
    Address { ip: IpAddr, reason: String },
    /// A bad argument from the caller.
    #[error("{0}")]
    Invalid(String),
    /// Test-only: a planned crash at a fault point (see [`crate::blockrw::FaultPlan`]).
    #[error("injected crash at {0:?}")]
    InjectedCrash(FaultPoint),
}

impl IpamError {
    /// Wrap a store error with what we were doing.
    pub fn store(context: impl Into<String>, source: StoreError) -> Self {
        IpamError::Store {
            context: context.into(),
            source,
        }
    }

    /// Worth retrying later as is (CNI code 11 "try again later").
    pub fn is_transient(&self) -> bool {
        match self {
            IpamError::Store { source, .. } => source.is_transient(),
            IpamError::Contention { .. } => true,
            _ => false,
        }
    }
}

/// Result alias.
pub type Result<T, E = IpamError> = std::result::Result<T, E>;
