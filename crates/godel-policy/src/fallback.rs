//! The fallback planner and executor (DESIGN.md: `e2b → kata → microvm →
//! worktree`, skipping runtimes that are unavailable or whose circuit is open).
//!
//! [`plan`] turns the team's chain, the requested runtime and what is
//! registered into an ordered candidate list, with the reason for every
//! runtime it skipped. **A request that names a runtime gets only that
//! runtime**: an explicit choice is usually about isolation or capabilities,
//! and silently landing on a weaker runtime would be worse than an error.
//!
//! [`spawn_with_fallback`] tries the candidates in order. Per candidate it
//! retries retryable errors with the [`RetryPolicy`] backoff; when a runtime
//! is exhausted (or its circuit opens) it falls back to the next. A
//! non-retryable error (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`
//! ...) is the caller's fault and stops everything at once; only `INTERNAL`
//! among them counts as a runtime failure for the circuit. Every step is
//! reported as a [`FallbackDecision`].

use std::future::Future;
use std::time::Duration;

use godel_core::{Availability, Error, ErrorCode, Event, Result};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::circuit::CircuitRegistry;
use crate::retry::RetryPolicy;

/// Why a runtime of the chain is not a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// No provider of that name is registered in this daemon.
    NotRegistered,
    /// The provider's `available()` said no.
    Unavailable { reason: String },
    /// Its circuit breaker is open.
    CircuitOpen { retry_in_secs: u64 },
    /// The team may not use it.
    NotAllowed,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NotRegistered => f.write_str("not registered"),
            SkipReason::Unavailable { reason } => write!(f, "unavailable: {reason}"),
            SkipReason::CircuitOpen { retry_in_secs } => {
                write!(f, "circuit open (retry in {retry_in_secs} s)")
            }
            SkipReason::NotAllowed => f.write_str("not allowed for this team"),
        }
    }
}

/// A skipped runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub runtime: String,
    pub reason: SkipReason,
}

/// The ordered candidates of one spawn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackPlan {
    pub candidates: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// The request named its runtime (no fallback).
    pub explicit: bool,
}

impl FallbackPlan {
    /// The plan, or `UNAVAILABLE` naming every skipped runtime and why.
    pub fn require_candidates(self) -> Result<FallbackPlan> {
        if !self.candidates.is_empty() {
            return Ok(self);
        }
        let why: Vec<String> = self
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.runtime, s.reason))
            .collect();
        let only_denied = !self.skipped.is_empty()
            && self
                .skipped
                .iter()
                .all(|s| s.reason == SkipReason::NotAllowed);
        let msg = format!("no runtime can take this spawn ({})", why.join("; "));
        Err(if only_denied {
            Error::denied(msg)
        } else if self.explicit
            && self
                .skipped
                .iter()
                .any(|s| s.reason == SkipReason::NotRegistered)
        {
            Error::invalid(msg)
        } else {
            Error::unavailable(msg)
        })
    }
}

/// What the planner needs to know about the team.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The team's fallback chain, in order.
    pub chain: &'a [String],
    /// The runtime the request named, if any.
    pub requested: Option<&'a str>,
    /// Runtimes the team may use; empty means all.
    pub allowed: &'a [String],
}

/// Build the candidate list. `lookup(name)` returns the provider's cached
/// availability, or `None` when no provider of that name is registered.
pub fn plan(
    input: PlanInput<'_>,
    lookup: impl Fn(&str) -> Option<Availability>,
    circuits: &CircuitRegistry,
) -> FallbackPlan {
    let names: Vec<&str> = match input.requested {
        Some(r) => vec![r],
        None => input.chain.iter().map(String::as_str).collect(),
    };
    let mut out = FallbackPlan {
        explicit: input.requested.is_some(),
        ..Default::default()
    };
    let now = Instant::now();
    for name in names {
        let skip = |reason| Skipped {
            runtime: name.to_string(),
            reason,
        };
        if !input.allowed.is_empty() && !input.allowed.iter().any(|a| a == name) {
            out.skipped.push(skip(SkipReason::NotAllowed));
            continue;
        }
        match lookup(name) {
            None => {
                out.skipped.push(skip(SkipReason::NotRegistered));
                continue;
            }
            Some(a) if !a.available => {
                out.skipped
                    .push(skip(SkipReason::Unavailable { reason: a.reason }));
                continue;
            }
            Some(_) => {}
        }
        let breaker = circuits.get(name);
        if !breaker.would_allow() {
            let retry_in_secs = breaker
                .retry_at()
                .map(|t| t.saturating_duration_since(now).as_secs_f64().ceil() as u64)
                .unwrap_or(0);
            out.skipped
                .push(skip(SkipReason::CircuitOpen { retry_in_secs }));
            continue;
        }
        if !out.candidates.iter().any(|c| c == name) {
            out.candidates.push(name.to_string());
        }
    }
    out
}

/// What happened at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The runtime was not tried (circuit opened since planning, or no time left).
    Skipped,
    /// The attempt failed and the same runtime will be tried again after `delay_ms`.
    Retrying,
    /// The runtime is given up; the next candidate comes (`next`).
    FallingBack,
    /// The attempt succeeded.
    Succeeded,
    /// The attempt failed and nothing more will be tried.
    Failed,
}

/// One step of a spawn's fallback, for events and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackDecision {
    pub runtime: String,
    /// 1-based attempt on this runtime (0 when skipped).
    pub attempt: u32,
    pub outcome: Outcome,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The runtime tried next (for `falling_back`/`skipped`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl FallbackDecision {
    /// The event the daemon stores for this decision (`spawn_attempt`,
    /// `spawn_fallback`, `spawn_failed`).
    pub fn to_event(&self) -> Event {
        let kind = match self.outcome {
            Outcome::Skipped | Outcome::FallingBack => godel_core::EventKind::SpawnFallback,
            Outcome::Failed => godel_core::EventKind::SpawnFailed,
            Outcome::Retrying | Outcome::Succeeded => godel_core::EventKind::SpawnAttempt,
        };
        Event::new(kind).data(serde_json::to_value(self).unwrap_or_default())
    }

    /// The `reason` label of `godel_fallback_total`: the error code or skip kind.
    pub fn metric_reason(&self) -> String {
        match self.code {
            Some(c) => c.as_str().to_ascii_lowercase(),
            None => "circuit_open".into(),
        }
    }
}

/// Whether an error is the runtime's fault (counts for the circuit, may fall back).
pub fn is_runtime_fault(e: &Error) -> bool {
    e.retryable || e.code == ErrorCode::Internal
}

/// Whether a failure counts against the runtime's circuit. A host resource
/// running out (`RESOURCE_EXHAUSTED`: a full disk, no free slot) may still
/// fall back and be retried, but says nothing about the runtime's health:
/// an open circuit would keep refusing spawns after the space is freed.
fn trips_circuit(e: &Error) -> bool {
    is_runtime_fault(e) && e.code != ErrorCode::ResourceExhausted
}

/// Try `plan`'s candidates in order. `attempt(runtime)` performs one spawn
/// attempt on that runtime. `deadline` bounds everything (attempts still
/// running at the deadline are cancelled: the closure must clean up after
/// itself when dropped, or the daemon reconciles the record).
pub async fn spawn_with_fallback<T, F, Fut>(
    plan: &FallbackPlan,
    retry: &RetryPolicy,
    deadline: Option<Instant>,
    circuits: &CircuitRegistry,
    mut on_decision: impl FnMut(&FallbackDecision),
    mut attempt: F,
) -> Result<(String, T)>
where
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut failures: Vec<String> = Vec::new();
    let mut last: Option<Error> = None;
    let max = retry.max_attempts.max(1);
    for (idx, runtime) in plan.candidates.iter().enumerate() {
        let next = plan.candidates.get(idx + 1).cloned();
        let breaker = circuits.get(runtime);
        let mut n = 0u32;
        loop {
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                let e = crate::retry::deadline_error(n.max(1), last.as_ref());
                on_decision(&FallbackDecision {
                    runtime: runtime.clone(),
                    attempt: n,
                    outcome: Outcome::Failed,
                    reason: e.message.clone(),
                    code: Some(e.code),
                    delay_ms: None,
                    next: None,
                });
                return Err(e);
            }
            if !breaker.allow() {
                on_decision(&FallbackDecision {
                    runtime: runtime.clone(),
                    attempt: n,
                    outcome: Outcome::Skipped,
                    reason: "circuit open".into(),
                    code: None,
                    delay_ms: None,
                    next: next.clone(),
                });
                failures.push(format!("{runtime}: circuit open"));
                break;
            }
            n += 1;
            let res = match deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt(runtime)).await {
                    Ok(r) => r,
                    Err(_) => Err(crate::retry::deadline_error(n, last.as_ref()).retryable(false)),
                },
                None => attempt(runtime).await,
            };
            let e = match res {
                Ok(v) => {
                    breaker.record_success();
                    on_decision(&FallbackDecision {
                        runtime: runtime.clone(),
                        attempt: n,
                        outcome: Outcome::Succeeded,
                        reason: "spawned".into(),
                        code: None,
                        delay_ms: None,
                        next: None,
                    });
                    return Ok((runtime.clone(), v));
                }
                Err(e) => e,
            };
            // A deadline cut: the runtime was slow, which counts against it.
            let cut = e.code == ErrorCode::Timeout && !e.retryable;
            if trips_circuit(&e) || cut {
                breaker.record_failure();
            } else {
                // The runtime answered sensibly; the request is at fault.
                breaker.record_success();
            }
            let decide =
                |outcome, delay: Option<Duration>, next: Option<String>| FallbackDecision {
                    runtime: runtime.clone(),
                    attempt: n,
                    outcome,
                    reason: e.message.clone(),
                    code: Some(e.code),
                    delay_ms: delay.map(|d| d.as_millis() as u64),
                    next,
                };
            if cut || !is_runtime_fault(&e) {
                on_decision(&decide(Outcome::Failed, None, None));
                return Err(e);
            }
            let delay = retry.delay_after(n);
            let fits = deadline.is_none_or(|d| Instant::now() + delay < d);
            // A failure that opened the circuit ends this runtime's turn at once.
            if e.retryable && n < max && fits && breaker.would_allow() {
                on_decision(&decide(Outcome::Retrying, Some(delay), None));
                last = Some(e);
                tokio::time::sleep(delay).await;
                continue;
            }
            failures.push(format!("{runtime}: {e}"));
            if next.is_some() {
                on_decision(&decide(Outcome::FallingBack, None, next.clone()));
            } else {
                on_decision(&decide(Outcome::Failed, None, None));
            }
            last = Some(e);
            break;
        }
    }
    Err(exhausted(plan, failures, last))
}

fn exhausted(plan: &FallbackPlan, failures: Vec<String>, last: Option<Error>) -> Error {
    match (plan.candidates.len(), last) {
        (0, _) => plan
            .clone()
            .require_candidates()
            .err()
            .unwrap_or_else(|| Error::internal("empty fallback plan")),
        (1, Some(e)) => e,
        (_, _) => Error::unavailable(format!("all runtimes failed: {}", failures.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::{CircuitPolicy, CircuitState};

    fn chain(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn plan_skips_with_reasons() {
        let circuits = CircuitRegistry::new(CircuitPolicy::default());
        for _ in 0..5 {
            circuits.get("kata").record_failure();
        }
        let c = chain(&["e2b", "kata", "microvm", "worktree"]);
        let p = plan(
            PlanInput {
                chain: &c,
                requested: None,
                allowed: &[],
            },
            |n| match n {
                "e2b" => Some(Availability::no("E2B_API_KEY is not set")),
                "kata" | "worktree" => Some(Availability::yes("ok")),
                _ => None,
            },
            &circuits,
        );
        assert_eq!(p.candidates, ["worktree"]);
        let reasons: Vec<String> = p
            .skipped
            .iter()
            .map(|s| format!("{}={}", s.runtime, s.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                "e2b=unavailable: E2B_API_KEY is not set",
                "kata=circuit open (retry in 60 s)",
                "microvm=not registered"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn explicit_runtime_gets_no_fallback() {
        let circuits = CircuitRegistry::new(CircuitPolicy::default());
        let c = chain(&["e2b", "worktree"]);
        let all = |_: &str| Some(Availability::yes("ok"));
        let p = plan(
            PlanInput {
                chain: &c,
                requested: Some("kata"),
                allowed: &[],
            },
            all,
            &circuits,
        );
        assert_eq!(p.candidates, ["kata"]);
        assert!(p.explicit);
        let allowed = chain(&["worktree"]);
        let p = plan(
            PlanInput {
                chain: &c,
                requested: Some("kata"),
                allowed: &allowed,
            },
            all,
            &circuits,
        );
        let e = p.require_candidates().unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        let p = plan(
            PlanInput {
                chain: &c,
                requested: Some("nope"),
                allowed: &[],
            },
            |_| None,
            &circuits,
        );
        assert_eq!(
            p.require_candidates().unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let p = plan(
            PlanInput {
                chain: &c,
                requested: None,
                allowed: &[],
            },
            |_| Some(Availability::no("x")),
            &circuits,
        );
        let e = p.require_candidates().unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(
            e.message
                .contains("e2b: unavailable: x; worktree: unavailable: x"),
            "{}",
            e.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn host_resources_running_out_fall_back_without_opening_the_circuit() {
        let circuits = CircuitRegistry::new(CircuitPolicy::default());
        let p = FallbackPlan {
            candidates: chain(&["worktree", "e2b"]),
            ..Default::default()
        };
        for _ in 0..10 {
            let r: Result<(String, ())> = spawn_with_fallback(
                &p,
                &RetryPolicy::default(),
                None,
                &circuits,
                |_| {},
                |rt| {
                    let full = rt == "worktree";
                    async move {
                        if full {
                            Err(Error::exhausted("disk full").retryable(true))
                        } else {
                            Ok(())
                        }
                    }
                },
            )
            .await;
            assert_eq!(r.unwrap().0, "e2b");
        }
        assert_eq!(circuits.get("worktree").state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn caller_errors_stop_without_fallback() {
        let circuits = CircuitRegistry::new(CircuitPolicy::default());
        let p = FallbackPlan {
            candidates: chain(&["e2b", "worktree"]),
            ..Default::default()
        };
        let mut tried = Vec::new();
        let mut decisions = Vec::new();
        let r: Result<(String, ())> = spawn_with_fallback(
            &p,
            &RetryPolicy::default(),
            None,
            &circuits,
            |d| decisions.push(d.clone()),
            |rt| {
                tried.push(rt.to_string());
                async { Err(Error::invalid("bad image")) }
            },
        )
        .await;
        assert_eq!(r.unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(tried, ["e2b"]);
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].outcome, Outcome::Failed);
        assert_eq!(circuits.get("e2b").state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_then_falls_back_then_succeeds() {
        let circuits = CircuitRegistry::new(CircuitPolicy::default());
        let p = FallbackPlan {
            candidates: chain(&["e2b", "kata", "worktree"]),
            ..Default::default()
        };
        let start = Instant::now();
        let mut decisions = Vec::new();
        let r = spawn_with_fallback(
            &p,
            &RetryPolicy::default(),
            None,
            &circuits,
            |d| decisions.push(d.clone()),
            |rt| {
                let rt = rt.to_string();
                async move {
                    match rt.as_str() {
                        "e2b" => Err(Error::spawn("e2b 502")),
                        "kata" => Err(Error::internal("kata shim crashed")),
                        _ => Ok(7),
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(r, ("worktree".to_string(), 7));
        // e2b: 4 attempts with 1+2+4 s between; kata: INTERNAL is a runtime
        // fault that is not retried, so it falls back at once.
        let outcomes: Vec<(String, Outcome)> = decisions
            .iter()
            .map(|d| (d.runtime.clone(), d.outcome))
            .collect();
        assert_eq!(
            outcomes[..4]
                .iter()
                .filter(|(_, o)| *o == Outcome::Retrying)
                .count(),
            3
        );
        assert_eq!(outcomes[3], ("e2b".to_string(), Outcome::FallingBack));
        assert_eq!(decisions[3].next.as_deref(), Some("kata"));
        assert_eq!(start.elapsed(), Duration::from_secs(7));
        assert_eq!(outcomes[4], ("kata".to_string(), Outcome::FallingBack));
        assert_eq!(outcomes.len(), 6);
        assert_eq!(outcomes[5], ("worktree".to_string(), Outcome::Succeeded));
        assert_eq!(decisions[3].metric_reason(), "spawn_error");
    }
}
