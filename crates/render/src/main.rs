//! `render`: `render reconcile [FLAGS]` runs the HAProxy reconciler; any
//! other command line is a one-shot rendering (`render --name s1 < tpl`).

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let code = if args.get(1).map(String::as_str) == Some("reconcile") {
        args.remove(1);
        render::cli::reconcile_main(args)
    } else {
        render::oneshot::main(args.split_off(1))
    };
    std::process::exit(code);
}
