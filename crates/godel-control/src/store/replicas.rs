//! Replicas sharing one store, their leases, and which replica owns each
//! sandbox.
//!
//! A replica renews its lease (`lease_until`) every few seconds. When a
//! lease runs out, the first surviving replica to claim it
//! ([`Store::take_over`]) becomes the owner of every live sandbox the dead
//! one held — in one write transaction, so two survivors can never both
//! win — and then re-adopts or loses them. A replica that comes back before
//! anyone claimed it just renews its lease and keeps what it owns.

use chrono::{DateTime, Utc};
use godel_core::{Error, Result, SandboxInfo};
use serde::Serialize;

use super::db::{Row, args};
use super::runtimes::{COLS, row_to_info};
use super::{Store, parse_time, time_text};

/// The table (idempotent; run on every open).
pub(super) const TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    advertise TEXT NOT NULL,
    advertise_e2b TEXT NOT NULL,
    host TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at TEXT NOT NULL,
    renewed_at TEXT NOT NULL,
    lease_until TEXT NOT NULL,
    taken_over_by TEXT,
    taken_over_at TEXT
);
CREATE INDEX IF NOT EXISTS runtimes_owner ON runtimes(owner);
"#;

/// One replica as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaRecord {
    pub id: String,
    /// Where its peers forward native API requests (`http://host:port`;
    /// empty when it serves no TCP listener).
    pub advertise: String,
    /// Where its peers forward E2B API requests (empty: none).
    pub advertise_e2b: String,
    /// The machine it runs on (host-bound runtimes live there).
    pub host: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// Set once a surviving replica took its sandboxes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_over_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_over_at: Option<DateTime<Utc>>,
    /// Live sandboxes it owns.
    pub owns: u64,
}

impl ReplicaRecord {
    /// Whether its lease still runs at `now` (and nobody took it over).
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.taken_over_by.is_none() && self.lease_until > now
    }
}

/// What a replica says of itself when it registers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaRegistration {
    pub id: String,
    pub advertise: String,
    pub advertise_e2b: String,
    pub host: String,
}

/// What a take-over moved: the dead replica and the sandboxes now owned by
/// the taker (still in their old state; the control plane adopts or loses them).
#[derive(Debug, Clone, Default)]
pub struct Takeover {
    pub from: String,
    pub sandboxes: Vec<SandboxInfo>,
}

const RCOLS: &str = "r.id, r.advertise, r.advertise_e2b, r.host, r.version, r.started_at, r.renewed_at, r.lease_until,
    r.taken_over_by, r.taken_over_at,
    (SELECT COUNT(*) FROM runtimes s WHERE s.owner = r.id AND s.state NOT IN ('terminated', 'error'))";

fn replica_row(r: &Row) -> Result<ReplicaRecord> {
    Ok(ReplicaRecord {
        id: r.str(0)?,
        advertise: r.str(1)?,
        advertise_e2b: r.str(2)?,
        host: r.str(3)?,
        version: r.str(4)?,
        started_at: parse_time(&r.str(5)?),
        renewed_at: parse_time(&r.str(6)?),
        lease_until: parse_time(&r.str(7)?),
        taken_over_by: r.opt_str(8)?,
        taken_over_at: r.opt_str(9)?.map(|t| parse_time(&t)),
        owns: r.u64(10)?,
    })
}

impl Store {
    /// Register (or re-register after a restart) replica `id` with a lease
    /// until `lease_until`. A replica coming back after it was taken over
    /// starts clean: what it owned belongs to the taker now.
    pub fn register_replica(
        &self,
        r: &ReplicaRegistration,
        lease_until: DateTime<Utc>,
    ) -> Result<()> {
        let now = time_text(Utc::now());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO replicas (id, advertise, advertise_e2b, host, version, started_at, renewed_at, lease_until)
                 VALUES (?1, ?2, ?7, ?3, ?4, ?5, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET advertise = excluded.advertise,
                    advertise_e2b = excluded.advertise_e2b, host = excluded.host,
                    version = excluded.version, started_at = excluded.started_at,
                    renewed_at = excluded.renewed_at, lease_until = excluded.lease_until,
                    taken_over_by = NULL, taken_over_at = NULL",
                args![
                    &r.id,
                    &r.advertise,
                    &r.host,
                    env!("CARGO_PKG_VERSION"),
                    now,
                    time_text(lease_until),
                    &r.advertise_e2b
                ],
            )
        })
        .map(drop)
    }

    /// Extend `id`'s lease. `CONFLICT` when another replica took it over:
    /// the caller no longer owns anything and must re-register.
    pub fn renew_lease(&self, id: &str, lease_until: DateTime<Utc>) -> Result<()> {
        let n = self.write(|tx| {
            tx.execute(
                "UPDATE replicas SET renewed_at = ?2, lease_until = ?3
                 WHERE id = ?1 AND taken_over_by IS NULL",
                args![id, time_text(Utc::now()), time_text(lease_until)],
            )
        })?;
        if n == 0 {
            return Err(Error::conflict(format!(
                "replica {id} lost its lease (taken over, or never registered)"
            )));
        }
        Ok(())
    }

    /// Every replica, by id, with what each owns.
    pub fn list_replicas(&self) -> Result<Vec<ReplicaRecord>> {
        self.read(|db| {
            db.query(
                &format!("SELECT {RCOLS} FROM replicas r ORDER BY r.id"),
                &[],
            )?
            .iter()
            .map(replica_row)
            .collect()
        })
    }

    pub fn get_replica(&self, id: &str) -> Result<Option<ReplicaRecord>> {
        self.read(|db| {
            db.query_opt(
                &format!("SELECT {RCOLS} FROM replicas r WHERE r.id = ?1"),
                args![id],
            )?
            .map(|r| replica_row(&r))
            .transpose()
        })
    }

    /// Claim `dead`'s sandboxes for `me` if its lease ran out before `now`
    /// and nobody claimed it first. `None` when the claim is not ours to make.
    pub fn take_over(&self, dead: &str, me: &str, now: DateTime<Utc>) -> Result<Option<Takeover>> {
        let now = time_text(now);
        self.write(|tx| {
            let won = tx.execute(
                "UPDATE replicas SET taken_over_by = ?2, taken_over_at = ?3
                 WHERE id = ?1 AND id != ?2 AND taken_over_by IS NULL AND lease_until < ?3",
                args![dead, me, &now],
            )?;
            if won == 0 {
                return Ok(None);
            }
            let sandboxes = tx
                .query(
                    &format!(
                        "SELECT {COLS} FROM runtimes WHERE owner = ?1 AND state NOT IN ('terminated', 'error')
                         ORDER BY created_at"
                    ),
                    args![dead],
                )?
                .iter()
                .map(row_to_info)
                .collect::<Result<Vec<_>>>()?;
            tx.execute(
                "UPDATE runtimes SET owner = ?2, updated_at = ?3
                 WHERE owner = ?1 AND state NOT IN ('terminated', 'error')",
                args![dead, me, &now],
            )?;
            Ok(Some(Takeover {
                from: dead.to_string(),
                sandboxes,
            }))
        })
    }

    /// Hand a (lost) sandbox's record back to `owner`: a host-bound sandbox
    /// stays with its machine's replica, which releases what is left of it
    /// when it comes back.
    pub fn set_owner(&self, id: &str, owner: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE runtimes SET owner = ?2 WHERE id = ?1",
                args![id, owner],
            )
        })
        .map(drop)
    }

    /// Give every live sandbox that names no owner to `me` (records written
    /// before replicas existed); their ids.
    pub fn claim_unowned(&self, me: &str) -> Result<Vec<String>> {
        self.write(|tx| {
            let ids = tx
                .query(
                    "SELECT id FROM runtimes WHERE owner IS NULL AND state NOT IN ('terminated', 'error')",
                    &[],
                )?
                .iter()
                .map(|r| r.str(0))
                .collect::<Result<Vec<_>>>()?;
            tx.execute(
                "UPDATE runtimes SET owner = ?1 WHERE owner IS NULL AND state NOT IN ('terminated', 'error')",
                args![me],
            )?;
            Ok(ids)
        })
    }
}
