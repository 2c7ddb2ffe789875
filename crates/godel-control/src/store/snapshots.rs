//! Snapshot records. A row is inserted only after the snapshot directory has
//! been published by an atomic rename, so a listed snapshot is always whole.

use super::db::{Row, args};
use super::{Store, json_err, parse_time, time_text};
use godel_core::{Error, Result, SnapshotInfo};

const COLS: &str = "id, runtime_id, runtime, team, created_at, size_bytes, kind, name, description, labels, dir, data";

fn row(r: &Row) -> Result<SnapshotInfo> {
    Ok(SnapshotInfo {
        id: r.str(0)?,
        runtime_id: r.str(1)?,
        runtime: r.str(2)?,
        team: r.str(3)?,
        created_at: parse_time(&r.str(4)?),
        size_bytes: r.u64(5)?,
        kind: r.str(6)?,
        name: r.opt_str(7)?,
        description: r.opt_str(8)?,
        labels: serde_json::from_str(&r.str(9)?).map_err(json_err)?,
        dir: std::path::PathBuf::from(r.str(10)?),
        data: serde_json::from_str(&r.str(11)?).map_err(json_err)?,
    })
}

impl Store {
    pub fn insert_snapshot(&self, s: &SnapshotInfo) -> Result<()> {
        let labels = serde_json::to_string(&s.labels).map_err(json_err)?;
        let data = serde_json::to_string(&s.data).map_err(json_err)?;
        let update: String = COLS
            .split(", ")
            .skip(1)
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO snapshots ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT(id) DO UPDATE SET {update}"
                ),
                args![
                    &s.id,
                    &s.runtime_id,
                    &s.runtime,
                    &s.team,
                    time_text(s.created_at),
                    s.size_bytes,
                    &s.kind,
                    s.name.as_deref(),
                    s.description.as_deref(),
                    labels,
                    s.dir.display().to_string(),
                    data,
                ],
            )
        })
        .map(drop)
    }

    pub fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotInfo>> {
        self.read(|db| {
            db.query_opt(
                &format!("SELECT {COLS} FROM snapshots WHERE id = ?1"),
                args![id],
            )?
            .map(|r| row(&r))
            .transpose()
        })
    }

    /// Snapshots, newest first, optionally of one team and/or one runtime.
    pub fn list_snapshots(
        &self,
        team: Option<&str>,
        runtime_id: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>> {
        self.read(|db| {
            db.query(
                &format!(
                    "SELECT {COLS} FROM snapshots WHERE (CAST(?1 AS TEXT) IS NULL OR team = ?1) AND (CAST(?2 AS TEXT) IS NULL OR runtime_id = ?2)
                     ORDER BY created_at DESC, id"
                ),
                args![team, runtime_id],
            )?
            .iter()
            .map(row)
            .collect()
        })
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<()> {
        let n = self.write(|tx| tx.execute("DELETE FROM snapshots WHERE id = ?1", args![id]))?;
        if n == 0 {
            return Err(Error::not_found(format!("snapshot {id} not found")));
        }
        Ok(())
    }

    /// Live runtimes restored from a snapshot (they may depend on its files).
    pub fn dependents_of_snapshot(&self, id: &str) -> Result<Vec<String>> {
        self.read(|db| {
            db.query(
                "SELECT id FROM runtimes WHERE restored_from = ?1 AND state NOT IN ('terminated','error')",
                args![id],
            )?
            .iter()
            .map(|r| r.str(0))
            .collect()
        })
    }
}
