//! Budgets (per team, optionally per agent) and rollouts (one per team) in
//! the store. A budget remembers the period its alert and its exhaustion
//! fired in, marked with a compare-and-set so each fires once a period even
//! across restarts.

use godel_core::{Error, Result};
use godel_policy::{BudgetPolicy, Period};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, db_err, json_err, now_text};

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

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BudgetRecord> {
    let agent: String = r.get(1)?;
    let period: String = r.get(3)?;
    let policy: String = r.get(4)?;
    Ok(BudgetRecord {
        team: r.get(0)?,
        agent: Some(agent).filter(|a| !a.is_empty()),
        limit_nanos: r.get(2)?,
        period: Period::parse(&period).unwrap_or_default(),
        policy: BudgetPolicy::parse(&policy).unwrap_or_default(),
        alerted: r.get(5)?,
        exceeded: r.get(6)?,
    })
}

const COLS: &str = "team, agent, limit_nanos, period, policy, alerted, exceeded";

impl Store {
    /// Set (or replace) a budget; the alert and exhaustion marks start over.
    pub fn put_budget(&self, b: &BudgetRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO budgets (team, agent, limit_nanos, period, policy, alerted, exceeded, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6)",
                params![
                    b.team,
                    b.agent.clone().unwrap_or_default(),
                    b.limit_nanos,
                    b.period.as_str(),
                    b.policy.as_str(),
                    now_text()
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn get_budget(&self, team: &str, agent: Option<&str>) -> Result<Option<BudgetRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLS} FROM budgets WHERE team = ?1 AND agent = ?2"),
                params![team, agent.unwrap_or("")],
                row,
            )
            .optional()
            .map_err(db_err)
    }

    /// Budgets, of one team or all.
    pub fn list_budgets(&self, team: Option<&str>) -> Result<Vec<BudgetRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM budgets WHERE (?1 IS NULL OR team = ?1) ORDER BY team, agent"
            ))
            .map_err(db_err)?;
        stmt.query_map([team], row)
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)
    }

    pub fn delete_budget(&self, team: &str, agent: Option<&str>) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM budgets WHERE team = ?1 AND agent = ?2",
                params![team, agent.unwrap_or("")],
            )
            .map_err(db_err)?;
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
        let n = self
            .conn()
            .execute(
                &format!(
                    "UPDATE budgets SET {col} = ?3 WHERE team = ?1 AND agent = ?2 AND ({col} IS NULL OR {col} != ?3)"
                ),
                params![team, agent.unwrap_or(""), period],
            )
            .map_err(db_err)?;
        Ok(n > 0)
    }

    pub fn put_rollout(&self, team: &str, data: &serde_json::Value) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO rollouts (team, data, updated_at) VALUES (?1, ?2, ?3)",
                params![
                    team,
                    serde_json::to_string(data).map_err(json_err)?,
                    now_text()
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn list_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT team, data FROM rollouts ORDER BY team")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        rows.into_iter()
            .map(|(team, data)| {
                Ok(RolloutRecord {
                    team,
                    data: serde_json::from_str(&data).map_err(json_err)?,
                })
            })
            .collect()
    }
}
