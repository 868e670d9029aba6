//! The lab's tasks, end to end, with real Docker, HAProxy, web apps and
//! Chromium: the same scenarios as `cargo xtask task N`, asserting every
//! check and writing the same deliverables.

use xtask::lab;

async fn run(n: u8) {
    let checks = lab::run_task(n, &lab::Options::default())
        .await
        .unwrap_or_else(|e| panic!("lab task {n} could not run: {e:#}"));
    println!("{checks}");
    assert!(checks.passed(), "lab task {n} failed:\n{checks}");
}

#[tokio::test(flavor = "multi_thread")]
async fn task0_static_haproxy_serves_s1_and_s2() {
    run(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task1_init_supervises_haproxy_and_the_web_apps() {
    run(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task2_agents_form_one_cluster_in_any_start_order() {
    run(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task3_handlers_record_joins_and_leaves() {
    run(3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task4_join_handler_renders_a_template() {
    run(4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task5_config_follows_the_backends_and_refuses_hostile_names() {
    run(5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task6_scaling_loses_no_request_with_the_reconciler() {
    run(6).await;
}

/// `cargo xtask chaos`, short: one minute of faults at random (the seed is
/// printed; `cargo xtask chaos --minutes 1 --seed S` replays it).
#[tokio::test(flavor = "multi_thread")]
async fn chaos_one_minute_of_random_faults_loses_no_request() {
    let checks = lab::chaos(&lab::ChaosOptions {
        minutes: 1,
        seed: None,
    })
    .await
    .unwrap_or_else(|e| panic!("the chaos scenario could not run: {e:#}"));
    println!("{checks}");
    assert!(checks.passed(), "the chaos scenario failed:\n{checks}");
}
