//! `--session-store` / `SESSION_STORE`: which store holds the sessions.
//!
//! The value is checked here, after clap, and not by a clap value parser:
//! clap's error repeats the value as given, and a Redis URL may carry a
//! password. Our error names the variable and the expected shape, and shows
//! the value with anything before an `@` masked.

use std::fmt;
use std::str::FromStr;

use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};

/// The shape a `SESSION_STORE` value must have, for error messages.
pub const SHAPE: &str = "`memory` or `redis://[[user]:password@]host[:port][/db]`";
const DEFAULT_REDIS_PORT: u16 = 6379;

/// The raw `--session-store` value as clap read it. Its `Debug` masks
/// credentials, so that printing a [`crate::Config`] never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreArg(String);

impl FromStr for StoreArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(StoreArg(s.to_owned()))
    }
}

impl fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", masked(&self.0))
    }
}

impl fmt::Display for StoreArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&masked(&self.0))
    }
}

impl StoreArg {
    /// The store this value selects, or one error naming it (masked).
    pub fn parse(&self) -> Result<StoreSetting, BadStoreSetting> {
        StoreSetting::parse(&self.0)
    }
}

/// Which session store to run.
#[derive(Clone, Debug)]
pub enum StoreSetting {
    /// The bounded in-memory store of this process (the default).
    Memory,
    /// A shared Redis server.
    Redis(RedisTarget),
}

/// Where the Redis server is. `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct RedisTarget {
    pub(crate) info: ConnectionInfo,
    host: String,
    port: u16,
    db: i64,
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "redis://{host}:{}/{}", self.port, self.db)
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

/// A `SESSION_STORE` value we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SESSION_STORE (--session-store) {shown:?}: {why}; expected {SHAPE}")]
pub struct BadStoreSetting {
    /// The value, credentials masked.
    pub shown: String,
    pub why: String,
}

impl StoreSetting {
    /// Parses `memory` (or an empty value) and `redis://...` URLs.
    pub fn parse(value: &str) -> Result<Self, BadStoreSetting> {
        let bad = |why: String| BadStoreSetting {
            shown: masked(value),
            why,
        };
        if value.is_empty() || value == "memory" {
            return Ok(StoreSetting::Memory);
        }
        let Some(rest) = value.strip_prefix("redis://") else {
            if value.starts_with("rediss://") {
                return Err(bad("TLS (rediss://) is not supported".into()));
            }
            return Err(bad("unknown store".into()));
        };
        if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(bad(format!(
                "`{c}` is not allowed: options are not supported"
            )));
        }
        // Credentials end at the last `@` (a password may contain `/`).
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (authority, path) = match after.find('/') {
            Some(slash) => (&after[..slash], &after[slash + 1..]),
            None => (after, ""),
        };
        let (host, port) = split_host_port(authority).map_err(bad)?;
        let db = match path {
            "" => 0,
            db => db
                .parse::<u32>()
                .map_err(|_| bad(format!("database {db:?} is not a number from 0")))?,
        };
        let mut redis = RedisConnectionInfo::default()
            .set_db(i64::from(db))
            // RESP3 (Redis 6 and later): the client hears of a closed
            // connection at once and reconnects before the next request.
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user = percent_decode(user)
                .ok_or_else(|| bad("the user name is not valid percent-encoded UTF-8".into()))?;
            if !user.is_empty() {
                redis = redis.set_username(user);
            }
            if let Some(password) = password {
                let password = percent_decode(password)
                    .ok_or_else(|| bad("the password is not valid percent-encoded UTF-8".into()))?;
                redis = redis.set_password(password);
            }
        }
        let info = ConnectionAddr::Tcp(host.clone(), port)
            .into_connection_info()
            .map_err(|e| bad(format!("the Redis client refuses it: {e}")))?
            .set_redis_settings(redis);
        Ok(StoreSetting::Redis(RedisTarget {
            info,
            host,
            port,
            db: i64::from(db),
        }))
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let bracketed = authority.starts_with('[');
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!("{authority:?} has no closing `]`"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected {after:?} after the address")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (bracketed && c == ':')
        });
    if !host_ok {
        return Err(format!("host {host:?} is not a host name or address"));
    }
    let port = match port {
        None => DEFAULT_REDIS_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// `value` with everything between the scheme and the last `@` replaced by
/// `***`: user names and passwords never reach a log or an error.
pub fn masked(value: &str) -> String {
    match value.rfind('@') {
        Some(at) => {
            let start = value.find("://").map_or(0, |i| i + 3).min(at);
            format!("{}***{}", &value[..start], &value[at..])
        }
        None => value.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(value: &str) -> RedisTarget {
        match StoreSetting::parse(value) {
            Ok(StoreSetting::Redis(target)) => target,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn memory_is_the_default_and_empty_means_memory() {
        assert!(matches!(
            StoreSetting::parse("memory"),
            Ok(StoreSetting::Memory)
        ));
        assert!(matches!(StoreSetting::parse(""), Ok(StoreSetting::Memory)));
    }

    #[test]
    fn redis_urls() {
        let t = redis("redis://10.0.0.5:6380/3");
        assert_eq!(t.to_string(), "redis://10.0.0.5:6380/3");
        assert_eq!(t.info.redis_settings().db(), 3);
        assert_eq!(t.info.redis_settings().protocol(), ProtocolVersion::RESP3);
        assert_eq!(
            redis("redis://redis:6379").to_string(),
            "redis://redis:6379/0"
        );
        assert_eq!(redis("redis://redis/").to_string(), "redis://redis:6379/0");
        assert_eq!(
            redis("redis://[::1]:7000/1").to_string(),
            "redis://[::1]:7000/1"
        );
        let t = redis("redis://app:p%40ss/word@cache:6379/2");
        assert_eq!(t.info.redis_settings().username(), Some("app"));
        assert_eq!(t.info.redis_settings().password(), Some("p@ss/word"));
        assert_eq!(t.to_string(), "redis://cache:6379/2");
        assert!(!format!("{t:?}").contains("word"));
        let t = redis("redis://:secret@cache");
        assert_eq!(t.info.redis_settings().username(), None);
        assert_eq!(t.info.redis_settings().password(), Some("secret"));
    }

    #[test]
    fn bad_values_are_named_without_their_password() {
        for (value, shown, why) in [
            ("memroy", "memroy", "unknown store"),
            ("Memory", "Memory", "unknown store"),
            ("redis:/host", "redis:/host", "unknown store"),
            ("rediss://cache", "rediss://cache", "TLS"),
            (
                "redis://cache:99999/0",
                "redis://cache:99999/0",
                "port \"99999\"",
            ),
            ("redis://cache:0", "redis://cache:0", "port \"0\""),
            ("redis://cache:x", "redis://cache:x", "port \"x\""),
            ("redis://:6379", "redis://:6379", "host \"\""),
            ("redis://", "redis://", "host \"\""),
            ("redis://cache/db1", "redis://cache/db1", "database \"db1\""),
            ("redis://cache/-1", "redis://cache/-1", "database \"-1\""),
            ("redis://cache?db=1", "redis://cache?db=1", "`?`"),
            ("redis://[::1", "redis://[::1", "no closing"),
            ("redis://::1", "redis://::1", "host \":\""),
            (
                "redis://u:hunter2@cache:70000",
                "redis://***@cache:70000",
                "port \"70000\"",
            ),
            (
                "redis://u:hun%zzter2@cache",
                "redis://***@cache",
                "password",
            ),
        ] {
            let err = StoreSetting::parse(value).unwrap_err();
            assert_eq!(err.shown, shown, "{value}");
            let text = err.to_string();
            assert!(text.contains(why), "{value}: {text}");
            assert!(text.contains("SESSION_STORE"), "{text}");
            assert!(text.contains(SHAPE), "{text}");
            assert!(
                !text.contains("hunter2") && !text.contains("hun%zz"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_raw_argument_never_shows_credentials() {
        let arg: StoreArg = "redis://admin:hunter2@cache:6379/0".parse().unwrap();
        assert_eq!(arg.to_string(), "redis://***@cache:6379/0");
        assert!(!format!("{arg:?}").contains("hunter2"));
        assert_eq!(masked("a@b@c"), "***@c");
    }
}
