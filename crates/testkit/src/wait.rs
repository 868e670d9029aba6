//! Polling a condition up to a deadline: tests wait for what they need to
//! see, never for a fixed time.

use std::time::Duration;

/// A generous deadline for a loaded machine (CI, or five test suites on
/// two cores): a wait that hits it means "never".
pub const DEADLINE: Duration = Duration::from_secs(45);

/// The first pause between two polls; it doubles up to [`MAX_PAUSE`], so a
/// condition met at once costs little and a long wait polls calmly.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Polls `f` until it returns `Some`, or panics naming `what` once
/// `deadline` has passed. Measured on tokio's clock, so under paused time
/// the deadline is virtual too. How long it took goes to stderr (shown with
/// `--nocapture`: some reports quote these lines).
pub async fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = tokio::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(v) = f().await {
            eprintln!("[eventually] {what}: {:.1?}", start.elapsed());
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`eventually`] for a thread that may block (a plain `#[test]`, or
/// `spawn_blocking`).
pub fn eventually_blocking<T>(what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
    eventually_blocking_explained(what, deadline, String::new, f)
}

/// [`eventually_blocking`], adding `explain()` (logs, state so far) to the
/// panic when the deadline passes.
pub fn eventually_blocking_explained<T>(
    what: &str,
    deadline: Duration,
    explain: impl FnOnce() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(v) = f() {
            eprintln!("[eventually] {what}: {:.1?}", start.elapsed());
            return v;
        }
        if start.elapsed() >= deadline {
            panic!(
                "timed out after {deadline:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn async_waits_on_tokio_time() {
        let start = tokio::time::Instant::now();
        let mut n = 0;
        let got = eventually("the fifth poll", Duration::from_secs(5), async || {
            n += 1;
            (n == 5).then_some(n)
        })
        .await;
        assert_eq!(got, 5);
        // 10 + 20 + 40 + 80 ms of pauses, on the paused clock.
        assert_eq!(start.elapsed(), Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for never")]
    async fn async_panics_at_the_deadline() {
        eventually("never", Duration::from_secs(1), async || None::<()>).await;
    }

    #[test]
    fn blocking_returns_the_value() {
        let mut n = 0;
        let got = eventually_blocking("the third poll", DEADLINE, || {
            n += 1;
            (n == 3).then_some("done")
        });
        assert_eq!(got, "done");
    }

    #[test]
    #[should_panic(expected = "the logs so far")]
    fn blocking_explains_a_timeout() {
        eventually_blocking_explained(
            "never",
            Duration::from_millis(30),
            || "the logs so far".into(),
            || None::<()>,
        );
    }
}
