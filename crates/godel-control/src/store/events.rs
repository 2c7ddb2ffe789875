//! The event log: every state change and policy decision, in order.

use godel_core::{Event, Result};
use rusqlite::params;

use super::{Store, db_err, json_err, parse_time};

impl Store {
    /// Append an event; returns it with its sequence number.
    pub fn append_event(&self, ev: &Event) -> Result<Event> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (time, kind, runtime_id, team, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                ev.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ev.kind.as_str(),
                ev.runtime_id,
                ev.team,
                serde_json::to_string(&ev.data).map_err(json_err)?
            ],
        )
        .map_err(db_err)?;
        let mut out = ev.clone();
        out.seq = conn.last_insert_rowid();
        Ok(out)
    }

    /// Events after `since`, oldest first, optionally of one team / runtime.
    pub fn list_events(
        &self,
        since: i64,
        team: Option<&str>,
        runtime_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, time, kind, runtime_id, team, data FROM events
                 WHERE seq > ?1 AND (?2 IS NULL OR team = ?2) AND (?3 IS NULL OR runtime_id = ?3)
                 ORDER BY seq LIMIT ?4",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![since, team, runtime_id, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        rows.into_iter()
            .map(|(seq, time, kind, runtime_id, team, data)| {
                Ok(Event {
                    seq,
                    time: parse_time(&time),
                    kind: godel_core::EventKind::parse(&kind),
                    runtime_id,
                    team,
                    data: serde_json::from_str(&data).map_err(json_err)?,
                })
            })
            .collect()
    }
}
