//! Log lines for the `monitor` RPC: a `tracing` layer that formats events
//! the way Serf's logger does (`2026/11/24 16:25:06 [INFO] agent: text`),
//! optionally prints them on stderr, and publishes them to every RPC
//! connection that asked for `monitor`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Serf's log levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Err,
}

impl LogLevel {
    /// Parses Serf's names, any case (`trace debug info warn err`;
    /// `error` and `warning` accepted too).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARN" | "WARNING" => LogLevel::Warn,
            "ERR" | "ERROR" => LogLevel::Err,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Err => "ERR",
        }
    }

    fn from_tracing(l: &Level) -> LogLevel {
        match *l {
            Level::TRACE => LogLevel::Trace,
            Level::DEBUG => LogLevel::Debug,
            Level::INFO => LogLevel::Info,
            Level::WARN => LogLevel::Warn,
            _ => LogLevel::Err,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

/// Lines replayed to a new `monitor` subscriber (Serf keeps the last 512
/// too, so `serf monitor` shows how the agent started).
const BACKLOG: usize = 512;

/// Process-wide publisher of log lines: the layer writes, every `monitor`
/// subscriber reads. Global because a subscriber is installed once per
/// process while RPC servers come and go.
struct Hub {
    live: broadcast::Sender<LogLine>,
    backlog: Mutex<VecDeque<LogLine>>,
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| Hub {
        live: broadcast::channel(1024).0,
        backlog: Mutex::new(VecDeque::with_capacity(BACKLOG)),
    })
}

/// A new subscription: the recent lines, then every line from now on,
/// with nothing lost or doubled in between.
pub(crate) fn subscribe() -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
    let h = hub();
    let backlog = h.backlog.lock().unwrap_or_else(|e| e.into_inner());
    let rx = h.live.subscribe();
    (backlog.iter().cloned().collect(), rx)
}

/// Publishes one already formatted line (also used for lines that do not
/// come through `tracing`).
pub(crate) fn publish(level: LogLevel, text: String) {
    let h = hub();
    let line = LogLine { level, text };
    let mut backlog = h.backlog.lock().unwrap_or_else(|e| e.into_inner());
    if backlog.len() == BACKLOG {
        backlog.pop_front();
    }
    backlog.push_back(line.clone());
    let _ = h.live.send(line);
}

/// The `tracing` layer to install in the agent process.
pub struct MonitorLayer {
    stdout_level: Option<LogLevel>,
}

impl MonitorLayer {
    /// Publishes to `monitor` subscribers only.
    pub fn new() -> Self {
        MonitorLayer { stdout_level: None }
    }

    /// Also prints lines at `level` and above on stdout, indented, as
    /// Serf's agent does; they are held until [`open_stdout_gate`] so the
    /// start banner comes first.
    pub fn with_stdout(level: LogLevel) -> Self {
        MonitorLayer {
            stdout_level: Some(level),
        }
    }
}

impl Default for MonitorLayer {
    fn default() -> Self {
        Self::new()
    }
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for MonitorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = LogLevel::from_tracing(meta.level());
        let to_stdout = self.stdout_level.is_some_and(|min| level >= min);
        // Trace lines are too many to format for the backlog alone.
        if level == LogLevel::Trace && !to_stdout && hub().live.receiver_count() == 0 {
            return;
        }
        let mut fields = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut fields);
        // `gossip::agent` -> `agent`, like Serf's `agent:` / `serf:` prefixes.
        let target = meta.target().rsplit("::").next().unwrap_or("");
        let line = format!(
            "{} [{}] {}: {}{}",
            timestamp(SystemTime::now()),
            level.as_str(),
            target,
            fields.message,
            fields.rest
        );
        if to_stdout {
            print_gated(&line);
        }
        publish(level, line);
    }
}

/// Lines for stdout held back until [`open_stdout_gate`]: Serf prints its
/// start banner first and only then the log lines, including those logged
/// while starting. `Some` while the gate is closed.
static GATE: Mutex<Option<Vec<String>>> = Mutex::new(Some(Vec::new()));

fn print_gated(line: &str) {
    let mut gate = GATE.lock().unwrap_or_else(|e| e.into_inner());
    match gate.as_mut() {
        Some(held) => held.push(format!("    {line}")),
        None => {
            let _ = writeln!(std::io::stdout().lock(), "    {line}");
        }
    }
}

/// Prints the log lines held back so far and lets later ones through.
pub fn open_stdout_gate() {
    let mut gate = GATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(held) = gate.take() {
        let mut out = std::io::stdout().lock();
        for l in held {
            let _ = writeln!(out, "{l}");
        }
    }
}

/// `YYYY/MM/DD HH:MM:SS` in UTC (Go's `log.LstdFlags` layout).
pub(crate) fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_use_go_log_layout() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_537_506); // 2026-11-24 16:25:06 UTC
        assert_eq!(timestamp(t), "2026/11/24 16:25:06");
        assert_eq!(timestamp(UNIX_EPOCH), "1970/01/01 00:00:00");
    }

    #[test]
    fn levels_parse_serf_names_and_order() {
        assert_eq!(LogLevel::parse("err"), Some(LogLevel::Err));
        assert_eq!(LogLevel::parse("Debug"), Some(LogLevel::Debug));
        assert_eq!(LogLevel::parse("loud"), None);
        assert!(LogLevel::Warn > LogLevel::Info);
    }
}
