//! the sans-IO Serf layer: Lamport clocks, intents, user events, queries, tags.
//!
//! Not written yet.
