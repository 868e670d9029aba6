//! `render`: template rendering (handlebars-cmd's job, tera syntax) and the
//! HAProxy reconciler that follows the membership agent.
//!
//! Not written yet: see the issue "render and the reconciler".

fn main() {
    eprintln!("render: not implemented yet");
    std::process::exit(64);
}
