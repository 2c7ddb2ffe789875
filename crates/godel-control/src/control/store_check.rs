//! `godel doctor`'s database entry: which engine holds the state, where
//! (never a password), its schema version, and whether it answers now.
//!
//! The check runs [`crate::Store::check`] (SQLite `integrity_check`, a
//! PostgreSQL round trip) on a blocking thread. Only an admin caller gets
//! the entry: a team token sees neither where the state lives nor can it
//! make the daemon scan the database.

use std::sync::Arc;
use std::time::Instant;

use godel_core::Availability;
use serde::{Deserialize, Serialize};

use super::{Caller, Control, RuntimeReport};

/// The `kind` of a doctor entry about a runtime.
pub const KIND_RUNTIME: &str = "runtime";
/// The `kind` of the doctor entry about the store.
pub const KIND_DATABASE: &str = "database";

/// The store and whether it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreCheck {
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// The file, or the server, database and schema (never a password).
    pub location: String,
    pub schema_version: i64,
    /// Whether the check passed.
    pub answers: bool,
    /// Why it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the check took, milliseconds.
    pub check_ms: f64,
}

impl StoreCheck {
    /// The doctor entry of this check (`kind: database`).
    pub fn report(self) -> RuntimeReport {
        let mut availability = if self.answers {
            Availability::yes(format!(
                "{} at {} answers (schema {}, {:.1} ms)",
                self.engine, self.location, self.schema_version, self.check_ms
            ))
        } else {
            Availability::no(format!(
                "{} at {} does not answer: {}",
                self.engine,
                self.location,
                self.error.as_deref().unwrap_or("unknown error")
            ))
        };
        for (k, v) in [
            ("engine", self.engine.clone()),
            ("location", self.location.clone()),
            ("schema_version", self.schema_version.to_string()),
        ] {
            availability.details.insert(k.into(), v);
        }
        RuntimeReport {
            name: KIND_DATABASE.into(),
            kind: KIND_DATABASE.into(),
            registered: true,
            availability,
            capabilities: None,
            database: Some(self),
        }
    }
}

impl Control {
    /// Check the store answers (blocking: SQLite scans the whole file).
    pub fn check_store(&self) -> StoreCheck {
        let info = self.store.info();
        let started = Instant::now();
        let result = self.store.check();
        StoreCheck {
            engine: info.engine.to_string(),
            location: info.location,
            schema_version: info.schema_version,
            answers: result.is_ok(),
            error: result.err().map(|e| e.message),
            check_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// `/v1/doctor`: every runtime; for an admin, then the store's entry.
    pub async fn doctor_for(self: &Arc<Self>, caller: &Caller) -> Vec<RuntimeReport> {
        let mut out = self.doctor().await;
        if *caller == Caller::Admin {
            let me = self.clone();
            let check = tokio::task::spawn_blocking(move || me.check_store())
                .await
                .unwrap_or_else(|e| {
                    let info = self.store.info();
                    StoreCheck {
                        engine: info.engine.to_string(),
                        location: info.location,
                        schema_version: info.schema_version,
                        answers: false,
                        error: Some(format!("the check did not finish: {e}")),
                        check_ms: 0.0,
                    }
                });
            out.push(check.report());
        }
        out
    }
}
