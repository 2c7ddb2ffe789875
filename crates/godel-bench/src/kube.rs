//! `godel bench kube`: spawn and exec latency of the kata provider against
//! the in-process fake API server. This measures godel's own overhead, not
//! Kubernetes or Kata: the fake admits pods in microseconds and runs them
//! at once, and it shares the CPU with the provider.
//!
//! Definition: **godel added latency per spawn** = the spawn's wall time
//! minus the time spent awaiting the API server (team set-up applies, the
//! pod create round trip, and the wait for Running). What remains is
//! godel's own work: validation, building the pod, bookkeeping, error
//! mapping, and scheduling between those steps. The create round trip and
//! the fake's own handling time are reported next to it, so kube-rs's and
//! the HTTP transport's share is visible too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use godel_core::{Error, ExecRequest, Result, RuntimeProvider, SpawnSpec};
use serde::{Deserialize, Serialize};

use godel_fake_kube::{FakeApiServer, FakeOptions};
use godel_kube::{KubeConfig, KubeProvider, TeamQuota};

use crate::LatencySummary;

/// What `run_benchmark` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub pods: usize,
    pub concurrency: usize,
    /// What is measured and how "added latency" is defined.
    pub definition: String,
    /// godel's added latency per spawn (see `definition`).
    pub spawn_added: LatencySummary,
    /// Wall time of each `spawn` call.
    pub spawn_total: LatencySummary,
    /// Client-observed pod create round trip (kube-rs + HTTP + the fake).
    pub create_round_trip: LatencySummary,
    /// The fake API server's own handling time of each pod create.
    pub server_create: LatencySummary,
    /// Round trip of `exec true` over the WebSocket exec API (includes
    /// starting a local process in the fake).
    pub exec: LatencySummary,
    pub errors: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_samples: Vec<String>,
    pub wall_seconds: f64,
    pub spawns_per_second: f64,
}

const DEFINITION: &str = "Against godel's in-process fake Kubernetes API server (loopback HTTP/WebSocket through kube-rs): this measures godel's own overhead, not Kubernetes or Kata. spawn_added = spawn wall time minus time awaiting the API server (team set-up applies, pod create round trip, wait for Running).";

/// Spawn `pods` agents with at most `concurrency` spawns in flight, exec in
/// some of them, and terminate them all.
pub async fn run_benchmark(pods: usize, concurrency: usize) -> Result<BenchReport> {
    let pods = pods.max(1);
    let concurrency = concurrency.clamp(1, pods);
    let fake = FakeApiServer::start(FakeOptions::default())
        .await
        .map_err(|e| Error::io("start the fake API server", &e))?;
    let provider = Arc::new(KubeProvider::with_client(
        fake.client()?,
        KubeConfig::default(),
        godel_core::null_sink(),
    )?);
    let n = pods as u64;
    provider.set_team_quota(
        "bench",
        TeamQuota {
            cpu: godel_core::Cpu(200 * n),
            memory: godel_core::ByteQuantity((128 << 20) * n),
            pods: 2 * pods as u32,
        },
    );
    provider.record_spawn_timings(true);
    let spec = SpawnSpec {
        team: Some("bench".into()),
        resources: godel_core::ResourceLimits {
            cpu: Some(godel_core::Cpu(100)),
            memory: Some(godel_core::ByteQuantity(64 << 20)),
            ..Default::default()
        },
        ..Default::default()
    };
    let started = Instant::now();
    let results: Vec<(String, Result<()>)> = futures::stream::iter(0..pods)
        .map(|i| {
            let (p, spec) = (provider.clone(), spec.clone());
            async move {
                let id = format!("rt-bench{i:08}");
                let r = tokio::spawn(async move {
                    let r = p.spawn(&id, &spec).await.map(|_| ());
                    (id, r)
                })
                .await;
                r.unwrap_or_else(|e| {
                    (
                        String::new(),
                        Err(Error::internal(format!("spawn task: {e}"))),
                    )
                })
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let mut errors = Vec::new();
    let mut ok_ids = Vec::new();
    for (id, r) in results {
        match r {
            Ok(()) => ok_ids.push(id),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let timings = provider.take_spawn_timings();
    let added: Vec<Duration> = timings
        .iter()
        .map(|t| t.total.saturating_sub(t.api_wait))
        .collect();
    let total: Vec<Duration> = timings.iter().map(|t| t.total).collect();
    let rtt: Vec<Duration> = timings.iter().map(|t| t.create_rtt).collect();
    let mut exec_times = Vec::new();
    for id in ok_ids.iter().take(200) {
        let t = Instant::now();
        match provider.exec_collect(id, ExecRequest::new(["true"])).await {
            Ok(o) if o.exit_code == 0 => exec_times.push(t.elapsed()),
            Ok(o) => errors.push(format!("exec in {id}: exit code {}", o.exit_code)),
            Err(e) => errors.push(format!("exec in {id}: {e}")),
        }
    }
    futures::stream::iter(ok_ids)
        .map(|id| {
            let p = provider.clone();
            async move {
                let _ = p.terminate(&id).await;
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    Ok(BenchReport {
        pods,
        concurrency,
        definition: DEFINITION.into(),
        spawn_added: LatencySummary::of(&added),
        spawn_total: LatencySummary::of(&total),
        create_round_trip: LatencySummary::of(&rtt),
        server_create: LatencySummary::of(&fake.create_times()),
        exec: LatencySummary::of(&exec_times),
        errors: errors.len(),
        error_samples: errors.into_iter().take(5).collect(),
        wall_seconds: wall.as_secs_f64(),
        spawns_per_second: pods as f64 / wall.as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_benchmark_runs_without_errors() {
        let r = run_benchmark(20, 10).await.unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.error_samples);
        assert_eq!(r.spawn_added.n, 20);
        assert_eq!(r.exec.n, 20);
        assert_eq!(r.server_create.n, 20);
    }
}
