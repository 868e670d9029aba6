//! `render`: the template renderer (the role handlebars-cmd plays in the
//! lab, with tera syntax) and the HAProxy reconciler that replaces the
//! lab's script-per-event handlers.
//!
//! Code map:
//! - [`template`]: tera rendering; errors name the template line.
//! - [`output`]: atomic, validated writes (temp file, check command, rename).
//! - [`oneshot`]: `render --key value < tpl` (hand-parsed command line).
//! - [`backends`]: which members become servers (role tag, alive, safe name).
//! - [`runtime_api`]: HAProxy's admin socket (unix or TCP), replies, and
//!   `show servers state`.
//! - [`plan`]: the difference between HAProxy's servers and the desired set
//!   (pure).
//! - [`membership`]: the membership-source seam and the event coalescing.
//! - [`reconcile`]: the long-lived loop and how changes reach HAProxy.
//! - [`cli`]: `render reconcile` flags and the Serf RPC source.

pub mod backends;
pub mod cli;
pub mod membership;
pub mod oneshot;
pub mod output;
pub mod plan;
pub mod reconcile;
pub mod runtime_api;
pub mod serf_source;
pub mod template;
