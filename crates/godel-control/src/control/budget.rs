//! Budgets: a spending limit per team (and optionally per agent) for a
//! period (monthly by default). At `budgets.alert_percent` (80 %) of the
//! limit a `budget_alert` event fires and the webhook is posted, once a
//! period; at 100 % a `budget_exceeded` event fires (and the webhook), new
//! spawns, restores and forks of the team fail with `BUDGET_EXCEEDED`, and
//! running agents follow the budget's policy: `keep`, `snapshot-and-stop`
//! (parked, resumable) or `stop`. Budgets are evaluated after every
//! metering flush ([`Control::meter_tick`]).

use std::time::Duration;

use godel_core::{Error, ErrorCode, Event, EventKind, ParkReason, Result, SandboxState};
use godel_policy::cost::{budget_level, nanos_to_usd, usd_to_nanos};
use godel_policy::{BudgetLevel, BudgetPolicy, Period};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Caller, Control, POOL_TEAM};
use crate::store::BudgetRecord;

/// `godel budget set` / `POST /v1/budgets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    pub team: String,
    /// A sandbox id of the team: a budget of that agent alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub limit_usd: f64,
    /// `daily`, `weekly` or `monthly` (default: `budgets.period`, monthly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// `keep` (default), `snapshot-and-stop` or `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// A budget and where spend stands against it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub limit_usd: f64,
    pub period: Period,
    /// The current period, e.g. `2026-12`.
    pub period_key: String,
    pub policy: BudgetPolicy,
    pub spent_usd: f64,
    pub percent: f64,
    pub level: BudgetLevel,
}

impl Control {
    /// Set a budget (admin). Bad input changes nothing.
    pub fn set_budget(&self, caller: &Caller, req: BudgetRequest) -> Result<BudgetStatus> {
        caller.require_admin("setting a budget")?;
        godel_core::validate_name("team", &req.team)?;
        let limit_nanos = usd_to_nanos("limit", req.limit_usd)?;
        if limit_nanos == 0 {
            return Err(Error::invalid("limit: must be above zero"));
        }
        let period = match &req.period {
            Some(p) => Period::parse(p)?,
            None => self.policy.config.budgets.period,
        };
        let policy = match &req.policy {
            Some(p) => BudgetPolicy::parse(p)?,
            None => BudgetPolicy::Keep,
        };
        if let Some(a) = &req.agent {
            match self.store.get_sandbox(a)? {
                Some(r) if r.team == req.team => {}
                _ => {
                    return Err(Error::not_found(format!(
                        "agent {a} of team {} not found",
                        req.team
                    )));
                }
            }
        }
        let rec = BudgetRecord {
            team: req.team.clone(),
            agent: req.agent.clone(),
            limit_nanos,
            period,
            policy,
            alerted: None,
            exceeded: None,
        };
        self.store.put_budget(&rec)?;
        let mut ev = Event::new(EventKind::BudgetSet).team(&rec.team).data(json!({
            "limit_usd": req.limit_usd, "period": period.as_str(), "policy": policy.as_str(), "agent": rec.agent,
        }));
        if let Some(a) = &rec.agent {
            ev = ev.runtime(a);
        }
        self.emit(ev);
        self.budget_status(&rec)
    }

    /// Budgets the caller may see, with their spend.
    pub fn budgets(&self, caller: &Caller, team: Option<&str>) -> Result<Vec<BudgetStatus>> {
        let team = match (caller, team) {
            (Caller::Team(own), Some(t)) if t != own => {
                return Err(Error::denied(format!(
                    "a token of team {own} cannot read the budgets of team {t}"
                )));
            }
            (Caller::Team(own), _) => Some(own.as_str()),
            (Caller::Admin, t) => t,
        };
        self.store
            .list_budgets(team)?
            .iter()
            .map(|b| self.budget_status(b))
            .collect()
    }

    /// Remove a budget (admin).
    pub fn delete_budget(&self, caller: &Caller, team: &str, agent: Option<&str>) -> Result<()> {
        caller.require_admin("removing a budget")?;
        self.store.delete_budget(team, agent)
    }

    fn budget_status(&self, b: &BudgetRecord) -> Result<BudgetStatus> {
        let now = self.now();
        let spent = self.spend_nanos(&b.team, b.agent.as_deref(), b.period.start(now))?;
        let alert = self.policy.config.budgets.alert_percent;
        Ok(BudgetStatus {
            team: b.team.clone(),
            agent: b.agent.clone(),
            limit_usd: nanos_to_usd(b.limit_nanos),
            period: b.period,
            period_key: b.period.key(now),
            policy: b.policy,
            spent_usd: nanos_to_usd(spent),
            percent: spent as f64 * 100.0 / b.limit_nanos.max(1) as f64,
            level: budget_level(spent, b.limit_nanos, alert),
        })
    }

    /// Refuse new work of a team whose budget is used up.
    pub(crate) fn check_budget(&self, team: &str) -> Result<()> {
        if team == POOL_TEAM {
            return Ok(());
        }
        let Some(b) = self.store.get_budget(team, None)? else {
            return Ok(());
        };
        let s = self.budget_status(&b)?;
        if s.level == BudgetLevel::Exceeded {
            return Err(Error::new(
                ErrorCode::BudgetExceeded,
                format!(
                    "team {team} has used ${:.6} of its {} budget of ${:.6} ({}); new sandboxes are refused until the period ends or the budget is raised",
                    s.spent_usd,
                    b.period.as_str(),
                    s.limit_usd,
                    s.period_key
                ),
            ));
        }
        Ok(())
    }

    /// Fire alerts, mark exhaustion and apply policies (after each flush).
    pub async fn evaluate_budgets(&self) {
        let budgets = match self.store.list_budgets(None) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "budgets: cannot list");
                return;
            }
        };
        for b in budgets {
            if let Err(e) = self.evaluate_budget(&b).await {
                tracing::warn!(team = %b.team, error = %e, "budgets: evaluation failed");
            }
        }
    }

    async fn evaluate_budget(&self, b: &BudgetRecord) -> Result<()> {
        let s = self.budget_status(b)?;
        if b.agent.is_none() {
            self.policy
                .metrics
                .set_budget_remaining(&b.team, (100.0 - s.percent).max(0.0));
        }
        let agent = b.agent.as_deref();
        let data = json!({
            "agent": b.agent, "limit_usd": s.limit_usd, "spent_usd": s.spent_usd,
            "percent": s.percent, "period": s.period_key, "policy": b.policy.as_str(),
        });
        if s.level != BudgetLevel::Under
            && self
                .store
                .mark_budget(&b.team, agent, "alerted", &s.period_key)?
        {
            self.budget_event(EventKind::BudgetAlert, b, data.clone());
        }
        if s.level != BudgetLevel::Exceeded {
            return Ok(());
        }
        if self
            .store
            .mark_budget(&b.team, agent, "exceeded", &s.period_key)?
        {
            self.budget_event(EventKind::BudgetExceeded, b, data);
        }
        if b.policy == BudgetPolicy::Keep {
            return Ok(());
        }
        let running: Vec<_> = self
            .store
            .list_sandboxes(Some(&b.team), false)?
            .into_iter()
            .filter(|r| r.state == SandboxState::Running)
            .filter(|r| agent.is_none_or(|a| a == r.id))
            .filter(|r| self.owns(r))
            .collect();
        for r in running {
            let res = match b.policy {
                BudgetPolicy::SnapshotAndStop => {
                    let req = godel_core::SnapshotRequest {
                        description: Some("stopped when its team's budget ran out".into()),
                        ..Default::default()
                    };
                    self.park(&Caller::Admin, &r.id, ParkReason::Paused, req)
                        .await
                        .map(|_| ())
                }
                _ => self.terminate(&Caller::Admin, &r.id).await.map(|_| ()),
            };
            let mut data = json!({"action": b.policy.as_str(), "period": s.period_key});
            if let Err(e) = &res {
                data["error"] = json!(e.to_string());
            }
            self.emit(
                Event::new(EventKind::BudgetEnforced)
                    .runtime(&r.id)
                    .team(&b.team)
                    .data(data),
            );
        }
        Ok(())
    }

    /// Emit a budget event and post it to the webhook (in the background).
    fn budget_event(&self, kind: EventKind, b: &BudgetRecord, data: Value) {
        let mut ev = Event::new(kind).team(&b.team).data(data.clone());
        if let Some(a) = &b.agent {
            ev = ev.runtime(a);
        }
        self.emit(ev);
        let cfg = &self.policy.config.budgets;
        let Some(url) = cfg.webhook_url.clone() else {
            return;
        };
        let body = json!({"kind": kind.as_str(), "team": b.team, "data": data}).to_string();
        let (attempts, backoff) = (cfg.webhook_attempts, cfg.webhook_backoff_ms);
        let me = self.me.clone();
        let team = b.team.clone();
        tokio::spawn(async move {
            let (mut delivered, mut last, mut n) = (false, String::new(), 0);
            for i in 0..attempts {
                n = i + 1;
                match post(&url, &body).await {
                    Ok(status) if (200..300).contains(&status) => {
                        delivered = true;
                        break;
                    }
                    Ok(status) => last = format!("HTTP {status}"),
                    Err(e) => last = e.to_string(),
                }
                if i + 1 < attempts {
                    let ms = backoff.saturating_mul(1 << i.min(16));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            if let Some(me) = me.upgrade() {
                me.emit(
                    Event::new(EventKind::BudgetWebhook)
                        .team(&team)
                        .data(json!({
                            "for": kind.as_str(), "delivered": delivered, "attempts": n,
                            "error": if delivered { Value::Null } else { json!(last) },
                        })),
                );
            }
        });
    }
}

/// POST `body` as JSON to an `http://` URL; returns the status code.
async fn post(url: &str, body: &str) -> Result<u16> {
    let (host, path) = godel_policy::config::webhook_target(url)?;
    let io = |e: std::io::Error| Error::unavailable(format!("webhook {url}: {e}"));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&host).await.map_err(io)?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: godel\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(io)?;
        let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).to_string();
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| Error::unavailable(format!("webhook {url}: no HTTP status in {head:?}")))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| Error::timeout(format!("webhook {url}: no answer in 10 s")))?
}
