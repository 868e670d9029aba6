//! Where the log lines go: stdout, through one shared buffer written out
//! when it fills, every [`FLUSH_EVERY`] and at exit, instead of one
//! `write(2)` per line.
//!
//! The access log writes a line per request; a write to stdout per line was
//! 11 % of the web app's CPU under wrk (perf, see the README's "Speed").
//! One buffer under one lock keeps the lines in the order they were logged
//! (each line is appended whole, and written out in buffer order), and the
//! last ones are written when the [`Flushing`] guard of `main` is dropped,
//! after the server has drained: nothing logged before a SIGTERM exit is
//! lost. A terminal gets every line at once, as before.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits in the buffer (`docker logs -f` sees it at most
/// this late).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Written out at once past this size.
const FLUSH_AT: usize = 32 * 1024;

/// The log's writer for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Clone)]
pub struct LogOut {
    shared: Arc<Shared>,
}

/// Where the buffer is written out (stdout; the tests collect it).
type Out = Box<dyn Fn(&[u8]) -> io::Result<()> + Send + Sync>;

struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// Write every line at once (stdout is a terminal).
    each_line: bool,
    out: Out,
}

impl LogOut {
    /// Lines to this process's stdout: buffered unless it is a terminal.
    pub fn stdout() -> Self {
        let each_line = io::stdout().is_terminal();
        Self::to(each_line, |bytes| {
            let mut out = io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()
        })
    }

    /// Lines to `out`, each written at once if `each_line`.
    pub fn to(
        each_line: bool,
        out: impl Fn(&[u8]) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        LogOut {
            shared: Arc::new(Shared {
                buffer: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
                each_line,
                out: Box::new(out),
            }),
        }
    }

    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while appending leaves whole lines before it: keep them.
        self.shared.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        let mut buffer = self.buffer();
        self.write_out(&mut buffer);
    }

    /// Writes `buffer` out, under its lock (so that lines stay in order),
    /// and empties it. A failed write drops the lines, as `println!` to a
    /// closed stdout would not be retried either.
    fn write_out(&self, buffer: &mut Vec<u8>) {
        if !buffer.is_empty() {
            let _ = (self.shared.out)(buffer);
            buffer.clear();
        }
    }

    /// Appends `line` (whole lines, each ending in a newline) as one piece;
    /// the access log's way in, beside tracing's ([`MakeWriter`]).
    pub fn write_line(&self, line: &[u8]) {
        let mut buffer = self.buffer();
        buffer.extend_from_slice(line);
        if self.shared.each_line || buffer.len() >= FLUSH_AT {
            self.write_out(&mut buffer);
        }
    }

    /// Flushes every [`FLUSH_EVERY`] until the returned guard is dropped,
    /// and once more then.
    pub fn flushing(&self) -> Flushing {
        let log = self.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                log.flush();
            }
        });
        Flushing {
            log: self.clone(),
            ticker,
        }
    }
}

/// Flushes the log on a timer; dropped, writes out the rest.
pub struct Flushing {
    log: LogOut,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for Flushing {
    fn drop(&mut self) {
        self.ticker.abort();
        self.log.flush();
    }
}

/// One formatted event, appended to the buffer as one piece.
pub struct Line<'a> {
    log: &'a LogOut,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.log.write_line(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogOut {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { log: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collecting(each_line: bool) -> (LogOut, Arc<Mutex<Vec<Vec<u8>>>>) {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let seen = writes.clone();
        let log = LogOut::to(each_line, move |bytes| {
            seen.lock().unwrap().push(bytes.to_vec());
            Ok(())
        });
        (log, writes)
    }

    #[test]
    fn lines_wait_for_a_flush_and_keep_their_order() {
        let (log, writes) = collecting(false);
        for i in 0..100 {
            writeln!(log.make_writer(), "line {i}").unwrap();
        }
        assert!(writes.lock().unwrap().is_empty());
        log.flush();
        let writes = writes.lock().unwrap();
        assert_eq!(writes.len(), 1);
        let text = String::from_utf8(writes[0].clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let (log, writes) = collecting(false);
        let line = "x".repeat(1000) + "\n";
        for _ in 0..(FLUSH_AT / line.len() + 1) {
            log.make_writer().write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(writes.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_terminal_gets_every_line_at_once() {
        let (log, writes) = collecting(true);
        log.make_writer().write_all(b"one\n").unwrap();
        log.make_writer().write_all(b"two\n").unwrap();
        assert_eq!(
            *writes.lock().unwrap(),
            [b"one\n".to_vec(), b"two\n".to_vec()]
        );
    }

    #[tokio::test]
    async fn the_timer_flushes_and_the_guard_writes_the_rest() {
        let (log, writes) = collecting(false);
        let guard = log.flushing();
        log.make_writer().write_all(b"early\n").unwrap();
        tokio::time::sleep(FLUSH_EVERY * 3).await;
        assert_eq!(*writes.lock().unwrap(), [b"early\n".to_vec()]);
        log.make_writer().write_all(b"last\n").unwrap();
        drop(guard);
        assert_eq!(writes.lock().unwrap().last().unwrap(), b"last\n");
    }
}
