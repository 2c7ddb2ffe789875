//! The PostgreSQL engine of the store: a pool of `tokio-postgres`
//! connections that several godel replicas share.
//!
//! The store's interface is synchronous (SQLite's is, and every caller
//! holds no lock across an await). PostgreSQL's client is asynchronous, so
//! each connection's socket is driven by one background thread with its own
//! small tokio runtime, and a store call waits for its statements with
//! `futures::executor::block_on` — a client future needs no reactor, only
//! the connection task it talks to. This works the same from a tokio worker
//! thread, a current-thread test runtime or a plain thread, and never
//! starts a runtime inside a runtime.
//!
//! Every write transaction first takes one transaction-scoped advisory lock
//! ([`WRITE_LOCK`]): writes from every replica are serialized exactly like
//! SQLite's single writer, so a quota check and the insert it guards can
//! never interleave with another replica's. Reads take no lock.
//!
//! The URL is a libpq URL; godel adds one parameter of its own,
//! `schema=NAME`, which creates the schema if needed and puts it first on
//! each connection's `search_path` (tests give every store its own).

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::mpsc;

use godel_core::{Error, Result};
use parking_lot::{Condvar, Mutex};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

use super::db::{Dialect, Row, Sql, Value, conflict, full, pg_placeholders};

/// The advisory lock every write transaction holds ("godl").
pub(crate) const WRITE_LOCK: i64 = 0x676f_646c;
/// The advisory lock held while a replica creates or upgrades the schema.
const SCHEMA_LOCK: i64 = 0x676f_6473;

/// Connections one store opens at most.
const POOL_SIZE: usize = 8;

type Job = Box<dyn FnOnce() + Send>;

/// A pool of connections to one database (and schema).
pub(crate) struct PgPool {
    config: tokio_postgres::Config,
    schema: Option<String>,
    /// Where connections are made and their sockets driven.
    driver: Mutex<mpsc::Sender<Job>>,
    idle: Mutex<Vec<PgConn>>,
    open: Mutex<usize>,
    freed: Condvar,
    /// What the URL names, without credentials (for `doctor` and errors).
    pub(crate) display: String,
}

/// One connection and its prepared statements.
pub(crate) struct PgConn {
    client: Client,
    prepared: RefCell<HashMap<String, Prepared>>,
}

/// A prepared statement and, per parameter, which argument it takes.
#[derive(Clone)]
struct Prepared {
    stmt: Statement,
    args: Vec<usize>,
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL => full(e),
        Some(c)
            if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::FOREIGN_KEY_VIOLATION
                || *c == SqlState::CHECK_VIOLATION =>
        {
            conflict(e)
        }
        _ => {
            let detail = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            Error::unavailable(format!("state database (PostgreSQL): {detail}"))
        }
    }
}

/// Split godel's own `schema=` parameter off a URL.
fn split_schema(url: &str) -> Result<(String, Option<String>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("schema", v)) => {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(Error::invalid(format!(
                        "database URL: schema {v:?} must be letters, digits and _"
                    )));
                }
                schema = Some(v.to_string());
            }
            _ => rest.push(kv),
        }
    }
    let base = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((base, schema))
}

impl PgPool {
    /// Parse `url` and make the first connection (so a wrong URL fails now).
    pub(crate) fn connect(url: &str) -> Result<PgPool> {
        let (base, schema) = split_schema(url)?;
        let config = tokio_postgres::Config::from_str(&base)
            .map_err(|e| Error::invalid(format!("database URL: {e}")))?;
        let display = describe(&config, schema.as_deref());
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("godel-pg".into())
            .spawn(move || drive(rx))
            .map_err(|e| Error::internal(format!("starting the database thread: {e}")))?;
        let pool = PgPool {
            config,
            schema,
            driver: Mutex::new(tx),
            idle: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            freed: Condvar::new(),
            display,
        };
        let first = pool.open_conn()?;
        *pool.open.lock() = 1;
        pool.idle.lock().push(first);
        Ok(pool)
    }

    fn open_conn(&self) -> Result<PgConn> {
        let (reply, answer) = mpsc::channel();
        let config = self.config.clone();
        let job: Job = Box::new(move || {
            let fut = async move {
                match config.connect(NoTls).await {
                    Ok((client, connection)) => {
                        tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::warn!("PostgreSQL connection ended: {e}");
                            }
                        });
                        let _ = reply.send(Ok(client));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            };
            tokio::spawn(fut);
        });
        self.driver
            .lock()
            .send(job)
            .map_err(|_| Error::unavailable("state database thread has stopped"))?;
        let client = answer
            .recv()
            .map_err(|_| Error::unavailable("state database thread has stopped"))?
            .map_err(|e| {
                Error::unavailable(format!(
                    "connecting to {}: {}",
                    self.display,
                    pg_err(e).message
                ))
            })?;
        futures::executor::block_on(client.batch_execute("SET client_min_messages TO warning"))
            .map_err(pg_err)?;
        if let Some(s) = &self.schema {
            futures::executor::block_on(client.batch_execute(&format!(
                "SELECT pg_advisory_lock({SCHEMA_LOCK});
                 CREATE SCHEMA IF NOT EXISTS \"{s}\";
                 SELECT pg_advisory_unlock({SCHEMA_LOCK});
                 SET search_path TO \"{s}\""
            )))
            .map_err(pg_err)?;
        }
        Ok(PgConn {
            client,
            prepared: RefCell::new(HashMap::new()),
        })
    }

    /// Take an idle connection, open one, or wait for one to be freed.
    fn checkout(&self) -> Result<PgConn> {
        loop {
            if let Some(c) = self.idle.lock().pop() {
                if c.client.is_closed() {
                    *self.open.lock() -= 1;
                    continue;
                }
                return Ok(c);
            }
            {
                let mut open = self.open.lock();
                if *open < POOL_SIZE {
                    *open += 1;
                    drop(open);
                    return self.open_conn().inspect_err(|_| *self.open.lock() -= 1);
                }
                // Wait for a checkin (bounded, so a lost wake-up only costs time).
                self.freed
                    .wait_for(&mut open, std::time::Duration::from_millis(50));
            }
        }
    }

    fn checkin(&self, c: PgConn) {
        if c.client.is_closed() {
            *self.open.lock() -= 1;
        } else {
            self.idle.lock().push(c);
        }
        self.freed.notify_one();
    }

    /// Run `f` on a connection, outside any transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        let c = self.checkout()?;
        let out = f(&PgSql { conn: &c });
        self.checkin(c);
        out
    }

    /// Run `f` in one transaction holding the write lock; commit when it
    /// returns `Ok`, roll back otherwise. `BEGIN` and the lock travel in one
    /// round trip.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&dyn Sql) -> Result<T>) -> Result<T> {
        let c = self.checkout()?;
        let sql = PgSql { conn: &c };
        let out = sql
            .batch(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
            ))
            .and_then(|()| f(&sql))
            .and_then(|v| sql.batch("COMMIT").map(|()| v));
        if out.is_err() {
            // Harmless when no transaction is open (BEGIN failed, COMMIT ended it).
            let _ = sql.batch("ROLLBACK");
        }
        self.checkin(c);
        out
    }
}

fn describe(c: &tokio_postgres::Config, schema: Option<&str>) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let db = c.get_dbname().unwrap_or("postgres");
    let user = c.get_user().unwrap_or("");
    let schema = schema.map(|s| format!(" schema {s}")).unwrap_or_default();
    format!("postgres://{user}@{host}:{port}/{db}{schema}")
}

/// The database thread: connects and drives every connection's socket.
fn drive(rx: mpsc::Receiver<Job>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("database thread: {e}");
            return;
        }
    };
    let (tx, mut arx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    // Forward blocking receives into the runtime; ends when the pool is dropped.
    std::thread::Builder::new()
        .name("godel-pg-jobs".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                if tx.send(job).is_err() {
                    break;
                }
            }
        })
        .ok();
    rt.block_on(async move {
        while let Some(job) = arx.recv().await {
            job();
        }
    });
}

/// Statements on one connection (inside a transaction or not).
struct PgSql<'a> {
    conn: &'a PgConn,
}

impl PgSql<'_> {
    fn statement(&self, sql: &str) -> Result<Prepared> {
        if let Some(s) = self.conn.prepared.borrow().get(sql) {
            return Ok(s.clone());
        }
        let (text, args) = pg_placeholders(sql);
        let stmt = futures::executor::block_on(self.conn.client.prepare(&text)).map_err(pg_err)?;
        let prepared = Prepared { stmt, args };
        self.conn
            .prepared
            .borrow_mut()
            .insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// The statement and its arguments in parameter order.
    fn bind<'v>(
        &self,
        sql: &str,
        args: &'v [Value],
    ) -> Result<(Statement, Vec<&'v (dyn ToSql + Sync)>)> {
        let p = self.statement(sql)?;
        let params = p
            .args
            .iter()
            .map(|i| {
                args.get(*i)
                    .map(|a| a as &(dyn ToSql + Sync))
                    .ok_or_else(|| {
                        Error::internal(format!(
                            "state database: statement wants argument {} of {}",
                            i + 1,
                            args.len()
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((p.stmt, params))
    }
}

impl Sql for PgSql<'_> {
    fn execute(&self, sql: &str, args: &[Value]) -> Result<usize> {
        let (stmt, params) = self.bind(sql, args)?;
        futures::executor::block_on(self.conn.client.execute(&stmt, &params))
            .map(|n| n as usize)
            .map_err(pg_err)
    }

    fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        let (stmt, params) = self.bind(sql, args)?;
        let rows =
            futures::executor::block_on(self.conn.client.query(&stmt, &params)).map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Value>(i).map_err(pg_err))
                    .collect::<Result<Vec<_>>>()
                    .map(Row)
            })
            .collect()
    }

    fn batch(&self, sql: &str) -> Result<()> {
        futures::executor::block_on(self.conn.client.batch_execute(sql)).map_err(pg_err)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, BoxError> {
        let text = |s: &str, out: &mut bytes::BytesMut| s.to_sql(&Type::TEXT, out);
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => text(&v.to_string(), out),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::INT8 => (*v as i64).to_sql(ty, out),
                _ => text(&v.to_string(), out),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                _ => text(s, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Value, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)? as i64),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)? as i64),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)? as i64),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)? as f64),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Value, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::FLOAT8
                | Type::FLOAT4
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_godels_own() {
        let (base, schema) =
            split_schema("postgres://u@h:5/db?sslmode=disable&schema=t_1").unwrap();
        assert_eq!(base, "postgres://u@h:5/db?sslmode=disable");
        assert_eq!(schema.as_deref(), Some("t_1"));
        assert!(split_schema("postgres://h/db?schema=a;drop").is_err());
        assert_eq!(split_schema("postgres://h/db").unwrap().1, None);
    }
}
