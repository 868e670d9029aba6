//! Conformance of the real `init` binary with what s6-overlay, tini and
//! dumb-init guarantee (see crates/init/README.md). Every case runs twice:
//! with init as a child subreaper of the test, and as PID 1 of a fresh PID
//! namespace.

mod common;

use common::*;

macro_rules! both_modes {
    ($($case:ident),* $(,)?) => {
        mod subreaper {
            $(#[test] fn $case() { super::$case(super::Mode::Subreaper) })*
        }
        mod pid_namespace {
            $(#[test] fn $case() { super::$case(super::Mode::PidNs) })*
        }
    };
}

both_modes!(
    reaps_orphaned_zombies,
    forwards_signals_to_the_cmd,
    cmd_exit_code_becomes_init_exit_code,
    cmd_killed_by_sigkill_gives_137,
    restarts_with_finish_arguments,
    crash_loop_backs_off_and_is_reported_once,
    down_file_keeps_service_down_until_up,
    cont_init_scripts_decide_which_services_start,
    every_control_flag_delivers_its_signal,
    term_ignoring_service_is_killed_after_grace,
    term_stops_promptly_when_services_obey,
    cont_init_failure_stops_in_mode_2,
    cont_init_failure_continues_in_mode_0,
    cont_finish_scripts_run,
    with_contenv_shows_captured_variable,
    variable_removed_by_cont_init_reaches_no_later_process,
    svstat_output_in_s6_style,
    unrunnable_run_is_reported_once,
    output_can_be_prefixed_with_service_name,
    unsupported_s6_features_are_named,
);

#[test]
fn pid1_terms_each_service_once_then_sweeps_the_rest() {
    let root = Root::new("sweep");
    // Like an agent's graceful leave: count every TERM, keep running a
    // while after the first one, as a second TERM would cut that short.
    root.service(
        "agent",
        "trap 'echo TERM >> terms; leaving=1' TERM\n\
         touch ready\n\
         n=0\n\
         while [ $n -lt 10 ]; do sleep 0.05; [ -n \"$leaving\" ] && n=$((n+1)); done\n\
         touch left\n\
         exit 0",
    );
    // A daemon that left its service's process group (setsid): only the
    // sweep reaches it.
    root.service(
        "spawner",
        "setsid sh -c 'trap \"ls ../agent > swept; exit 0\" TERM; \
         touch daemon-ready; while :; do sleep 0.05; done' &\n\
         exec sleep 1000",
    );
    let mut init = Init::start(&root, Mode::PidNs, &[], &[("S6_KILL_GRACETIME", "600000")]);
    wait_for("the agent and the daemon ready", || {
        (root.path("etc/services.d/agent/ready").exists()
            && root.path("etc/services.d/spawner/daemon-ready").exists())
        .then_some(())
    });
    init.signal(SIGTERM);
    // With a ten-minute grace time, exiting at all proves init noticed
    // that the swept daemon was gone.
    assert_eq!(init.wait(), 0, "{}", init.stderr());
    let terms = std::fs::read_to_string(root.path("etc/services.d/agent/terms")).unwrap();
    assert_eq!(terms, "TERM\n", "the agent must get exactly one SIGTERM");
    let swept =
        std::fs::read_to_string(root.path("etc/services.d/spawner/swept")).unwrap_or_else(|e| {
            panic!(
                "the daemon outside every service group got no SIGTERM ({e})\n{}",
                init.stderr()
            )
        });
    assert!(
        swept.lines().any(|f| f == "left"),
        "the sweep must come after the services are gone, not with their TERM"
    );
    assert!(!init.stderr().contains("SIGKILL"), "{}", init.stderr());
}

const FAST: &[(&str, &str)] = &[
    ("INIT_RESTART_DELAY_MS", "50"),
    ("S6_KILL_GRACETIME", "5000"),
];

fn reaps_orphaned_zombies(mode: Mode) {
    let root = Root::new("reap");
    // 100 short-lived orphans (their parent subshell exits at once), one
    // long-lived orphan to check where orphans land, then a marker.
    let d = root.dir.display();
    root.service(
        "orphans",
        &format!(
            "for i in $(seq 1 100); do ( sh -c \"touch {d}/orphan.$i\" & ) ; done\n\
             ( exec sleep 1001 & )\n\
             touch {d}/spawned\n\
             exec sleep 1000"
        ),
    );
    let init = Init::start(&root, mode, &[], FAST);
    wait_for("the service to spawn its orphans", || {
        root.path("spawned").exists().then_some(())
    });
    wait_for("all 100 orphans to run", || {
        (1..=100)
            .all(|i| root.path(&format!("orphan.{i}")).exists())
            .then_some(())
    });
    // The long-lived orphan was re-parented to init.
    let sleeper = wait_for("the orphaned sleep to be re-parented to init", || {
        children(init.pid)
            .into_iter()
            .find(|(p, _)| cmdline(*p).trim() == "sleep 1001")
            .map(|(p, _)| p)
    });
    // No zombie child of init is left, now that every orphan has exited.
    wait_for("no zombie left under init", || {
        let zombies: Vec<_> = children(init.pid)
            .into_iter()
            .filter(|c| c.1 == 'Z')
            .collect();
        zombies.is_empty().then_some(())
    });
    kill(sleeper, SIGKILL);
    wait_for("the killed orphan to be reaped, not left a zombie", || {
        (stat(sleeper).is_none()).then_some(())
    });
    assert!(children(init.pid).iter().all(|c| c.1 != 'Z'));
}

fn forwards_signals_to_the_cmd(mode: Mode) {
    let root = Root::new("fwd");
    let script = root.write(
        "main.sh",
        &format!(
            "#!/bin/sh\ncd {}\nfor s in HUP USR1 USR2; do trap \"echo $s >> got\" $s; done\ntouch ready\nwhile :; do sleep 0.05; done\n",
            root.dir.display()
        ),
        true,
    );
    let mut init = Init::start(&root, mode, &[script.to_str().unwrap()], &[]);
    wait_for("the CMD to be ready", || {
        root.path("ready").exists().then_some(())
    });
    for (sig, name) in [(SIGHUP, "HUP"), (SIGUSR1, "USR1"), (SIGUSR2, "USR2")] {
        init.signal(sig);
        wait_for(&format!("the CMD to receive SIG{name}"), || {
            root.lines("got").iter().any(|l| l == name).then_some(())
        });
    }
    assert_eq!(root.lines("got"), vec!["HUP", "USR1", "USR2"]);
    assert!(
        init.children_running("main.sh").len() == 1,
        "the CMD survived forwarded signals"
    );
    // TERM is not forwarded as such: it stops everything; the CMD dies of it.
    init.signal(SIGTERM);
    assert_eq!(init.wait(), 143, "{}", init.stderr());
}

fn cmd_exit_code_becomes_init_exit_code(mode: Mode) {
    let root = Root::new("code3");
    root.service("svc", "exec sleep 1000");
    let mut init = Init::start(&root, mode, &["sh", "-c", "exit 3"], &[]);
    assert_eq!(init.wait(), 3, "{}", init.stderr());
}

fn cmd_killed_by_sigkill_gives_137(mode: Mode) {
    let root = Root::new("code137");
    let mut init = Init::start(&root, mode, &["sh", "-c", "kill -9 $$"], &[]);
    assert_eq!(init.wait(), 137, "{}", init.stderr());
}

fn restarts_with_finish_arguments(mode: Mode) {
    let root = Root::new("finish");
    root.service(
        "flaky",
        r#"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
case $n in 1) exit 5;; 2) kill -TERM $$;; 3) kill -KILL $$;; esac
exec sleep 1000"#,
    );
    root.write(
        "etc/services.d/flaky/finish",
        "#!/bin/sh\necho \"$1 $2\" >> finish.log\n",
        true,
    );
    let _init = Init::start(&root, mode, &[], FAST);
    wait_for("the fourth start", || {
        (root.read("etc/services.d/flaky/count").trim() == "4").then_some(())
    });
    wait_for("three finish runs", || {
        (root.lines("etc/services.d/flaky/finish.log").len() == 3).then_some(())
    });
    assert_eq!(
        root.lines("etc/services.d/flaky/finish.log"),
        vec!["5 0", "256 15", "256 9"]
    );
    wait_for("the service up", || up_pid(&root, "flaky"));
}

fn crash_loop_backs_off_and_is_reported_once(mode: Mode) {
    let root = Root::new("crash");
    root.service("crash", "date +%s%N >> starts\nexit 1");
    let env = [
        ("INIT_RESTART_DELAY_MS", "40"),
        ("INIT_BACKOFF_MAX_MS", "1280"),
        ("INIT_STABLE_MS", "60000"),
    ];
    let init = Init::start(&root, mode, &[], &env);
    let starts: Vec<u128> = wait_for("seven starts", || {
        let v: Vec<u128> = root
            .lines("etc/services.d/crash/starts")
            .iter()
            .filter_map(|l| l.parse().ok())
            .collect();
        (v.len() >= 7).then_some(v)
    });
    let gaps: Vec<u128> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays 40, 80, 160, 320, 640, 1280 ms: the back-off grows.
    assert!(gaps[5] > gaps[0], "back-off did not grow: gaps {gaps:?} ns");
    assert!(gaps[5] > gaps[2], "back-off did not grow: gaps {gaps:?} ns");
    let err = init.stderr();
    let reports: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("service crash"))
        .collect();
    assert_eq!(reports.len(), 1, "reported once, not per restart: {err}");
    assert!(reports[0].contains("exit code 1"), "{err}");
}

fn down_file_keeps_service_down_until_up(mode: Mode) {
    let root = Root::new("downfile");
    root.service("off", "touch started\nexec sleep 1000");
    root.write("etc/services.d/off/down", "", false);
    root.service("on", "exec sleep 1000");
    let _init = Init::start(&root, mode, &[], FAST);
    // Services start together: once "on" is up, "off" would be too.
    wait_for("the other service up", || up_pid(&root, "on"));
    let st = svstat(&root, "off");
    assert!(st.starts_with("down "), "{st}");
    assert!(
        !st.contains("normally up") && !st.contains("want up"),
        "{st}"
    );
    assert!(!root.path("etc/services.d/off/started").exists());
    svc(&root, "-u", "off");
    wait_for("the down service started by -u", || {
        root.path("etc/services.d/off/started")
            .exists()
            .then_some(())
    });
    let st = wait_for("svstat up", || {
        up_pid(&root, "off").map(|_| svstat(&root, "off"))
    });
    assert!(st.contains("normally down"), "{st}");
}

/// s6-overlay reads the service directories after cont-init: a script may
/// put a `down` file in place (ha's task-6 stage picks its mode that way)
/// or take one away.
fn cont_init_scripts_decide_which_services_start(mode: Mode) {
    let root = Root::new("initdown");
    root.service("turned-off", "touch started\nexec sleep 1000");
    root.service("turned-on", "exec sleep 1000");
    root.write("etc/services.d/turned-on/down", "", false);
    let sd = root.path("etc/services.d");
    root.write(
        "etc/cont-init.d/10-mode",
        &format!(
            "#!/bin/sh\ntouch {sd}/turned-off/down\nrm {sd}/turned-on/down\n",
            sd = sd.display()
        ),
        true,
    );
    let init = Init::start(&root, mode, &[], FAST);
    // Services start together: once one is up, the other would be too.
    wait_for("the service whose down file was removed is up", || {
        up_pid(&root, "turned-on")
    });
    let st = svstat(&root, "turned-off");
    assert!(st.starts_with("down "), "{st}\n{}", init.stderr());
    assert!(!root.path("etc/services.d/turned-off/started").exists());
}

fn every_control_flag_delivers_its_signal(mode: Mode) {
    let root = Root::new("flags");
    root.service(
        "trap",
        r#"echo $$ >> pids
for s in HUP INT QUIT USR1 USR2 ALRM; do trap "echo $s >> sigs" $s; done
trap 'echo TERM >> sigs; exit 0' TERM
touch ready.$$
while :; do sleep 0.05; done"#,
    );
    root.write(
        "etc/services.d/trap/finish",
        "#!/bin/sh\necho \"$1 $2\" >> finish.log\n",
        true,
    );
    let _init = Init::start(&root, mode, &[], FAST);
    let dir = "etc/services.d/trap";
    let ready = |root: &Root| {
        let pids = root.lines(&format!("{dir}/pids"));
        let last = pids.last()?.clone();
        root.path(&format!("{dir}/ready.{last}"))
            .exists()
            .then_some((pids.len(), last))
    };
    wait_for("the service ready", || ready(&root));
    let count = |root: &Root, s: &str| {
        root.lines(&format!("{dir}/sigs"))
            .iter()
            .filter(|l| *l == s)
            .count()
    };
    for (flag, name) in [
        ("-h", "HUP"),
        ("-i", "INT"),
        ("-q", "QUIT"),
        ("-1", "USR1"),
        ("-2", "USR2"),
        ("-a", "ALRM"),
    ] {
        svc(&root, flag, "trap");
        wait_for(&format!("{flag} to deliver SIG{name}"), || {
            (count(&root, name) == 1).then_some(())
        });
    }
    // -t: TERM (the script exits on it) and s6 restarts it.
    let (starts, _) = ready(&root).unwrap();
    svc(&root, "-t", "trap");
    wait_for("-t to deliver SIGTERM", || {
        (count(&root, "TERM") == 1).then_some(())
    });
    wait_for("a restart after -t", || {
        ready(&root).filter(|r| r.0 == starts + 1)
    });
    // -k: KILL, seen by finish as 256 9, then a restart.
    svc(&root, "-k", "trap");
    wait_for("finish to see SIGKILL", || {
        root.lines(&format!("{dir}/finish.log"))
            .contains(&"256 9".to_string())
            .then_some(())
    });
    wait_for("a restart after -k", || {
        ready(&root).filter(|r| r.0 == starts + 2)
    });
    // -r: TERM, then restarted.
    svc(&root, "-r", "trap");
    wait_for("-r to deliver SIGTERM", || {
        (count(&root, "TERM") == 2).then_some(())
    });
    wait_for("a restart after -r", || {
        ready(&root).filter(|r| r.0 == starts + 3)
    });
    // -d: TERM, and it stays down.
    svc(&root, "-d", "trap");
    wait_for("-d to deliver SIGTERM", || {
        (count(&root, "TERM") == 3).then_some(())
    });
    let st = wait_for("down after -d", || {
        Some(svstat(&root, "trap")).filter(|s| s.starts_with("down") && !s.contains("finishing"))
    });
    assert!(
        st.contains("normally up") && !st.contains("want up"),
        "{st}"
    );
    // -u: up again.
    svc(&root, "-u", "trap");
    wait_for("up after -u", || ready(&root).filter(|r| r.0 == starts + 4));
    // -o: once; after a TERM it is not restarted.
    svc(&root, "-o", "trap");
    svc(&root, "-t", "trap");
    wait_for("-t after -o", || (count(&root, "TERM") == 4).then_some(()));
    wait_for("down after -o and -t", || {
        Some(svstat(&root, "trap")).filter(|s| s.starts_with("down"))
    });
    // -x: the supervisor stops listening on this service.
    svc(&root, "-x", "trap");
    let (code, _, err) = wait_for("-x to close the control point", || {
        Some(ctl(&root, "s6-svc", &["-u", &root.svc_dir("trap")])).filter(|r| r.0 != 0)
    });
    assert_eq!(code, 100, "{err}");
    assert!(err.contains("not listening"), "{err}");
    assert_eq!(
        root.lines(&format!("{dir}/pids")).len(),
        starts + 4,
        "no start after -o and -x"
    );
}

fn term_ignoring_service_is_killed_after_grace(mode: Mode) {
    let root = Root::new("grace");
    root.service(
        "stubborn",
        "trap '' TERM\ntouch ready\nwhile :; do sleep 0.05; done",
    );
    let mut init = Init::start(&root, mode, &[], &[("S6_KILL_GRACETIME", "300")]);
    wait_for("the stubborn service ready", || {
        root.path("etc/services.d/stubborn/ready")
            .exists()
            .then_some(())
    });
    let pids = init.children_running("services.d/stubborn/run");
    assert_eq!(pids.len(), 1, "one stubborn run process");
    init.signal(SIGTERM);
    assert_eq!(init.wait(), 0, "{}", init.stderr());
    assert!(
        init.stderr().contains("sending SIGKILL"),
        "{}",
        init.stderr()
    );
    let all_gone = pids.iter().all(|&p| !alive(p));
    assert!(all_gone, "the stubborn service survived");
}

fn term_stops_promptly_when_services_obey(mode: Mode) {
    let root = Root::new("prompt");
    root.service("a", "exec sleep 1000");
    root.service("b", "exec sleep 1000");
    let mut init = Init::start(&root, mode, &[], &[("S6_KILL_GRACETIME", "600000")]);
    wait_for("both services up", || {
        up_pid(&root, "a").and(up_pid(&root, "b"))
    });
    init.signal(SIGTERM);
    // With a ten-minute grace time, exiting at all proves it did not wait.
    assert_eq!(init.wait(), 0, "{}", init.stderr());
    assert!(!init.stderr().contains("SIGKILL"), "{}", init.stderr());
}

fn cont_init_failure_stops_in_mode_2(mode: Mode) {
    let root = Root::new("stage2stop");
    root.write("etc/cont-init.d/10-fail", "#!/bin/sh\nexit 4\n", true);
    root.write(
        "etc/cont-init.d/20-next",
        &format!("#!/bin/sh\ntouch {}/next\n", root.dir.display()),
        true,
    );
    root.service("svc", "touch started\nexec sleep 1000");
    let mut init = Init::start(&root, mode, &["sh", "-c", "exit 0"], &[]);
    assert_eq!(init.wait(), 4, "{}", init.stderr());
    let err = init.stderr();
    assert!(
        err.contains("10-fail") && err.contains("exit code 4"),
        "{err}"
    );
    assert!(!root.path("next").exists(), "later cont-init ran");
    assert!(
        !root.path("etc/services.d/svc/started").exists(),
        "service started"
    );
}

fn cont_init_failure_continues_in_mode_0(mode: Mode) {
    let root = Root::new("stage2cont");
    root.write("etc/cont-init.d/10-fail", "#!/bin/sh\nexit 4\n", true);
    root.write(
        "etc/cont-init.d/20-next",
        &format!("#!/bin/sh\ntouch {}/next\n", root.dir.display()),
        true,
    );
    let cmd = format!("touch {}/cmd-ran", root.dir.display());
    let mut init = Init::start(
        &root,
        mode,
        &["sh", "-c", &cmd],
        &[("S6_BEHAVIOUR_IF_STAGE2_FAILS", "0")],
    );
    assert_eq!(init.wait(), 0, "{}", init.stderr());
    assert!(root.path("next").exists() && root.path("cmd-ran").exists());
    assert!(
        !init.stderr().contains("10-fail"),
        "mode 0 is silent: {}",
        init.stderr()
    );
}

fn cont_finish_scripts_run(mode: Mode) {
    let root = Root::new("contfinish");
    for n in ["10-a", "20-b"] {
        root.write(
            &format!("etc/cont-finish.d/{n}"),
            &format!("#!/bin/sh\necho {n} >> {}/finished\n", root.dir.display()),
            true,
        );
    }
    root.service("svc", "exec sleep 1000");
    let mut init = Init::start(&root, mode, &["sh", "-c", "exit 2"], &[]);
    assert_eq!(init.wait(), 2, "{}", init.stderr());
    assert_eq!(root.lines("finished"), vec!["10-a", "20-b"]);
}

fn with_contenv_shows_captured_variable(mode: Mode) {
    let root = Root::new("contenv");
    // A cont-init script adds a variable to the captured environment, as
    // s6-overlay users do; the service (lab style shebang) must see it and
    // the docker-run one.
    root.write(
        "etc/cont-init.d/10-env",
        &format!(
            "#!/bin/sh\nprintf added > {}/var/run/s6/container_environment/ADDED\n",
            root.dir.display()
        ),
        true,
    );
    root.write(
        "etc/services.d/app/run",
        &format!(
            "#!{}/bin/with-contenv sh\necho \"$ROLE $ADDED\" > seen\nexec sleep 1000\n",
            root.dir.display()
        ),
        true,
    );
    let init = Init::start(&root, mode, &[], &[("ROLE", "balancer")]);
    let seen = wait_for("the service to write what it sees", || {
        Some(root.read("etc/services.d/app/seen")).filter(|s| !s.is_empty())
    });
    assert_eq!(seen.trim(), "balancer added", "{}", init.stderr());
    assert_eq!(
        root.read("var/run/s6/container_environment/ROLE"),
        "balancer",
        "one file per variable, no newline"
    );
    // And through the subcommand.
    let out = std::process::Command::new(BIN)
        .args(["with-contenv", "sh", "-c", "echo $ADDED"])
        .env("INIT_ROOT", &root.dir)
        .env_remove("ADDED")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "added");
}

fn variable_removed_by_cont_init_reaches_no_later_process(mode: Mode) {
    let root = Root::new("contenv-rm");
    // As the images' 05-gossip-key: a cont-init script reads a secret from
    // the environment, keeps it elsewhere and removes it from the store.
    // No later process may see it: a `with-contenv` service, a plain one
    // (which would otherwise inherit init's own environment), or the CMD.
    let store = root.path("var/run/s6/container_environment");
    root.write(
        "etc/cont-init.d/05-secret",
        &format!(
            "#!{}/bin/with-contenv sh\nprintf %s \"$SECRET\" > {}/kept\nrm {}/SECRET\n",
            root.dir.display(),
            root.dir.display(),
            store.display()
        ),
        true,
    );
    let probe = "env | grep -c '^SECRET=' > seen.tmp; echo \"ROLE=$ROLE\" >> seen.tmp; \
                 mv seen.tmp seen\nexec sleep 1000";
    root.write(
        "etc/services.d/contenv/run",
        &format!("#!{}/bin/with-contenv sh\n{probe}\n", root.dir.display()),
        true,
    );
    root.service("plain", probe);
    let cmd_seen = root.path("cmd-seen");
    let cmd = format!(
        "env | grep -c '^SECRET=' > {0}.tmp; mv {0}.tmp {0}; exec sleep 1000",
        cmd_seen.display()
    );
    let init = Init::start(
        &root,
        mode,
        &["sh", "-c", &cmd],
        &[("SECRET", "s3cr3t-value"), ("ROLE", "backend")],
    );
    for (what, rel) in [
        ("the with-contenv service", "etc/services.d/contenv/seen"),
        ("the plain service", "etc/services.d/plain/seen"),
    ] {
        let seen = wait_for(what, || Some(root.read(rel)).filter(|s| !s.is_empty()));
        assert_eq!(
            seen,
            "0\nROLE=backend\n",
            "{what}: SECRET removed, the rest kept\n{}",
            init.stderr()
        );
    }
    let seen = wait_for("the CMD", || {
        Some(std::fs::read_to_string(&cmd_seen).unwrap_or_default()).filter(|s| !s.is_empty())
    });
    assert_eq!(seen, "0\n", "the CMD sees no SECRET\n{}", init.stderr());
    assert_eq!(root.read("kept"), "s3cr3t-value", "the script had it");
}

fn svstat_output_in_s6_style(mode: Mode) {
    let root = Root::new("svstat");
    root.service("web", "exec sleep 1000");
    let _init = Init::start(&root, mode, &[], FAST);
    let st = wait_for("web up", || {
        up_pid(&root, "web").map(|_| svstat(&root, "web"))
    });
    let re_ok = st.starts_with("up (pid ")
        && st
            .split(") ")
            .nth(1)
            .is_some_and(|r| r.ends_with(" seconds"));
    assert!(re_ok, "{st}");
    // Through the `init svstat` subcommand as well.
    let out = std::process::Command::new(BIN)
        .args(["svstat", &root.svc_dir("web")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("up (pid "));
    svc(&root, "-d", "web");
    let st = wait_for("web down", || {
        Some(svstat(&root, "web")).filter(|s| s.starts_with("down") && !s.contains("finishing"))
    });
    assert!(st.starts_with("down (signal SIGTERM) "), "{st}");
    assert!(st.ends_with(" seconds, normally up"), "{st}");
    svc(&root, "-u", "web");
    wait_for("web up again", || up_pid(&root, "web"));
    // Bad input: one clear error.
    let (code, _, err) = ctl(
        &root,
        "s6-svstat",
        &[&root.path("nope").display().to_string()],
    );
    assert_eq!(code, 100);
    assert!(err.contains("nope"), "{err}");
    let (code, _, err) = ctl(&root, "s6-svc", &["-Z", &root.svc_dir("web")]);
    assert_eq!(code, 100);
    assert!(err.contains("-Z"), "{err}");
}

fn unrunnable_run_is_reported_once(mode: Mode) {
    let root = Root::new("unrunnable");
    let noexec = root.write(
        "etc/services.d/noexec/run",
        "#!/bin/sh\ntouch started\nexec sleep 1000\n",
        false,
    );
    root.write(
        "etc/services.d/badbang/run",
        "#!/nonexistent/interpreter\n",
        true,
    );
    let env = [
        ("INIT_RESTART_DELAY_MS", "10"),
        ("INIT_BACKOFF_MAX_MS", "20"),
    ];
    let init = Init::start(&root, mode, &[], &env);
    wait_for("both reported", || {
        let e = init.stderr();
        (e.contains("service noexec") && e.contains("service badbang")).then_some(())
    });
    // Fixing the file lets the retries succeed, which proves they happened.
    std::fs::set_permissions(&noexec, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    wait_for("noexec started after chmod", || {
        root.path("etc/services.d/noexec/started")
            .exists()
            .then_some(())
    });
    let err = init.stderr();
    let noexec_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("service noexec"))
        .collect();
    assert_eq!(noexec_lines.len(), 1, "{err}");
    assert!(noexec_lines[0].contains("permission denied"), "{err}");
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("service badbang"))
        .collect();
    assert_eq!(bad.len(), 1, "{err}");
    assert!(bad[0].contains("/nonexistent/interpreter"), "{err}");
}

fn output_can_be_prefixed_with_service_name(mode: Mode) {
    let root = Root::new("prefix");
    root.service(
        "talker",
        "echo hello out\necho hello err >&2\nexec sleep 1000",
    );
    let init = Init::start(&root, mode, &[], &[("INIT_LOG_PREFIX", "1")]);
    wait_for("prefixed stdout", || {
        init.stdout().contains("talker: hello out\n").then_some(())
    });
    wait_for("prefixed stderr", || {
        init.stderr().contains("talker: hello err\n").then_some(())
    });
}

#[test]
fn bad_settings_are_refused_with_one_clear_error() {
    for (var, value) in [
        ("S6_KILL_GRACETIME", "3s"),
        ("S6_BEHAVIOUR_IF_STAGE2_FAILS", "7"),
        ("INIT_LOG_PREFIX", "yes"),
    ] {
        let root = Root::new("badenv");
        let out = std::process::Command::new(BIN)
            .args(["sh", "-c", "exit 0"])
            .env("INIT_ROOT", &root.dir)
            .env(var, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(100), "{var}={value}: {err}");
        assert!(err.contains(var) && err.contains(value), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn control_commands_refuse_bad_usage() {
    let root = Root::new("usage");
    for (tool, args) in [
        ("s6-svc", vec!["-h"]),
        ("s6-svstat", vec![]),
        ("with-contenv", vec![]),
    ] {
        let (code, _, err) = ctl(&root, tool, &args);
        assert_eq!(code, 100, "{tool} {args:?}: {err}");
        assert!(err.contains("usage"), "{err}");
    }
    // No supervisor behind the directory.
    std::fs::create_dir_all(root.path("var/run/s6/services/ghost/supervise")).unwrap();
    nix::unistd::mkfifo(
        &root.path("var/run/s6/services/ghost/supervise/control"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let (code, _, err) = ctl(&root, "s6-svc", &["-h", &root.svc_dir("ghost")]);
    assert_eq!(code, 100);
    assert!(
        err.contains("not listening") && err.contains("ghost"),
        "{err}"
    );
}

/// A service's log/ directory, notification-fd and fix-attrs.d are
/// s6-overlay features init does not provide: each is named once at start,
/// and the service still runs.
fn unsupported_s6_features_are_named(mode: Mode) {
    let root = Root::new("unsupported");
    root.service("logged", "touch started\nexec sleep 1000");
    root.write(
        "etc/services.d/logged/log/run",
        "#!/bin/sh\nexec cat\n",
        true,
    );
    root.write("etc/services.d/logged/notification-fd", "3\n", false);
    root.write(
        "etc/fix-attrs.d/01-app",
        "/app true nobody 0644 0755\n",
        false,
    );
    let init = Init::start(&root, mode, &[], &[]);
    wait_for("the service started", || {
        root.path("etc/services.d/logged/started")
            .exists()
            .then_some(())
    });
    let err = init.stderr();
    for want in [
        "service logged: its log/ directory (an s6-log logging service) is not supported",
        "service logged: notification-fd (readiness notification) is not supported",
        "etc/fix-attrs.d is not supported: its ownership and mode changes are not applied",
    ] {
        assert_eq!(err.matches(want).count(), 1, "{want:?} in {err}");
    }
}
