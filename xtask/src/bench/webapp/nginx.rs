//! nginx as the machine's limit for the web app's `GET /`: Debian's
//! `nginx-light`, run from its own prefix under target/bench, answering a
//! fixed body of the size of ours with the same headers (a `Set-Cookie` when
//! ours starts a session), so that the difference is what our app does per
//! request.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::super::{free_port, wait_http, Guard};
use crate::{prereq, project};

/// One answer read off the wire: status code, headers (names lowercased,
/// in order) and body.
pub(super) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /` over a fresh connection (`Connection: close`, read to the end),
/// with an optional `Cookie`: the bytes as a server sends them, headers
/// included (reqwest would hide the ones it handles itself).
pub(super) fn get(port: u16, cookie: Option<&str>) -> Result<Answer> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).context("an answer that is not UTF-8")?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {raw:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// What nginx answers on one port.
pub(super) struct Fixed {
    pub body: String,
    pub backend_ip: String,
    pub content_type: String,
    pub set_cookie: Option<String>,
}

/// A running nginx: one port answering like our `GET /` for a new session
/// (with a `Set-Cookie`), one like a visit with a live cookie (without).
pub(super) struct Nginx {
    _guard: Stopped,
    pub fresh_port: u16,
    pub cookie_port: u16,
}

/// Stops nginx with SIGTERM (a SIGKILL of the master would leave its
/// workers listening) and waits for it.
struct Stopped(Guard);

impl Drop for Stopped {
    fn drop(&mut self) {
        let pid = self.0 .0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0 .0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Guard's drop kills what is left.
    }
}

/// A single-quoted nginx string: our bodies hold no `'`, `\` or `$`.
fn quoted(s: &str, quote: char) -> Result<String> {
    if s.contains([quote, '\\', '$', '\n']) {
        bail!("{s:?} cannot be written as a fixed nginx string");
    }
    Ok(format!("{quote}{s}{quote}"))
}

fn location(answer: &Fixed) -> Result<String> {
    let mut out = format!(
        "            default_type {};\n            add_header x-backend-ip {};\n",
        quoted(&answer.content_type, '"')?,
        quoted(&answer.backend_ip, '"')?
    );
    if let Some(cookie) = &answer.set_cookie {
        out += &format!(
            "            add_header Set-Cookie {};\n",
            quoted(cookie, '"')?
        );
    }
    out += &format!("            return 200 {};\n", quoted(&answer.body, '\'')?);
    Ok(out)
}

/// Starts nginx with `workers` worker processes, access log off, on two
/// free loopback ports, in its own prefix `target/bench/nginx` (no system
/// service, no files outside it but the binary), installing Debian's
/// `nginx-light` if it is missing.
pub(super) fn start(workers: usize, fresh: &Fixed, cookie: &Fixed) -> Result<Nginx> {
    prereq::ensure_tool("/usr/sbin/nginx", "nginx-light")?;
    let prefix: PathBuf = project::target_dir().join("bench").join("nginx");
    for dir in ["logs", "tmp"] {
        std::fs::create_dir_all(prefix.join(dir))?;
    }
    let (fresh_port, cookie_port) = (free_port()?, free_port()?);
    let p = prefix.display();
    let conf = format!(
        "# Written by cargo xtask bench webapp: the web app's reference.\n\
         worker_processes {workers};\n\
         events {{\n    worker_connections 1024;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   server_tokens off;\n\
         \x20   # At its best: one connection serves any number of requests (ours\n\
         \x20   # has no limit either); the idle timeout is ours (5 s).\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   keepalive_timeout 5s;\n\
         \x20   client_body_temp_path {p}/tmp/body;\n\
         \x20   proxy_temp_path {p}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {p}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {p}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {p}/tmp/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{fresh_port};\n\
         \x20       location = / {{\n{}        }}\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{cookie_port};\n\
         \x20       location = / {{\n{}        }}\n\
         \x20   }}\n\
         }}\n",
        location(fresh)?,
        location(cookie)?
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .arg("-g")
        .arg(format!("daemon off; pid {p}/nginx.pid;"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SIGTERM if the bench dies: nginx's master then stops its workers.
    let guard = Guard::spawn_ended_by(&mut cmd, nix::sys::signal::Signal::SIGTERM);
    let mut guard = Stopped(guard.context("starting nginx")?);
    for port in [fresh_port, cookie_port] {
        if let Err(e) = wait_http(port) {
            let status = guard.0 .0.try_wait()?;
            let log = std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
            bail!("nginx does not answer on 127.0.0.1:{port} ({e}; exited: {status:?}): {log}");
        }
    }
    Ok(Nginx {
        _guard: guard,
        fresh_port,
        cookie_port,
    })
}

/// The header names of an answer, without those that only one of the two
/// servers sends whatever it serves (nginx's `Server`, and `Connection`,
/// which hyper leaves out on a kept-alive HTTP/1.1 connection) and `Date`
/// (both send one).
fn compared_names(answer: &Answer) -> BTreeSet<&str> {
    answer
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !matches!(*n, "server" | "connection" | "date"))
        .collect()
}

/// Checks that nginx's answer on `port` has the status, header set and
/// header values of `ours` and a body of the same length; the one
/// `Set-Cookie` differs only in the session id.
pub(super) fn check_same_shape(ours: &Answer, port: u16, what: &str) -> Result<Answer> {
    let theirs = get(port, None)?;
    let same = ours.status == theirs.status
        && compared_names(ours) == compared_names(&theirs)
        && ["content-type", "content-length", "x-backend-ip"]
            .iter()
            .all(|h| ours.header(h) == theirs.header(h))
        && ours.body.len() == theirs.body.len()
        && ours.header("set-cookie").map(cookie_attributes)
            == theirs.header("set-cookie").map(cookie_attributes);
    if !same {
        bail!(
            "nginx's answer ({what}) does not match ours:\n ours: {} {:?} {:?}\n nginx: {} {:?} {:?}",
            ours.status,
            ours.headers,
            ours.body,
            theirs.status,
            theirs.headers,
            theirs.body
        );
    }
    Ok(theirs)
}

/// A `Set-Cookie` value without its value: name and attributes.
fn cookie_attributes(set_cookie: &str) -> (String, usize, String) {
    let (pair, attributes) = set_cookie.split_once(';').unwrap_or((set_cookie, ""));
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    (name.to_owned(), value.len(), attributes.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_writes_headers_and_body_as_fixed_strings() {
        let fixed = Fixed {
            body: r#"{"hello":"world!","sessionViews":1}"#.into(),
            backend_ip: "127.0.0.1".into(),
            content_type: "application/json".into(),
            set_cookie: Some("NODESESSID=abc; HttpOnly; SameSite=Lax; Path=/".into()),
        };
        let text = location(&fixed).unwrap();
        assert!(
            text.contains("default_type \"application/json\";"),
            "{text}"
        );
        assert!(
            text.contains(
                "add_header Set-Cookie \"NODESESSID=abc; HttpOnly; SameSite=Lax; Path=/\";"
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"return 200 '{"hello":"world!","sessionViews":1}';"#),
            "{text}"
        );
        assert!(quoted("a'b", '\'').is_err());
        assert!(quoted("$host", '\'').is_err());
    }

    #[test]
    fn cookies_compare_by_name_length_and_attributes() {
        assert_eq!(
            cookie_attributes("NODESESSID=abcd; HttpOnly; Path=/"),
            ("NODESESSID".into(), 4, " HttpOnly; Path=/".into())
        );
    }
}
