//! Reading the cluster as the agents in the containers see it
//! (`serf members -format json`, run inside a container).

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;

use super::{poll, Lab};

/// name -> (status, role) as seen by the agent in `container`.
pub async fn members(lab: &Lab, container: &str) -> Result<BTreeMap<String, (String, String)>> {
    let out = lab
        .exec(container, &["serf", "members", "-format", "json"])
        .await?;
    let json: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("serf members output: {out:?}"))?;
    let list = json["members"]
        .as_array()
        .with_context(|| format!("no members array in {out:?}"))?;
    Ok(list
        .iter()
        .filter_map(|m| {
            Some((
                m["name"].as_str()?.to_string(),
                (
                    m["status"].as_str()?.to_string(),
                    m["tags"]["role"].as_str().unwrap_or("").to_string(),
                ),
            ))
        })
        .collect())
}

/// Wait until `container`'s agent sees exactly `alive` (name, role) alive.
pub async fn wait_alive(lab: &Lab, container: &str, alive: &[(&str, &str)]) -> Result<String> {
    let wanted: BTreeMap<String, String> = alive
        .iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
    poll(
        &format!("{container} sees {alive:?} alive"),
        Duration::from_secs(60),
        || async {
            let seen = members(lab, container).await?;
            let live: BTreeMap<String, String> = seen
                .iter()
                .filter(|(_, (status, _))| status == "alive")
                .map(|(n, (_, role))| (n.clone(), role.clone()))
                .collect();
            Ok((live == wanted).then(|| describe(&seen)))
        },
    )
    .await
}

/// Wait until `container`'s agent reports `name` with `status`.
pub async fn wait_status(lab: &Lab, container: &str, name: &str, status: &str) -> Result<String> {
    poll(
        &format!("{container} sees {name} {status}"),
        Duration::from_secs(60),
        || async {
            let seen = members(lab, container).await?;
            if seen.get(name).is_some_and(|(s, _)| s == status) {
                Ok(Some(describe(&seen)))
            } else {
                // The error is the last state seen, shown if time runs out.
                anyhow::bail!("it sees {}", describe(&seen))
            }
        },
    )
    .await
}

fn describe(seen: &BTreeMap<String, (String, String)>) -> String {
    seen.iter()
        .map(|(n, (s, r))| format!("{n} {s} role={r}"))
        .collect::<Vec<_>>()
        .join(", ")
}
