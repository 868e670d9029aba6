//! The report's charts, drawn as SVG (plotters) from measured data that is
//! committed next to each chart: the task 6 timeline per mechanism, memory
//! of our parts next to their peers, and the gossip "seen by all"
//! distributions of the 200-agent group. `cargo xtask charts` redraws every
//! chart from the JSON files under report/assets/; the task and the benches
//! write the JSON (and draw) when they run.

use anyhow::{bail, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::lab::load::Timeline;
use crate::project;

/// Where the bench groups' rows are kept for the charts, one JSON per group.
pub fn bench_dir() -> Result<PathBuf> {
    let dir = project::report_assets()?.join("bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The task 6 timeline's data: one run per mechanism, in the order drawn.
pub const TIMELINE: &str = "task6-timeline";
/// RSS rows of the bench groups, ours next to the peer.
pub const MEMORY: &str = "memory";
/// The 200-agent group's per-agent "seen by all" times, ours and serf's.
pub const SEEN: &str = "gossip-seen";

/// Per-agent times of one kind of agent in the 200-agent group, in seconds
/// (as `cargo xtask bench scale` writes them); None (null) for an agent
/// that had not got there within the step's limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SeenSamples {
    pub join_all_alive_s: Vec<Option<f64>>,
    pub user_event_handler_s: Vec<Option<f64>>,
    pub leave_seen_left_s: Vec<Option<f64>>,
    pub kill_seen_failed_s: Vec<Option<f64>>,
}

/// The 200-agent group's samples, ours and serf's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Seen {
    pub agents: usize,
    pub ours: SeenSamples,
    pub serf: SeenSamples,
}

/// One run of task 6's sequence as the load saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineRun {
    /// The setup, as the task names it ("(a) lab: round robin, in-memory").
    pub setup: String,
    pub timeline: Timeline,
}

/// The rows of one bench group, as written by `cargo xtask bench`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRows {
    pub group: String,
    pub rows: Vec<crate::bench::Row>,
}

/// Redraw every chart whose data is under report/assets/; the charts drawn.
pub fn redraw_all() -> Result<Vec<PathBuf>> {
    let assets = project::report_assets()?;
    let mut drawn = Vec::new();
    let timeline = assets.join(format!("{TIMELINE}.json"));
    if timeline.exists() {
        let runs: Vec<TimelineRun> = read_json(&timeline)?;
        drawn.push(draw_timeline(&runs, &timeline.with_extension("svg"))?);
    }
    let seen = assets.join(format!("{SEEN}.json"));
    if seen.exists() {
        let data: Seen = read_json(&seen)?;
        drawn.push(draw_seen(&data, &seen.with_extension("svg"))?);
    }
    let groups = bench_groups()?;
    if !groups.is_empty() {
        drawn.push(draw_memory(
            &groups,
            &bench_dir()?.join(format!("{MEMORY}.svg")),
        )?);
    }
    Ok(drawn)
}

/// Write the runs' timelines next to their chart, and draw it.
pub fn save_timeline(runs: &[TimelineRun]) -> Result<PathBuf> {
    let json = project::report_assets()?.join(format!("{TIMELINE}.json"));
    std::fs::write(&json, serde_json::to_string(runs)? + "\n")?;
    draw_timeline(runs, &json.with_extension("svg"))
}

/// Keep one bench group's rows for the charts (replacing the group's last
/// run), and redraw the memory chart from every group kept.
pub fn save_group(group: &str, rows: &[crate::bench::Row]) -> Result<()> {
    let dir = bench_dir()?;
    let data = GroupRows {
        group: group.to_string(),
        rows: rows.to_vec(),
    };
    std::fs::write(
        dir.join(format!("{group}.json")),
        serde_json::to_string_pretty(&data)? + "\n",
    )?;
    draw_memory(&bench_groups()?, &dir.join(format!("{MEMORY}.svg")))?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not the expected JSON", path.display()))
}

/// Every group kept under report/assets/bench/, by name.
fn bench_groups() -> Result<Vec<GroupRows>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bench_dir()?)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files.iter().map(|p| read_json(p)).collect()
}

const FONT: &str = "sans-serif";
const ANSWERED: RGBColor = RGBColor(46, 125, 50);
const FAILED: RGBColor = RGBColor(198, 40, 40);
const NO_ANSWER: RGBColor = RGBColor(120, 120, 120);
const OURS: RGBColor = RGBColor(21, 101, 192);
const PEER: RGBColor = RGBColor(239, 108, 0);

/// One panel per run, on the same request axis (each on its own time axis:
/// the runs differ in length): requests answered, failed, and without an
/// answer while ha restarted, per bucket; each marked event a dashed line
/// with its name.
pub fn draw_timeline(runs: &[TimelineRun], out: &Path) -> Result<PathBuf> {
    if runs.is_empty() {
        bail!("no run to draw in {}", out.display());
    }
    let bucket = runs[0].timeline.bucket_ms.max(1) as f64 / 1000.0;
    // Each run's own length: the final stage's run is several times longer
    // (screenshots at every step, the balancer's restarts), and on one time
    // axis the lab's run would be squeezed into its first tenth.
    let length = |t: &Timeline| {
        let last_mark = t.marks.iter().map(|m| m.0).fold(0.0, f64::max);
        (t.answered.len() as f64 * bucket)
            .max(last_mark)
            .max(1.0)
            .ceil()
    };
    let top = runs
        .iter()
        .flat_map(|r| {
            let t = &r.timeline;
            t.answered.iter().chain(&t.failed).chain(&t.no_answer)
        })
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let height = 300 * runs.len() as u32;
    let root = SVGBackend::new(out, (1200, height)).into_drawing_area();
    root.fill(&WHITE)?;
    for (run, area) in runs.iter().zip(root.split_evenly((runs.len(), 1))) {
        let t = &run.timeline;
        let seconds = length(t);
        let failed: u64 = t.failed.iter().sum();
        let caption = format!(
            "{}: {} answered, {} failed, {} without an answer while ha restarted",
            run.setup,
            t.answered.iter().sum::<u64>(),
            failed,
            t.no_answer.iter().sum::<u64>()
        );
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, (FONT, 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..seconds, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the load started")
            .y_desc(format!("requests per {} ms", t.bucket_ms))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .draw()?;
        let series = |v: &[u64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, n)| (i as f64 * bucket, *n as f64))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(
                series(&t.answered),
                ANSWERED.stroke_width(1),
            ))?
            .label("answered")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], ANSWERED.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                series(&t.no_answer),
                NO_ANSWER.stroke_width(1),
            ))?
            .label("no answer, ha restarting")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], NO_ANSWER.stroke_width(2)));
        // Failures are few against hundreds answered: a bar per bucket that
        // had any, at least 6 % of the axis high, with its count over it,
        // so that one failed request is seen at this scale.
        let failures: Vec<(f64, u64)> = t
            .failed
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (i as f64 * bucket, *n))
            .collect();
        let width = bucket.max(seconds / 400.0);
        let height = |n: u64| (n as f64).max(top * 0.06);
        chart
            .draw_series(failures.iter().map(|(x, n)| {
                Rectangle::new([(*x, 0.0), (x + width, height(*n))], FAILED.filled())
            }))?
            .label("failed (count over the bar)")
            .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], FAILED.filled()));
        chart.draw_series(failures.iter().map(|(x, n)| {
            Text::new(
                n.to_string(),
                (*x, height(*n) + top * 0.02),
                (FONT, 11).into_font().color(&FAILED),
            )
        }))?;
        for (at, what) in &t.marks {
            chart.draw_series(DashedLineSeries::new(
                [(*at, 0.0), (*at, top)],
                4,
                3,
                BLACK.mix(0.35).stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                what.clone(),
                (*at, top * 0.98),
                (FONT, 11)
                    .into_font()
                    .transform(FontTransform::Rotate90)
                    .color(&BLACK.mix(0.7)),
            )))?;
        }
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(out.to_path_buf())
}

/// RSS rows (unit KiB or MiB, "RSS" in the metric) of every group: ours
/// and the peer side by side, one bar pair per row, on a log axis in KiB
/// (a supervisor of 0.5 MiB and a web app of 80 MiB on one chart).
pub fn draw_memory(groups: &[GroupRows], out: &Path) -> Result<PathBuf> {
    let bars: Vec<(String, f64, f64, String)> = groups
        .iter()
        .flat_map(|g| g.rows.iter().map(move |r| (g, r)))
        .filter(|(_, r)| r.metric.contains("RSS"))
        .filter_map(|(g, r)| {
            let scale = match r.unit.as_str() {
                "KiB" => 1.0,
                "MiB" => 1024.0,
                _ => return None,
            };
            Some((
                format!("{}: {}", g.group, r.metric),
                r.ours * scale,
                r.peer * scale,
                r.peer_name.clone(),
            ))
        })
        .collect();
    if bars.is_empty() {
        bail!("no RSS row in report/assets/bench/ to draw");
    }
    // Room on the right for the value written after the longest bar.
    let max = bars.iter().map(|b| b.1.max(b.2)).fold(1.0, f64::max) * 5.0;
    let min = bars
        .iter()
        .map(|b| b.1.min(b.2))
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        / 2.0;
    let n = bars.len();
    let root = SVGBackend::new(out, (1200, 120 + 48 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Resident memory, ours next to the peer (KiB, log scale)",
            (FONT, 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(460)
        .build_cartesian_2d((min..max).log_scale(), 0f64..n as f64)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (n as f64 - y - 0.5).round();
            if (n as f64 - y - 0.5 - i).abs() < 0.01 && i >= 0.0 && (i as usize) < n {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("KiB")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 12))
        .draw()?;
    for (i, (_, ours, peer, peer_name)) in bars.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        chart.draw_series([
            Rectangle::new([(min, y + 0.52), (*ours, y + 0.88)], OURS.filled()),
            Rectangle::new([(min, y + 0.12), (*peer, y + 0.48)], PEER.filled()),
        ])?;
        chart.draw_series([
            Text::new(
                format!("ours {}", kib(*ours)),
                (*ours * 1.05, y + 0.62),
                (FONT, 11).into_font(),
            ),
            Text::new(
                format!("{peer_name} {}", kib(*peer)),
                (*peer * 1.05, y + 0.22),
                (FONT, 11).into_font(),
            ),
        ])?;
    }
    root.present()?;
    Ok(out.to_path_buf())
}

/// Four panels (join, user event, graceful leave, kill -9): for each, the
/// share of agents (y) that had seen it after t seconds (x), ours and
/// serf's: the whole distribution, not just its median.
pub fn draw_seen(data: &Seen, out: &Path) -> Result<PathBuf> {
    type Times<'a> = &'a [Option<f64>];
    let panels: [(&str, Times, Times); 4] = [
        (
            "join: every agent lists all alive (since all started)",
            &data.ours.join_all_alive_s,
            &data.serf.join_all_alive_s,
        ),
        (
            "user event: the handler ran (since sent)",
            &data.ours.user_event_handler_s,
            &data.serf.user_event_handler_s,
        ),
        (
            "graceful leave: listed left (since SIGINT)",
            &data.ours.leave_seen_left_s,
            &data.serf.leave_seen_left_s,
        ),
        (
            "kill -9: listed failed (since the kill)",
            &data.ours.kill_seen_failed_s,
            &data.serf.kill_seen_failed_s,
        ),
    ];
    if panels.iter().all(|(_, o, s)| o.is_empty() && s.is_empty()) {
        bail!("no sample to draw in {}", out.display());
    }
    let root = SVGBackend::new(out, (1200, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(36);
    title.titled(
        &format!(
            "{} agents on loopback: share of agents that had seen it, ours and serf 0.9.4's",
            data.agents
        ),
        (FONT, 18),
    )?;
    for ((what, ours, serf), area) in panels.iter().zip(body.split_evenly((2, 2))) {
        let right = ours
            .iter()
            .chain(serf.iter())
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(0.01)
            * 1.05;
        let mut chart = ChartBuilder::on(&area)
            .caption(*what, (FONT, 14))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..right, 0f64..1.0)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("share of agents")
            .y_label_formatter(&|v| format!("{:.0} %", v * 100.0))
            .light_line_style(WHITE)
            .draw()?;
        for (samples, color, name) in [(ours, OURS, "ours"), (serf, PEER, "serf")] {
            let mut v: Vec<f64> = samples
                .iter()
                .flatten()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(f64::total_cmp);
            // Out of all agents, those that never got there included: the
            // curve then stops short of 100 %.
            let n = samples.len() as f64;
            // A step per sample: after v[i] seconds, (i + 1) / n had seen it.
            let mut points = vec![(0.0, 0.0)];
            for (i, t) in v.iter().enumerate() {
                points.push((*t, i as f64 / n));
                points.push((*t, (i + 1) as f64 / n));
            }
            let median = v[v.len() / 2];
            let max = v[v.len() - 1];
            let label = if v.len() == samples.len() {
                format!(
                    "{name}: median {median:.2} s, max {max:.2} s, n = {}",
                    v.len()
                )
            } else {
                format!(
                    "{name}: {} of {} within the limit; of those median {median:.2} s, max {max:.2} s",
                    v.len(),
                    samples.len()
                )
            };
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(out.to_path_buf())
}

/// Write the 200-agent group's samples next to their chart, and draw it.
pub fn save_seen(data: &Seen) -> Result<PathBuf> {
    let json = project::report_assets()?.join(format!("{SEEN}.json"));
    std::fs::write(&json, serde_json::to_string(data)? + "\n")?;
    draw_seen(data, &json.with_extension("svg"))
}

/// The series' names in a box at the lower right.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}

fn kib(v: f64) -> String {
    if v >= 10240.0 {
        format!("{:.1} MiB", v / 1024.0)
    } else {
        format!("{v:.0} KiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(answered: &[u64], failed: &[u64], marks: &[(f64, &str)]) -> Timeline {
        Timeline {
            bucket_ms: 250,
            answered: answered.to_vec(),
            failed: failed.to_vec(),
            no_answer: vec![0; answered.len()],
            marks: marks.iter().map(|(t, m)| (*t, m.to_string())).collect(),
        }
    }

    #[test]
    fn the_timeline_has_a_panel_per_run_with_its_marks_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let runs = [
            TimelineRun {
                setup: "(a) lab".into(),
                timeline: timeline(&[40, 38, 0, 41], &[0, 2, 9, 0], &[(0.3, "start s3")]),
            },
            TimelineRun {
                setup: "(c) reconciler".into(),
                timeline: timeline(
                    &[40, 40, 40, 40, 40],
                    &[0; 5],
                    &[(0.6, "docker restart ha")],
                ),
            },
        ];
        let svg = draw_timeline(&runs, &dir.path().join("t.svg")).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
        for expected in [
            "(a) lab: 119 answered, 11 failed, 0 without an answer while ha restarted",
            "(c) reconciler: 200 answered, 0 failed",
            "start s3",
            "docker restart ha",
            "requests per 250 ms",
        ] {
            assert!(text.contains(expected), "{expected:?} missing");
        }
    }

    #[test]
    fn the_seen_chart_draws_both_distributions_of_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let samples = |base: f64| SeenSamples {
            join_all_alive_s: vec![Some(base), Some(base * 2.0), Some(base * 3.0)],
            user_event_handler_s: vec![Some(base / 10.0); 4],
            leave_seen_left_s: vec![],
            kill_seen_failed_s: vec![Some(base * 5.0), None],
        };
        let data = Seen {
            agents: 200,
            ours: samples(1.0),
            serf: samples(2.0),
        };
        let svg = draw_seen(&data, &dir.path().join("s.svg")).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        for expected in [
            "200 agents on loopback",
            "ours: median 2.00 s, max 3.00 s, n = 3",
            "serf: median 4.00 s, max 6.00 s, n = 3",
            "ours: 1 of 2 within the limit; of those median 5.00 s, max 5.00 s",
            "graceful leave",
        ] {
            assert!(text.contains(expected), "{expected:?} missing");
        }
        let e = draw_seen(&Seen::default(), &dir.path().join("e.svg")).unwrap_err();
        assert!(e.to_string().contains("no sample"), "{e}");
    }

    #[test]
    fn memory_draws_rss_rows_only_and_says_when_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let row = |metric: &str, unit: &str, ours: f64, peer: f64| {
            crate::bench::row(metric, unit, ours, peer, "serf", "goal", true)
        };
        let groups = [GroupRows {
            group: "gossip".into(),
            rows: vec![
                row("agent RSS idle, 2 members", "KiB", 2634.0, 11870.0),
                row("join seen by a peer", "s", 0.01, 0.03),
                row("RSS after the load", "MiB", 84.5, 187.1),
            ],
        }];
        let svg = draw_memory(&groups, &dir.path().join("m.svg")).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.contains("gossip: agent RSS idle, 2 members"));
        assert!(text.contains("ours 2634 KiB") && text.contains("serf 11.6 MiB"));
        assert!(text.contains("ours 84.5 MiB") && text.contains("serf 187.1 MiB"));
        assert!(!text.contains("join seen"), "a time row drawn as memory");
        let only_times = [GroupRows {
            group: "gossip".into(),
            rows: vec![row("join seen by a peer", "s", 0.01, 0.03)],
        }];
        let e = draw_memory(&only_times, &dir.path().join("n.svg")).unwrap_err();
        assert!(e.to_string().contains("no RSS row"), "{e}");
    }
}
