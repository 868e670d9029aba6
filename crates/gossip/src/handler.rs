//! the event-handler runner (SERF_* environment, stdin format, one at a time, timeouts).
//!
//! Not written yet.
