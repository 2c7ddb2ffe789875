//! Templates built from a Dockerfile: `POST /v1/templates` takes the build
//! context as a tar body (the Dockerfile is one of its entries, `Dockerfile`
//! unless `dockerfile=` names another) and answers with the template, its
//! steps and the build log once the build is done; list, get and delete.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use godel_control::{BuildTemplate, Caller, Control};
use godel_core::{Error, TemplateBuild, TemplateInfo};
use serde::Deserialize;

use crate::error::ApiResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildQuery {
    name: String,
    #[serde(default)]
    team: Option<String>,
    /// Path of the Dockerfile inside the context tar.
    #[serde(default)]
    dockerfile: Option<String>,
    /// Give RUN steps NAT network access (default: none).
    #[serde(default)]
    network: bool,
}

/// The text of entry `path` of an uncompressed tar.
fn tar_entry(tar: &[u8], path: &str) -> Result<String, Error> {
    let want = path.trim_start_matches("./");
    let mut a = tar::Archive::new(tar);
    let entries = a
        .entries()
        .map_err(|e| Error::invalid(format!("the build context is not a tar: {e}")))?;
    for e in entries {
        let mut e =
            e.map_err(|e| Error::invalid(format!("the build context is not a tar: {e}")))?;
        let p = e
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if p.trim_start_matches("./") == want {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s)
                .map_err(|e| Error::invalid(format!("{path} is not UTF-8 text: {e}")))?;
            return Ok(s);
        }
    }
    Err(Error::invalid(format!(
        "the build context has no {path} (send the Dockerfile in the context tar)"
    )))
}

pub async fn build(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<BuildQuery>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<TemplateBuild>)> {
    // Acting for another team is refused before the context is looked at
    // (the default team only matters to an admin, which may act for any).
    caller.spawn_team(q.team.as_deref(), "default")?;
    let path = q.dockerfile.as_deref().unwrap_or("Dockerfile");
    let dockerfile = tar_entry(&body, path)?;
    let req = BuildTemplate {
        name: q.name,
        team: q.team,
        dockerfile,
        context_tar: body,
        network: q.network,
    };
    Ok((
        StatusCode::CREATED,
        Json(c.build_template(&caller, req).await?),
    ))
}

pub async fn list(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<TemplateInfo>>> {
    Ok(Json(c.list_templates(&caller)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamQuery {
    #[serde(default)]
    team: Option<String>,
}

pub async fn get(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<TeamQuery>,
) -> ApiResult<Json<TemplateInfo>> {
    Ok(Json(c.get_template(&caller, q.team.as_deref(), &name)?))
}

pub async fn remove(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<TeamQuery>,
) -> ApiResult<StatusCode> {
    c.delete_template(&caller, q.team.as_deref(), &name)?;
    Ok(StatusCode::NO_CONTENT)
}
