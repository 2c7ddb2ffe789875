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

use super::Store;
use super::db::{Row, Sql, Value, args};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use godel_core::Result;

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

fn get_meter(db: &dyn Sql, id: &str) -> Result<Option<OpenMeter>> {
    db.query_opt(
        "SELECT runtime_id, team, runtime, cpu_millis, memory_kib, since_ms FROM meters WHERE runtime_id = ?1",
        args![id],
    )?
    .map(|r| meter_row(&r))
    .transpose()
}

fn meter_row(r: &Row) -> Result<OpenMeter> {
    Ok(OpenMeter {
        runtime_id: r.str(0)?,
        team: r.str(1)?,
        runtime: r.str(2)?,
        cpu_millis: r.u64(3)?,
        memory_kib: r.u64(4)?,
        since_ms: r.i64(5)?,
    })
}

/// Add `d` to a sandbox's day row and to both rollups.
fn add(db: &dyn Sql, id: &str, day: &str, d: &UsagePart) -> Result<()> {
    let vals = args![
        id,
        day,
        &d.team,
        &d.runtime,
        d.run_ms,
        d.vcpu_milli_ms,
        d.mem_kib_ms,
        d.execs,
        d.bytes
    ];
    let set = |t: &str| {
        format!(
            "run_ms = {t}.run_ms + excluded.run_ms,
             vcpu_milli_ms = {t}.vcpu_milli_ms + excluded.vcpu_milli_ms,
             mem_kib_ms = {t}.mem_kib_ms + excluded.mem_kib_ms,
             execs = {t}.execs + excluded.execs, bytes = {t}.bytes + excluded.bytes"
        )
    };
    for sql in [
        format!(
            "INSERT INTO usage (runtime_id, day, team, runtime, run_ms, vcpu_milli_ms, mem_kib_ms, execs, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(runtime_id, day, runtime) DO UPDATE SET team = excluded.team, {}",
            set("usage")
        ),
        format!(
            "INSERT INTO usage_agent (runtime_id, runtime, team, run_ms, vcpu_milli_ms, mem_kib_ms, execs, bytes)
             VALUES (?1, ?4, ?3, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(runtime_id, runtime, team) DO UPDATE SET {}",
            set("usage_agent")
        ),
        format!(
            "INSERT INTO usage_team_day (team, day, runtime, run_ms, vcpu_milli_ms, mem_kib_ms, execs, bytes)
             VALUES (?3, ?2, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(team, day, runtime) DO UPDATE SET {}",
            set("usage_team_day")
        ),
    ] {
        db.execute(&sql, vals)?;
    }
    Ok(())
}

/// Add running time to a sandbox's day rows.
fn accrue(db: &dyn Sql, m: &OpenMeter, to_ms: i64) -> Result<()> {
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
        add(db, &m.runtime_id, &day, &d)?;
    }
    Ok(())
}

fn count(db: &dyn Sql, id: &str, day: &str, execs: u64, bytes: u64) -> Result<()> {
    let Some(r) = db.query_opt(
        "SELECT team, runtime FROM runtimes WHERE id = ?1",
        args![id],
    )?
    else {
        return Ok(());
    };
    let (team, runtime) = (r.str(0)?, r.str(1)?);
    let d = UsagePart {
        team,
        runtime,
        execs,
        bytes,
        ..Default::default()
    };
    add(db, id, day, &d)
}

/// Start metering `id` (it just became running) at `now_ms`.
pub(super) fn meter_open(db: &dyn Sql, id: &str, now_ms: i64) -> Result<()> {
    db.execute(
        "INSERT INTO meters (runtime_id, team, runtime, cpu_millis, memory_kib, since_ms)
         SELECT id, team, runtime, cpu_millis, memory_bytes / 1024, CAST(?2 AS BIGINT) FROM runtimes WHERE id = ?1
         ON CONFLICT(runtime_id) DO UPDATE SET team = excluded.team, runtime = excluded.runtime,
            cpu_millis = excluded.cpu_millis, memory_kib = excluded.memory_kib, since_ms = excluded.since_ms",
        args![id, now_ms],
    )?;
    Ok(())
}

/// Stop metering `id` (it stopped running): account up to `now_ms`.
pub(super) fn meter_close(db: &dyn Sql, id: &str, now_ms: i64) -> Result<()> {
    if let Some(m) = get_meter(db, id)? {
        accrue(db, &m, now_ms)?;
        db.execute("DELETE FROM meters WHERE runtime_id = ?1", args![id])?;
    }
    Ok(())
}

impl Store {
    /// Account every open meter up to now and add `pending` counters
    /// (`id → (execs, bytes)`), all in one transaction.
    pub fn flush_meters(&self, pending: &HashMap<String, (u64, u64)>) -> Result<usize> {
        let now = self.now();
        let now_ms = now.timestamp_millis();
        self.write(|tx| {
            let meters = open_meters(tx)?;
            for m in &meters {
                accrue(tx, m, now_ms)?;
            }
            tx.execute(
                "UPDATE meters SET since_ms = ?1 WHERE since_ms < ?1",
                args![now_ms],
            )?;
            let day = day_of(now_ms);
            for (id, (execs, bytes)) in pending {
                count(tx, id, &day, *execs, *bytes)?;
            }
            Ok(meters.len())
        })
    }

    /// Count one exec (and the bytes it sent) or a file transfer right away.
    pub fn count_usage(&self, id: &str, execs: u64, bytes: u64) -> Result<()> {
        let day = day_of(self.now().timestamp_millis());
        self.write(|tx| count(tx, id, &day, execs, bytes))
    }

    /// Every open meter.
    pub fn open_meters(&self) -> Result<Vec<OpenMeter>> {
        self.read(open_meters)
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
        self.read(|db| {
            let count = |op: &str| -> Result<u64> {
                match team {
                    Some(t) => db.query_one(
                        &format!("SELECT COUNT(*) FROM usage WHERE team = ?1 AND day {op} ?2"),
                        args![t, since],
                    ),
                    None => db.query_one(
                        &format!("SELECT COUNT(*) FROM usage WHERE day {op} ?1"),
                        args![since],
                    ),
                }?
                .u64(0)
            };
            Ok((count("<")?, count(">=")?))
        })
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
        let mut args: Vec<Value> = Vec::new();
        if let Some(t) = team {
            args.push(t.into());
            cond.push(format!("team = ?{}", args.len()));
        }
        if let Some((op, d)) = day {
            args.push(d.into());
            cond.push(format!("day {op} ?{}", args.len()));
        }
        if let Some(a) = agent {
            args.push(a.into());
            cond.push(format!("runtime_id = ?{}", args.len()));
        }
        let filter = if cond.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", cond.join(" AND "))
        };
        let sql = format!(
            "SELECT {key}, MIN(team), runtime, CAST(SUM(run_ms) AS BIGINT),
                CAST(SUM(vcpu_milli_ms) AS BIGINT), CAST(SUM(mem_kib_ms) AS BIGINT), CAST(SUM(execs) AS BIGINT),
                CAST(SUM(bytes) AS BIGINT)
             FROM {table} {filter} GROUP BY {key}, runtime ORDER BY {key}, runtime"
        );
        self.read(|db| db.query(&sql, &args))?
            .iter()
            .map(|r| {
                Ok(UsagePart {
                    key: r.str(0)?,
                    team: r.str(1)?,
                    runtime: r.str(2)?,
                    run_ms: r.u64(3)?,
                    vcpu_milli_ms: r.u64(4)?,
                    mem_kib_ms: r.u64(5)?,
                    execs: r.u64(6)?,
                    bytes: r.u64(7)?,
                })
            })
            .collect()
    }

    /// Teams with any usage on or after `since`.
    pub fn usage_teams(&self, since: NaiveDate) -> Result<Vec<String>> {
        self.read(|db| {
            db.query(
                "SELECT DISTINCT team FROM usage WHERE day >= ?1",
                args![since.format("%Y-%m-%d").to_string()],
            )
        })?
        .iter()
        .map(|r| r.str(0))
        .collect()
    }

    /// Add usage rows, `(sandbox id, day, totals)`, in one transaction
    /// (benchmarks and tests seed history with it).
    pub fn insert_usage(&self, rows: &[(String, String, UsagePart)]) -> Result<()> {
        self.write(|tx| {
            for (id, day, p) in rows {
                add(tx, id, day, p)?;
            }
            Ok(())
        })
    }
}

fn open_meters(db: &dyn Sql) -> Result<Vec<OpenMeter>> {
    db.query(
        "SELECT runtime_id, team, runtime, cpu_millis, memory_kib, since_ms FROM meters ORDER BY runtime_id",
        &[],
    )?
    .iter()
    .map(meter_row)
    .collect()
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
