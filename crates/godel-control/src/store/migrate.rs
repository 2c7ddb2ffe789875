//! Schema upgrades of `godel.db`. Each step runs once, in one transaction,
//! when the database's `user_version` is older than the step; an upgraded
//! database keeps every record of the old one.
//!
//! - v1 → v2: sandbox deadlines and parking move out of labels into columns
//!   (`expires_at`, `parked_snapshot`, `parked_reason`); the restart policy
//!   moves from the `godel.restart` label into the spec. Records written by
//!   v1 (`e2b.end_at`, `e2b.on_timeout`, `e2b.paused_snapshot`,
//!   `godel.preserved_snapshot`, `godel.restart` labels) are rewritten.
//! - v2 → v3: metering, budgets and rollouts ([`V3_TABLES`]): `meters` (one
//!   row per running sandbox: its allocation and the time it was last
//!   accounted up to), `usage` (per sandbox and UTC day: running
//!   milliseconds, milli-vCPU·ms, KiB·ms, execs, bytes) with two rollups
//!   written in the same transactions (`usage_agent`: all-time per
//!   sandbox; `usage_team_day`: per team, day and runtime), `budgets`,
//!   `rollouts`. Sandboxes running at the upgrade start their meter then.
//! - v3 → v4: replicas ([`super::replicas::TABLE`]) and the `owner` of each
//!   sandbox; existing sandboxes have none until a replica adopts them.
//!
//! PostgreSQL stores start at the current version (see `pg_schema`).

use godel_core::{OnTimeout, RestartPolicy, Result, SpawnSpec};
use rusqlite::{Connection, params};

use super::db::sqlite_err as db_err;
use super::json_err;

/// Columns added by v2.
const V2_COLUMNS: &[(&str, &str)] = &[
    ("expires_at", "TEXT"),
    ("parked_snapshot", "TEXT"),
    ("parked_reason", "TEXT"),
];

/// Labels v1 used for system state, and where their values go now.
const V1_END_AT: &str = "e2b.end_at";
const V1_ON_TIMEOUT: &str = "e2b.on_timeout";
const V1_PAUSED: &str = "e2b.paused_snapshot";
const V1_PRESERVED: &str = "godel.preserved_snapshot";
const V1_RESTART: &str = "godel.restart";
const V1_HOPS: &str = "e2b.hops";
const V1_TEMPLATE: &str = "e2b.template";

/// Tables of v3 (idempotent; run on every open after the base schema).
pub(super) const V3_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS meters (
    runtime_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    runtime TEXT NOT NULL,
    cpu_millis INTEGER NOT NULL,
    memory_kib INTEGER NOT NULL,
    since_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    runtime_id TEXT NOT NULL,
    day TEXT NOT NULL,
    team TEXT NOT NULL,
    runtime TEXT NOT NULL,
    run_ms INTEGER NOT NULL DEFAULT 0,
    vcpu_milli_ms INTEGER NOT NULL DEFAULT 0,
    mem_kib_ms INTEGER NOT NULL DEFAULT 0,
    execs INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (runtime_id, day, runtime)
);
CREATE INDEX IF NOT EXISTS usage_by_team_day ON usage(team, day);
CREATE INDEX IF NOT EXISTS usage_by_day ON usage(day);
CREATE TABLE IF NOT EXISTS usage_agent (
    runtime_id TEXT NOT NULL,
    runtime TEXT NOT NULL,
    team TEXT NOT NULL,
    run_ms INTEGER NOT NULL DEFAULT 0,
    vcpu_milli_ms INTEGER NOT NULL DEFAULT 0,
    mem_kib_ms INTEGER NOT NULL DEFAULT 0,
    execs INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (runtime_id, runtime, team)
);
CREATE INDEX IF NOT EXISTS usage_agent_team ON usage_agent(team);
CREATE TABLE IF NOT EXISTS usage_team_day (
    team TEXT NOT NULL,
    day TEXT NOT NULL,
    runtime TEXT NOT NULL,
    run_ms INTEGER NOT NULL DEFAULT 0,
    vcpu_milli_ms INTEGER NOT NULL DEFAULT 0,
    mem_kib_ms INTEGER NOT NULL DEFAULT 0,
    execs INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (team, day, runtime)
);
CREATE TABLE IF NOT EXISTS budgets (
    team TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    limit_nanos INTEGER NOT NULL,
    period TEXT NOT NULL,
    policy TEXT NOT NULL,
    alerted TEXT,
    exceeded TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (team, agent)
);
CREATE TABLE IF NOT EXISTS rollouts (
    team TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#;

/// Bring a database at `from` up to the current schema (tables already exist).
pub(super) fn upgrade(conn: &mut Connection, from: i64) -> Result<()> {
    if from < 2 {
        upgrade_v2(conn)?;
    }
    if from < 3 {
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute_batch(V3_TABLES).map_err(db_err)?;
        tx.execute(
            "INSERT OR IGNORE INTO meters (runtime_id, team, runtime, cpu_millis, memory_kib, since_ms)
             SELECT id, team, runtime, cpu_millis, memory_bytes / 1024, ?1 FROM runtimes WHERE state = 'running'",
            [chrono::Utc::now().timestamp_millis()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    if from < 4 {
        let has_owner: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('runtimes') WHERE name = 'owner'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db_err)?
            > 0;
        if !has_owner {
            conn.execute_batch("ALTER TABLE runtimes ADD COLUMN owner TEXT")
                .map_err(db_err)?;
        }
    }
    Ok(())
}

/// v1 → v2.
fn upgrade_v2(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction().map_err(db_err)?;
    let existing: Vec<String> = {
        let mut stmt = tx
            .prepare("SELECT name FROM pragma_table_info('runtimes')")
            .map_err(db_err)?;
        stmt.query_map([], |r| r.get(0))
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)?
    };
    for (col, ty) in V2_COLUMNS {
        if !existing.iter().any(|c| c == col) {
            tx.execute_batch(&format!("ALTER TABLE runtimes ADD COLUMN {col} {ty}"))
                .map_err(db_err)?;
        }
    }
    let rows: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare(
                "SELECT id, spec FROM runtimes WHERE spec LIKE '%e2b.%' OR spec LIKE '%godel.%'",
            )
            .map_err(db_err)?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)?
    };
    for (id, spec) in rows {
        let mut spec: SpawnSpec = serde_json::from_str(&spec).map_err(json_err)?;
        let l = &mut spec.labels;
        let expires_at = l.remove(V1_END_AT);
        if let Some(v) = l.remove(V1_ON_TIMEOUT) {
            spec.on_timeout = OnTimeout::parse(&v).unwrap_or_default();
        }
        if let Some(v) = l.remove(V1_RESTART) {
            spec.restart = RestartPolicy::parse(&v).ok();
        }
        if let Some(v) = l.remove(V1_HOPS) {
            spec.hops = v.parse().unwrap_or(0);
        }
        if let Some(v) = l.remove(V1_TEMPLATE)
            && spec.template.is_none()
            && v != "base"
        {
            spec.template = Some(v);
        }
        let parked = match (l.remove(V1_PAUSED), l.remove(V1_PRESERVED)) {
            (Some(s), _) => Some((s, "paused")),
            (None, Some(s)) => Some((s, "preserved")),
            (None, None) => None,
        };
        tx.execute(
            "UPDATE runtimes SET spec = ?2, expires_at = COALESCE(?3, expires_at),
                parked_snapshot = COALESCE(?4, parked_snapshot),
                parked_reason = COALESCE(?5, parked_reason) WHERE id = ?1",
            params![
                id,
                serde_json::to_string(&spec).map_err(json_err)?,
                expires_at,
                parked.as_ref().map(|p| p.0.clone()),
                parked.map(|p| p.1),
            ],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}
