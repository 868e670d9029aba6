//! The lab layer on testcontainers: what a scenario starts publishes on
//! 127.0.0.1 only, and is removed when the scenario ends early (the
//! handles' drop), so a failed run leaks no container.

use xtask::{engine, images, lab};

#[tokio::test(flavor = "multi_thread")]
async fn a_scenario_that_stops_half_way_leaves_no_container_and_publishes_on_loopback_only() {
    images::ensure_images(0)
        .await
        .unwrap_or_else(|e| panic!("building the images: {e:#}"));
    let ids = {
        let mut lab = lab::Lab::new().await.expect("a lab");
        lab.start(lab::Spec {
            image: "webapp",
            stage: 0,
            name: "s1",
            ..Default::default()
        })
        .await
        .expect("s1 starts");
        lab.start(lab::ha_spec(0, "lab")).await.expect("ha starts");
        let ha = engine::inspect("ha").await.expect("inspect ha");
        let ports = ha
            .network_settings
            .and_then(|s| s.ports)
            .unwrap_or_default();
        let bound: Vec<(String, String)> = ports
            .iter()
            .flat_map(|(port, b)| {
                b.iter()
                    .flatten()
                    .map(move |b| (port.clone(), b.host_ip.clone().unwrap_or_default()))
            })
            .collect();
        assert!(!bound.is_empty(), "ha publishes nothing: {ports:?}");
        assert!(
            bound.iter().all(|(_, ip)| ip == "127.0.0.1"),
            "ha publishes beyond loopback: {bound:?}"
        );
        let s1 = engine::inspect("s1").await.expect("inspect s1");
        let s1_bound = s1
            .network_settings
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .values()
            .flatten()
            .flatten()
            .count();
        assert_eq!(s1_bound, 0, "a web app publishes a port");
        let ids = engine::labelled("ait.lab").await.expect("list");
        assert_eq!(ids.len(), 2, "the lab's label is on both containers");
        ids
        // `lab` is dropped here, as when a scenario returns an error.
    };
    for id in ids {
        let gone = engine::inspect(&id).await.is_err();
        assert!(gone, "container {id} outlived the scenario's Lab");
    }
}
