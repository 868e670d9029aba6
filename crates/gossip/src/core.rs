//! the sans-IO SWIM/Lifeguard state machine (memberlist's job).
//!
//! Not written yet.
