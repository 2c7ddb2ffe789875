//! The event log: every state change and policy decision, in order.

use super::db::args;
use super::{Store, json_err, parse_time, time_text};
use godel_core::{Event, Result};

impl Store {
    /// Append an event; returns it with its sequence number.
    pub fn append_event(&self, ev: &Event) -> Result<Event> {
        let data = serde_json::to_string(&ev.data).map_err(json_err)?;
        // In the write transaction, so sequence order is commit order on every replica.
        let seq = self.write(|tx| {
            tx.query_one(
                "INSERT INTO events (time, kind, runtime_id, team, data) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
                args![
                    time_text(ev.time),
                    ev.kind.as_str(),
                    ev.runtime_id.as_deref(),
                    ev.team.as_deref(),
                    data
                ],
            )?
            .i64(0)
        })?;
        let mut out = ev.clone();
        out.seq = seq;
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
        let rows = self.read(|db| {
            db.query(
                "SELECT seq, time, kind, runtime_id, team, data FROM events
                 WHERE seq > ?1 AND (CAST(?2 AS TEXT) IS NULL OR team = ?2) AND (CAST(?3 AS TEXT) IS NULL OR runtime_id = ?3)
                 ORDER BY seq LIMIT ?4",
                args![since, team, runtime_id, limit],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    seq: r.i64(0)?,
                    time: parse_time(&r.str(1)?),
                    kind: godel_core::EventKind::parse(&r.str(2)?),
                    runtime_id: r.opt_str(3)?,
                    team: r.opt_str(4)?,
                    data: serde_json::from_str(&r.str(5)?).map_err(json_err)?,
                })
            })
            .collect()
    }
}
