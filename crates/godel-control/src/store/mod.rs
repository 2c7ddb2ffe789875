//! The durable state of the daemon: teams, tokens, sandboxes, snapshots,
//! events, metered usage, budgets, rollouts, templates and (schema v4) the
//! replicas sharing the state and which of them owns each sandbox.
//!
//! Two engines hold it behind one interface ([`db::Sql`]): an embedded
//! SQLite file (`godel.db`, WAL; one connection behind a mutex — statements
//! take microseconds and one writer is what SQLite wants) and PostgreSQL
//! ([`pg`]), which several replicas share. Each store module writes its
//! statements once, against [`Store::read`] and [`Store::write`]; a write
//! is one transaction, serialized with every other write of every replica.
//!
//! Records are written before the side effect they describe and confirmed
//! after it; the daemon reconciles non-terminal records on start.

mod auth;
mod budgets;
pub(crate) mod db;
mod events;
mod migrate;
mod pg;
mod replicas;
mod runtimes;
mod snapshots;
mod templates;
mod usage;

use parking_lot::{Mutex, RwLock};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::clock::{Clock, SystemClock};

use db::{Lite, Sql, sqlite_err};
use godel_core::{Error, Result};
use rusqlite::Connection;

pub use auth::{TeamRecord, TokenFormat, TokenRecord};
pub use budgets::{BudgetRecord, RolloutRecord};
pub use replicas::{ReplicaRecord, ReplicaRegistration, Takeover};
pub use runtimes::{Quota, Reservation, TeamUsage};
pub(crate) use usage::live_parts;
pub use usage::{OpenMeter, UsagePart, UsageQuery};

/// Current schema version (SQLite `PRAGMA user_version`; PostgreSQL
/// `godel_schema.version`).
const SCHEMA_VERSION: i64 = 4;

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
    parked_reason TEXT,
    owner TEXT
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

/// Which engine holds the state.
enum Engine {
    Sqlite(Mutex<Connection>),
    Postgres(Box<pg::PgPool>),
}

/// The store.
pub struct Store {
    engine: Engine,
    clock: RwLock<Arc<dyn Clock>>,
    /// Tests make the store refuse writes, like a database that went read-only.
    refuse_writes: AtomicBool,
}

pub(crate) fn json_err(e: serde_json::Error) -> Error {
    Error::internal(format!("state database holds malformed JSON: {e}"))
}

/// Which engine a store runs on and where (`godel doctor`, `/v1/replicas`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreInfo {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// The file, or the server, database and schema (never a password).
    pub location: String,
    pub schema_version: i64,
}

impl Store {
    /// Open (creating if needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(sqlite_err)?;
        Store::init_sqlite(conn, path.display().to_string())
    }

    /// Open the store a URL names: `postgres://…` / `postgresql://…`
    /// (libpq form; `?schema=NAME` picks a schema of godel's own), or
    /// `sqlite:PATH` / a plain path for a SQLite file.
    pub fn open_url(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Store::init_postgres(Box::new(pg::PgPool::connect(url)?));
        }
        if url.contains("://") {
            return Err(Error::invalid(format!(
                "database URL {url:?}: godel stores state in SQLite (a path or sqlite:PATH) or PostgreSQL (postgres://…)"
            )));
        }
        Store::open(Path::new(url.strip_prefix("sqlite:").unwrap_or(url)))
    }

    /// An in-memory SQLite store (probes that need no state).
    pub fn open_in_memory() -> Result<Store> {
        Store::init_sqlite(
            Connection::open_in_memory().map_err(sqlite_err)?,
            ":memory:".into(),
        )
    }

    /// A new, empty store for tests: in-memory SQLite, or — when
    /// `GODEL_TEST_DATABASE_URL` names a PostgreSQL database — a fresh
    /// schema of its own there, so the same tests cover both engines.
    pub fn open_scratch() -> Result<Store> {
        match scratch_url() {
            Some(url) => Store::open_url(&url),
            None => Store::open_in_memory(),
        }
    }

    fn new(engine: Engine) -> Store {
        Store {
            engine,
            clock: RwLock::new(Arc::new(SystemClock)),
            refuse_writes: AtomicBool::new(false),
        }
    }

    fn init_sqlite(mut conn: Connection, location: String) -> Result<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite_err)?;
        check_version(version)?;
        if version > 0 && version < SCHEMA_VERSION {
            // Old tables first get the new columns, then `SCHEMA` adds what is missing.
            migrate::upgrade(&mut conn, version)?;
        }
        let lite = Lite(&conn);
        lite.batch(SCHEMA)?;
        lite.batch(migrate::V3_TABLES)?;
        lite.batch(templates::TABLE)?;
        lite.batch(replicas::TABLE)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite_err)?;
        tracing::debug!("state in SQLite at {location}");
        Ok(Store::new(Engine::Sqlite(Mutex::new(conn))))
    }

    fn init_postgres(pool: Box<pg::PgPool>) -> Result<Store> {
        pool.write(|db| {
            // The write lock serializes replicas creating the schema at once.
            db.batch("CREATE TABLE IF NOT EXISTS godel_schema (version BIGINT NOT NULL)")?;
            let version = db
                .query_opt("SELECT version FROM godel_schema", &[])?
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            check_version(version)?;
            if version < SCHEMA_VERSION {
                db.batch(&pg_schema())?;
                db.execute("DELETE FROM godel_schema", &[])?;
                db.execute(
                    "INSERT INTO godel_schema (version) VALUES (?1)",
                    db::args![SCHEMA_VERSION],
                )?;
            }
            Ok(())
        })?;
        tracing::debug!("state in PostgreSQL at {}", pool.display);
        Ok(Store::new(Engine::Postgres(pool)))
    }

    /// Run `f` against the database, outside a transaction (reads, and
    /// single statements that need no other).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        match &self.engine {
            Engine::Sqlite(conn) => f(&Lite(&conn.lock())),
            Engine::Postgres(pool) => pool.read(f),
        }
    }

    /// Run `f` in one write transaction, serialized with every other write
    /// (SQLite `BEGIN IMMEDIATE`; PostgreSQL an advisory lock every
    /// replica takes). Committed when `f` returns `Ok`, rolled back otherwise.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        if self.refuse_writes.load(Ordering::Relaxed) {
            return Err(Error::unavailable(
                "state database: attempt to write a readonly database",
            ));
        }
        match &self.engine {
            Engine::Sqlite(conn) => {
                let mut conn = conn.lock();
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sqlite_err)?;
                let out = f(&Lite(&tx))?;
                tx.commit().map_err(sqlite_err)?;
                Ok(out)
            }
            Engine::Postgres(pool) => pool.write(f),
        }
    }

    /// Make every later write fail (tests: a database that stopped taking writes).
    pub fn refuse_writes(&self, on: bool) {
        self.refuse_writes.store(on, Ordering::Relaxed);
    }

    /// The engine, where it is, and its schema version.
    pub fn info(&self) -> StoreInfo {
        match &self.engine {
            Engine::Sqlite(conn) => StoreInfo {
                engine: "sqlite",
                location: conn.lock().path().unwrap_or(":memory:").to_string(),
                schema_version: SCHEMA_VERSION,
            },
            Engine::Postgres(pool) => StoreInfo {
                engine: "postgres",
                location: pool.display.clone(),
                schema_version: SCHEMA_VERSION,
            },
        }
    }

    /// Check the database answers and is consistent (SQLite
    /// `integrity_check`; PostgreSQL a round trip).
    pub fn check(&self) -> Result<()> {
        self.read(|db| match db.dialect() {
            db::Dialect::Sqlite => {
                let r = db.query_one("PRAGMA integrity_check", &[])?.str(0)?;
                if r == "ok" {
                    Ok(())
                } else {
                    Err(Error::internal(format!("state database integrity: {r}")))
                }
            }
            db::Dialect::Postgres => db.query_one("SELECT 1", &[]).map(drop),
        })
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

fn check_version(version: i64) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::internal(format!(
            "state database schema {version} is newer than this godel ({SCHEMA_VERSION}); upgrade godel"
        )));
    }
    Ok(())
}

/// The PostgreSQL schema: SQLite's, with 64-bit integers and a sequence for events.
fn pg_schema() -> String {
    let all = [
        SCHEMA,
        migrate::V3_TABLES,
        templates::TABLE,
        replicas::TABLE,
    ]
    .concat();
    all.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
}

/// A fresh schema name in the test database, when tests run against PostgreSQL.
fn scratch_url() -> Option<String> {
    let url = std::env::var("GODEL_TEST_DATABASE_URL").ok()?;
    if url.is_empty() {
        return None;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!(
        "{url}{sep}schema=t_{}",
        uuid::Uuid::new_v4().simple()
    ))
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
        let e = sqlite_err(full);
        assert_eq!(e.code, godel_core::ErrorCode::ResourceExhausted);
        assert!(e.message.contains("free space"), "{}", e.message);
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        assert_eq!(sqlite_err(corrupt).code, godel_core::ErrorCode::Internal);
    }
}
