//! One-shot rendering, handlebars-cmd style: `render --name s1 --ip 1.2.3.4
//! < template > out`.
//!
//! Owns the command line of that mode (hand-parsed, since every unknown
//! `--key value` is a template variable) and its run: read the template,
//! build the variables, render, then print or write atomically.
//!
//! Variables: `--key value` or `--key=value`. A value that is valid JSON is
//! decoded (`--n 3` is a number, `--xs '[1,2]'` a list, `--s '"3"'` the
//! string "3"); anything else is a string. Dashes in keys become
//! underscores (`--server-name` → `server_name`). `--data FILE` merges a
//! JSON object. Later arguments override earlier ones, in order.
//!
//! Reserved flags: `--data FILE`, `--template FILE` (instead of stdin),
//! `--out PATH`, `--check CMD`, `--var KEY VALUE` (sets a variable whose
//! name is reserved, e.g. `--var out x`), `--help`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::output::{self, CheckCommand};
use crate::template;

pub const USAGE: &str = "\
usage: render [--KEY VALUE]... [--data FILE.json] [--template FILE]
              [--out PATH [--check 'CMD {}']] < TEMPLATE
       render reconcile [OPTIONS]      (see `render reconcile --help`)

Renders a tera template (stdin, or --template FILE) with every --KEY VALUE
as a variable; VALUE is JSON-decoded when it is valid JSON, else a string.
  --data FILE      merge the variables of a JSON object file
  --var KEY VALUE  set a variable whose name is one of these flags
  --out PATH       write atomically to PATH (temp file + rename) instead of stdout
  --check CMD      validate the output first: CMD is split into words (no
                   shell), `{}` is replaced by the temp file's path; on
                   failure nothing is written and CMD's output is shown
Exit status: 0 written, 1 render/validation/IO error, 2 usage error.";

/// The parsed command line of the one-shot mode.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub vars: Map<String, Value>,
    pub template: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub check: Option<String>,
    pub help: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl OneShotError {
    pub fn exit_code(&self) -> i32 {
        match self {
            OneShotError::Usage(_) => 2,
            OneShotError::Failed(_) => 1,
        }
    }
}

fn usage(msg: impl Into<String>) -> OneShotError {
    OneShotError::Usage(msg.into())
}

/// A variable name tera can refer to: `[A-Za-z_][A-Za-z0-9_]*` after
/// dashes became underscores.
pub(crate) fn var_name(raw: &str) -> Result<String, OneShotError> {
    let name = raw.replace('-', "_");
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(usage(format!(
            "invalid variable name {raw:?}: use letters, digits, '_' or '-', not starting with a digit"
        )))
    }
}

/// JSON when it parses as JSON, else the string itself.
pub fn decode_value(v: &str) -> Value {
    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()))
}

pub(crate) fn load_data(path: &Path) -> Result<Map<String, Value>, OneShotError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| OneShotError::Failed(format!("--data {shown}: {e}")))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(OneShotError::Failed(format!(
            "--data {shown}: the file must hold a JSON object ({{...}})"
        ))),
        Err(e) => Err(OneShotError::Failed(format!(
            "--data {shown}: invalid JSON: {e}"
        ))),
    }
}

/// Parse the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Options, OneShotError> {
    let mut opts = Options::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            opts.help = true;
            continue;
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(usage(format!(
                "unexpected argument {arg:?}: variables are given as --KEY VALUE (the template comes on stdin)"
            )));
        };
        let (key, inline) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let mut value = |what: &str| -> Result<String, OneShotError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .ok_or_else(|| usage(format!("--{key} needs a value ({what})"))),
            }
        };
        match key.as_str() {
            "data" => {
                let path = value("a JSON file")?;
                opts.vars.extend(load_data(Path::new(&path))?);
            }
            "template" => opts.template = Some(PathBuf::from(value("a template file")?)),
            "out" => opts.out = Some(PathBuf::from(value("an output path")?)),
            "check" => opts.check = Some(value("a command such as 'haproxy -c -f {}'")?),
            "var" => {
                let name = value("a variable name, then its value")?;
                let v = it
                    .next()
                    .ok_or_else(|| usage(format!("--var {name} needs a value")))?;
                opts.vars.insert(var_name(&name)?, decode_value(&v));
            }
            "" => return Err(usage("empty flag name `--`")),
            _ => {
                let v = value("the variable's value")?;
                opts.vars.insert(var_name(&key)?, decode_value(&v));
            }
        }
    }
    Ok(opts)
}

/// Run the one-shot mode; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("render: {e}");
            if matches!(e, OneShotError::Usage(_)) {
                eprintln!("(render --help for usage)");
            }
            e.exit_code()
        }
    }
}

fn run(args: Vec<String>) -> Result<(), OneShotError> {
    let opts = parse_args(args)?;
    if opts.help {
        println!("{USAGE}");
        return Ok(());
    }
    let check = opts
        .check
        .as_deref()
        .map(CheckCommand::parse)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    let (name, source) = match &opts.template {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .map_err(|e| OneShotError::Failed(format!("{}: {e}", p.display())))?,
        ),
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| {
                OneShotError::Failed(format!("reading the template from stdin: {e}"))
            })?;
            ("stdin".to_string(), s)
        }
    };
    let rendered = template::render(&name, &source, &opts.vars)
        .map_err(|e| OneShotError::Failed(e.to_string()))?;
    match &opts.out {
        Some(out) => output::write_atomic(out, rendered.as_bytes(), check.as_ref())
            .map_err(|e| OneShotError::Failed(e.to_string())),
        None => {
            if let Some(check) = &check {
                output::check_only(rendered.as_bytes(), check)
                    .map_err(|e| OneShotError::Failed(e.to_string()))?;
            }
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(rendered.as_bytes())
                .and_then(|_| stdout.flush())
                .map_err(|e| OneShotError::Failed(format!("writing to stdout: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(a: &[&str]) -> Result<Options, OneShotError> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_become_variables_json_decoded() {
        let o = parse(&[
            "--name",
            "s1",
            "--ip=10.0.0.3",
            "--n",
            "3",
            "--addresses",
            r#"[{"host":"s1"}]"#,
            "--quoted",
            r#""7""#,
            "--server-name",
            "x",
        ])
        .unwrap();
        assert_eq!(
            Value::Object(o.vars),
            json!({"name": "s1", "ip": "10.0.0.3", "n": 3, "addresses": [{"host": "s1"}], "quoted": "7", "server_name": "x"})
        );
    }

    #[test]
    fn reserved_flags_and_var_escape() {
        let o = parse(&[
            "--out",
            "/x",
            "--check",
            "haproxy -c -f {}",
            "--var",
            "out",
            "v",
            "--template=t",
        ])
        .unwrap();
        assert_eq!(o.out, Some(PathBuf::from("/x")));
        assert_eq!(o.check.as_deref(), Some("haproxy -c -f {}"));
        assert_eq!(o.template, Some(PathBuf::from("t")));
        assert_eq!(o.vars.get("out"), Some(&json!("v")));
    }

    #[test]
    fn data_merges_in_order() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("d.json");
        std::fs::write(&f, r#"{"a": 1, "b": [2]}"#).unwrap();
        let f = f.to_str().unwrap();
        let o = parse(&["--a", "0", "--data", f, "--b", "x"]).unwrap();
        assert_eq!(Value::Object(o.vars), json!({"a": 1, "b": "x"}));
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = parse(&["--name"]).unwrap_err().to_string();
        assert!(e.contains("--name needs a value"), "{e}");
        let e = parse(&["name", "x"]).unwrap_err().to_string();
        assert!(e.contains("\"name\""), "{e}");
        let e = parse(&["--a b", "x"]).unwrap_err().to_string();
        assert!(e.contains("\"a b\""), "{e}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("d.json");
        std::fs::write(&f, "[1]").unwrap();
        let e = parse(&["--data", f.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("JSON object"), "{e}");
    }
}
