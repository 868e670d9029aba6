//! The final stage deployed with `docker/compose.yaml` (Debian's
//! docker-compose 1.29 here): scaled up and down under load with no failed
//! request, gossip encrypted, a missing key refused with a clear message.

#[tokio::test(flavor = "multi_thread")]
async fn compose_scales_under_load_with_encrypted_gossip() {
    let checks = xtask::deploy::compose()
        .await
        .unwrap_or_else(|e| panic!("the compose scenario could not run: {e:#}"));
    println!("{checks}");
    assert!(checks.passed(), "compose scenario failed:\n{checks}");
}
