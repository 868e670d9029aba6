//! The access log: one line per request, written straight into the log's
//! buffer ([`LogOut`]) in the format tracing-subscriber's `fmt` gave it when
//! it came from a span and an event per request:
//!
//! `2026-01-02T03:04:05.123456Z  INFO http{method=GET path=/}: webapp: done status=200 latency=412.5µs`
//!
//! (and, when `RUST_LOG` enables `webapp` at debug, a `... webapp: started`
//! line when the request comes in). The span, the event and their field
//! formatting were 13 to 14 % of a `GET /`'s CPU (perf, see the README's
//! "Speed"); here a line is a few appends to a per-thread buffer, one copy
//! into the shared one, and a timestamp whose date and time of day are
//! formatted once per second. Whether a line is written is still up to
//! `RUST_LOG`: the `webapp` target's level, checked through tracing's
//! cached callsite interest (span-field directives such as `[http]=info`
//! no longer apply: there is no span). On a terminal the line gets the
//! colours tracing-subscriber gives it.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode, Uri};
use tracing::Level;

use crate::log_out::LogOut;

/// Where access lines go, and how.
#[derive(Clone)]
pub struct AccessLog {
    out: LogOut,
    ansi: bool,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("ansi", &self.ansi)
            .finish()
    }
}

/// A request being answered: what its `done` line needs.
pub struct Pending {
    log: AccessLog,
    method: Method,
    uri: Uri,
    start: Instant,
}

impl AccessLog {
    /// Lines into `out`, with terminal colours if `ansi` (as the rest of
    /// the log: stdout is a terminal).
    pub fn new(out: LogOut, ansi: bool) -> Self {
        AccessLog { out, ansi }
    }

    /// A request came in: writes its `started` line if `webapp` is enabled
    /// at debug; returns what its `done` line needs if `webapp` is enabled
    /// at info.
    pub fn begin(&self, method: &Method, uri: &Uri) -> Option<Pending> {
        if !tracing::enabled!(target: "webapp", Level::INFO) {
            return None;
        }
        if tracing::enabled!(target: "webapp", Level::DEBUG) {
            self.line(Level::DEBUG, method, uri, |_, _| {});
        }
        Some(Pending {
            log: self.clone(),
            method: method.clone(),
            uri: uri.clone(),
            start: Instant::now(),
        })
    }

    /// Formats one line and appends it to the log.
    fn line(
        &self,
        level: Level,
        method: &Method,
        uri: &Uri,
        fields: impl FnOnce(&mut Vec<u8>, &Paint),
    ) {
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            let paint = Paint { ansi: self.ansi };
            paint.wrap(&mut buf, DIMMED, |buf| timestamp(buf, SystemTime::now()));
            buf.push(b' ');
            let (name, colour) = if level == Level::DEBUG {
                ("DEBUG", BLUE)
            } else {
                (" INFO", GREEN)
            };
            paint.wrap(&mut buf, colour, |buf| {
                buf.extend_from_slice(name.as_bytes())
            });
            buf.push(b' ');
            paint.wrap(&mut buf, BOLD, |buf| buf.extend_from_slice(b"http"));
            paint.wrap(&mut buf, BOLD, |buf| buf.push(b'{'));
            paint.field(&mut buf, "method", method.as_str().as_bytes());
            buf.push(b' ');
            paint.field(&mut buf, "path", uri.path().as_bytes());
            paint.wrap(&mut buf, BOLD, |buf| buf.push(b'}'));
            paint.wrap(&mut buf, DIMMED, |buf| buf.push(b':'));
            buf.push(b' ');
            paint.wrap(&mut buf, DIMMED, |buf| buf.extend_from_slice(b"webapp"));
            paint.wrap(&mut buf, DIMMED, |buf| buf.push(b':'));
            buf.push(b' ');
            if level == Level::DEBUG {
                buf.extend_from_slice(b"started");
            } else {
                buf.extend_from_slice(b"done");
            }
            fields(&mut buf, &paint);
            buf.push(b'\n');
            self.out.write_line(&buf);
        });
    }
}

impl Pending {
    /// The request was answered with `status`: writes its `done` line.
    pub fn done(self, status: StatusCode) {
        let latency = self.start.elapsed();
        self.log.done_line(&self.method, &self.uri, status, latency);
    }
}

impl AccessLog {
    fn done_line(&self, method: &Method, uri: &Uri, status: StatusCode, latency: Duration) {
        self.line(Level::INFO, method, uri, |buf, paint| {
            buf.push(b' ');
            let mut digits = [0u8; 3];
            paint.field(buf, "status", status_digits(status, &mut digits));
            buf.push(b' ');
            paint.field_with(buf, "latency", |buf| debug_duration(buf, latency));
        });
    }
}

thread_local! {
    /// Each thread's line being formatted, reused.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// The `YYYY-MM-DDTHH:MM:SS` of the second last formatted.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

// The styles tracing-subscriber's `fmt` uses (nu-ansi-term's escapes).
const BOLD: &str = "\x1b[1m";
const DIMMED: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const GREEN: &str = "\x1b[32m";
const BLUE: &str = "\x1b[34m";
const RESET: &str = "\x1b[0m";

/// Terminal colours, or none.
struct Paint {
    ansi: bool,
}

impl Paint {
    fn wrap(&self, buf: &mut Vec<u8>, style: &str, inner: impl FnOnce(&mut Vec<u8>)) {
        if self.ansi {
            buf.extend_from_slice(style.as_bytes());
        }
        inner(buf);
        if self.ansi {
            buf.extend_from_slice(RESET.as_bytes());
        }
    }

    /// `name=value`, the name italic and the `=` dimmed on a terminal.
    fn field(&self, buf: &mut Vec<u8>, name: &str, value: &[u8]) {
        self.field_with(buf, name, |buf| buf.extend_from_slice(value));
    }

    fn field_with(&self, buf: &mut Vec<u8>, name: &str, value: impl FnOnce(&mut Vec<u8>)) {
        self.wrap(buf, ITALIC, |buf| buf.extend_from_slice(name.as_bytes()));
        self.wrap(buf, DIMMED, |buf| buf.push(b'='));
        value(buf);
    }
}

/// A status code's three digits.
fn status_digits(status: StatusCode, digits: &mut [u8; 3]) -> &[u8] {
    let code = status.as_u16();
    digits[0] = b'0' + (code / 100 % 10) as u8;
    digits[1] = b'0' + (code / 10 % 10) as u8;
    digits[2] = b'0' + (code % 10) as u8;
    &digits[..]
}

/// A duration as `{:?}` shows it (`412.5µs`, `1.234567ms`).
/// `d` as its `Debug` shows it (`412.5µs`, `1.02ms`, `3s`): the integer
/// part in the largest unit below `d` (s, ms, µs, ns), then the rest of
/// the nanoseconds as decimals without trailing zeros. Written by hand: the
/// formatting machinery was a third of the access line's cost (perf).
fn debug_duration(buf: &mut Vec<u8>, d: Duration) {
    let nanos = d.subsec_nanos();
    let (whole, mut fraction, mut divisor, unit): (u64, u32, u32, &str) = if d.as_secs() > 0 {
        (d.as_secs(), nanos, 100_000_000, "s")
    } else if nanos >= 1_000_000 {
        (
            u64::from(nanos / 1_000_000),
            nanos % 1_000_000,
            100_000,
            "ms",
        )
    } else if nanos >= 1_000 {
        (u64::from(nanos / 1_000), nanos % 1_000, 100, "µs")
    } else {
        (u64::from(nanos), 0, 1, "ns")
    };
    buf.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
    if fraction > 0 {
        buf.push(b'.');
        while fraction > 0 && divisor > 0 {
            buf.push(b'0' + (fraction / divisor) as u8);
            fraction %= divisor;
            divisor /= 10;
        }
    }
    buf.extend_from_slice(unit.as_bytes());
}

/// `now` as tracing-subscriber's default timer shows it:
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC, microseconds.
fn timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            *second = (secs, civil(secs));
        }
        buf.extend_from_slice(&second.1);
    });
    let micros = since.subsec_micros();
    let mut frac = [b'.', 0, 0, 0, 0, 0, 0, b'Z'];
    let mut rest = micros;
    for digit in frac[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    buf.extend_from_slice(&frac);
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` after the Unix epoch (UTC), by the
/// days-to-civil-date conversion of the proleptic Gregorian calendar.
fn civil(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    // Days since 0000-03-01, in 400-year eras of 146,097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let mut out = [0u8; 19];
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    for (at, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[at] = sep;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    fn time(micros: u64) -> String {
        let mut buf = Vec::new();
        timestamp(&mut buf, UNIX_EPOCH + Duration::from_micros(micros));
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn latencies_are_written_as_debug_writes_them() {
        let mut cases = vec![
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(999),
            Duration::from_nanos(1_000),
            Duration::from_nanos(1_001),
            Duration::from_nanos(412_500),
            Duration::from_nanos(999_999),
            Duration::from_millis(1),
            Duration::from_nanos(1_020_000),
            Duration::from_nanos(999_999_999),
            Duration::from_secs(1),
            Duration::new(3, 1),
            Duration::new(59, 500_000_000),
            Duration::new(u64::MAX, 999_999_999),
        ];
        // And a spread of others, by a fixed linear congruential sequence.
        let mut x: u64 = 12_345;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let nanos = (x >> 11) % 20_000_000_000;
            cases.push(Duration::from_nanos(nanos >> ((x >> 3) % 34)));
        }
        for d in cases {
            let mut ours = Vec::new();
            debug_duration(&mut ours, d);
            assert_eq!(String::from_utf8(ours).unwrap(), format!("{d:?}"), "{d:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(time(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(time(1_767_225_599_999_999), "2025-12-31T23:59:59.999999Z");
        assert_eq!(time(1_798_761_600_123_456), "2027-01-01T00:00:00.123456Z");
        assert_eq!(time(4_107_542_400_500_000), "2100-03-01T00:00:00.500000Z");
    }

    /// Every day from 1970 to 2200 against a calendar counted day by day.
    #[test]
    fn every_date_is_the_calendars() {
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for day in 0..(230 * 366) {
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let want = format!("{y:04}-{m:02}-{d:02}T23:59:58");
            assert_eq!(civil(day * 86_400 + 86_398), want.as_bytes(), "{want}");
            d += 1;
            if d > len {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
    }

    /// A writer collecting what it is given.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Collect {
        type Writer = Collect;
        fn make_writer(&'a self) -> Collect {
            self.clone()
        }
    }

    /// The lines tracing-subscriber's `fmt` writes for the span and events
    /// this module replaces (the `TraceLayer` the router had), without and
    /// with colours.
    fn theirs(ansi: bool, method: &Method, uri: &Uri, status: u16, latency: Duration) -> String {
        let out = Collect::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_ansi(ansi)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http", method = %method, path = %uri.path());
            let _in = span.enter();
            tracing::debug!(target: "webapp", "started");
            tracing::info!(target: "webapp", status = status, latency = ?latency, "done");
        });
        let text = out.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    fn ours(
        ansi: bool,
        method: &Method,
        uri: &Uri,
        status: StatusCode,
        latency: Duration,
    ) -> String {
        let out = Collect::default();
        let log = {
            let out = out.clone();
            AccessLog::new(
                LogOut::to(true, move |bytes| out.clone().write_all(bytes)),
                ansi,
            )
        };
        log.line(Level::DEBUG, method, uri, |_, _| {});
        log.done_line(method, uri, status, latency);
        let text = out.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    /// Each line without its timestamp (which differs), checked for shape.
    fn untimed(text: &str, ansi: bool) -> Vec<String> {
        let skip = if ansi { 4 + 27 + 4 } else { 27 };
        text.lines()
            .map(|line| {
                let stamp = &line[if ansi { 4 } else { 0 }..][..27];
                assert!(
                    stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'),
                    "{line:?}"
                );
                line[skip..].to_owned()
            })
            .collect()
    }

    #[test]
    fn lines_are_byte_for_byte_tracing_subscribers() {
        let cases = [
            (Method::GET, "/", 200, Duration::from_nanos(412_500)),
            (
                Method::GET,
                "/seq/7?x=1",
                404,
                Duration::from_nanos(1_234_567),
            ),
            (Method::POST, "/delay", 500, Duration::from_nanos(987)),
            (Method::HEAD, "/", 200, Duration::from_secs(3)),
            (
                Method::from_bytes(b"PURGE").unwrap(),
                "/a%20b",
                405,
                Duration::ZERO,
            ),
        ];
        for ansi in [false, true] {
            for (method, uri, status, latency) in &cases {
                let uri: Uri = uri.parse().unwrap();
                let status_code = StatusCode::from_u16(*status).unwrap();
                let want = theirs(ansi, method, &uri, *status, *latency);
                let got = ours(ansi, method, &uri, status_code, *latency);
                assert_eq!(untimed(&got, ansi), untimed(&want, ansi), "{got}\n{want}");
                assert_eq!(got.lines().count(), 2);
            }
        }
    }
}
