//! Serf's agent JSON config files (`-config-file`, `-config-dir`): one file
//! read into a [`ConfigFile`], with Serf's key names, then merged into the
//! [`AgentSettings`] that flags complete. Lists accumulate across files,
//! scalars: the last file wins. A key of the wrong type is an error naming
//! the key, and so is a key Serf does not know (or a feature this agent
//! does not have, when asked for).
//!
//! One `Deserialize` reads a file; the key an error names is found by
//! reading again one key at a time (only when there is an error), and the
//! keys Serf knows are the struct's own field names: no second
//! deserializer over the whole struct to track paths, no catch-all map.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::agent_config::AgentSettings;

/// One config file. Every key may be missing; the flag each one mirrors is
/// in `gossip agent -help`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigFile {
    #[serde(deserialize_with = "string")]
    node_name: Option<String>,
    /// Serf's deprecated `role`: the tag `role`.
    #[serde(deserialize_with = "string")]
    role: Option<String>,
    /// Tag → value; each value must be a string (checked in `merge_json`,
    /// which names the tag).
    #[serde(deserialize_with = "tags")]
    tags: Option<Map<String, Value>>,
    #[serde(deserialize_with = "string")]
    tags_file: Option<String>,
    #[serde(deserialize_with = "string")]
    bind: Option<String>,
    #[serde(deserialize_with = "string")]
    advertise: Option<String>,
    #[serde(deserialize_with = "string")]
    interface: Option<String>,
    #[serde(deserialize_with = "string")]
    encrypt_key: Option<String>,
    #[serde(deserialize_with = "string")]
    keyring_file: Option<String>,
    #[serde(deserialize_with = "string")]
    log_level: Option<String>,
    #[serde(deserialize_with = "string")]
    rpc_addr: Option<String>,
    #[serde(deserialize_with = "string")]
    rpc_auth: Option<String>,
    #[serde(deserialize_with = "flag")]
    replay_on_join: Option<bool>,
    #[serde(deserialize_with = "strings")]
    start_join: Option<Vec<String>>,
    #[serde(deserialize_with = "strings")]
    event_handlers: Option<Vec<String>>,
    #[serde(deserialize_with = "string")]
    profile: Option<String>,
    #[serde(deserialize_with = "string")]
    snapshot_path: Option<String>,
    #[serde(deserialize_with = "flag")]
    rejoin_after_leave: Option<bool>,
    #[serde(deserialize_with = "flag")]
    disable_name_resolution: Option<bool>,
    #[serde(deserialize_with = "flag")]
    disable_coordinates: Option<bool>,
    #[serde(deserialize_with = "flag")]
    leave_on_terminate: Option<bool>,
    #[serde(deserialize_with = "flag")]
    skip_leave_on_interrupt: Option<bool>,
    #[serde(deserialize_with = "strings")]
    retry_join: Option<Vec<String>>,
    #[serde(deserialize_with = "count")]
    retry_max_attempts: Option<u32>,
    #[serde(deserialize_with = "string")]
    retry_interval: Option<String>,
    #[serde(deserialize_with = "string")]
    handler_timeout: Option<String>,
    #[serde(deserialize_with = "string")]
    coalesce_period: Option<String>,
    #[serde(deserialize_with = "string")]
    quiescent_period: Option<String>,
    #[serde(deserialize_with = "string")]
    reconnect_interval: Option<String>,
    #[serde(deserialize_with = "string")]
    reconnect_timeout: Option<String>,
    #[serde(deserialize_with = "string")]
    tombstone_timeout: Option<String>,
    #[serde(deserialize_with = "string")]
    broadcast_timeout: Option<String>,
    #[serde(deserialize_with = "flag")]
    enable_compression: Option<bool>,
    #[serde(deserialize_with = "whole")]
    protocol: Option<i64>,
    /// 0 keeps the value set before (Serf's merge).
    #[serde(deserialize_with = "bytes")]
    user_event_size_limit: Option<u64>,
    #[serde(deserialize_with = "bytes")]
    query_size_limit: Option<u64>,
    #[serde(deserialize_with = "bytes")]
    query_response_size_limit: Option<u64>,
    // Features this agent does not have: asking for one is an error, not a
    // setting silently dropped; leaving it empty or off is fine.
    /// mDNS discovery.
    #[serde(deserialize_with = "string")]
    discover: Option<String>,
    #[serde(deserialize_with = "string")]
    statsd_addr: Option<String>,
    #[serde(deserialize_with = "string")]
    statsite_addr: Option<String>,
    #[serde(deserialize_with = "flag")]
    enable_syslog: Option<bool>,
    /// Accepted and ignored (the agent does not log to syslog).
    syslog_facility: Option<IgnoredAny>,
}

impl ConfigFile {
    /// The tags, when every value is a string.
    fn string_tags(&self) -> Option<Vec<(String, String)>> {
        self.tags
            .iter()
            .flatten()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    }

    /// Why a file holding only `key` (set to `value`) is refused, naming
    /// the key (and the tag, for a tag that is not a string).
    fn refusal(key: &str, value: &Value) -> Option<String> {
        let one = Value::Object(Map::from_iter([(key.to_string(), value.clone())]));
        match ConfigFile::deserialize(&one) {
            Err(e) => Some(format!("'{key}' {e}")),
            Ok(f) => f
                .tags
                .iter()
                .flatten()
                .find(|(_, v)| !v.is_string())
                .map(|(tag, _)| format!("'tags.{tag}' must be a string")),
        }
    }
}

/// The keys a config file may have: [`ConfigFile`]'s fields, as its
/// derived `Deserialize` lists them to a deserializer that only listens.
fn known_keys() -> &'static [&'static str] {
    struct Listener(Cell<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for &Listener {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("a listener has no values"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            self.deserialize_any(v)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let listener = Listener(Cell::new(&[]));
    let _ = ConfigFile::deserialize(&listener);
    listener.0.get()
}

// Each kind of value, read with the error message the key gets when the
// value is of another kind ("'protocol' must be a whole number").

fn expect<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    what: &str,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d)
        .map(Some)
        .map_err(|_| de::Error::custom(format_args!("must be {what}")))
}

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expect(d, "a string")
}

fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    expect(d, "a list of strings")
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    expect(d, "true or false")
}

fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    expect(d, "a whole number")
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    expect(d, "a whole number")
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    expect(d, "a whole number of bytes")
}

/// An object (of strings: the values are checked where the tag can be
/// named).
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    expect(d, "an object of strings")
}

impl AgentSettings {
    /// Merges one JSON config object (Serf's keys) into these settings;
    /// `origin` names it in errors.
    pub fn merge_json(&mut self, v: &Value, origin: &str) -> Result<(), String> {
        let Some(keys) = v.as_object() else {
            return Err(format!(
                "config file {origin}: the top level must be a JSON object"
            ));
        };
        let file = ConfigFile::deserialize(v);
        let tags = file.as_ref().ok().and_then(ConfigFile::string_tags);
        let (Ok(file), Some(tags)) = (file, tags) else {
            // Read again one key at a time: the first refused names itself.
            let why = keys.iter().find_map(|(k, v)| ConfigFile::refusal(k, v));
            return Err(format!(
                "config file {origin}: {}",
                why.unwrap_or_else(|| "cannot be read".into())
            ));
        };
        let known = known_keys();
        if let Some(key) = keys.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("config file {origin}: unknown key '{key}'"));
        }
        for (key, value, feature) in [
            ("discover", &file.discover, "mDNS discovery"),
            ("statsd_addr", &file.statsd_addr, "metrics"),
            ("statsite_addr", &file.statsite_addr, "metrics"),
        ] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                return Err(format!(
                    "config file {origin}: '{key}' is not supported ({feature})"
                ));
            }
        }
        if file.enable_syslog == Some(true) {
            return Err(format!(
                "config file {origin}: 'enable_syslog' is not supported: the agent logs to stdout"
            ));
        }
        self.merge(file, tags);
        Ok(())
    }

    /// `tags`: the file's, checked.
    fn merge(&mut self, f: ConfigFile, tags: Vec<(String, String)>) {
        fn set<T>(slot: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *slot = v;
            }
        }
        fn set_flag(slot: &mut bool, v: Option<bool>) {
            if let Some(b) = v {
                *slot = b;
            }
        }
        /// 0 keeps the earlier limit.
        fn set_limit(slot: &mut Option<u64>, v: Option<u64>) {
            set(slot, v.filter(|n| *n > 0));
        }
        set(&mut self.node_name, f.node_name);
        set(&mut self.role, f.role);
        for (k, v) in tags {
            self.tags.retain(|(k2, _)| *k2 != k);
            self.tags.push((k, v));
        }
        set(&mut self.tags_file, f.tags_file);
        set(&mut self.bind, f.bind);
        set(&mut self.advertise, f.advertise);
        set(&mut self.interface, f.interface);
        set(&mut self.encrypt_key, f.encrypt_key);
        set(&mut self.keyring_file, f.keyring_file);
        set(&mut self.log_level, f.log_level);
        set(&mut self.rpc_addr, f.rpc_addr);
        set(&mut self.rpc_auth, f.rpc_auth);
        set_flag(&mut self.replay_on_join, f.replay_on_join);
        self.start_join.extend(f.start_join.unwrap_or_default());
        self.event_handlers
            .extend(f.event_handlers.unwrap_or_default());
        set(&mut self.profile, f.profile);
        set(&mut self.snapshot_path, f.snapshot_path);
        set_flag(&mut self.rejoin_after_leave, f.rejoin_after_leave);
        set_flag(&mut self.disable_name_resolution, f.disable_name_resolution);
        set_flag(&mut self.disable_coordinates, f.disable_coordinates);
        set(&mut self.leave_on_terminate, f.leave_on_terminate);
        set(&mut self.skip_leave_on_interrupt, f.skip_leave_on_interrupt);
        self.retry_join.extend(f.retry_join.unwrap_or_default());
        set(&mut self.retry_max_attempts, f.retry_max_attempts);
        set(&mut self.retry_interval, f.retry_interval);
        set(&mut self.handler_timeout, f.handler_timeout);
        set(&mut self.coalesce_period, f.coalesce_period);
        set(&mut self.quiescent_period, f.quiescent_period);
        set(&mut self.reconnect_interval, f.reconnect_interval);
        set(&mut self.reconnect_timeout, f.reconnect_timeout);
        set(&mut self.tombstone_timeout, f.tombstone_timeout);
        set(&mut self.broadcast_timeout, f.broadcast_timeout);
        set(&mut self.enable_compression, f.enable_compression);
        set(&mut self.protocol, f.protocol);
        set_limit(&mut self.user_event_size_limit, f.user_event_size_limit);
        set_limit(&mut self.query_size_limit, f.query_size_limit);
        set_limit(
            &mut self.query_response_size_limit,
            f.query_response_size_limit,
        );
    }

    pub(super) fn merge_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("Error reading '{}': {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("Error decoding '{}': {e}", path.display()))?;
        self.merge_json(&v, &path.display().to_string())
    }

    /// `-config-dir`: every `*.json` file in it, in name order (as Serf).
    pub(super) fn merge_dir(&mut self, dir: &Path) -> Result<(), String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("Error reading '{}': {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        for f in files {
            self.merge_file(&f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::agent_config::{agent_config, settings_to_config, FLAGS};
    use crate::cli::flags::{argv, Flags};
    use crate::model::AgentConfig;
    use std::time::Duration;

    #[test]
    fn config_files_merge_then_flags_override() {
        let mut s = AgentSettings::default();
        let v: Value = serde_json::from_str(
            r#"{"node_name":"f","tags":{"role":"lb"},"start_join":["a"],"event_handlers":["x.sh"],
                "retry_interval":"10s","enable_compression":true}"#,
        )
        .unwrap();
        s.merge_json(&v, "one.json").unwrap();
        let f = Flags::parse(FLAGS, &argv(&["-node=g", "-join=b", "-tag=role=web"])).unwrap();
        s.merge_flags(&f).unwrap();
        let (c, join) = settings_to_config(s).unwrap();
        assert_eq!(c.node_name, "g");
        assert_eq!(join, vec!["a", "b"]);
        assert_eq!(c.tags, vec![("role".into(), "web".into())]);
        assert_eq!(c.retry_interval, Duration::from_secs(10));
        let bad: Value = serde_json::from_str(r#"{"node_nam":"x"}"#).unwrap();
        let e = AgentSettings::default()
            .merge_json(&bad, "two.json")
            .unwrap_err();
        assert!(e.contains("node_nam") && e.contains("two.json"), "{e}");
    }

    #[test]
    fn reap_timings_are_read_and_missing_features_refused() {
        let mut s = AgentSettings::default();
        let v: Value = serde_json::from_str(
            r#"{"reconnect_interval":"5s","reconnect_timeout":"1h","tombstone_timeout":"90s",
                "enable_syslog":false,"discover":"","statsd_addr":"","syslog_facility":"LOCAL0",
                "leave_on_terminate":false,"skip_leave_on_interrupt":true,
                "broadcast_timeout":"2s","protocol":5,"enable_compression":false}"#,
        )
        .unwrap();
        s.merge_json(&v, "one.json").unwrap();
        let f = Flags::parse(FLAGS, &argv(&["-node=n"])).unwrap();
        s.merge_flags(&f).unwrap();
        let (c, _) = settings_to_config(s).unwrap();
        assert_eq!(c.reconnect_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect_timeout, Duration::from_secs(3600));
        assert_eq!(c.tombstone_timeout, Duration::from_secs(90));
        assert!(!c.leave_on_terminate && c.skip_leave_on_interrupt);
        assert_eq!(c.broadcast_timeout, Duration::from_secs(2));
        assert!(!c.compress);
        let d = AgentConfig::default();
        assert_eq!(d.broadcast_timeout, Duration::from_secs(5));
        assert!(d.compress);
        let (c, _) = agent_config(&argv(&[
            "-node=n",
            "-broadcast-timeout=250ms",
            "-disable-compression",
        ]))
        .unwrap();
        assert_eq!(c.broadcast_timeout, Duration::from_millis(250));
        assert!(!c.compress);
        assert!(d.leave_on_terminate && !d.skip_leave_on_interrupt);

        let refused = |json: &str, want: &str| {
            let v: Value = serde_json::from_str(json).unwrap();
            let e = AgentSettings::default()
                .merge_json(&v, "two.json")
                .unwrap_err();
            assert!(e.contains(want) && e.contains("two.json"), "{json}: {e}");
        };
        refused(
            r#"{"enable_syslog":true}"#,
            "'enable_syslog' is not supported",
        );
        refused(r#"{"discover":"web"}"#, "'discover' is not supported");
        // A later 0 keeps the earlier size limit, as serf's merge does.
        let mut s = AgentSettings::default();
        for json in [r#"{"query_size_limit":2048}"#, r#"{"query_size_limit":0}"#] {
            s.merge_json(&serde_json::from_str(json).unwrap(), "five.json")
                .unwrap();
        }
        assert_eq!(settings_to_config(s).unwrap().0.query_size_limit, 2048);
        refused(r#"{"protocol":"5"}"#, "'protocol' must be a whole number");
        refused(
            r#"{"user_event_size_limit":-1}"#,
            "'user_event_size_limit' must be a whole number of bytes",
        );
        refused(
            r#"{"statsite_addr":"127.0.0.1:8125"}"#,
            "'statsite_addr' is not supported",
        );
        refused(
            r#"{"leave_on_terminate":"no"}"#,
            "'leave_on_terminate' must be true or false",
        );
        for (args, want) in [
            (
                &["-node=n", "-protocol=3"][..],
                "Protocol version '3' is not supported",
            ),
            (
                &["-node=n", "-protocol=9"][..],
                "Protocol version '9' is out of range",
            ),
            (
                &["-node=n", "-protocol=five"][..],
                "Invalid -protocol 'five'",
            ),
            (
                &["-node=n", "-broadcast-timeout=soon"][..],
                "Invalid broadcast timeout",
            ),
            (&["-node=n", "-syslog"][..], "-syslog is not supported"),
            (
                &["-node=n", "-discover=web"][..],
                "-discover (mDNS) is not supported",
            ),
        ] {
            assert!(
                agent_config(&argv(args)).unwrap_err().contains(want),
                "{args:?}"
            );
        }
        let bad: Value = serde_json::from_str(r#"{"tombstone_timeout":"soon"}"#).unwrap();
        let mut s = AgentSettings::default();
        s.merge_json(&bad, "three.json").unwrap();
        let e = settings_to_config(s).unwrap_err();
        assert!(e.contains("tombstone timeout") && e.contains("soon"), "{e}");
        let zero: Value = serde_json::from_str(r#"{"reconnect_interval":"0"}"#).unwrap();
        let mut s = AgentSettings::default();
        s.merge_json(&zero, "four.json").unwrap();
        assert!(settings_to_config(s)
            .unwrap_err()
            .contains("reconnect interval"));
    }

    #[test]
    fn wrong_kinds_are_named_by_their_key() {
        let refused = |json: &str| {
            let v: Value = serde_json::from_str(json).unwrap();
            AgentSettings::default()
                .merge_json(&v, "six.json")
                .unwrap_err()
        };
        for (json, refusal) in [
            (
                r#"{"tags":{"role":"web","zone":7}}"#,
                "'tags.zone' must be a string",
            ),
            (
                r#"{"tags":["role"]}"#,
                "'tags' must be an object of strings",
            ),
            (r#"{"node_name":null}"#, "'node_name' must be a string"),
            (
                r#"{"retry_join":"a"}"#,
                "'retry_join' must be a list of strings",
            ),
            (
                r#"{"retry_max_attempts":4294967296}"#,
                "'retry_max_attempts' must be a whole number",
            ),
            ("[1]", "the top level must be a JSON object"),
        ] {
            assert_eq!(refused(json), format!("config file six.json: {refusal}"));
        }
        // Tags keep the file's key order (serde_json's, sorted) and a later
        // file replaces a tag of an earlier one.
        let mut s = AgentSettings::default();
        for json in [
            r#"{"tags":{"zone":"a","role":"web"}}"#,
            r#"{"tags":{"zone":"b"}}"#,
        ] {
            s.merge_json(&serde_json::from_str(json).unwrap(), "seven.json")
                .unwrap();
        }
        assert_eq!(
            s.tags,
            vec![("role".into(), "web".into()), ("zone".into(), "b".into())]
        );
    }
}
