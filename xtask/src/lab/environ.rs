//! Does any process of a container hold the gossip key in its environment?
//! [`PROBE`] (run with `docker exec ... bash -c`) lists every process's
//! pid, parent, name and `/proc/PID/environ`; [`check`] keeps the processes
//! init started (PID 1's descendants: `docker exec` processes, this probe
//! included, have parent 0 and get the container's configured environment
//! from Docker, not from init) and fails naming the process and variable,
//! never the value.

use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};

/// One block per process: `== PID PPID NAME`, then its environment, one
/// variable a line.
pub const PROBE: &str = r#"for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    ppid=
    while read -r k v; do
        [ "$k" = PPid: ] && { ppid=$v; break; }
    done < "$d/status" 2>/dev/null
    [ -n "$ppid" ] || continue
    env=$(tr '\0' '\n' < "$d/environ" 2>/dev/null) || continue
    read -r comm < "$d/comm" 2>/dev/null || comm=?
    printf '== %s %s %s\n%s\n' "$pid" "$ppid" "$comm" "$env"
done
true"#;

struct Proc {
    ppid: u32,
    name: String,
    env: Vec<String>,
}

fn parse(out: &str) -> BTreeMap<u32, Proc> {
    let mut procs = BTreeMap::new();
    let mut cur: Option<(u32, Proc)> = None;
    for line in out.lines() {
        if let Some(head) = line.strip_prefix("== ") {
            let mut f = head.splitn(3, ' ');
            let pid = f.next().and_then(|p| p.parse().ok());
            let ppid = f.next().and_then(|p| p.parse().ok());
            if let (Some(pid), Some(ppid)) = (pid, ppid) {
                if let Some((p, proc)) = cur.take() {
                    procs.insert(p, proc);
                }
                let name = f.next().unwrap_or("?").to_string();
                cur = Some((
                    pid,
                    Proc {
                        ppid,
                        name,
                        env: Vec::new(),
                    },
                ));
                continue;
            }
        }
        if let Some((_, proc)) = cur.as_mut() {
            proc.env.push(line.to_string());
        }
    }
    if let Some((p, proc)) = cur {
        procs.insert(p, proc);
    }
    procs
}

/// Checks [`PROBE`]'s output from `container`: no process init started
/// (PID 1 itself excepted: its environment is the container's, as `docker
/// inspect` shows it) has a `GOSSIP_KEY` variable or `key` in any value,
/// and each of `must_see` (process names) was among those looked at.
pub fn check(container: &str, out: &str, key: &str, must_see: &[&str]) -> Result<String> {
    let procs = parse(out);
    // PID 1's descendants.
    let mut tree: BTreeSet<u32> = BTreeSet::from([1]);
    loop {
        let before = tree.len();
        for (pid, p) in &procs {
            if tree.contains(&p.ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    tree.remove(&1);
    let mut leaks = Vec::new();
    let mut names = BTreeSet::new();
    for pid in &tree {
        let p = &procs[pid];
        names.insert(p.name.as_str());
        for var in &p.env {
            let name = var.split('=').next().unwrap_or("");
            if name == "GOSSIP_KEY" {
                leaks.push(format!("pid {pid} ({}) has GOSSIP_KEY", p.name));
            } else if !key.is_empty() && var.contains(key) {
                leaks.push(format!(
                    "pid {pid} ({}) holds the key's value in {name}",
                    p.name
                ));
            }
        }
    }
    if !leaks.is_empty() {
        bail!("{container}: {}", leaks.join("; "));
    }
    let missing: Vec<&str> = must_see
        .iter()
        .copied()
        .filter(|n| !names.contains(n))
        .collect();
    if !missing.is_empty() {
        bail!("{container}: no process named {missing:?} among init's: {names:?}");
    }
    Ok(format!(
        "{container}: {} processes ({}) without GOSSIP_KEY or its value",
        tree.len(),
        names.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMw==";

    fn out(webapp_env: &str) -> String {
        format!(
            "== 1 0 init\nGOSSIP_KEY={KEY}\nPATH=/bin\n\
             == 20 1 bash\nPATH=/bin\nROLE=backend\n\
             == 21 20 webapp\n{webapp_env}\n\
             == 30 1 serf\nPATH=/bin\n\
             == 99 0 bash\nGOSSIP_KEY={KEY}\n\
             == 100 99 tr\nGOSSIP_KEY={KEY}\n"
        )
    }

    #[test]
    fn init_and_docker_exec_processes_are_not_judged() {
        let said = check("s1", &out("PATH=/bin\nPORT=3000"), KEY, &["webapp"]).unwrap();
        assert!(said.contains("3 processes (bash, serf, webapp)"), "{said}");
    }

    #[test]
    fn a_leak_names_the_process_and_variable_not_the_value() {
        let e = check("s1", &out(&format!("GOSSIP_KEY={KEY}")), KEY, &[]).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("pid 21 (webapp) has GOSSIP_KEY"), "{e}");
        assert!(!e.contains(KEY));
        let e = check("s1", &out(&format!("OTHER=x{KEY}")), KEY, &[]).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("pid 21 (webapp) holds the key's value in OTHER"),
            "{e}"
        );
        assert!(!e.contains(KEY));
    }

    #[test]
    fn the_process_looked_for_must_be_there() {
        let e = check("s1", &out("PATH=/bin"), KEY, &["haproxy"]).unwrap_err();
        assert!(
            format!("{e}").contains("no process named [\"haproxy\"]"),
            "{e}"
        );
    }
}
