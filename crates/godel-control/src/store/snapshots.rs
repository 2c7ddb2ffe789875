//! Snapshot records. A row is inserted only after the snapshot directory has
//! been published by an atomic rename, so a listed snapshot is always whole.

use godel_core::{Error, Result, SnapshotInfo};
use rusqlite::{OptionalExtension, Row, params};

use super::{Store, db_err, json_err, now_text, parse_time};

const COLS: &str = "id, runtime_id, runtime, team, created_at, size_bytes, kind, name, description, labels, dir, data";

fn row(r: &Row<'_>) -> rusqlite::Result<(SnapshotInfo, String, String)> {
    let info = SnapshotInfo {
        id: r.get(0)?,
        runtime_id: r.get(1)?,
        runtime: r.get(2)?,
        team: r.get(3)?,
        created_at: parse_time(&r.get::<_, String>(4)?),
        size_bytes: r.get::<_, i64>(5)? as u64,
        kind: r.get(6)?,
        name: r.get(7)?,
        description: r.get(8)?,
        labels: Default::default(),
        dir: std::path::PathBuf::from(r.get::<_, String>(10)?),
        data: Default::default(),
    };
    Ok((info, r.get(9)?, r.get(11)?))
}

fn finish((mut info, labels, data): (SnapshotInfo, String, String)) -> Result<SnapshotInfo> {
    info.labels = serde_json::from_str(&labels).map_err(json_err)?;
    info.data = serde_json::from_str(&data).map_err(json_err)?;
    Ok(info)
}

impl Store {
    pub fn insert_snapshot(&self, s: &SnapshotInfo) -> Result<()> {
        let _ = now_text;
        self.conn()
            .execute(
                &format!("INSERT OR REPLACE INTO snapshots ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    s.id,
                    s.runtime_id,
                    s.runtime,
                    s.team,
                    s.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    s.size_bytes as i64,
                    s.kind,
                    s.name,
                    s.description,
                    serde_json::to_string(&s.labels).map_err(json_err)?,
                    s.dir.display().to_string(),
                    serde_json::to_string(&s.data).map_err(json_err)?,
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotInfo>> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {COLS} FROM snapshots WHERE id = ?1"),
            [id],
            row,
        )
        .optional()
        .map_err(db_err)?
        .map(finish)
        .transpose()
    }

    /// Snapshots, newest first, optionally of one team and/or one runtime.
    pub fn list_snapshots(
        &self,
        team: Option<&str>,
        runtime_id: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM snapshots WHERE (?1 IS NULL OR team = ?1) AND (?2 IS NULL OR runtime_id = ?2)
                 ORDER BY created_at DESC, id"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![team, runtime_id], row)
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        rows.into_iter().map(finish).collect()
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::not_found(format!("snapshot {id} not found")));
        }
        Ok(())
    }

    /// Live runtimes restored from a snapshot (they may depend on its files).
    pub fn dependents_of_snapshot(&self, id: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM runtimes WHERE restored_from = ?1 AND state NOT IN ('terminated','error')",
            )
            .map_err(db_err)?;
        stmt.query_map([id], |r| r.get(0))
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(db_err)
    }
}
