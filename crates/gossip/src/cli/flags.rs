//! Go-`flag`-style argument parsing, as Serf's commands use it: `-name`
//! and `--name` are the same flag, a value follows `=` or comes as the
//! next argument, boolean flags take a value only after `=`, and parsing
//! stops at the first argument that is not a flag (or after `--`).

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// A value; given twice, the last one wins.
    Value,
    /// A value that may be repeated; all are kept in order.
    List,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FlagError {
    /// `-h`, `-help` or `--help`.
    Help,
    Bad(String),
}

#[derive(Debug, Default)]
pub struct Flags {
    values: HashMap<&'static str, Vec<String>>,
    /// Arguments after the flags.
    pub args: Vec<String>,
}

impl Flags {
    pub fn parse(specs: &[(&'static str, Kind)], argv: &[String]) -> Result<Flags, FlagError> {
        let mut flags = Flags::default();
        let mut i = 0;
        while i < argv.len() {
            let arg = &argv[i];
            if arg == "--" {
                i += 1;
                break;
            }
            let body = match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
                Some(b) if !b.is_empty() && !b.starts_with('-') => b,
                _ => break,
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if name == "h" || name == "help" {
                return Err(FlagError::Help);
            }
            let Some(&(spec_name, kind)) = specs.iter().find(|(n, _)| *n == name) else {
                return Err(FlagError::Bad(format!(
                    "flag provided but not defined: -{name}"
                )));
            };
            let value = match (kind, inline) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) => {
                    parse_bool(&v).ok_or_else(|| {
                        FlagError::Bad(format!("invalid boolean value \"{v}\" for -{name}"))
                    })?;
                    v
                }
                (_, Some(v)) => v,
                (_, None) => {
                    i += 1;
                    argv.get(i)
                        .cloned()
                        .ok_or_else(|| FlagError::Bad(format!("flag needs an argument: -{name}")))?
                }
            };
            flags.values.entry(spec_name).or_default().push(value);
            i += 1;
        }
        flags.args = argv[i.min(argv.len())..].to_vec();
        Ok(flags)
    }

    /// The last value given for `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn bool(&self, name: &str, default: bool) -> bool {
        self.value(name).and_then(parse_bool).unwrap_or(default)
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for the units Serf's users write
/// (`ns us ms s m h`, combined like `1m30s`, fractions like `1.5s`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration '{s}' (use e.g. 500ms, 30s, 1m30s)");
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// Test arguments as the command line hands them over.
#[cfg(test)]
pub(crate) fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SPECS: &[(&str, Kind)] = &[
        ("node", Kind::Value),
        ("tag", Kind::List),
        ("replay", Kind::Bool),
    ];

    #[test]
    fn single_and_double_dash_forms_are_equal() {
        let f = Flags::parse(
            SPECS,
            &argv(&[
                "-node",
                "a",
                "--tag=role=lb",
                "-tag",
                "z=1",
                "--replay",
                "x",
                "-y",
            ]),
        )
        .unwrap();
        assert_eq!(f.value("node"), Some("a"));
        assert_eq!(f.list("tag"), vec!["role=lb", "z=1"]);
        assert!(f.bool("replay", false));
        assert_eq!(f.args, vec!["x", "-y"]);
        let f = Flags::parse(SPECS, &argv(&["--node=b", "-replay=false", "--", "-z"])).unwrap();
        assert_eq!(f.value("node"), Some("b"));
        assert!(!f.bool("replay", true));
        assert_eq!(f.args, vec!["-z"]);
    }

    #[test]
    fn errors_name_the_flag() {
        let e = Flags::parse(SPECS, &argv(&["-nope"])).unwrap_err();
        assert_eq!(
            e,
            FlagError::Bad("flag provided but not defined: -nope".into())
        );
        let e = Flags::parse(SPECS, &argv(&["--node"])).unwrap_err();
        assert_eq!(e, FlagError::Bad("flag needs an argument: -node".into()));
        let e = Flags::parse(SPECS, &argv(&["-replay=maybe"])).unwrap_err();
        assert!(matches!(e, FlagError::Bad(m) if m.contains("maybe")));
        assert_eq!(
            Flags::parse(SPECS, &argv(&["--help"])).unwrap_err(),
            FlagError::Help
        );
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 minutes")
            .unwrap_err()
            .contains("5 minutes"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
    }
}
