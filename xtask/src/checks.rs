//! A scenario's checks: shown as they run (a progress line per step) and
//! summed up in a final pass/fail table.

use std::fmt;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub seconds: f64,
}

/// The ordered list of checks of one scenario run.
#[derive(Debug, Default)]
pub struct Checks {
    pub title: String,
    pub items: Vec<Check>,
    /// Files written as deliverables, relative to the workspace root.
    pub deliverables: Vec<String>,
}

impl Checks {
    pub fn new(title: impl Into<String>) -> Self {
        let title = title.into();
        eprintln!("== {title}");
        Checks {
            title,
            ..Default::default()
        }
    }

    /// Print a progress line for a step that is not a check.
    pub fn step(&self, what: &str) {
        eprintln!("   .. {what}");
    }

    /// Run one check; an `Err` fails it with the error as detail.
    pub async fn check<F, Fut>(&mut self, name: &str, f: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<String>>,
    {
        eprintln!("   [{}] {name} ...", self.items.len() + 1);
        let started = Instant::now();
        let result = f().await;
        let seconds = started.elapsed().as_secs_f64();
        let (passed, detail) = match result {
            Ok(detail) => (true, detail),
            Err(e) => (false, format!("{e:#}")),
        };
        eprintln!(
            "       {} {detail} ({seconds:.1} s)",
            if passed { "ok" } else { "FAILED" }
        );
        self.items.push(Check {
            name: name.into(),
            passed,
            detail,
            seconds,
        });
        passed
    }

    /// Record a deliverable written under the workspace root.
    pub fn deliverable(&mut self, path: &std::path::Path) {
        let root = crate::project::root();
        let shown = path.strip_prefix(&root).unwrap_or(path);
        self.deliverables.push(shown.display().to_string());
    }

    pub fn passed(&self) -> bool {
        !self.items.is_empty() && self.items.iter().all(|c| c.passed)
    }
}

impl fmt::Display for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .items
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(f, "\n{}", self.title)?;
        writeln!(f, "{:<width$}  result  detail", "check")?;
        for c in &self.items {
            writeln!(
                f,
                "{:<width$}  {:<6}  {}",
                c.name,
                if c.passed { "pass" } else { "FAIL" },
                c.detail
            )?;
        }
        if !self.deliverables.is_empty() {
            writeln!(f, "deliverables:")?;
            for d in &self.deliverables {
                writeln!(f, "  {d}")?;
            }
        }
        let failed = self.items.iter().filter(|c| !c.passed).count();
        write!(
            f,
            "{}: {} passed, {} failed",
            if self.passed() { "PASS" } else { "FAIL" },
            self.items.len() - failed,
            failed
        )
    }
}
