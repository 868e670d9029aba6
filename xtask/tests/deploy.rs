//! The final stage deployed with `docker/compose.yaml`: with Debian's
//! docker-compose 1.29 (scaled up and down under load with no failed
//! request, gossip encrypted, a missing key refused with a clear message,
//! the explicit unencrypted mode), and as a stack on a single-node swarm
//! (scaled to 5 and 2, HAProxy following).

/// One scenario at a time: both build on the same images and cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn compose_scales_under_load_with_encrypted_gossip() {
    let _one = SERIAL.lock().await;
    let checks = xtask::deploy::compose()
        .await
        .unwrap_or_else(|e| panic!("the compose scenario could not run: {e:#}"));
    println!("{checks}");
    assert!(checks.passed(), "compose scenario failed:\n{checks}");
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_stack_follows_the_web_app_service() {
    let _one = SERIAL.lock().await;
    let checks = xtask::deploy::swarm()
        .await
        .unwrap_or_else(|e| panic!("the swarm scenario could not run: {e:#}"));
    println!("{checks}");
    assert!(checks.passed(), "swarm scenario failed:\n{checks}");
}
