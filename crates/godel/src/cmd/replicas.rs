//! `godel replicas`: the replicas sharing the daemon's store, their leases
//! and how many live sandboxes each owns (admin; `/v1/replicas`).

use chrono::{DateTime, Utc};
use godel_core::{Error, Result};
use http::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::Ctx;
use crate::output;

/// The store as `/v1/replicas` names it.
#[derive(Debug, Deserialize)]
pub struct StoreView {
    pub engine: String,
    pub location: String,
    pub schema_version: i64,
}

/// One replica as `/v1/replicas` lists it.
#[derive(Debug, Deserialize)]
pub struct ReplicaView {
    pub id: String,
    #[serde(default)]
    pub advertise: String,
    #[serde(default)]
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    #[serde(default)]
    pub taken_over_by: Option<String>,
    #[serde(default)]
    pub owns: u64,
    pub live: bool,
}

/// `/v1/replicas`, the fields the table shows.
#[derive(Debug, Deserialize)]
pub struct ReplicasView {
    pub store: StoreView,
    #[serde(default)]
    pub me: Option<String>,
    #[serde(default)]
    pub lease_secs: f64,
    pub replicas: Vec<ReplicaView>,
}

pub async fn run(ctx: &Ctx) -> Result<i32> {
    let v: Value = ctx
        .client
        .json(Method::GET, "/v1/replicas", None::<&()>)
        .await?;
    if ctx.json {
        output::json(&v);
        return Ok(0);
    }
    let view: ReplicasView = serde_json::from_value(v)
        .map_err(|e| Error::internal(format!("the daemon's /v1/replicas answer: {e}")))?;
    output::replicas(&view);
    Ok(0)
}
