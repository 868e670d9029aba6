//! the serf-compatible command line.
//!
//! Not written yet.
