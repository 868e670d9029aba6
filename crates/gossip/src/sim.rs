//! a deterministic simulator driving the sans-IO core with simulated time, loss and partitions.
//!
//! Not written yet.
