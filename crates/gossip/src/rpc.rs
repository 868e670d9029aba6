//! Serf's RPC protocol: server over model::AgentHandle, and a client.
//!
//! Not written yet.
