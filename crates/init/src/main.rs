//! `init`: PID 1 for the lab's containers (the job s6-overlay does in the lab).
//!
//! Will own: reaping zombies, running `/etc/cont-init.d/*`, supervising
//! `/etc/services.d/NAME/run`, the `s6-svc`/`s6-svstat`/`with-contenv`
//! control surface, and the shutdown sequence. Not written yet: see the
//! issue "init: the container supervisor". Until then the images use a
//! plain entrypoint.

fn main() {
    eprintln!("init: not implemented yet");
    std::process::exit(64);
}
