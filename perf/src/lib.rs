//! Shared helpers for vpcd benchmarks.
