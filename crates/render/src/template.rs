//! Tera rendering with errors a person can act on.
//!
//! Owns one thing: turning (template text, variables) into output, and any
//! failure into one sentence that names the template line. Tera already
//! refuses undefined variables (rather than printing an empty string, as
//! handlebars does); its messages, though, name the variable but not the
//! line, and its syntax errors span several lines of ASCII art.

use serde_json::{Map, Value};

/// Why a template did not render. `Display` is the sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template syntax error in {name} at line {line}, column {column}: {detail}{snippet}")]
    Syntax {
        name: String,
        line: usize,
        column: usize,
        detail: String,
        snippet: String,
    },
    #[error("undefined variable `{variable}` in {name}{location}")]
    Undefined {
        name: String,
        variable: String,
        location: String,
    },
    #[error("cannot render {name}: {detail}{location}")]
    Render {
        name: String,
        detail: String,
        location: String,
    },
}

/// Render `source` (called `name` in messages, e.g. "stdin" or a path) with
/// the given variables. Autoescaping is off: the output is a config file,
/// not HTML.
pub fn render(
    name: &str,
    source: &str,
    vars: &Map<String, Value>,
) -> Result<String, TemplateError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    // Tera uses the template name in its own messages; a fixed one keeps
    // them predictable and lets us substitute the caller's name.
    const ID: &str = "template";
    if let Err(e) = tera.add_raw_template(ID, source) {
        return Err(syntax_error(name, source, &e));
    }
    let ctx = tera::Context::from_value(Value::Object(vars.clone()))
        .expect("a JSON object is always a valid tera context");
    tera.render(ID, &ctx)
        .map_err(|e| render_error(name, source, &e))
}

/// Every message in tera's error chain, outermost first.
fn chain(e: &tera::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out
}

fn syntax_error(name: &str, source: &str, e: &tera::Error) -> TemplateError {
    let msgs = chain(e);
    // pest's report: " --> L:C", a caret picture, then "= expected ...".
    let mut line: usize = 0;
    let mut column: usize = 0;
    let mut detail = None;
    for m in &msgs {
        for l in m.lines() {
            let t = l.trim();
            if let Some(pos) = t.strip_prefix("--> ") {
                let mut it = pos.split(':');
                line = it.next().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                column = it.next().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            } else if let Some(d) = t.strip_prefix("= ") {
                detail = Some(d.to_string());
            }
        }
    }
    let detail = detail.unwrap_or_else(|| {
        // Errors found after parsing (e.g. an unknown filter, a bad
        // `extends`) carry no position: keep the innermost message.
        msgs.last().cloned().unwrap_or_default().replace('\n', " ")
    });
    let snippet = source
        .lines()
        .nth(line.wrapping_sub(1))
        .map(|l| format!(" (`{}`)", l.trim()))
        .unwrap_or_default();
    TemplateError::Syntax {
        name: name.to_string(),
        line,
        column,
        detail,
        snippet,
    }
}

fn render_error(name: &str, source: &str, e: &tera::Error) -> TemplateError {
    let msgs = chain(e);
    let inner = msgs.last().cloned().unwrap_or_default();
    let inner = inner.replace(" while rendering 'template'", "");
    if let Some(var) = undefined_variable(&inner) {
        return TemplateError::Undefined {
            name: name.to_string(),
            location: locate(source, &var),
            variable: var,
        };
    }
    let location = backticked(&inner)
        .map(|w| locate(source, w))
        .unwrap_or_default();
    TemplateError::Render {
        name: name.to_string(),
        detail: inner,
        location,
    }
}

/// "Variable `a.b` not found in context ..." → "a.b".
fn undefined_variable(msg: &str) -> Option<String> {
    let idx = msg.find("Variable `")?;
    let rest = &msg[idx + "Variable `".len()..];
    let end = rest.find('`')?;
    rest[end..]
        .starts_with("` not found in context")
        .then(|| rest[..end].to_string())
}

/// The first name quoted in a tera message: tera quotes variables with
/// backticks and filters/functions/tests with single quotes.
fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find(['`', '\''])?;
    let quote = msg[start..].chars().next()?;
    let len = msg[start + 1..].find(quote)?;
    Some(&msg[start + 1..start + 1 + len])
}

/// " at line N (`text`)" for the first line that uses `var` inside a tag,
/// trying the full dotted path first, then its first segment.
fn locate(source: &str, var: &str) -> String {
    let head = var.split(['.', '[']).next().unwrap_or(var);
    for needle in [var, head] {
        if needle.is_empty() {
            continue;
        }
        for (i, l) in source.lines().enumerate() {
            if line_uses(l, needle) {
                return format!(" at line {} (`{}`)", i + 1, l.trim());
            }
        }
    }
    String::new()
}

/// Whether `needle` occurs in `line` as a whole identifier, inside `{{ }}`
/// or `{% %}`.
fn line_uses(line: &str, needle: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = line;
    loop {
        let open = [rest.find("{{"), rest.find("{%")]
            .into_iter()
            .flatten()
            .min();
        let Some(open) = open else { return false };
        let body = &rest[open + 2..];
        let close = [body.find("}}"), body.find("%}")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(body.len());
        let tag = &body[..close];
        let mut from = 0;
        while let Some(p) = tag[from..].find(needle) {
            let s = from + p;
            let e = s + needle.len();
            let before_ok = tag[..s]
                .chars()
                .next_back()
                .is_none_or(|c| !ident(c) && c != '.');
            let after_ok = tag[e..].chars().next().is_none_or(|c| !ident(c));
            if before_ok && after_ok {
                return true;
            }
            from = e;
        }
        rest = &body[close..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_variables_and_lists() {
        let out = render(
            "t",
            "{{ name }}:{% for a in addresses %} {{ a.host }}={{ a.ip }}{% endfor %}",
            &vars(json!({"name": "s1", "addresses": [{"host": "h", "ip": "1.2.3.4"}]})),
        )
        .unwrap();
        assert_eq!(out, "s1: h=1.2.3.4");
    }

    #[test]
    fn no_html_escaping() {
        let out = render("t", "{{ v }}", &vars(json!({"v": "a<b>&'\""}))).unwrap();
        assert_eq!(out, "a<b>&'\"");
    }

    #[test]
    fn undefined_variable_names_variable_and_line() {
        let err = render(
            "tpl",
            "line one\nhello {{ name }}\nip {{ ip }}\n",
            &vars(json!({"name": "s1"})),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("undefined variable `ip`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("in tpl"), "{err}");
    }

    #[test]
    fn undefined_field_names_path_and_line() {
        let err = render(
            "tpl",
            "x\n\n{{ node.ipaddr }}",
            &vars(json!({"node": {"ip": "1"}})),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`node.ipaddr`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = render("tpl", "ok\nok {{ name }\n", &Map::new()).unwrap_err();
        match &err {
            TemplateError::Syntax { line, .. } => assert_eq!(*line, 2, "{err}"),
            other => panic!("not a syntax error: {other}"),
        }
        let s = err.to_string();
        assert!(
            s.starts_with("template syntax error in tpl at line 2"),
            "{s}"
        );
        assert!(!s.contains('\n'), "one line: {s}");
    }

    #[test]
    fn unknown_filter_names_the_line() {
        let err = render("tpl", "a\n{{ x | nofilter }}\n", &vars(json!({"x": 1})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nofilter") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn unclosed_block_is_a_syntax_error() {
        let err = render("tpl", "{% for a in b %}\nx\n", &Map::new()).unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { .. }), "{err}");
    }

    #[test]
    fn locate_ignores_plain_text_and_longer_identifiers() {
        assert!(!line_uses("ip is plain text", "ip"));
        assert!(!line_uses("{{ ipaddr }}", "ip"));
        assert!(!line_uses("{{ a.ip }}", "ip"));
        assert!(line_uses("x {{ a }} {{ ip | upper }}", "ip"));
        assert!(line_uses("{% if ip %}", "ip"));
    }
}
