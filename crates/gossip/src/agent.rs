//! the tokio shell: UDP+TCP sockets, timers, implements model::AgentHandle.
//!
//! Not written yet.
