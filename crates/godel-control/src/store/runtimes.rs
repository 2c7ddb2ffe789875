//! Runtime records: insert with an atomic quota check, state transitions
//! checked against the state machine, and queries.

use std::collections::BTreeMap;

use super::db::{Row, Sql, args};
use super::{Store, json_err, now_text, parse_time, time_text};
use chrono::{DateTime, Utc};
use godel_core::{Error, ParkReason, Parked, Result, SandboxInfo, SandboxState, SpawnSpec};

/// Resources a runtime reserves against its team's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// What a team holds right now (non-terminal runtimes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TeamUsage {
    pub agents: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

pub(super) const COLS: &str = "id, runtime, team, state, spec, handle, pid, reason, restored_from, created_at, updated_at, expires_at, parked_snapshot, parked_reason, owner";

pub(super) fn row_to_info(r: &Row) -> Result<SandboxInfo> {
    let state = r.str(3)?;
    Ok(SandboxInfo {
        id: r.str(0)?,
        runtime: r.str(1)?,
        team: r.str(2)?,
        state: SandboxState::parse(&state).unwrap_or(SandboxState::Error),
        spec: serde_json::from_str(&r.str(4)?).map_err(json_err)?,
        created_at: parse_time(&r.str(9)?),
        updated_at: parse_time(&r.str(10)?),
        reason: r.opt_str(7)?,
        restored_from: r.opt_str(8)?,
        handle: serde_json::from_str(&r.str(5)?).map_err(json_err)?,
        usage: None,
        pid: r.opt_i64(6)?.map(|p| p as u32),
        expires_at: r.opt_str(11)?.map(|t| parse_time(&t)),
        parked: match (r.opt_str(12)?, r.opt_str(13)?) {
            (Some(snapshot_id), Some(reason)) => ParkReason::parse(&reason).map(|reason| Parked {
                snapshot_id,
                reason,
            }),
            _ => None,
        },
        owner: r.opt_str(14)?,
    })
}

fn get(db: &dyn Sql, id: &str) -> Result<Option<SandboxInfo>> {
    db.query_opt(
        &format!("SELECT {COLS} FROM runtimes WHERE id = ?1"),
        args![id],
    )?
    .map(|r| row_to_info(&r))
    .transpose()
}

/// A team's quota limits (None = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_agents: Option<u64>,
    pub max_cpu_millis: Option<u64>,
    pub max_memory_bytes: Option<u64>,
    pub max_disk_bytes: Option<u64>,
}

impl Store {
    /// Insert a new runtime record in `creating`, after checking the team's
    /// quota in the same transaction so concurrent spawns cannot overshoot.
    pub fn insert_sandbox(
        &self,
        info: &SandboxInfo,
        reservation: Reservation,
        quota: Quota,
    ) -> Result<()> {
        let spec = serde_json::to_string(&info.spec).map_err(json_err)?;
        let handle = serde_json::to_string(&info.handle).map_err(json_err)?;
        self.write(|tx| {
            let usage = team_usage_tx(tx, &info.team)?;
            check_quota(&info.team, usage, reservation, quota)?;
            let now = now_text();
            tx.execute(
                "INSERT INTO runtimes (id, runtime, team, state, spec, handle, pid, reason, restored_from,
                    cpu_millis, memory_bytes, disk_bytes, created_at, updated_at, expires_at, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13)",
                args![
                    &info.id,
                    &info.runtime,
                    &info.team,
                    info.state.as_str(),
                    spec,
                    handle,
                    info.restored_from.as_deref(),
                    reservation.cpu_millis,
                    reservation.memory_bytes,
                    reservation.disk_bytes,
                    now,
                    info.expires_at.map(time_text),
                    info.owner.as_deref(),
                ],
            )
            .map_err(|e| {
                if e.code == godel_core::ErrorCode::Conflict {
                    Error::conflict(format!("runtime {} already exists", info.id))
                } else {
                    e
                }
            })?;
            Ok(())
        })
    }

    /// Move a runtime to `to`, refusing illegal transitions. Returns the new record.
    pub fn transition(
        &self,
        id: &str,
        to: SandboxState,
        reason: Option<&str>,
    ) -> Result<SandboxInfo> {
        let now_ms = self.now().timestamp_millis();
        self.write(|tx| {
            let cur = tx
                .query_opt("SELECT state FROM runtimes WHERE id = ?1", args![id])?
                .ok_or_else(|| Error::not_found(format!("runtime {id} not found")))?
                .str(0)?;
            let cur = SandboxState::parse(&cur)?;
            if cur != to {
                cur.transition(to).map_err(|e| e.with_runtime(id))?;
            }
            tx.execute(
                "UPDATE runtimes SET state = ?2, reason = COALESCE(?3, reason), updated_at = ?4 WHERE id = ?1",
                args![id, to.as_str(), reason, now_text()],
            )?;
            // Metering follows the state in the same transaction: only running costs.
            if cur == SandboxState::Running && to != SandboxState::Running {
                super::usage::meter_close(tx, id, now_ms)?;
            } else if to == SandboxState::Running && cur != SandboxState::Running {
                super::usage::meter_open(tx, id, now_ms)?;
            }
            get(tx, id)?.ok_or_else(|| Error::not_found(format!("runtime {id} not found")))
        })
    }

    /// Record what the provider returned (handle, pid).
    pub fn set_handle(
        &self,
        id: &str,
        handle: &BTreeMap<String, serde_json::Value>,
        pid: Option<u32>,
    ) -> Result<()> {
        self.update_one(
            "UPDATE runtimes SET handle = ?2, pid = ?3, updated_at = ?4 WHERE id = ?1",
            args![
                id,
                serde_json::to_string(handle).map_err(json_err)?,
                pid,
                now_text()
            ],
            id,
        )
    }

    /// Hand a running warm-pool runtime to `team`, charging its quota in the
    /// same transaction. `NOT_FOUND` when it is no longer a running runtime of `from_team`.
    pub fn reassign_sandbox(
        &self,
        id: &str,
        from_team: &str,
        spec: &SpawnSpec,
        reservation: Reservation,
        quota: Quota,
    ) -> Result<SandboxInfo> {
        let team = spec.team.clone().unwrap_or_default();
        let spec = serde_json::to_string(spec).map_err(json_err)?;
        let now_ms = self.now().timestamp_millis();
        self.write(|tx| {
            let usage = team_usage_tx(tx, &team)?;
            check_quota(&team, usage, reservation, quota)?;
            let n = tx.execute(
                "UPDATE runtimes SET team = ?2, spec = ?3, cpu_millis = ?4, memory_bytes = ?5, disk_bytes = ?6, updated_at = ?7
                 WHERE id = ?1 AND team = ?8 AND state = 'running'",
                args![
                    id,
                    &team,
                    spec,
                    reservation.cpu_millis,
                    reservation.memory_bytes,
                    reservation.disk_bytes,
                    now_text(),
                    from_team
                ],
            )?;
            if n == 0 {
                return Err(Error::not_found(format!("warm runtime {id} is gone")));
            }
            // The pool's team paid until now; the claiming team pays from now.
            super::usage::meter_close(tx, id, now_ms)?;
            super::usage::meter_open(tx, id, now_ms)?;
            get(tx, id)?.ok_or_else(|| Error::not_found(format!("warm runtime {id} is gone")))
        })
    }

    /// Record which provider now holds a runtime (fallback moved it).
    pub fn set_runtime_kind(&self, id: &str, runtime: &str, spec: &SpawnSpec) -> Result<()> {
        let spec = serde_json::to_string(spec).map_err(json_err)?;
        self.write(|tx| {
            tx.execute(
                "UPDATE runtimes SET runtime = ?2, spec = ?3, updated_at = ?4 WHERE id = ?1",
                args![id, runtime, spec, now_text()],
            )
        })
        .map(drop)
    }

    /// Set or clear a sandbox's deadline.
    pub fn set_expires_at(&self, id: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        self.update_one(
            "UPDATE runtimes SET expires_at = ?2, updated_at = ?3 WHERE id = ?1",
            args![id, at.map(time_text), now_text()],
            id,
        )
    }

    /// Mark a sandbox parked in a snapshot, or clear the mark.
    pub fn set_parked(&self, id: &str, parked: Option<&Parked>) -> Result<()> {
        self.update_one(
            "UPDATE runtimes SET parked_snapshot = ?2, parked_reason = ?3, updated_at = ?4 WHERE id = ?1",
            args![
                id,
                parked.map(|p| p.snapshot_id.clone()),
                parked.map(|p| p.reason.as_str()),
                now_text()
            ],
            id,
        )
    }

    /// Running sandboxes whose deadline is at or before `now`.
    pub fn expired_sandboxes(&self, now: DateTime<Utc>) -> Result<Vec<SandboxInfo>> {
        self.read(|db| {
            db.query(
                &format!(
                    "SELECT {COLS} FROM runtimes WHERE state = 'running' AND expires_at IS NOT NULL AND expires_at <= ?1"
                ),
                args![time_text(now)],
            )?
            .iter()
            .map(row_to_info)
            .collect()
        })
    }

    fn update_one(&self, sql: &str, args: &[super::db::Value], id: &str) -> Result<()> {
        let n = self.write(|tx| tx.execute(sql, args))?;
        if n == 0 {
            return Err(Error::not_found(format!("runtime {id} not found")));
        }
        Ok(())
    }

    /// Replace the spec of a runtime (e.g. labels changed).
    pub fn set_spec(&self, id: &str, spec: &SpawnSpec) -> Result<()> {
        let spec = serde_json::to_string(spec).map_err(json_err)?;
        self.write(|tx| {
            tx.execute(
                "UPDATE runtimes SET spec = ?2, updated_at = ?3 WHERE id = ?1",
                args![id, spec, now_text()],
            )
        })
        .map(drop)
    }

    pub fn get_sandbox(&self, id: &str) -> Result<Option<SandboxInfo>> {
        self.read(|db| get(db, id))
    }

    /// Runtimes, newest first. `team = None` lists every team's.
    pub fn list_sandboxes(
        &self,
        team: Option<&str>,
        include_terminal: bool,
    ) -> Result<Vec<SandboxInfo>> {
        let mut sql =
            format!("SELECT {COLS} FROM runtimes WHERE (CAST(?1 AS TEXT) IS NULL OR team = ?1)");
        if !include_terminal {
            sql.push_str(" AND state NOT IN ('terminated', 'error')");
        }
        sql.push_str(" ORDER BY created_at DESC, id");
        self.read(|db| {
            db.query(&sql, args![team])?
                .iter()
                .map(row_to_info)
                .collect()
        })
    }

    /// Every record not in a final state (for reconciliation).
    pub fn non_terminal_sandboxes(&self) -> Result<Vec<SandboxInfo>> {
        self.list_sandboxes(None, false)
    }

    /// Resources a team holds now.
    pub fn team_usage(&self, team: &str) -> Result<TeamUsage> {
        self.read(|db| team_usage_tx(db, team))
    }

    /// Remove a record entirely (a spawn refused for bad input leaves no trace).
    pub fn delete_sandbox(&self, id: &str) -> Result<()> {
        let now_ms = self.now().timestamp_millis();
        self.write(|tx| {
            super::usage::meter_close(tx, id, now_ms)?;
            tx.execute("DELETE FROM runtimes WHERE id = ?1", args![id])
        })
        .map(drop)
    }

    /// Delete terminal records older than `keep` (housekeeping).
    pub fn prune_sandboxes(&self, older_than: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM runtimes WHERE state IN ('terminated','error') AND updated_at < ?1",
                args![time_text(older_than)],
            )
        })
    }
}

fn team_usage_tx(db: &dyn Sql, team: &str) -> Result<TeamUsage> {
    let r = db.query_one(
        "SELECT COUNT(*), CAST(COALESCE(SUM(cpu_millis),0) AS BIGINT), CAST(COALESCE(SUM(memory_bytes),0) AS BIGINT),
                CAST(COALESCE(SUM(disk_bytes),0) AS BIGINT)
         FROM runtimes WHERE team = ?1 AND state NOT IN ('terminated', 'error')",
        args![team],
    )?;
    Ok(TeamUsage {
        agents: r.u64(0)?,
        cpu_millis: r.u64(1)?,
        memory_bytes: r.u64(2)?,
        disk_bytes: r.u64(3)?,
    })
}

/// Refuse a reservation that would take a team past its quota.
pub(crate) fn check_quota(team: &str, usage: TeamUsage, want: Reservation, q: Quota) -> Result<()> {
    let over = |what: &str,
                used: u64,
                add: u64,
                max: Option<u64>,
                unit: &dyn Fn(u64) -> String|
     -> Result<()> {
        if let Some(max) = max
            && used + add > max
        {
            return Err(Error::exhausted(format!(
                "team {team} quota exceeded for {what}: {} in use + {} requested > {} allowed",
                unit(used),
                unit(add),
                unit(max)
            )));
        }
        Ok(())
    };
    let count = |v: u64| v.to_string();
    let cpu = |v: u64| godel_core::Cpu(v).to_string();
    let bytes = |v: u64| godel_core::ByteQuantity(v).to_string();
    over("agents", usage.agents, 1, q.max_agents, &count)?;
    over(
        "cpu",
        usage.cpu_millis,
        want.cpu_millis,
        q.max_cpu_millis,
        &cpu,
    )?;
    over(
        "memory",
        usage.memory_bytes,
        want.memory_bytes,
        q.max_memory_bytes,
        &bytes,
    )?;
    over(
        "disk",
        usage.disk_bytes,
        want.disk_bytes,
        q.max_disk_bytes,
        &bytes,
    )?;
    Ok(())
}
