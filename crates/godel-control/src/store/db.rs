//! The SQL seam under [`Store`](super::Store): one small interface
//! ([`Sql`]) that every store module writes its statements against, with
//! two engines behind it — embedded SQLite (one connection behind a mutex)
//! and PostgreSQL ([`super::pg`], a pool of connections shared by several
//! replicas).
//!
//! Statements are written once, in the SQL both engines accept: `?N`
//! placeholders (rewritten to `$N` for PostgreSQL), `ON CONFLICT … DO`
//! upserts instead of `INSERT OR REPLACE`, `RETURNING` instead of
//! `last_insert_rowid()`, `CAST(SUM(x) AS BIGINT)` for sums (PostgreSQL's
//! `SUM` of a `BIGINT` is `NUMERIC`). Values cross the seam as [`Value`],
//! rows come back as [`Row`] with typed getters that fail with a clear
//! error instead of panicking.

use godel_core::{Error, ErrorCode, Result};

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(v as i64)
            }
        }
    )*};
}
from_int!(i64, i32, u32, u64, usize);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(v as i64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// `args![a, b, …]`: a statement's arguments as `&[Value]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($v)),*][..]
    };
}
pub(crate) use args;

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| Error::internal(format!("state database: row has no column {i}")))
    }

    fn mismatch(&self, i: usize, want: &str) -> Error {
        Error::internal(format!(
            "state database: column {i} holds {:?}, expected {want}",
            self.0.get(i)
        ))
    }

    pub(crate) fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            Value::Real(v) => Ok(Some(*v as i64)),
            Value::Text(_) => Err(self.mismatch(i, "an integer")),
        }
    }

    pub(crate) fn i64(&self, i: usize) -> Result<i64> {
        self.opt_i64(i)?
            .ok_or_else(|| self.mismatch(i, "an integer"))
    }

    /// A non-negative count or size (negative values read as 0).
    pub(crate) fn u64(&self, i: usize) -> Result<u64> {
        Ok(self.i64(i)?.max(0) as u64)
    }

    pub(crate) fn opt_str(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    pub(crate) fn str(&self, i: usize) -> Result<String> {
        self.opt_str(i)?.ok_or_else(|| self.mismatch(i, "text"))
    }

    pub(crate) fn bool(&self, i: usize) -> Result<bool> {
        Ok(self.i64(i)? != 0)
    }
}

/// Which engine a statement runs on (for the few statements that differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection or a transaction of either engine.
pub(crate) trait Sql {
    /// Run a statement; the number of rows it changed.
    fn execute(&self, sql: &str, args: &[Value]) -> Result<usize>;
    /// Run a query; every row.
    fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>>;
    /// Run statements without arguments (schema).
    fn batch(&self, sql: &str) -> Result<()>;
    fn dialect(&self) -> Dialect;

    /// The first row, if any.
    fn query_opt(&self, sql: &str, args: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// Exactly the first row (aggregates, `RETURNING`).
    fn query_one(&self, sql: &str, args: &[Value]) -> Result<Row> {
        self.query_opt(sql, args)?
            .ok_or_else(|| Error::internal("state database: query returned no row"))
    }
}

/// Errors both engines map the same way: a full disk is the caller's
/// resource running out (retry once space is freed; nothing was written),
/// a violated constraint a conflict, anything else godel failing.
pub(crate) fn full(msg: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::ResourceExhausted,
        format!("state database: {msg} (free space for the database)"),
    )
}

pub(crate) fn conflict(msg: impl std::fmt::Display) -> Error {
    Error::conflict(format!("state database: {msg}"))
}

// ---- SQLite ----

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

pub(crate) fn sqlite_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => full(e),
        Some(rusqlite::ErrorCode::ConstraintViolation) => conflict(e),
        _ => Error::internal(format!("state database: {e}")),
    }
}

/// A SQLite connection or transaction (a transaction derefs to its connection).
pub(crate) struct Lite<'a>(pub(crate) &'a rusqlite::Connection);

impl Sql for Lite<'_> {
    fn execute(&self, sql: &str, args: &[Value]) -> Result<usize> {
        let mut stmt = self.0.prepare_cached(sql).map_err(sqlite_err)?;
        stmt.execute(rusqlite::params_from_iter(args.iter()))
            .map_err(sqlite_err)
    }

    fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql).map_err(sqlite_err)?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(sqlite_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sqlite_err)? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match r.get_ref(i).map_err(sqlite_err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        self.0.execute_batch(sql).map_err(sqlite_err)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

/// Rewrite SQLite placeholders (`?N`, `?`) as PostgreSQL's (`$N`), leaving
/// string literals and quoted names alone. PostgreSQL must know the type of
/// every parameter, so arguments a statement never mentions are dropped:
/// the used ones are renumbered densely, and the second result lists, for
/// each new number, the (0-based) argument it takes.
pub(crate) fn pg_placeholders(sql: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut quote: Option<char> = None;
    let mut used: Vec<usize> = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let original = if digits.is_empty() {
                    next += 1;
                    next - 1
                } else {
                    digits.parse().unwrap_or(1)
                };
                let arg = original.max(1) - 1;
                let n = match used.iter().position(|u| *u == arg) {
                    Some(i) => i + 1,
                    None => {
                        used.push(arg);
                        used.len()
                    }
                };
                out.push('$');
                out.push_str(&n.to_string());
            }
            None => out.push(c),
        }
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        let (sql, used) =
            pg_placeholders("SELECT '?1', \"a?\" FROM t WHERE a = ?1 AND b = ?12 OR c = ?");
        assert_eq!(
            sql,
            "SELECT '?1', \"a?\" FROM t WHERE a = $1 AND b = $2 OR c = $1"
        );
        assert_eq!(used, vec![0, 11]);
        let (sql, used) = pg_placeholders("VALUES (?3, ?1, ?3)");
        assert_eq!(sql, "VALUES ($1, $2, $1)");
        assert_eq!(used, vec![2, 0]);
    }

    #[test]
    fn rows_refuse_the_wrong_type() {
        let r = Row(vec![Value::Text("x".into()), Value::Null, Value::Int(-3)]);
        assert_eq!(r.str(0).unwrap(), "x");
        assert_eq!(r.opt_str(1).unwrap(), None);
        assert_eq!(r.u64(2).unwrap(), 0);
        assert!(r.i64(0).is_err());
        assert!(r.str(2).is_err());
        assert!(r.i64(9).is_err());
    }
}
