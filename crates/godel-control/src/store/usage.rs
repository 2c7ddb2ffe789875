//! Metering in the store: a `meters` row per running sandbox (its
//! allocation and the instant it was last accounted up to) and `usage`
//! rows per sandbox and UTC day holding integer totals (running ms,
//! milli-vCPU·ms, KiB·ms, execs, bytes). Opening and closing a meter
//! happen in the same transaction as the state change that causes them
//! (`transition`); [`Store::flush_meters`] moves every open meter's
//! elapsed time into `usage` in one transaction. A crash loses nothing
//! of the running time (the meter's start is durable) and at most one
//! flush window of output bytes counted in memory.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use godel_core::Result;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, db_err};

/// One open meter (a running sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenMeter {
    pub runtime_id: String,
    pub team: String,
    pub runtime: String,
    pub cpu_millis: u64,
    pub memory_kib: u64,
    pub since_ms: i64,
}

/// Metered totals of one group (sandbox, runtime or day) on one runtime kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsagePart {
    /// The group: a sandbox id, a runtime name or a day (`YYYY-MM-DD`).
    pub key: String,
    pub team: String,
    pub runtime: String,
    pub run_ms: u64,
    pub vcpu_milli_ms: u64,
    pub mem_kib_ms: u64,
    pub execs: u64,
    pub bytes: u64,
}

impl UsagePart {
    pub fn add(&mut self, o: &UsagePart) {
        self.run_ms += o.run_ms;
        self.vcpu_milli_ms += o.vcpu_milli_ms;
        self.mem_kib_ms += o.mem_kib_ms;
        self.execs += o.execs;
        self.bytes += o.bytes;
    }
}

/// Which usage to read.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub team: Option<String>,
    pub agent: Option<String>,
    /// First day included (UTC).
    pub since: Option<NaiveDate>,
    /// `agent`, `runtime` or `day`.
    pub by: String,
}

const DAY_MS: i64 = 86_400_000;

fn day_of(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// Split `[from, to)` at UTC midnights: `(day, ms)` pieces.
pub(crate) fn split_days(from: i64, to: i64) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let next = (t.div_euclid(DAY_MS) + 1) * DAY_MS;
        let end = next.min(to);
        out.push((day_of(t), end - t));
        t = end;
    }
    out
}

fn get_meter(conn: &Connection, id: &str) -> Result<Option<OpenMeter>> {
    conn.query_row(
        "SELECT runtime_id, team, runtime, cpu_millis, memory_kib, since_ms FROM meters WHERE runtime_id = ?1",
        [id],
        meter_row,
    )
    .optional()
    .map_err(db_err)
}

fn meter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OpenMeter> {
    Ok(OpenMeter {
        runtime_id: r.get(0)?,
        team: r.get(1)?,
        runtime: r.get(2)?,
        cpu_millis: r.get::<_, i64>(3)? as u64,
        memory_kib: r.get::<_, i64>(4)? as u64,
        since_ms: r.get(5)?,
    })
}

/// Add `d` to a sandbox's day row and to both rollups.
fn add(conn: &Connection, id: &str, day: &str, d: &UsagePart) -> Result<()> {
    let vals = params![
        id,
        day,
        d.team,
        d.runtime,
        d.run_ms as i64,
        d.vcpu_milli_ms as i64,
        d.mem_kib_ms as i64,
        d.execs as i64,
        d.bytes as i64
    ];
    const SET: &str = "run_ms = run_ms + excluded.run_ms,
        vcpu_milli_ms = vcpu_milli_ms + excluded.vcpu_milli_ms,
        mem_kib_ms = mem_kib_ms + excluded.mem_kib_ms,
        execs = execs + excluded.execs, bytes = bytes + excluded.bytes";
    for sql in [
        format!(
            "INSERT INTO usage (runtime_id, day, team, runtime, run_ms, vcpu_milli_ms, mem_kib_ms, execs, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(runtime_id, day, runtime) DO UPDATE SET team = excluded.team, {SET}"
        ),
        format!(
            "INSERT INTO usage_agent (runtime_id, runtime, team, run_ms, vcpu_milli_ms, mem_kib_ms, execs, bytes)
             VALUES (?1, ?4, ?3, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(runtime_id, runtime, team) DO UPDATE SET {SET}"
        ),
        format!(
            "INSERT INTO usage_team_day (team, day, runtime, run_ms, vcpu_milli_ms, mem_kib_ms, execs, bytes)
             VALUES (?3, ?2, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(team, day, runtime) DO UPDATE SET {SET}"
        ),
    ] {
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        stmt.execute(vals).map_err(db_err)?;
    }
    Ok(())
}

/// Add running time to a sandbox's day rows.
fn accrue(conn: &Connection, m: &OpenMeter, to_ms: i64) -> Result<()> {
    for (day, ms) in split_days(m.since_ms, to_ms) {
        let ms = ms as u64;
        let d = UsagePart {
            key: String::new(),
            team: m.team.clone(),
            runtime: m.runtime.clone(),
            run_ms: ms,
            vcpu_milli_ms: ms * m.cpu_millis,
            mem_kib_ms: ms * m.memory_kib,
            execs: 0,
            bytes: 0,
        };
        add(conn, &m.runtime_id, &day, &d)?;
    }
    Ok(())
}

fn count(conn: &Connection, id: &str, day: &str, execs: u64, bytes: u64) -> Result<()> {
    let owner: Option<(String, String)> = conn
        .query_row(
            "SELECT team, runtime FROM runtimes WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    let Some((team, runtime)) = owner else {
        return Ok(());
    };
    let d = UsagePart {
        team,
        runtime,
        execs,
        bytes,
        ..Default::default()
    };
    add(conn, id, day, &d)
}

/// Start metering `id` (it just became running) at `now_ms`.
pub(super) fn meter_open(conn: &Connection, id: &str, now_ms: i64) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO meters (runtime_id, team, runtime, cpu_millis, memory_kib, since_ms)
         SELECT id, team, runtime, cpu_millis, memory_bytes / 1024, ?2 FROM runtimes WHERE id = ?1",
        params![id, now_ms],
    )
    .map_err(db_err)?;
    Ok(())
}

/// Stop metering `id` (it stopped running): account up to `now_ms`.
pub(super) fn meter_close(conn: &Connection, id: &str, now_ms: i64) -> Result<()> {
    if let Some(m) = get_meter(conn, id)? {
        accrue(conn, &m, now_ms)?;
        conn.execute("DELETE FROM meters WHERE runtime_id = ?1", [id])
            .map_err(db_err)?;
    }
    Ok(())
}

impl Store {
    /// Account every open meter up to now and add `pending` counters
    /// (`id → (execs, bytes)`), all in one transaction.
    pub fn flush_meters(&self, pending: &HashMap<String, (u64, u64)>) -> Result<usize> {
        let now = self.now();
        let now_ms = now.timestamp_millis();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        let meters = open_meters(&tx)?;
        for m in &meters {
            accrue(&tx, m, now_ms)?;
        }
        tx.execute(
            "UPDATE meters SET since_ms = ?1 WHERE since_ms < ?1",
            [now_ms],
        )
        .map_err(db_err)?;
        let day = day_of(now_ms);
        for (id, (execs, bytes)) in pending {
            count(&tx, id, &day, *execs, *bytes)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(meters.len())
    }

    /// Count one exec (and the bytes it sent) or a file transfer right away.
    pub fn count_usage(&self, id: &str, execs: u64, bytes: u64) -> Result<()> {
        let day = day_of(self.now().timestamp_millis());
        count(&self.conn(), id, &day, execs, bytes)
    }

    /// Every open meter.
    pub fn open_meters(&self) -> Result<Vec<OpenMeter>> {
        open_meters(&self.conn())
    }

    /// Usage grouped by `q.by` and runtime kind, from the stored rows: the
    /// per-team-and-day rollup for `runtime` and `day`, the per-sandbox
    /// rollup for `agent` (minus the day rows before `since`, when those are
    /// fewer than the rows after it), the day rows otherwise.
    pub fn usage_parts(&self, q: &UsageQuery) -> Result<Vec<UsagePart>> {
        let since = q.since.map(|d| d.format("%Y-%m-%d").to_string());
        let team = q.team.as_deref();
        let agent = q.agent.as_deref();
        let by_key = match q.by.as_str() {
            "day" => "day",
            "runtime" => "runtime",
            _ => "runtime_id",
        };
        if agent.is_some() {
            return self.grouped(
                "usage",
                by_key,
                team,
                since.as_deref().map(|s| (">=", s)),
                agent,
            );
        }
        match (by_key, since.as_deref()) {
            ("runtime_id", None) => self.grouped("usage_agent", "runtime_id", team, None, None),
            ("runtime_id", Some(s)) => {
                let (before, after) = self.count_around(team, s)?;
                if after <= before {
                    return self.grouped("usage", "runtime_id", team, Some((">=", s)), None);
                }
                // All time minus what came before `since`: fewer rows to read.
                let minus = self.grouped("usage", "runtime_id", team, Some(("<", s)), None)?;
                let minus: std::collections::HashMap<(String, String), UsagePart> = minus
                    .into_iter()
                    .map(|p| ((p.key.clone(), p.runtime.clone()), p))
                    .collect();
                let mut out = Vec::new();
                for mut p in self.grouped("usage_agent", "runtime_id", team, None, None)? {
                    if let Some(m) = minus.get(&(p.key.clone(), p.runtime.clone())) {
                        p.run_ms -= m.run_ms.min(p.run_ms);
                        p.vcpu_milli_ms -= m.vcpu_milli_ms.min(p.vcpu_milli_ms);
                        p.mem_kib_ms -= m.mem_kib_ms.min(p.mem_kib_ms);
                        p.execs -= m.execs.min(p.execs);
                        p.bytes -= m.bytes.min(p.bytes);
                        if p.run_ms == 0 && p.execs == 0 && p.bytes == 0 {
                            continue;
                        }
                    }
                    out.push(p);
                }
                Ok(out)
            }
            (key, s) => self.grouped("usage_team_day", key, team, s.map(|s| (">=", s)), None),
        }
    }

    /// Day rows of `team` (or all) before and from `since`.
    fn count_around(&self, team: Option<&str>, since: &str) -> Result<(u64, u64)> {
        let conn = self.conn();
        let count = |op: &str| -> Result<u64> {
            let n: i64 = match team {
                Some(t) => conn.query_row(
                    &format!("SELECT COUNT(*) FROM usage WHERE team = ?1 AND day {op} ?2"),
                    params![t, since],
                    |r| r.get(0),
                ),
                None => conn.query_row(
                    &format!("SELECT COUNT(*) FROM usage WHERE day {op} ?1"),
                    params![since],
                    |r| r.get(0),
                ),
            }
            .map_err(db_err)?;
            Ok(n as u64)
        };
        Ok((count("<")?, count(">=")?))
    }

    /// `SELECT key, totals FROM table WHERE filters GROUP BY key, runtime`.
    fn grouped(
        &self,
        table: &str,
        key: &str,
        team: Option<&str>,
        day: Option<(&str, &str)>,
        agent: Option<&str>,
    ) -> Result<Vec<UsagePart>> {
        let mut cond = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(t) = team {
            args.push(t.to_string());
            cond.push(format!("team = ?{}", args.len()));
        }
        if let Some((op, d)) = day {
            args.push(d.to_string());
            cond.push(format!("day {op} ?{}", args.len()));
        }
        if let Some(a) = agent {
            args.push(a.to_string());
            cond.push(format!("runtime_id = ?{}", args.len()));
        }
        let filter = if cond.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", cond.join(" AND "))
        };
        let sql = format!(
            "SELECT {key}, MIN(team), runtime, SUM(run_ms), SUM(vcpu_milli_ms), SUM(mem_kib_ms), SUM(execs), SUM(bytes)
             FROM {table} {filter} GROUP BY {key}, runtime ORDER BY {key}, runtime"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(UsagePart {
                key: r.get(0)?,
                team: r.get(1)?,
                runtime: r.get(2)?,
                run_ms: r.get::<_, i64>(3)? as u64,
                vcpu_milli_ms: r.get::<_, i64>(4)? as u64,
                mem_kib_ms: r.get::<_, i64>(5)? as u64,
                execs: r.get::<_, i64>(6)? as u64,
                bytes: r.get::<_, i64>(7)? as u64,
            })
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)
    }

    /// Teams with any usage on or after `since`.
    pub fn usage_teams(&self, since: NaiveDate) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT team FROM usage WHERE day >= ?1")
            .map_err(db_err)?;
        stmt.query_map([since.format("%Y-%m-%d").to_string()], |r| r.get(0))
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)
    }

    /// Add usage rows, `(sandbox id, day, totals)`, in one transaction
    /// (benchmarks and tests seed history with it).
    pub fn insert_usage(&self, rows: &[(String, String, UsagePart)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        for (id, day, p) in rows {
            add(&tx, id, day, p)?;
        }
        tx.commit().map_err(db_err)
    }
}

fn open_meters(conn: &Connection) -> Result<Vec<OpenMeter>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT runtime_id, team, runtime, cpu_millis, memory_kib, since_ms FROM meters ORDER BY runtime_id",
        )
        .map_err(db_err)?;
    stmt.query_map([], meter_row)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)
}

/// The unflushed part of an open meter from `since_ms` to `now`, by day.
pub(crate) fn live_parts(m: &OpenMeter, now: DateTime<Utc>) -> Vec<(String, UsagePart)> {
    split_days(m.since_ms, now.timestamp_millis())
        .into_iter()
        .map(|(day, ms)| {
            let ms = ms as u64;
            (
                day,
                UsagePart {
                    key: String::new(),
                    team: m.team.clone(),
                    runtime: m.runtime.clone(),
                    run_ms: ms,
                    vcpu_milli_ms: ms * m.cpu_millis,
                    mem_kib_ms: ms * m.memory_kib,
                    execs: 0,
                    bytes: 0,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_midnight() {
        let d = DAY_MS;
        assert_eq!(
            split_days(d - 10, d + 5),
            vec![
                ("1970-01-01".to_string(), 10),
                ("1970-01-02".to_string(), 5)
            ]
        );
        assert!(split_days(5, 5).is_empty());
    }
}
