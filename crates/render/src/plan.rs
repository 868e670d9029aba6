//! The difference between HAProxy's servers and the desired set, as a list
//! of steps. Pure: no sockets, so every case is a unit test.
//!
//! Rules (from `anchors/haproxy.md`):
//! - desired, absent: add it;
//! - desired, present at another address: maintenance, move, join again;
//! - desired, present but in maintenance or drain (left earlier and not yet
//!   deleted, `disabled` in the file, or a join cut short): join again;
//! - present, not desired, serving: maintenance now (no new requests,
//!   in-flight ones finish), then delete in the background;
//! - present, not desired, already in maintenance: delete in the background
//!   (unless already queued).
//!
//! "Not desired" needs evidence. The agent's list is the truth about a
//! member it lists: alive with the role, a server; left, failed, leaving,
//! another role or a rejected name, not one. About a member it does not
//! list it says nothing: a freshly restarted agent knows only itself until
//! its first push-pull, and taking that list as the truth would empty the
//! backend (it did: every request answered 503 after a restart of ha's
//! agent). So a server the agent does not list is kept, unless
//! - another desired server now has its address (Docker gave a dead
//!   container's address to a new one), or
//! - the view is synced (the agent knows at least one other alive member,
//!   so it has exchanged state with the cluster) *and* HAProxy's own checks
//!   find the server down.
//!
//! A kept server keeps taking traffic while its checks pass; one that is
//! down gets none, so keeping it costs nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::backends::{Backend, BackendSet};
use crate::runtime_api::ServerState;

/// What one member list of the agent says, as the planner needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The servers wanted: alive members with the backend role.
    pub desired: BackendSet,
    /// Every name the agent lists, whatever its status or role.
    pub listed: BTreeSet<String>,
    /// The agent knows at least one alive member besides itself, so it has
    /// exchanged state with the cluster: an absence from its list is
    /// meaningful (still not proof: see the module's rules).
    pub synced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `add server`, `enable health`, then join.
    Add(Backend),
    /// Re-enable an existing entry; `moved` when its address changes
    /// (`set server … addr` first, after `state maint` if it was serving).
    Rejoin {
        backend: Backend,
        moved: bool,
        was_serving: bool,
    },
    /// `state maint`, then queue the deletion.
    Remove(String),
    /// Already in maintenance: queue the deletion only.
    Delete(String),
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Add(b) | Step::Rejoin { backend: b, .. } => &b.name,
            Step::Remove(n) | Step::Delete(n) => n,
        }
    }
}

fn same_address(s: &ServerState, b: &Backend) -> bool {
    s.port == b.port && s.addr.parse::<IpAddr>().ok() == Some(b.ip)
}

/// Whether a server that is not desired may go (see the module's rules).
fn evidence_it_is_gone(s: &ServerState, target: &Target) -> bool {
    if target.listed.contains(&s.name) {
        return true;
    }
    let address_reused = target
        .desired
        .values()
        .any(|b| b.name != s.name && same_address(s, b));
    address_reused || (target.synced && s.is_down())
}

/// Steps that make `current` match `target`; `deleting` are the names whose
/// deletion is already queued.
pub fn plan(current: &[ServerState], target: &Target, deleting: &BTreeSet<String>) -> Vec<Step> {
    let desired = &target.desired;
    let mut steps = Vec::new();
    for b in desired.values() {
        match current.iter().find(|s| s.name == b.name) {
            None => steps.push(Step::Add(b.clone())),
            Some(s) => {
                let moved = !same_address(s, b);
                if moved || !s.is_ready() || deleting.contains(&b.name) {
                    steps.push(Step::Rejoin {
                        backend: b.clone(),
                        moved,
                        was_serving: !s.in_maint(),
                    });
                }
            }
        }
    }
    for s in current {
        if desired.contains_key(&s.name) {
            continue;
        }
        if !s.in_maint() {
            if evidence_it_is_gone(s, target) {
                steps.push(Step::Remove(s.name.clone()));
            }
        } else if !deleting.contains(&s.name) {
            steps.push(Step::Delete(s.name.clone()));
        }
    }
    steps
}

/// The servers of `current` that stay although not desired (not listed by
/// the agent, no evidence they are gone): the config file keeps them too,
/// so that a restart of HAProxy does not drop them either.
pub fn kept(current: &[ServerState], target: &Target) -> Vec<Backend> {
    current
        .iter()
        .filter(|s| !target.desired.contains_key(&s.name) && !s.in_maint())
        .filter(|s| !evidence_it_is_gone(s, target))
        .filter_map(|s| Some(Backend::new(s.name.clone(), s.addr.parse().ok()?, s.port)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_api::admin;

    fn srv(name: &str, addr: &str, port: u16, admin_state: u8) -> ServerState {
        ServerState {
            name: name.into(),
            addr: addr.into(),
            port,
            op_state: 2,
            admin_state,
        }
    }

    /// The target for `list` from a synced agent that also lists every
    /// server of the tests' `current` (as left or failed when not in
    /// `list`): the agent's word is the truth.
    fn want(list: &[(&str, &str, u16)]) -> Target {
        let desired: BackendSet = list
            .iter()
            .map(|(n, ip, p)| (n.to_string(), Backend::new(*n, ip.parse().unwrap(), *p)))
            .collect();
        let listed = ["s1", "s2", "s3", "old"]
            .iter()
            .map(|n| n.to_string())
            .chain(desired.keys().cloned())
            .collect();
        Target {
            desired,
            listed,
            synced: true,
        }
    }

    /// The target of an agent that lists only `listed` (besides `list`).
    fn partial(list: &[(&str, &str, u16)], listed: &[&str], synced: bool) -> Target {
        let mut t = want(list);
        t.listed = listed
            .iter()
            .map(|n| n.to_string())
            .chain(t.desired.keys().cloned())
            .collect();
        t.synced = synced;
        t
    }

    fn down(mut s: ServerState) -> ServerState {
        s.op_state = 0;
        s
    }

    #[test]
    fn a_fresh_agent_that_knows_only_itself_removes_nothing() {
        // ha's agent restarted: its first list holds ha alone.
        let cur = vec![
            srv("s1", "10.0.0.1", 3000, 0),
            down(srv("s2", "10.0.0.2", 3000, 0)),
        ];
        let t = partial(&[], &["ha"], false);
        assert_eq!(plan(&cur, &t, &BTreeSet::new()), vec![]);
        assert_eq!(kept(&cur, &t).len(), 2, "both stay in the config file");
    }

    #[test]
    fn an_unlisted_server_goes_only_when_synced_and_down() {
        let cur = vec![
            srv("s1", "10.0.0.1", 3000, 0),
            down(srv("s2", "10.0.0.2", 3000, 0)),
        ];
        // Synced (another member is alive) but s1 passes its checks: kept.
        let t = partial(&[("s3", "10.0.0.3", 3000)], &["ha"], true);
        let steps = plan(&cur, &t, &BTreeSet::new());
        assert_eq!(
            steps,
            vec![
                Step::Add(Backend::new("s3", "10.0.0.3".parse().unwrap(), 3000)),
                Step::Remove("s2".into())
            ]
        );
        assert_eq!(
            kept(&cur, &t),
            vec![Backend::new("s1", "10.0.0.1".parse().unwrap(), 3000)]
        );
        // Not synced: s2, down, stays too.
        let t = partial(&[], &["ha"], false);
        assert_eq!(plan(&cur, &t, &BTreeSet::new()), vec![]);
    }

    #[test]
    fn a_listed_member_that_left_goes_at_once_even_if_the_view_is_fresh() {
        let cur = vec![srv("s1", "10.0.0.1", 3000, 0)];
        let t = partial(&[], &["ha", "s1"], false);
        assert_eq!(
            plan(&cur, &t, &BTreeSet::new()),
            vec![Step::Remove("s1".into())]
        );
    }

    #[test]
    fn an_unlisted_server_whose_address_was_reused_goes() {
        let cur = vec![srv("s1", "10.0.0.1", 3000, 0)];
        let t = partial(&[("s9", "10.0.0.1", 3000)], &[], false);
        assert_eq!(
            plan(&cur, &t, &BTreeSet::new()),
            vec![
                Step::Add(Backend::new("s9", "10.0.0.1".parse().unwrap(), 3000)),
                Step::Remove("s1".into())
            ]
        );
    }

    #[test]
    fn in_sync_means_no_steps() {
        let cur = vec![srv("s1", "10.0.0.1", 3000, 0)];
        assert_eq!(
            plan(&cur, &want(&[("s1", "10.0.0.1", 3000)]), &BTreeSet::new()),
            vec![]
        );
    }

    #[test]
    fn adds_and_removes() {
        let cur = vec![
            srv("s1", "10.0.0.1", 3000, 0),
            srv("s2", "10.0.0.2", 3000, 0),
        ];
        let steps = plan(
            &cur,
            &want(&[("s2", "10.0.0.2", 3000), ("s3", "10.0.0.3", 3000)]),
            &BTreeSet::new(),
        );
        assert_eq!(
            steps,
            vec![
                Step::Add(Backend::new("s3", "10.0.0.3".parse().unwrap(), 3000)),
                Step::Remove("s1".into())
            ]
        );
    }

    #[test]
    fn returning_member_is_rejoined_not_added() {
        let cur = vec![srv("s1", "10.0.0.1", 3000, admin::FMAINT)];
        let deleting = BTreeSet::from(["s1".to_string()]);
        let steps = plan(&cur, &want(&[("s1", "10.0.0.9", 3000)]), &deleting);
        assert_eq!(
            steps,
            vec![Step::Rejoin {
                backend: Backend::new("s1", "10.0.0.9".parse().unwrap(), 3000),
                moved: true,
                was_serving: false
            }]
        );
    }

    #[test]
    fn serving_member_with_new_address_is_moved() {
        let cur = vec![srv("s1", "10.0.0.1", 3000, 0)];
        let steps = plan(&cur, &want(&[("s1", "10.0.0.1", 3001)]), &BTreeSet::new());
        assert!(
            matches!(
                &steps[..],
                [Step::Rejoin {
                    moved: true,
                    was_serving: true,
                    ..
                }]
            ),
            "{steps:?}"
        );
    }

    #[test]
    fn drained_or_disabled_entries_are_rejoined() {
        let cur = vec![
            srv("s1", "10.0.0.1", 3000, admin::FDRAIN),
            srv("s2", "10.0.0.2", 3000, admin::CMAINT | admin::FMAINT),
        ];
        let steps = plan(
            &cur,
            &want(&[("s1", "10.0.0.1", 3000), ("s2", "10.0.0.2", 3000)]),
            &BTreeSet::new(),
        );
        assert_eq!(steps.len(), 2);
        assert!(
            steps
                .iter()
                .all(|s| matches!(s, Step::Rejoin { moved: false, .. })),
            "{steps:?}"
        );
    }

    #[test]
    fn maint_leftovers_are_deleted_once() {
        let cur = vec![srv("old", "10.0.0.1", 3000, admin::FMAINT)];
        assert_eq!(
            plan(&cur, &want(&[]), &BTreeSet::new()),
            vec![Step::Delete("old".into())]
        );
        let deleting = BTreeSet::from(["old".to_string()]);
        assert_eq!(plan(&cur, &want(&[]), &deleting), vec![]);
    }

    #[test]
    fn ipv6_addresses_compare_as_addresses() {
        let cur = vec![srv("s1", "fd00:0::1", 3000, 0)];
        assert_eq!(
            plan(&cur, &want(&[("s1", "fd00::1", 3000)]), &BTreeSet::new()),
            vec![]
        );
    }
}
