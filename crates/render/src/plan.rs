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

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::backends::{Backend, BackendSet};
use crate::runtime_api::ServerState;

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

/// Steps that make `current` match `desired`; `deleting` are the names whose
/// deletion is already queued.
pub fn plan(
    current: &[ServerState],
    desired: &BackendSet,
    deleting: &BTreeSet<String>,
) -> Vec<Step> {
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
            steps.push(Step::Remove(s.name.clone()));
        } else if !deleting.contains(&s.name) {
            steps.push(Step::Delete(s.name.clone()));
        }
    }
    steps
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

    fn want(list: &[(&str, &str, u16)]) -> BackendSet {
        list.iter()
            .map(|(n, ip, p)| (n.to_string(), Backend::new(*n, ip.parse().unwrap(), *p)))
            .collect()
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
            plan(&cur, &BackendSet::new(), &BTreeSet::new()),
            vec![Step::Delete("old".into())]
        );
        let deleting = BTreeSet::from(["old".to_string()]);
        assert_eq!(plan(&cur, &BackendSet::new(), &deleting), vec![]);
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
