//! Metering and usage reports. A sandbox costs its allocated vCPUs and
//! memory for every second it is `running` (paused, parked and stopped
//! cost nothing); the store opens and closes its meter in the transaction
//! of each state change, [`Control::meter_tick`] writes every open meter
//! and the exec output bytes counted in memory every `metering.flush_secs`
//! (10 s by default), then evaluates budgets and advances rollouts.
//!
//! Reports group the stored day rows (plus the part of each open meter not
//! yet written, so a report is current to the clock) by agent, runtime or
//! day. Costs come from the price table of the config
//! (`godel_policy::config::price_of`), in whole nano-USD per row; a total
//! is the sum of its rows, exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use godel_core::{Error, ExecEvent, ExecHandle, Result};
use godel_policy::cost::{gib_seconds, nanos_to_usd, vcpu_seconds};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{Caller, Control};
use crate::store::{UsagePart, UsageQuery, live_parts};

/// Output bytes per sandbox not yet written: `id → (execs, bytes)`.
pub(crate) type Pending = Arc<Mutex<HashMap<String, (u64, u64)>>>;

/// What `/v1/usage` and `godel usage` ask for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// First UTC day included, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// `agent` (default), `runtime` or `day`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One row of a report (or its total).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The agent (sandbox id), runtime or day; `total` for the total.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub run_seconds: f64,
    pub vcpu_seconds: f64,
    pub gib_seconds: f64,
    pub execs: u64,
    pub bytes: u64,
    /// USD.
    pub cost: f64,
    /// The exact integers behind the floats (sums of rows equal the total).
    pub run_ms: u64,
    pub vcpu_milli_ms: u64,
    pub mem_kib_ms: u64,
    pub cost_nanos: i64,
}

/// A usage report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The clock's time the report is current to.
    pub at: DateTime<Utc>,
    pub rows: Vec<UsageRow>,
    pub total: UsageRow,
}

impl UsageRow {
    fn from_parts(key: String, parts: &[&UsagePart], cost_nanos: i64) -> UsageRow {
        let mut sum = UsagePart::default();
        for p in parts {
            sum.add(p);
        }
        let one = |f: fn(&UsagePart) -> &String| {
            let first = parts.first().map(|p| f(p).clone());
            first.filter(|v| parts.iter().all(|p| f(p) == v))
        };
        UsageRow {
            key,
            team: one(|p| &p.team),
            runtime: one(|p| &p.runtime),
            run_seconds: sum.run_ms as f64 / 1000.0,
            vcpu_seconds: vcpu_seconds(sum.vcpu_milli_ms),
            gib_seconds: gib_seconds(sum.mem_kib_ms),
            execs: sum.execs,
            bytes: sum.bytes,
            cost: nanos_to_usd(cost_nanos),
            run_ms: sum.run_ms,
            vcpu_milli_ms: sum.vcpu_milli_ms,
            mem_kib_ms: sum.mem_kib_ms,
            cost_nanos,
        }
    }
}

/// Parse `--since`: a UTC day.
pub(crate) fn parse_day(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        Error::invalid(format!(
            "since: {s:?} is not a date like 2026-12-01 (UTC days)"
        ))
    })
}

impl Control {
    /// Count one exec on `id` (and the stdin it sends) durably, and its
    /// output bytes as they stream (written at the next flush).
    pub(crate) fn meter_exec(&self, id: &str, stdin_bytes: u64, h: ExecHandle) -> ExecHandle {
        if let Err(e) = self.store.count_usage(id, 1, stdin_bytes) {
            tracing::warn!(sandbox = %id, error = %e, "metering: cannot count exec");
        }
        let pending = self.meter_pending.clone();
        let id = id.to_string();
        let events = h
            .events
            .inspect(move |ev| {
                let n = match ev {
                    ExecEvent::Stdout { data } | ExecEvent::Stderr { data } => data.len() as u64,
                    _ => 0,
                };
                if n > 0 {
                    pending.lock().entry(id.clone()).or_default().1 += n;
                }
            })
            .boxed();
        ExecHandle { events, ..h }
    }

    /// Count bytes moved by a file call durably.
    pub(crate) fn meter_bytes(&self, id: &str, bytes: u64) {
        if let Err(e) = self.store.count_usage(id, 0, bytes) {
            tracing::warn!(sandbox = %id, error = %e, "metering: cannot count bytes");
        }
    }

    /// Write all open meters and pending counters now.
    pub fn flush_usage(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.meter_pending.lock());
        if let Err(e) = self.store.flush_meters(&pending) {
            // Keep the counters for the next try.
            let mut p = self.meter_pending.lock();
            for (id, (x, b)) in pending {
                let e = p.entry(id).or_default();
                e.0 += x;
                e.1 += b;
            }
            return Err(e);
        }
        Ok(())
    }

    /// One metering tick: flush, then budgets, then rollout steps.
    pub async fn meter_tick(&self) {
        if let Err(e) = self.flush_usage() {
            tracing::warn!(error = %e, "metering: flush failed");
        }
        self.evaluate_budgets().await;
        self.advance_rollouts();
    }

    /// Run [`Control::meter_tick`] every `metering.flush_secs` until dropped.
    pub fn start_metering(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let every = Duration::from_secs(self.policy.config.metering.flush_secs.max(1));
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                me.meter_tick().await;
            }
        })
    }

    /// Stored and live usage matching `q`, by `(key, runtime)`.
    pub(crate) fn usage_parts(
        &self,
        q: &UsageQuery,
    ) -> Result<BTreeMap<(String, String), UsagePart>> {
        let mut out: BTreeMap<(String, String), UsagePart> = BTreeMap::new();
        for p in self.store.usage_parts(q)? {
            out.insert((p.key.clone(), p.runtime.clone()), p);
        }
        let now = self.now();
        for m in self.store.open_meters()? {
            if q.team.as_ref().is_some_and(|t| *t != m.team)
                || q.agent.as_ref().is_some_and(|a| *a != m.runtime_id)
            {
                continue;
            }
            for (day, part) in live_parts(&m, now) {
                if q.since
                    .is_some_and(|s| day < s.format("%Y-%m-%d").to_string())
                {
                    continue;
                }
                let key = match q.by.as_str() {
                    "runtime" => m.runtime.clone(),
                    "day" => day,
                    _ => m.runtime_id.clone(),
                };
                let e = out
                    .entry((key.clone(), m.runtime.clone()))
                    .or_insert_with(|| UsagePart {
                        key,
                        team: m.team.clone(),
                        runtime: m.runtime.clone(),
                        ..Default::default()
                    });
                e.add(&part);
            }
        }
        Ok(out)
    }

    /// Cost of one part by its runtime's price (nano-USD).
    pub(crate) fn cost_of(&self, p: &UsagePart) -> i64 {
        godel_policy::config::price_of(&self.policy.config.prices, &p.runtime)
            .cost_nanos(p.vcpu_milli_ms, p.mem_kib_ms)
    }

    /// The usage report the caller may see: a team token sees its own team.
    pub fn usage(&self, caller: &Caller, req: &UsageRequest) -> Result<UsageReport> {
        let by = req.by.clone().unwrap_or_else(|| "agent".into());
        if !matches!(by.as_str(), "agent" | "runtime" | "day") {
            return Err(Error::invalid(format!(
                "by: {by:?} is not one of agent, runtime, day"
            )));
        }
        let team = match (caller, &req.team) {
            (Caller::Admin, t) => t.clone(),
            (Caller::Team(own), Some(t)) if t != own => {
                return Err(Error::denied(format!(
                    "a token of team {own} cannot read the usage of team {t}"
                )));
            }
            (Caller::Team(own), _) => Some(own.clone()),
        };
        if let Some(t) = &team {
            godel_core::validate_name("team", t)?;
        }
        let since = req.since.as_deref().map(parse_day).transpose()?;
        let q = UsageQuery {
            team: team.clone(),
            agent: None,
            since,
            by: by.clone(),
        };
        let parts = self.usage_parts(&q)?;
        let mut groups: BTreeMap<String, (Vec<&UsagePart>, i64)> = BTreeMap::new();
        for ((key, _), p) in &parts {
            let g = groups.entry(key.clone()).or_default();
            g.0.push(p);
            g.1 += self.cost_of(p);
        }
        let rows: Vec<UsageRow> = groups
            .into_iter()
            .map(|(k, (ps, c))| UsageRow::from_parts(k, &ps, c))
            .collect();
        let all: Vec<&UsagePart> = parts.values().collect();
        let total_cost = rows.iter().map(|r| r.cost_nanos).sum();
        let mut total = UsageRow::from_parts("total".into(), &all, total_cost);
        if team.is_some() {
            total.team = team.clone();
        }
        Ok(UsageReport {
            by,
            team,
            since: req.since.clone(),
            at: self.now(),
            rows,
            total,
        })
    }

    /// Spend (nano-USD) of a team, or one of its agents, since `since`.
    pub(crate) fn spend_nanos(
        &self,
        team: &str,
        agent: Option<&str>,
        since: NaiveDate,
    ) -> Result<i64> {
        let q = UsageQuery {
            team: Some(team.to_string()),
            agent: agent.map(String::from),
            since: Some(since),
            by: "runtime".into(),
        };
        Ok(self
            .usage_parts(&q)?
            .values()
            .map(|p| self.cost_of(p))
            .sum())
    }
}
