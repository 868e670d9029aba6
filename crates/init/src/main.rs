//! The multi-call binary: `init`, `s6-svc`, `s6-svstat`, `with-contenv`.

use std::ffi::OsString;
use std::path::Path;

fn strings(args: &[OsString], prog: &str) -> Result<Vec<String>, i32> {
    args.iter()
        .map(|a| {
            a.to_str().map(str::to_string).ok_or_else(|| {
                eprintln!("{prog}: argument {a:?} is not valid UTF-8");
                100
            })
        })
        .collect()
}

fn dispatch(name: &str, args: Vec<OsString>) -> i32 {
    match name {
        "s6-svc" | "svc" => match strings(&args, "s6-svc") {
            Ok(a) => init::control::svc_main(&a),
            Err(c) => c,
        },
        "s6-svstat" | "svstat" => match strings(&args, "s6-svstat") {
            Ok(a) => init::control::svstat_main(&a),
            Err(c) => c,
        },
        "with-contenv" => {
            init::contenv::with_contenv(&init::config::Layout::from_env().container_env(), &args)
        }
        _ => {
            let mut args = args;
            if args.first().is_some_and(|a| a == "--") {
                args.remove(0);
            }
            init::runtime::run(args)
        }
    }
}

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = if args.is_empty() {
        OsString::from("init")
    } else {
        args.remove(0)
    };
    let base = Path::new(&argv0)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = match base.as_str() {
        "s6-svc" | "s6-svstat" | "with-contenv" => dispatch(&base, args),
        _ => {
            // `init svc ...`, `init svstat ...`, `init with-contenv ...`.
            match args.first().and_then(|a| a.to_str()) {
                Some(sub @ ("svc" | "svstat" | "with-contenv" | "s6-svc" | "s6-svstat")) => {
                    let sub = sub.to_string();
                    args.remove(0);
                    dispatch(&sub, args)
                }
                _ => dispatch("init", args),
            }
        }
    };
    std::process::exit(code);
}
