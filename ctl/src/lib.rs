//! manxctl, the Manx admin CLI
