//! Runtime records: insert with an atomic quota check, state transitions
//! checked against the state machine, and queries.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use godel_core::{Error, ParkReason, Parked, Result, SandboxInfo, SandboxState, SpawnSpec};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::{Store, db_err, json_err, now_text, parse_time, time_text};

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

const COLS: &str = "id, runtime, team, state, spec, handle, pid, reason, restored_from, created_at, updated_at, expires_at, parked_snapshot, parked_reason";

fn row_to_info(r: &Row<'_>) -> rusqlite::Result<(SandboxInfo, String, String)> {
    let state: String = r.get(3)?;
    let spec: String = r.get(4)?;
    let handle: String = r.get(5)?;
    let info = SandboxInfo {
        id: r.get(0)?,
        runtime: r.get(1)?,
        team: r.get(2)?,
        state: SandboxState::parse(&state).unwrap_or(SandboxState::Error),
        spec: SpawnSpec::default(),
        created_at: parse_time(&r.get::<_, String>(9)?),
        updated_at: parse_time(&r.get::<_, String>(10)?),
        reason: r.get(7)?,
        restored_from: r.get(8)?,
        handle: BTreeMap::new(),
        usage: None,
        pid: r.get::<_, Option<i64>>(6)?.map(|p| p as u32),
        expires_at: r.get::<_, Option<String>>(11)?.map(|t| parse_time(&t)),
        parked: match (
            r.get::<_, Option<String>>(12)?,
            r.get::<_, Option<String>>(13)?,
        ) {
            (Some(snapshot_id), Some(reason)) => ParkReason::parse(&reason).map(|reason| Parked {
                snapshot_id,
                reason,
            }),
            _ => None,
        },
    };
    Ok((info, spec, handle))
}

fn finish(parts: (SandboxInfo, String, String)) -> Result<SandboxInfo> {
    let (mut info, spec, handle) = parts;
    info.spec = serde_json::from_str(&spec).map_err(json_err)?;
    info.handle = serde_json::from_str(&handle).map_err(json_err)?;
    Ok(info)
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
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let usage = team_usage_tx(&tx, &info.team)?;
        check_quota(&info.team, usage, reservation, quota)?;
        let now = now_text();
        tx.execute(
            "INSERT INTO runtimes (id, runtime, team, state, spec, handle, pid, reason, restored_from,
                cpu_millis, memory_bytes, disk_bytes, created_at, updated_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7, ?8, ?9, ?10, ?11, ?11, ?12)",
            params![
                info.id,
                info.runtime,
                info.team,
                info.state.as_str(),
                serde_json::to_string(&info.spec).map_err(json_err)?,
                serde_json::to_string(&info.handle).map_err(json_err)?,
                info.restored_from,
                reservation.cpu_millis as i64,
                reservation.memory_bytes as i64,
                reservation.disk_bytes as i64,
                now,
                info.expires_at.map(time_text),
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                Error::conflict(format!("runtime {} already exists", info.id))
            }
            e => db_err(e),
        })?;
        tx.commit().map_err(db_err)
    }

    /// Move a runtime to `to`, refusing illegal transitions. Returns the new record.
    pub fn transition(
        &self,
        id: &str,
        to: SandboxState,
        reason: Option<&str>,
    ) -> Result<SandboxInfo> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let cur: Option<String> = tx
            .query_row("SELECT state FROM runtimes WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        let cur = cur.ok_or_else(|| Error::not_found(format!("runtime {id} not found")))?;
        let cur = SandboxState::parse(&cur)?;
        if cur != to {
            cur.transition(to).map_err(|e| e.with_runtime(id))?;
        }
        tx.execute(
            "UPDATE runtimes SET state = ?2, reason = COALESCE(?3, reason), updated_at = ?4 WHERE id = ?1",
            params![id, to.as_str(), reason, now_text()],
        )
        .map_err(db_err)?;
        // Metering follows the state in the same transaction: only running costs.
        let now_ms = self.now().timestamp_millis();
        if cur == SandboxState::Running && to != SandboxState::Running {
            super::usage::meter_close(&tx, id, now_ms)?;
        } else if to == SandboxState::Running && cur != SandboxState::Running {
            super::usage::meter_open(&tx, id, now_ms)?;
        }
        let info = tx
            .query_row(
                &format!("SELECT {COLS} FROM runtimes WHERE id = ?1"),
                [id],
                row_to_info,
            )
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        finish(info)
    }

    /// Record what the provider returned (handle, pid).
    pub fn set_handle(
        &self,
        id: &str,
        handle: &BTreeMap<String, serde_json::Value>,
        pid: Option<u32>,
    ) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE runtimes SET handle = ?2, pid = ?3, updated_at = ?4 WHERE id = ?1",
                params![
                    id,
                    serde_json::to_string(handle).map_err(json_err)?,
                    pid.map(|p| p as i64),
                    now_text()
                ],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::not_found(format!("runtime {id} not found")));
        }
        Ok(())
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
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let usage = team_usage_tx(&tx, &team)?;
        check_quota(&team, usage, reservation, quota)?;
        let n = tx
            .execute(
                "UPDATE runtimes SET team = ?2, spec = ?3, cpu_millis = ?4, memory_bytes = ?5, disk_bytes = ?6, updated_at = ?7
                 WHERE id = ?1 AND team = ?8 AND state = 'running'",
                params![
                    id,
                    team,
                    serde_json::to_string(spec).map_err(json_err)?,
                    reservation.cpu_millis as i64,
                    reservation.memory_bytes as i64,
                    reservation.disk_bytes as i64,
                    now_text(),
                    from_team
                ],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::not_found(format!("warm runtime {id} is gone")));
        }
        // The pool's team paid until now; the claiming team pays from now.
        let now_ms = self.now().timestamp_millis();
        super::usage::meter_close(&tx, id, now_ms)?;
        super::usage::meter_open(&tx, id, now_ms)?;
        let info = tx
            .query_row(
                &format!("SELECT {COLS} FROM runtimes WHERE id = ?1"),
                [id],
                row_to_info,
            )
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        finish(info)
    }

    /// Record which provider now holds a runtime (fallback moved it).
    pub fn set_runtime_kind(&self, id: &str, runtime: &str, spec: &SpawnSpec) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE runtimes SET runtime = ?2, spec = ?3, updated_at = ?4 WHERE id = ?1",
                params![
                    id,
                    runtime,
                    serde_json::to_string(spec).map_err(json_err)?,
                    now_text()
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Set or clear a sandbox's deadline.
    pub fn set_expires_at(&self, id: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        self.update_one(
            "UPDATE runtimes SET expires_at = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, at.map(time_text), now_text()],
            id,
        )
    }

    /// Mark a sandbox parked in a snapshot, or clear the mark.
    pub fn set_parked(&self, id: &str, parked: Option<&Parked>) -> Result<()> {
        self.update_one(
            "UPDATE runtimes SET parked_snapshot = ?2, parked_reason = ?3, updated_at = ?4 WHERE id = ?1",
            params![
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
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM runtimes WHERE state = 'running' AND expires_at IS NOT NULL AND expires_at <= ?1"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query_map([time_text(now)], row_to_info)
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        rows.into_iter().map(finish).collect()
    }

    fn update_one(&self, sql: &str, args: impl rusqlite::Params, id: &str) -> Result<()> {
        let n = self.conn().execute(sql, args).map_err(db_err)?;
        if n == 0 {
            return Err(Error::not_found(format!("runtime {id} not found")));
        }
        Ok(())
    }

    /// Replace the spec of a runtime (e.g. labels changed).
    pub fn set_spec(&self, id: &str, spec: &SpawnSpec) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE runtimes SET spec = ?2, updated_at = ?3 WHERE id = ?1",
                params![
                    id,
                    serde_json::to_string(spec).map_err(json_err)?,
                    now_text()
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn get_sandbox(&self, id: &str) -> Result<Option<SandboxInfo>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLS} FROM runtimes WHERE id = ?1"),
                [id],
                row_to_info,
            )
            .optional()
            .map_err(db_err)?;
        row.map(finish).transpose()
    }

    /// Runtimes, newest first. `team = None` lists every team's.
    pub fn list_sandboxes(
        &self,
        team: Option<&str>,
        include_terminal: bool,
    ) -> Result<Vec<SandboxInfo>> {
        let conn = self.conn();
        let mut sql = format!("SELECT {COLS} FROM runtimes WHERE (?1 IS NULL OR team = ?1)");
        if !include_terminal {
            sql.push_str(" AND state NOT IN ('terminated', 'error')");
        }
        sql.push_str(" ORDER BY created_at DESC, id");
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        let rows = stmt
            .query_map(params![team], row_to_info)
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        rows.into_iter().map(finish).collect()
    }

    /// Every record not in a final state (for reconciliation).
    pub fn non_terminal_sandboxes(&self) -> Result<Vec<SandboxInfo>> {
        self.list_sandboxes(None, false)
    }

    /// Resources a team holds now.
    pub fn team_usage(&self, team: &str) -> Result<TeamUsage> {
        let conn = self.conn();
        team_usage_tx(&conn, team)
    }

    /// Remove a record entirely (a spawn refused for bad input leaves no trace).
    pub fn delete_sandbox(&self, id: &str) -> Result<()> {
        let conn = self.conn();
        super::usage::meter_close(&conn, id, self.now().timestamp_millis())?;
        conn.execute("DELETE FROM runtimes WHERE id = ?1", [id])
            .map_err(db_err)?;
        Ok(())
    }

    /// Delete terminal records older than `keep` (housekeeping).
    pub fn prune_sandboxes(&self, older_than: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        self.conn()
            .execute(
                "DELETE FROM runtimes WHERE state IN ('terminated','error') AND updated_at < ?1",
                [older_than.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)],
            )
            .map_err(db_err)
    }
}

fn team_usage_tx(conn: &rusqlite::Connection, team: &str) -> Result<TeamUsage> {
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(cpu_millis),0), COALESCE(SUM(memory_bytes),0), COALESCE(SUM(disk_bytes),0)
         FROM runtimes WHERE team = ?1 AND state NOT IN ('terminated', 'error')",
        [team],
        |r| {
            Ok(TeamUsage {
                agents: r.get::<_, i64>(0)? as u64,
                cpu_millis: r.get::<_, i64>(1)? as u64,
                memory_bytes: r.get::<_, i64>(2)? as u64,
                disk_bytes: r.get::<_, i64>(3)? as u64,
            })
        },
    )
    .map_err(db_err)
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
