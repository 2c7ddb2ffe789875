//! `/v1/replicas`: the shared store, the replica that answers and every
//! replica known, with its lease and what it owns (admin only).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use godel_control::{Caller, Control, ReplicasReport};

use crate::error::ApiResult;

pub async fn list(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<ReplicasReport>> {
    caller.require_admin("listing replicas")?;
    Ok(Json(c.replicas()?))
}
