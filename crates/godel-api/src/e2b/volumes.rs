//! E2B's volumes: `/volumes` (create, list) and `/volumes/{id}` (info,
//! delete), each a host directory of the caller's team under
//! `$GODEL_HOME/volumes/<team>/<name>`; and `volumeMounts` on create, which
//! turn into the spawn's `volumes` (mounted read-write at the asked path by
//! runtimes that can; the others refuse the create naming themselves).
//!
//! A volume's id is derived from its team and name (`vol-` + 16 hex), so
//! the directory is the whole state; its token, like the envd tokens, from
//! the server's secret. E2B's volume content API is not served: the token
//! only identifies the volume.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use godel_control::Caller;
use godel_core::{Error, Result, SpawnSpec, VolumeMount as SpecVolume};
use godel_e2b::platform::{NewVolume, Volume, VolumeAndToken, VolumeMount};
use sha2::{Digest, Sha256};

use super::rest::caller;
use super::{State, api_error, api_error_status};

type S = AxState<Arc<State>>;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route("/volumes/{id}", get(info).delete(delete))
}

fn team_of(state: &State, caller: &Caller) -> String {
    caller
        .team_filter()
        .map(String::from)
        .unwrap_or_else(|| state.control.settings().default_team.clone())
}

/// The directory holding a team's volumes.
fn team_dir(state: &State, team: &str) -> PathBuf {
    state.control.home().join("volumes").join(team)
}

fn volume_id(team: &str, name: &str) -> String {
    let mut h = Sha256::new();
    h.update(team.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    let d = h.finalize();
    format!(
        "vol-{}",
        d[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn token(state: &State, id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"godel-e2b-volume\0");
    h.update(&state.cfg.token_secret);
    h.update([0]);
    h.update(id.as_bytes());
    h.finalize()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// E2B's name pattern: `^[a-zA-Z0-9_-]+$`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid volume name {name:?}: use letters, digits, '_' and '-'"
        )))
    }
}

/// The team's volumes, by name.
fn names(state: &State, team: &str) -> Result<Vec<String>> {
    let dir = team_dir(state, team);
    let mut out = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                if e.path().is_dir()
                    && let Some(n) = e.file_name().to_str()
                    && check_name(n).is_ok()
                {
                    out.push(n.to_string());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("list volumes", &e)),
    }
    out.sort();
    Ok(out)
}

/// The name of the team's volume with id (or name) `id`.
fn find(state: &State, team: &str, id: &str) -> Result<String> {
    names(state, team)?
        .into_iter()
        .find(|n| n == id || volume_id(team, n) == id)
        .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
}

fn with_token(state: &State, team: &str, name: &str) -> VolumeAndToken {
    let id = volume_id(team, name);
    VolumeAndToken {
        token: token(state, &id),
        volume_id: id,
        name: name.to_string(),
    }
}

async fn create(AxState(state): S, headers: HeaderMap, body: Bytes) -> Response {
    let caller = tri!(caller(&state, &headers));
    let req: NewVolume = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error_status(StatusCode::BAD_REQUEST, &format!("invalid body: {e}"));
        }
    };
    trb!(check_name(&req.name));
    let team = team_of(&state, &caller);
    let dir = team_dir(&state, &team);
    trb!(std::fs::create_dir_all(&dir).map_err(|e| Error::io("create the volumes directory", &e)));
    match std::fs::create_dir(dir.join(&req.name)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return api_error(&Error::conflict(format!(
                "volume {} already exists",
                req.name
            )));
        }
        Err(e) => return api_error(&Error::io("create the volume", &e)),
    }
    (
        StatusCode::CREATED,
        axum::Json(with_token(&state, &team, &req.name)),
    )
        .into_response()
}

async fn list(AxState(state): S, headers: HeaderMap) -> Response {
    let caller = tri!(caller(&state, &headers));
    let team = team_of(&state, &caller);
    let all: Vec<Volume> = trb!(names(&state, &team))
        .into_iter()
        .map(|n| Volume {
            volume_id: volume_id(&team, &n),
            name: n,
        })
        .collect();
    axum::Json(all).into_response()
}

async fn info(AxState(state): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let caller = tri!(caller(&state, &headers));
    let team = team_of(&state, &caller);
    let name = trb!(find(&state, &team, &id));
    axum::Json(with_token(&state, &team, &name)).into_response()
}

async fn delete(AxState(state): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let caller = tri!(caller(&state, &headers));
    let team = team_of(&state, &caller);
    let name = trb!(find(&state, &team, &id));
    let dir = team_dir(&state, &team).join(&name);
    let users: Vec<String> = trb!(state.control.list(&caller, false))
        .into_iter()
        .filter(|s| {
            s.spec
                .volumes
                .iter()
                .any(|v| std::path::Path::new(&v.source) == dir)
        })
        .map(|s| s.id)
        .collect();
    if !users.is_empty() {
        return api_error(&Error::conflict(format!(
            "volume {name} is mounted by {}; kill those sandboxes first",
            users.join(", ")
        )));
    }
    trb!(std::fs::remove_dir_all(&dir).map_err(|e| Error::io("delete the volume", &e)));
    StatusCode::NO_CONTENT.into_response()
}

/// Turn a create's `volumeMounts` into the spawn's volumes: each must name
/// one of the team's volumes, each path once.
pub(super) fn apply_create(
    state: &State,
    caller: &Caller,
    body: &[u8],
    spec: &mut SpawnSpec,
) -> std::result::Result<(), Response> {
    let mounts: Vec<VolumeMount> = match serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("volumeMounts").cloned())
    {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(v) => serde_json::from_value(v).map_err(|e| {
            api_error_status(
                StatusCode::BAD_REQUEST,
                &format!("volumeMounts: expected a list of {{name, path}}: {e}"),
            )
        })?,
    };
    let team = team_of(state, caller);
    for (i, vm) in mounts.into_iter().enumerate() {
        let name = find(state, &team, &vm.name).map_err(|e| {
            api_error_status(
                StatusCode::BAD_REQUEST,
                &format!("volumeMounts[{i}]: {}", e.message),
            )
        })?;
        if spec.volumes.iter().any(|v| v.destination == vm.path) {
            return Err(api_error_status(
                StatusCode::BAD_REQUEST,
                &format!("volumeMounts[{i}]: path {} is mounted twice", vm.path),
            ));
        }
        spec.volumes.push(SpecVolume {
            source: team_dir(state, &team).join(&name).display().to_string(),
            destination: vm.path,
            read_only: false,
            name,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert!(check_name("data_1-x").is_ok());
        for bad in ["", "a/b", "..", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(volume_id("t", "a"), volume_id("t", "a"));
        assert_ne!(volume_id("t", "a"), volume_id("u", "a"));
        assert_eq!(volume_id("t", "a").len(), 20);
    }
}
