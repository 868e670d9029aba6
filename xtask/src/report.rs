//! `cargo xtask report`: the lab report's evidence, refreshed and checked.
//! It runs every lab task (which rewrites `logs/task_N/` and the
//! screenshots in `report/assets/`), then checks `report/README.md`: every
//! relative link points to a file that exists, and every file under `logs/`
//! and `report/assets/` is linked from the report at least once.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::project;

/// The report, relative to the project root.
pub const REPORT: &str = "report/README.md";
/// Folders (relative to the root) whose every file the report must link.
pub const EVIDENCE: [&str; 2] = ["logs", "report/assets"];

/// A relative link of a Markdown text: its target (without `#fragment` or
/// title) and the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub line: usize,
    pub target: String,
}

/// Every relative link target of a Markdown text: inline links
/// `[text](target)` and images `![alt](target "title")`. External links
/// (`scheme:` such as http, https, mailto) and in-page anchors (`#...`) are
/// left out; a `#fragment` is cut off; `<target>` brackets are removed.
pub fn relative_links(markdown: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut in_code_block = false;
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            rest = &after[end + 1..];
            let mut target = after[..end].trim();
            // An optional title: `target "title"`.
            if let Some((t, _title)) = target.split_once(char::is_whitespace) {
                target = t;
            }
            let target = target.trim_start_matches('<').trim_end_matches('>');
            let target = target.split('#').next().unwrap_or_default();
            let external = target
                .split_once(':')
                .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'));
            if target.is_empty() || external {
                continue;
            }
            links.push(Link {
                line: i + 1,
                target: target.to_string(),
            });
        }
    }
    links
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            files_under(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Check the report at `report` against the project at `root`: every
/// relative link resolves to an existing file or folder, and every file
/// under the `evidence` folders is linked. One error lists every problem.
pub fn check_links(root: &Path, report: &Path, evidence: &[&str]) -> Result<usize> {
    let text =
        std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let base = report.parent().context("the report has no folder")?;
    let mut problems = Vec::new();
    let mut linked = BTreeSet::new();
    let links = relative_links(&text);
    for link in &links {
        let path = base.join(&link.target);
        match path.canonicalize() {
            Ok(p) => {
                linked.insert(p);
            }
            Err(_) => problems.push(format!(
                "line {}: {} does not exist",
                link.line, link.target
            )),
        }
    }
    for dir in evidence {
        let mut files = Vec::new();
        let dir = root.join(dir);
        if dir.exists() {
            files_under(&dir, &mut files)?;
        }
        files.sort();
        for f in files {
            let canon = f.canonicalize()?;
            if !linked.contains(&canon) {
                let shown = f.strip_prefix(root).unwrap_or(&f);
                problems.push(format!("{} is not linked from the report", shown.display()));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: {} problem(s):\n  {}",
            report.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(links.len())
}

/// The check on this project's report.
pub fn check_project_report() -> Result<usize> {
    let root = project::root();
    check_links(&root, &root.join(REPORT), &EVIDENCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(md: &str) -> Vec<(usize, String)> {
        relative_links(md)
            .into_iter()
            .map(|l| (l.line, l.target))
            .collect()
    }

    #[test]
    fn inline_links_and_images_are_found_with_their_lines() {
        let md = "# T\nSee [ps](../logs/task_0/docker-ps.txt) and\n![stats](assets/a.png \"Stats\") [two](b.md#part)[three](<c d.txt>)\n";
        assert_eq!(
            targets(md),
            vec![
                (2, "../logs/task_0/docker-ps.txt".to_string()),
                (3, "assets/a.png".to_string()),
                (3, "b.md".to_string()),
                (3, "c".to_string()),
            ]
        );
    }

    #[test]
    fn external_links_anchors_and_code_blocks_are_ignored() {
        let md = "[a](https://haproxy.org/) [b](mailto:x@y) [c](#task-1) [d](http://127.0.0.1:1936/)\n```\n[e](not/a/link)\n```\n[f](ok.txt)";
        assert_eq!(targets(md), vec![(5, "ok.txt".to_string())]);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("report/assets")).unwrap();
        std::fs::create_dir_all(dir.join("logs/task_0")).unwrap();
        std::fs::write(dir.join("logs/task_0/ps.txt"), "ps").unwrap();
        std::fs::write(dir.join("report/assets/a.png"), "png").unwrap();
        dir
    }

    #[test]
    fn a_complete_report_passes() {
        let dir = scratch("ok");
        let report = dir.join("report/README.md");
        std::fs::write(&report, "[ps](../logs/task_0/ps.txt)\n![a](assets/a.png)\n").unwrap();
        assert_eq!(check_links(&dir, &report, &EVIDENCE).unwrap(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_target_is_reported_with_its_line() {
        let dir = scratch("missing");
        let report = dir.join("report/README.md");
        std::fs::write(
            &report,
            "[ps](../logs/task_0/ps.txt)\n![a](assets/a.png)\n\n[gone](../logs/task_9/x.txt)\n",
        )
        .unwrap();
        let err = format!("{:#}", check_links(&dir, &report, &EVIDENCE).unwrap_err());
        assert!(
            err.contains("line 4: ../logs/task_9/x.txt does not exist"),
            "{err}"
        );
        assert!(err.contains("1 problem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unlinked_deliverable_is_reported() {
        let dir = scratch("unlinked");
        let report = dir.join("report/README.md");
        std::fs::write(&report, "[ps](../logs/task_0/ps.txt)\n").unwrap();
        let err = format!("{:#}", check_links(&dir, &report, &EVIDENCE).unwrap_err());
        assert!(
            err.contains("report/assets/a.png is not linked from the report"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The committed report: every link holds, every deliverable is linked.
    #[test]
    fn the_projects_report_links_hold() {
        check_project_report().unwrap();
    }
}
