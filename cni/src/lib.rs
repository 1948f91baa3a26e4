//! Manx CNI plugin: pod veths, addresses and routes
