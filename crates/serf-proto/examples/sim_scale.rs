//! The host of `cargo xtask bench sim`: runs [`serf_proto::sim::scale`] in
//! a release build and prints what it measured as one JSON object, with the
//! wall time, live heap bytes and RSS at each phase's end.
//!
//! Usage: `sim_scale N SEED [converge]` (`converge`: stop once the join
//! waves converged, for the memory of full member lists). A host reads the clock and `/proc`, which the
//! protocol crate's clippy.toml bans from the library: allowed here only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serf_proto::sim::scale::{self, Params};
use testkit::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// A field of /proc/self/status in KiB (VmRSS, VmHWM).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("null".into(), |d| format!("{:.3}", d.as_secs_f64()))
}

fn list(v: &[Option<Duration>]) -> String {
    let items: Vec<String> = v.iter().map(|d| secs(*d)).collect();
    format!("[{}]", items.join(","))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(n), Some(seed)) = (
        args.get(1).and_then(|a| a.parse().ok()),
        args.get(2).and_then(|a| a.parse().ok()),
    ) else {
        eprintln!("usage: sim_scale N SEED");
        std::process::exit(2);
    };
    let mut p = Params::new(n, seed);
    p.only_converge = args.get(3).is_some_and(|a| a == "converge");
    let start = Instant::now();
    let mut last_wall = start;
    let mut phases = Vec::new();
    let r = scale::run(&p, &mut |name, sim| {
        let now = Instant::now();
        let (live, rss) = (ALLOC.live(), status_kib("VmRSS"));
        eprintln!(
            "sim n={n} {name}: simulated {:.1} s, wall {:.1} s (+{:.1}), heap {} MiB, rss {} MiB",
            sim.now().as_secs_f64(),
            (now - start).as_secs_f64(),
            (now - last_wall).as_secs_f64(),
            live >> 20,
            rss >> 10,
        );
        last_wall = now;
        phases.push(format!(
            r#"{{"name":"{name}","simulated_s":{:.3},"wall_s":{:.3},"heap_bytes":{live},"rss_kib":{rss}}}"#,
            sim.now().as_secs_f64(),
            (now - start).as_secs_f64(),
        ));
    });
    let wall = start.elapsed().as_secs_f64();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"{{"n":{n},"seed":{seed},"wall_s":{wall:.3},"simulated_s":{:.3},"heap_peak_bytes":{},"vm_hwm_kib":{},"#,
        r.simulated.as_secs_f64(),
        ALLOC.peak(),
        status_kib("VmHWM"),
    );
    let _ = write!(
        out,
        r#""converge_s":{},"heal_s":{},"false_failures":{},"datagrams_per_member_s":{:.3},"streams_per_member_s":{:.3},"ticks_per_member_s":{:.3},"#,
        secs(r.converge),
        secs(r.heal),
        r.false_failures,
        r.datagrams_per_member_s,
        r.streams_per_member_s,
        r.ticks_per_member_s,
    );
    let _ = write!(
        out,
        r#""event_depth_max":{},"event_depth_mean":{:.1},"settle_s":{},"settled_depth_max":{},"settled_depth_mean":{:.1},"settled_event_seen_s":{},"#,
        r.event_depth.0,
        r.event_depth.1,
        secs(r.settle),
        r.settled_depth.0,
        r.settled_depth.1,
        list(&r.settled_event_seen),
    );
    let killed: Vec<String> = r.killed.iter().map(|k| k.to_string()).collect();
    let _ = write!(
        out,
        r#""killed":[{}],"event_seen_s":{},"join_seen_s":{},"failed_seen_s":{},"phases":[{}]}}"#,
        killed.join(","),
        list(&r.event_seen),
        list(&r.join_seen),
        list(&r.failed_seen),
        phases.join(","),
    );
    println!("{out}");
}
