//! The same scenario as the fake suite, against a real cluster with Kata.
//! Ignored by default; run with
//! `KUBECONFIG=~/.kube/config cargo test -p godel-kube --test real_cluster -- --ignored`.
//! Optional: `GODEL_KUBE_RUNTIME_CLASS` (default `kata`), `GODEL_KUBE_IMAGE`,
//! `GODEL_KUBE_TEAM` (default `godel-e2e`; its namespace is left in place).

mod common;

use std::time::Duration;

use godel_core::RuntimeProvider;
use godel_kube::{KubeConfig, KubeProvider};

fn cfg() -> KubeConfig {
    let mut cfg = KubeConfig {
        kubeconfig: std::env::var_os("KUBECONFIG").map(Into::into),
        spawn_timeout: Duration::from_secs(300),
        ..Default::default()
    };
    if let Ok(rc) = std::env::var("GODEL_KUBE_RUNTIME_CLASS") {
        cfg.runtime_class = rc;
    }
    if let Ok(img) = std::env::var("GODEL_KUBE_IMAGE") {
        cfg.image = img;
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG"]
async fn scenario_against_real_cluster() {
    let (sink, events) = common::recorder();
    let provider = KubeProvider::new(cfg(), sink).await.unwrap();
    let a = provider.available().await;
    assert!(a.available, "cluster not usable: {}", a.reason);
    let team = std::env::var("GODEL_KUBE_TEAM").unwrap_or_else(|_| "godel-e2e".into());
    let dir = tempfile::tempdir().unwrap();
    common::scenario(&provider, &team, dir.path()).await;
    let phase = common::wait_event(&events, |e| e.kind == "pod_phase").await;
    assert!(phase.is_some(), "the watcher saw pod phases");
}
