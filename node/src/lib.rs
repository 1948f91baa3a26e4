//! manx-node, the per-node agent
