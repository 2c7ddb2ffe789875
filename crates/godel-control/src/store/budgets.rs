//! Budgets (per team, optionally per agent) and rollouts (one per team) in
//! the store. A budget remembers the period its alert and its exhaustion
//! fired in, marked with a compare-and-set so each fires once a period even
//! across restarts.

use godel_core::{Error, Result};
use godel_policy::{BudgetPolicy, Period};
use serde::{Deserialize, Serialize};

use super::db::{Row, args};
use super::{Store, json_err, now_text};

/// One budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetRecord {
    pub team: String,
    /// A sandbox id for a per-agent budget; `None` for the team's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub limit_nanos: i64,
    pub period: Period,
    pub policy: BudgetPolicy,
    /// The period (key) whose alert fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerted: Option<String>,
    /// The period (key) in which the limit was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceeded: Option<String>,
}

/// A rollout's stored state (the control plane owns its shape).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRecord {
    pub team: String,
    pub data: serde_json::Value,
}

fn row(r: &Row) -> Result<BudgetRecord> {
    Ok(BudgetRecord {
        team: r.str(0)?,
        agent: Some(r.str(1)?).filter(|a| !a.is_empty()),
        limit_nanos: r.i64(2)?,
        period: Period::parse(&r.str(3)?).unwrap_or_default(),
        policy: BudgetPolicy::parse(&r.str(4)?).unwrap_or_default(),
        alerted: r.opt_str(5)?,
        exceeded: r.opt_str(6)?,
    })
}

const COLS: &str = "team, agent, limit_nanos, period, policy, alerted, exceeded";

impl Store {
    /// Set (or replace) a budget; the alert and exhaustion marks start over.
    pub fn put_budget(&self, b: &BudgetRecord) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO budgets (team, agent, limit_nanos, period, policy, alerted, exceeded, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6)
                 ON CONFLICT(team, agent) DO UPDATE SET limit_nanos = excluded.limit_nanos,
                    period = excluded.period, policy = excluded.policy, alerted = NULL, exceeded = NULL,
                    updated_at = excluded.updated_at",
                args![
                    &b.team,
                    b.agent.clone().unwrap_or_default(),
                    b.limit_nanos,
                    b.period.as_str(),
                    b.policy.as_str(),
                    now_text()
                ],
            )
        })
        .map(drop)
    }

    pub fn get_budget(&self, team: &str, agent: Option<&str>) -> Result<Option<BudgetRecord>> {
        self.read(|db| {
            db.query_opt(
                &format!("SELECT {COLS} FROM budgets WHERE team = ?1 AND agent = ?2"),
                args![team, agent.unwrap_or("")],
            )?
            .map(|r| row(&r))
            .transpose()
        })
    }

    /// Budgets, of one team or all.
    pub fn list_budgets(&self, team: Option<&str>) -> Result<Vec<BudgetRecord>> {
        self.read(|db| {
            db.query(
                &format!(
                    "SELECT {COLS} FROM budgets WHERE (CAST(?1 AS TEXT) IS NULL OR team = ?1) ORDER BY team, agent"
                ),
                args![team],
            )?
            .iter()
            .map(row)
            .collect()
        })
    }

    pub fn delete_budget(&self, team: &str, agent: Option<&str>) -> Result<()> {
        let n = self.write(|tx| {
            tx.execute(
                "DELETE FROM budgets WHERE team = ?1 AND agent = ?2",
                args![team, agent.unwrap_or("")],
            )
        })?;
        if n == 0 {
            return Err(Error::not_found(format!("no budget for team {team}")));
        }
        Ok(())
    }

    /// Mark `what` (`alerted` or `exceeded`) for `period`; true only for the
    /// first caller in that period.
    pub fn mark_budget(
        &self,
        team: &str,
        agent: Option<&str>,
        what: &str,
        period: &str,
    ) -> Result<bool> {
        let col = if what == "exceeded" {
            "exceeded"
        } else {
            "alerted"
        };
        let n = self.write(|tx| {
            tx.execute(
                &format!(
                    "UPDATE budgets SET {col} = ?3 WHERE team = ?1 AND agent = ?2 AND ({col} IS NULL OR {col} != ?3)"
                ),
                args![team, agent.unwrap_or(""), period],
            )
        })?;
        Ok(n > 0)
    }

    pub fn put_rollout(&self, team: &str, data: &serde_json::Value) -> Result<()> {
        let data = serde_json::to_string(data).map_err(json_err)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO rollouts (team, data, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(team) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                args![team, data, now_text()],
            )
        })
        .map(drop)
    }

    pub fn list_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        self.read(|db| db.query("SELECT team, data FROM rollouts ORDER BY team", &[]))?
            .iter()
            .map(|r| {
                Ok(RolloutRecord {
                    team: r.str(0)?,
                    data: serde_json::from_str(&r.str(1)?).map_err(json_err)?,
                })
            })
            .collect()
    }
}
