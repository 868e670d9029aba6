//! placeholder
pub mod config;
pub mod contenv;
pub mod control;
pub mod machine;
pub mod runtime;
