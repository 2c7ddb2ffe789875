//! Recent activity the store does not keep, held in memory for the
//! dashboard and scripts: the last commands run in each sandbox (argv, exit
//! code, duration), resource-usage samples of each sandbox (one per status
//! read, so a watched agent gets a sample every poll), and spawn outcomes of
//! the last hour (spawn and error rates). Bounded: [`EXECS_KEPT`] commands
//! and [`SAMPLES_KEPT`] samples per sandbox, [`SANDBOXES_KEPT`] sandboxes
//! (the least recently touched are forgotten first). Lost at a restart: the
//! durable record of a sandbox is its events and its usage rows.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use godel_core::{ExecEvent, ExecHandle, ResourceUsage};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Commands remembered per sandbox.
pub const EXECS_KEPT: usize = 50;
/// Usage samples remembered per sandbox.
pub const SAMPLES_KEPT: usize = 360;
/// Sandboxes remembered at most.
pub const SANDBOXES_KEPT: usize = 4096;
/// How far back spawn outcomes are kept.
const SPAWN_WINDOW: Duration = Duration::from_secs(3600);
/// Spawn outcomes kept at most (a burst beyond it forgets the oldest).
const SPAWNS_KEPT: usize = 100_000;

/// One command run in a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRecord {
    pub started_at: DateTime<Utc>,
    pub cmd: Vec<String>,
    /// Unset while it runs (or when its output was never read to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub timed_out: bool,
    /// Why it failed after it started (the runtime died, the channel broke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Resource usage of a sandbox at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    pub at: DateTime<Utc>,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u64,
}

/// Spawns of the last `window_secs` seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnRates {
    pub window_secs: u64,
    pub ok: u64,
    pub error: u64,
    /// Spawns (both outcomes) per minute over the window.
    pub per_minute: f64,
    /// `error / (ok + error)`, 0 when there were none.
    pub error_rate: f64,
}

#[derive(Default)]
struct PerSandbox {
    execs: VecDeque<(u64, ExecRecord)>,
    samples: VecDeque<UsageSample>,
    touched: u64,
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, PerSandbox>,
    /// `(when, team, ok)`, oldest first.
    spawns: VecDeque<(Instant, String, bool)>,
    tick: u64,
}

impl Inner {
    fn entry(&mut self, id: &str) -> &mut PerSandbox {
        self.tick += 1;
        if !self.sandboxes.contains_key(id) && self.sandboxes.len() >= SANDBOXES_KEPT {
            let oldest = self
                .sandboxes
                .iter()
                .min_by_key(|(_, s)| s.touched)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.sandboxes.remove(&k);
            }
        }
        let tick = self.tick;
        let s = self.sandboxes.entry(id.to_string()).or_default();
        s.touched = tick;
        s
    }
}

/// The in-memory activity recorder.
#[derive(Default)]
pub struct Activity {
    inner: Mutex<Inner>,
}

impl Activity {
    /// Remember a spawn outcome of `team`.
    pub fn spawned(&self, team: &str, ok: bool) {
        let now = Instant::now();
        let mut g = self.inner.lock();
        while g
            .spawns
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > SPAWN_WINDOW)
            || g.spawns.len() >= SPAWNS_KEPT
        {
            g.spawns.pop_front();
        }
        g.spawns.push_back((now, team.to_string(), ok));
    }

    /// Spawn counts of the last `window` (at most an hour), of one team or all.
    pub fn spawn_rates(&self, window: Duration, team: Option<&str>) -> SpawnRates {
        let window = window.min(SPAWN_WINDOW);
        let now = Instant::now();
        let g = self.inner.lock();
        let (mut ok, mut error) = (0, 0);
        for (t, tm, good) in g.spawns.iter().rev() {
            if now.duration_since(*t) > window {
                break;
            }
            if team.is_some_and(|want| want != tm) {
                continue;
            }
            if *good {
                ok += 1;
            } else {
                error += 1;
            }
        }
        let all = ok + error;
        SpawnRates {
            window_secs: window.as_secs(),
            ok,
            error,
            per_minute: all as f64 / (window.as_secs_f64() / 60.0).max(1.0 / 60.0),
            error_rate: if all == 0 {
                0.0
            } else {
                error as f64 / all as f64
            },
        }
    }

    /// Remember a usage reading of `id`.
    pub fn sample(&self, id: &str, at: DateTime<Utc>, u: &ResourceUsage) {
        let mut g = self.inner.lock();
        let s = &mut g.entry(id).samples;
        if s.len() >= SAMPLES_KEPT {
            s.pop_front();
        }
        s.push_back(UsageSample {
            at,
            cpu_seconds: u.cpu_seconds,
            memory_bytes: u.memory_bytes,
            disk_bytes: u.disk_bytes,
            pids: u.pids,
        });
    }

    /// Record a command as it starts; its exit is filled in when the
    /// handle's stream reports it.
    pub fn track_exec(
        self: &std::sync::Arc<Self>,
        id: &str,
        cmd: &[String],
        h: ExecHandle,
    ) -> ExecHandle {
        let key = {
            let mut g = self.inner.lock();
            let tick = g.tick + 1;
            let execs = &mut g.entry(id).execs;
            if execs.len() >= EXECS_KEPT {
                execs.pop_front();
            }
            execs.push_back((
                tick,
                ExecRecord {
                    started_at: Utc::now(),
                    cmd: cmd.to_vec(),
                    exit_code: None,
                    duration_ms: None,
                    timed_out: false,
                    error: None,
                },
            ));
            tick
        };
        let me = std::sync::Arc::downgrade(self);
        let id = id.to_string();
        let started = Instant::now();
        let events = h
            .events
            .inspect(move |ev| {
                let done = |f: &dyn Fn(&mut ExecRecord)| {
                    if let Some(me) = me.upgrade()
                        && let Some(s) = me.inner.lock().sandboxes.get_mut(&id)
                        && let Some((_, r)) = s.execs.iter_mut().find(|(k, _)| *k == key)
                    {
                        f(r);
                    }
                };
                match ev {
                    ExecEvent::Exit(st) => done(&|r| {
                        r.exit_code = Some(st.code);
                        r.duration_ms = Some(st.duration_ms);
                        r.timed_out = st.timed_out;
                    }),
                    ExecEvent::Error(e) => {
                        let ms = started.elapsed().as_millis() as u64;
                        done(&|r| {
                            r.error = Some(e.message.clone());
                            r.duration_ms = Some(ms);
                        })
                    }
                    _ => {}
                }
            })
            .boxed();
        ExecHandle { events, ..h }
    }

    /// The remembered commands of `id`, newest first.
    pub fn execs(&self, id: &str) -> Vec<ExecRecord> {
        let g = self.inner.lock();
        g.sandboxes
            .get(id)
            .map(|s| s.execs.iter().rev().map(|(_, r)| r.clone()).collect())
            .unwrap_or_default()
    }

    /// The remembered usage samples of `id`, oldest first.
    pub fn samples(&self, id: &str) -> Vec<UsageSample> {
        let g = self.inner.lock();
        g.sandboxes
            .get(id)
            .map(|s| s.samples.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Fill of one warm pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolFill {
    pub runtime: String,
    /// The pool's key (`runtime:repo@ref` or `runtime:template=T`), admin only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub ready: usize,
    pub size: usize,
}

impl super::Control {
    /// Circuit-breaker state of every runtime that has one, by name.
    pub fn circuit_states(&self) -> Vec<(String, &'static str)> {
        self.policy
            .circuits
            .states()
            .into_iter()
            .map(|(rt, st)| (rt, st.as_str()))
            .collect()
    }

    /// Warm pools the caller may draw from (shared ones and its team's),
    /// with how many runtimes each holds ready.
    pub fn pool_fill(&self, caller: &super::Caller) -> Vec<PoolFill> {
        let Some(pools) = self.pools.get() else {
            return Vec::new();
        };
        pools
            .ready_counts()
            .into_iter()
            .filter(|(k, _, _)| k.team.as_deref().is_none_or(|t| caller.sees(t)))
            .map(|(k, ready, size)| PoolFill {
                runtime: k.runtime.clone(),
                pool: matches!(caller, super::Caller::Admin).then(|| k.to_string()),
                ready,
                size,
            })
            .collect()
    }

    /// Spawns waiting in the fair queue, by team the caller sees.
    pub fn queue_depths(&self, caller: &super::Caller) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .policy
            .queue
            .depths()
            .into_iter()
            .filter(|(t, _)| caller.sees(t))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_rates_count_one_team_or_all() {
        let a = Activity::default();
        a.spawned("alpha", true);
        a.spawned("alpha", false);
        a.spawned("beta", true);
        let all = a.spawn_rates(Duration::from_secs(60), None);
        assert_eq!((all.ok, all.error), (2, 1));
        assert!((all.per_minute - 3.0).abs() < 1e-9);
        let alpha = a.spawn_rates(Duration::from_secs(60), Some("alpha"));
        assert_eq!((alpha.ok, alpha.error, alpha.error_rate), (1, 1, 0.5));
        let none = a.spawn_rates(Duration::from_secs(60), Some("gamma"));
        assert_eq!((none.ok, none.error, none.error_rate), (0, 0, 0.0));
    }

    #[test]
    fn samples_are_bounded_per_sandbox() {
        let a = Activity::default();
        let u = ResourceUsage {
            memory_bytes: 7,
            ..Default::default()
        };
        for _ in 0..SAMPLES_KEPT + 10 {
            a.sample("s1", Utc::now(), &u);
        }
        assert_eq!(a.samples("s1").len(), SAMPLES_KEPT);
        assert!(a.samples("s2").is_empty());
    }

    #[tokio::test]
    async fn an_exec_is_recorded_with_its_exit() {
        let a = std::sync::Arc::new(Activity::default());
        let st = godel_core::ExitStatus {
            code: 3,
            signal: None,
            timed_out: false,
            duration_ms: 12,
        };
        let h = ExecHandle {
            pid: None,
            stdin: None,
            signal: None,
            events: futures::stream::iter(vec![ExecEvent::Exit(st)]).boxed(),
        };
        let h = a.track_exec("s1", &["false".to_string()], h);
        assert_eq!(a.execs("s1")[0].exit_code, None);
        let out = h.collect().await.unwrap();
        assert_eq!(out.exit_code, 3);
        let r = &a.execs("s1")[0];
        assert_eq!((r.exit_code, r.duration_ms), (Some(3), Some(12)));
        assert_eq!(r.cmd, vec!["false"]);
    }
}
