//! Opening the endpoint store a configuration names.

use std::sync::Arc;

use crate::config::NetConf;
use crate::endpoint::{EndpointStore, NoStore};
use crate::error::CniError;

/// The store for `conf`: `none` records nothing.
pub fn open(conf: &NetConf) -> Result<Arc<dyn EndpointStore>, CniError> {
    match conf.datastore.datastore_type.as_deref() {
        Some("none") => Ok(Arc::new(NoStore)),
        other => Err(CniError::config(format!(
            "datastore_type {other:?}: datastore support is being wired"
        ))),
    }
}
