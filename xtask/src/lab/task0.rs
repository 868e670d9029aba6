//! Task 0, the baseline: HAProxy with a static configuration listing s1 and
//! s2 (their addresses patched in by the start script), two web apps, the
//! `heig` network. Deliverables: the stats page with both backends UP,
//! `docker ps` and `docker inspect` of each container.

use anyhow::Result;

use super::baseline::{check_serving, save_ps_and_inspect, screenshot_stats, start_stack};
use super::Options;
use crate::checks::Checks;

pub async fn task0(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 0: static HAProxy in front of s1 and s2");
    let lab = start_stack(&checks, 0).await?;
    check_serving(&mut checks, &lab).await?;
    screenshot_stats(&mut checks, &lab, "task0-stats.png").await?;
    save_ps_and_inspect(&mut checks, 0, &["ha", "s1", "s2"]).await?;
    lab.teardown(opts).await?;
    Ok(checks)
}
