//! Benchmarks against named baselines (BIRD, ip -batch, raw etcd/SQLite)
