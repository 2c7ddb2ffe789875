//! The durable state of the daemon: one SQLite database (`godel.db`, WAL)
//! holding teams, tokens, runtimes, snapshots and events, and (schema v3)
//! metered usage, budgets and rollouts.
//!
//! Records are written before the side effect they describe and confirmed
//! after it; the daemon reconciles non-terminal records on start. All access
//! goes through a single connection behind a mutex: statements here take
//! microseconds, and one writer is what SQLite wants anyway.

mod auth;
mod budgets;
mod events;
mod migrate;
mod runtimes;
mod snapshots;
mod templates;
mod usage;

use parking_lot::{Mutex, MutexGuard, RwLock};
use std::path::Path;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};

use godel_core::{Error, Result};
use rusqlite::Connection;

pub use auth::{TeamRecord, TokenFormat, TokenRecord};
pub use budgets::{BudgetRecord, RolloutRecord};
pub use runtimes::{Quota, Reservation, TeamUsage};
pub(crate) use usage::live_parts;
pub use usage::{OpenMeter, UsagePart, UsageQuery};

/// Current schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS teams (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    max_agents INTEGER,
    max_cpu_millis INTEGER,
    max_memory_bytes INTEGER,
    max_disk_bytes INTEGER,
    runtime TEXT,
    fallback TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    team TEXT,
    admin INTEGER NOT NULL DEFAULT 0,
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS runtimes (
    id TEXT PRIMARY KEY,
    runtime TEXT NOT NULL,
    team TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    handle TEXT NOT NULL DEFAULT '{}',
    pid INTEGER,
    reason TEXT,
    restored_from TEXT,
    cpu_millis INTEGER NOT NULL DEFAULT 0,
    memory_bytes INTEGER NOT NULL DEFAULT 0,
    disk_bytes INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT,
    parked_snapshot TEXT,
    parked_reason TEXT
);
CREATE INDEX IF NOT EXISTS runtimes_team_state ON runtimes(team, state);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    runtime_id TEXT NOT NULL,
    runtime TEXT NOT NULL,
    team TEXT NOT NULL,
    created_at TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    description TEXT,
    labels TEXT NOT NULL DEFAULT '{}',
    dir TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    runtime_id TEXT,
    team TEXT,
    data TEXT NOT NULL DEFAULT 'null'
);
"#;

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    clock: RwLock<Arc<dyn Clock>>,
}

pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    // A full disk is the caller's resource running out, not godel failing:
    // the request can be retried once space is freed; nothing was written.
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return Error::new(
            godel_core::ErrorCode::ResourceExhausted,
            format!("state database: {e} (free space in $GODEL_HOME)"),
        );
    }
    Error::internal(format!("state database: {e}"))
}

pub(crate) fn json_err(e: serde_json::Error) -> Error {
    Error::internal(format!("state database holds malformed JSON: {e}"))
}

impl Store {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(db_err)?;
        Store::init(conn)
    }

    /// An in-memory store (tests).
    pub fn open_in_memory() -> Result<Store> {
        Store::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err)?;
        if version > SCHEMA_VERSION {
            return Err(Error::internal(format!(
                "state database schema {version} is newer than this godel ({SCHEMA_VERSION}); upgrade godel"
            )));
        }
        if version > 0 && version < SCHEMA_VERSION {
            // Old tables first get the new columns, then `SCHEMA` adds what is missing.
            migrate::upgrade(&mut conn, version)?;
        }
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        conn.execute_batch(migrate::V3_TABLES).map_err(db_err)?;
        conn.execute_batch(templates::TABLE).map_err(db_err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db_err)?;
        Ok(Store {
            conn: Mutex::new(conn),
            clock: RwLock::new(Arc::new(SystemClock)),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// Use `clock` for metering from now on (tests install a manual one).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.clock.write() = clock;
    }

    /// Now, by the store's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.read().now()
    }
}

pub(crate) fn now_text() -> String {
    time_text(chrono::Utc::now())
}

/// Times are stored as fixed-width RFC 3339 UTC text, so they compare as strings.
pub(crate) fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_resource_exhausted_and_other_failures_internal() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = db_err(full);
        assert_eq!(e.code, godel_core::ErrorCode::ResourceExhausted);
        assert!(e.message.contains("free space"), "{}", e.message);
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        assert_eq!(db_err(corrupt).code, godel_core::ErrorCode::Internal);
    }
}
