//! From [`AgentConfig`] to the protocol's configuration: the keyring (flag
//! or keyring file), the tags (flags, then the tags file saved by an
//! earlier run), memberlist's `lan`/`wan`/`local` profiles and Serf's
//! timers. Files are read (and the tags file written back) before the
//! agent starts, so a bad one stops the start.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;

use super::disk;
use crate::model::AgentConfig;
use crate::serf;

/// The Serf configuration for `config`, advertising `advertise`. Reads
/// the keyring and tags files and rewrites the tags file with the merged
/// tags.
pub(super) fn serf_config(
    config: &AgentConfig,
    advertise: SocketAddr,
) -> anyhow::Result<serf::Config> {
    let keys = keyring(config)?;
    let mut core_cfg = crate::core::Config::lan(&config.node_name, advertise);
    core_cfg.keys = keys;
    core_cfg.compress = config.compress;
    core_cfg.seed = rand::random();
    apply_profile(&mut core_cfg, &config.profile)?;
    let mut scfg = serf::Config::new(core_cfg);
    scfg.coalesce_period = config.coalesce_period;
    scfg.quiescent_period = config.quiescent_period;
    scfg.reconnect_interval = config.reconnect_interval;
    scfg.reconnect_timeout = config.reconnect_timeout;
    scfg.tombstone_timeout = config.tombstone_timeout;
    scfg.user_event_size_limit = config.user_event_size_limit;
    scfg.query_size_limit = config.query_size_limit;
    scfg.query_response_size_limit = config.query_response_size_limit;
    scfg.tags = config.tags.clone();
    scfg.name_conflict_resolution = !config.disable_name_resolution;
    scfg.disable_coordinates = config.disable_coordinates;
    if let Some(path) = &config.tags_file {
        merge_saved_tags(path, &mut scfg.tags)?;
    }
    // Tags that do not fit a node's meta stop the start, before the tags
    // file is written.
    serf::check_meta_size(&crate::wire::encode_tags(&scfg.tags))?;
    if let Some(path) = &config.tags_file {
        disk::save_tags(path, &scfg.tags)?;
    }
    Ok(scfg)
}

/// The keys from `-encrypt` or the keyring file, checked.
fn keyring(config: &AgentConfig) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut keys = config.encrypt_keys.clone();
    if let Some(path) = &config.keyring_file {
        // As serf: the keyring file must exist and hold at least one key,
        // and it is the only source of keys. An agent that cannot read it
        // does not start rather than gossip in plain text.
        anyhow::ensure!(
            keys.is_empty(),
            "Encryption key not allowed while using a keyring"
        );
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read keyring file {}", path.display()))?;
        let list: Vec<String> = serde_json::from_slice(&text).with_context(|| {
            format!("keyring file {} is not a JSON list of keys", path.display())
        })?;
        anyhow::ensure!(
            !list.is_empty(),
            "no keys present in keyring file {}",
            path.display()
        );
        for (i, k) in list.iter().enumerate() {
            // The key itself stays out of the message: it is a secret.
            let b = base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .with_context(|| {
                    format!("bad key #{} in keyring file {}", i + 1, path.display())
                })?;
            if !keys.contains(&b) {
                keys.push(b);
            }
        }
    }
    for k in &keys {
        anyhow::ensure!(
            matches!(k.len(), 16 | 24 | 32),
            "encryption key must be 16, 24 or 32 bytes, got {}",
            k.len()
        );
    }
    Ok(keys)
}

/// serf: tags saved by an earlier run win over the command line. A file
/// that exists but cannot be read or decoded is an error: it would be
/// overwritten afterwards.
fn merge_saved_tags(
    path: &std::path::Path,
    tags: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read tags file {}", path.display()))
        }
    };
    let saved: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
        .with_context(|| format!("tags file {} is not a JSON object", path.display()))?;
    for (k, v) in saved {
        let Some(v) = v.as_str().map(str::to_string) else {
            anyhow::bail!(
                "tags file {}: tag {k:?} is {v}, not a string",
                path.display()
            );
        };
        match tags.iter_mut().find(|(kk, _)| *kk == k) {
            Some(slot) => slot.1 = v,
            None => tags.push((k, v)),
        }
    }
    Ok(())
}

/// memberlist's LAN, WAN and local profiles (serf's `-profile`).
fn apply_profile(c: &mut crate::core::Config, profile: &str) -> anyhow::Result<()> {
    match profile {
        "" | "lan" => {}
        "wan" => {
            c.suspicion_mult = 6;
            c.push_pull_interval = Duration::from_secs(60);
            c.probe_timeout = Duration::from_secs(3);
            c.probe_interval = Duration::from_secs(5);
            c.gossip_nodes = 4;
            c.gossip_interval = Duration::from_millis(500);
            c.gossip_to_dead = Duration::from_secs(60);
        }
        "local" => {
            c.indirect_checks = 1;
            c.retransmit_mult = 2;
            c.suspicion_mult = 3;
            c.push_pull_interval = Duration::from_secs(15);
            c.probe_timeout = Duration::from_millis(200);
            c.probe_interval = Duration::from_secs(1);
            c.gossip_interval = Duration::from_millis(100);
            c.gossip_to_dead = Duration::from_secs(15);
        }
        other => anyhow::bail!("unknown profile {other:?} (expected lan, wan or local)"),
    }
    Ok(())
}
