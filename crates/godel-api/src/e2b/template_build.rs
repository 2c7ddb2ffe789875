//! E2B's template build API (what `Template.build()` of the SDKs calls),
//! translated into a Dockerfile and built by godel's own builder
//! ([`godel_control::Control::build_template`]):
//!
//! 1. `POST /v3/templates` `{name}`: a build is opened; the template id is
//!    the name (so `Sandbox.create(name)` finds it) and a new build id;
//! 2. `GET /templates/{id}/files/{hash}`: whether the files of a `COPY` step
//!    were uploaded, and where to `PUT` them: a URL of this server signed
//!    for that team, build and hash (the SDKs `PUT` to it without their
//!    key, as to a presigned bucket URL); `PUT` stores the tar (gzip or
//!    not) by hash;
//! 3. `POST /v2/templates/{id}/builds/{build}` with the steps: `fromTemplate`
//!    (a template of the team; `base` is the host's directories) or
//!    `fromImage` `e2bdev/base` (E2B's default base: the host's directories
//!    too; any other image is refused naming it), `RUN`, `COPY` (unpacked
//!    from the upload), `ENV`, `WORKDIR`, `USER root`, `startCmd`. The build
//!    runs in the background with NAT network for RUN (as E2B builds have);
//! 4. `GET /templates/{id}/builds/{build}/status?logsOffset=N`: `building`,
//!    then `ready` or `error` with the failing step's message and the log.
//!
//! Builds are kept in memory (a daemon restart forgets unfinished ones);
//! the built template is registered per team like any other.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use godel_control::{BuildTemplate, Caller};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{State, api_error, api_error_status};

type S = AxState<Arc<State>>;

/// One build opened by `POST /v3/templates`.
#[derive(Debug, Clone)]
struct Build {
    team: String,
    name: String,
    build_id: String,
    /// `waiting`, `building`, `ready` or `error`.
    status: &'static str,
    logs: Vec<String>,
    reason: Option<String>,
}

static BUILDS: LazyLock<Mutex<HashMap<(String, String), Build>>> = LazyLock::new(Default::default);

fn team_of(c: &Caller) -> String {
    match c {
        Caller::Team(t) => t.clone(),
        Caller::Admin => "default".into(),
    }
}

fn bad(msg: impl AsRef<str>) -> Response {
    api_error_status(StatusCode::BAD_REQUEST, msg.as_ref())
}

fn uploads(state: &State, team: &str) -> std::path::PathBuf {
    state
        .control
        .home()
        .join("templates")
        .join("uploads")
        .join(team)
}

fn valid_hash(h: &str) -> bool {
    !h.is_empty() && h.len() <= 128 && h.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(super) async fn create(AxState(state): S, headers: HeaderMap, body: Bytes) -> Response {
    let caller = tri!(super::rest::caller(&state, &headers));
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let name = v["name"]
        .as_str()
        .or_else(|| v["alias"].as_str())
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return bad("a template build needs a name");
    }
    if name.contains(':') || v["tags"].as_array().is_some_and(|t| !t.is_empty()) {
        return bad(format!(
            "template {name}: tags are not supported by godel; build under a plain name"
        ));
    }
    if let Err(e) = godel_core::validate_name("template", &name) {
        return api_error(&e);
    }
    let team = team_of(&caller);
    let build_id = uuid::Uuid::new_v4().to_string();
    BUILDS.lock().insert(
        (team.clone(), name.clone()),
        Build {
            team,
            name: name.clone(),
            build_id: build_id.clone(),
            status: "waiting",
            logs: Vec::new(),
            reason: None,
        },
    );
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "templateID": name, "buildID": build_id, "public": false,
            "aliases": [name], "names": [name], "tags": [],
        })),
    )
        .into_response()
}

fn open_build(caller: &Caller, id: &str) -> Result<Build, Response> {
    BUILDS
        .lock()
        .get(&(team_of(caller), id.to_string()))
        .cloned()
        .ok_or_else(|| {
            api_error_status(
                StatusCode::NOT_FOUND,
                &format!("template {id}: no build of it was requested (POST /v3/templates)"),
            )
        })
}

pub(super) async fn file_link(
    AxState(state): S,
    headers: HeaderMap,
    Path((id, hash)): Path<(String, String)>,
) -> Response {
    let caller = tri!(super::rest::caller(&state, &headers));
    let b = tri!(open_build(&caller, &id));
    if !valid_hash(&hash) {
        return bad(format!("bad files hash {hash:?}"));
    }
    let present = uploads(&state, &b.team).join(&hash).is_file();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let sig = upload_signature(&state, &b.team, &id, &hash);
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "present": present,
            "url": format!("http://{host}/templates/{id}/files/{hash}?team={}&sig={sig}", b.team),
        })),
    )
        .into_response()
}

/// What an upload URL carries instead of a key: a keyed hash of the team,
/// the template and the files' hash, so it allows that one upload only.
fn upload_signature(state: &State, team: &str, id: &str, hash: &str) -> String {
    super::registry::access_token(
        &state.cfg.token_secret,
        &format!("template-upload\0{team}\0{id}\0{hash}"),
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct UploadQuery {
    team: Option<String>,
    sig: Option<String>,
}

pub(super) async fn file_upload(
    AxState(state): S,
    headers: HeaderMap,
    Path((id, hash)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Response {
    if !valid_hash(&hash) {
        return bad(format!("bad files hash {hash:?}"));
    }
    // A signed URL from `file_link`, or the caller's own key.
    let caller = match (&q.team, &q.sig) {
        (Some(team), Some(sig))
            if super::registry::constant_time_eq(
                sig.as_bytes(),
                upload_signature(&state, team, &id, &hash).as_bytes(),
            ) =>
        {
            Caller::Team(team.clone())
        }
        (_, Some(_)) => {
            return api_error_status(
                StatusCode::FORBIDDEN,
                "the upload URL's signature does not match this template and hash",
            );
        }
        _ => tri!(super::rest::caller(&state, &headers)),
    };
    let b = tri!(open_build(&caller, &id));
    let dir = uploads(&state, &b.team);
    let tmp = dir.join(format!(".{hash}.{}", uuid::Uuid::new_v4().simple()));
    let res = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&tmp, &body))
        .and_then(|_| std::fs::rename(&tmp, dir.join(&hash)));
    match res {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => api_error(&godel_core::Error::io("store the upload", &e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Step {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    files_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    #[serde(default)]
    from_image: Option<String>,
    #[serde(default)]
    from_template: Option<String>,
    #[serde(default)]
    from_image_registry: Option<Value>,
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    start_cmd: Option<String>,
    #[serde(default)]
    ready_cmd: Option<String>,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Dockerfile of E2B's steps, and the COPY uploads it needs (`hash`
/// directories of the context).
fn dockerfile(s: &Start) -> Result<(String, Vec<String>), String> {
    if s.from_image_registry.is_some() {
        return Err("fromImageRegistry: godel pulls no registry images".into());
    }
    let from = match (&s.from_template, &s.from_image) {
        (Some(t), _) if t == "base" => "host".to_string(),
        (Some(t), _) => t.clone(),
        (None, Some(i)) if i == "e2bdev/base" => "host".to_string(),
        // A plain name: a godel template of the team (the build fails
        // naming it when there is none).
        (None, Some(i)) if !i.contains(['/', ':', '@']) => i.clone(),
        (None, Some(i)) => {
            return Err(format!(
                "fromImage {i}: godel pulls no registry images and {i} is not a godel template; use Template().from_template(\"base\") (the host's system directories) or a template you built"
            ));
        }
        (None, None) => "host".to_string(),
    };
    let mut df = format!("FROM {from}\n");
    let mut hashes = Vec::new();
    for (i, st) in s.steps.iter().enumerate() {
        let n = i + 1;
        match st.kind.as_str() {
            "RUN" => {
                if let Some(u) = st.args.get(1).filter(|u| !u.is_empty() && *u != "root") {
                    return Err(format!(
                        "step {n} (RUN as {u}): RUN steps run as root in godel; run them without a user"
                    ));
                }
                let cmd = st.args.first().cloned().unwrap_or_default();
                df.push_str(&format!("RUN {}\n", cmd.replace('\n', " \\\n")));
            }
            "COPY" => {
                let (src, dest) = match (st.args.first(), st.args.get(1)) {
                    (Some(a), Some(b)) => (a, b),
                    _ => return Err(format!("step {n} (COPY): needs a source and a destination")),
                };
                for (k, what) in [(2, "user"), (3, "mode")] {
                    if let Some(v) = st.args.get(k).filter(|v| !v.is_empty() && *v != "root") {
                        return Err(format!(
                            "step {n} (COPY {src}): a {what} ({v}) is not supported by godel; files are copied owned by root with their own modes"
                        ));
                    }
                }
                let hash = st
                    .files_hash
                    .clone()
                    .filter(|h| valid_hash(h))
                    .ok_or_else(|| format!("step {n} (COPY {src}): no valid filesHash"))?;
                let src = src.trim_start_matches("./").trim_end_matches('/');
                df.push_str(&format!("COPY {hash}/{src} {dest}\n"));
                hashes.push(hash);
            }
            "ENV" => {
                let pairs: Vec<String> = st
                    .args
                    .chunks(2)
                    .map(|kv| {
                        format!(
                            "{}={}",
                            kv[0],
                            quote(kv.get(1).map(String::as_str).unwrap_or(""))
                        )
                    })
                    .collect();
                if !pairs.is_empty() {
                    df.push_str(&format!("ENV {}\n", pairs.join(" ")));
                }
            }
            "WORKDIR" | "USER" => {
                df.push_str(&format!(
                    "{} {}\n",
                    st.kind,
                    st.args.first().cloned().unwrap_or_default()
                ));
            }
            other => {
                return Err(format!(
                    "step {n}: step type {other} is not supported by godel"
                ));
            }
        }
    }
    if s.ready_cmd.is_some() && s.start_cmd.is_none() {
        return Err("readyCmd without startCmd".into());
    }
    if let Some(c) = &s.start_cmd {
        df.push_str(&format!(
            "CMD {}\n",
            serde_json::to_string(&["/bin/sh", "-c", c.as_str()]).unwrap_or_default()
        ));
    }
    Ok((df, hashes))
}

/// The context tar: each upload unpacked under its hash.
fn context(state: &State, team: &str, hashes: &[String]) -> Result<Vec<u8>, String> {
    let dir = state
        .control
        .home()
        .join("templates")
        .join("tmp")
        .join(format!("e2b-{}", uuid::Uuid::new_v4().simple()));
    let out = pack(state, team, hashes, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn pack(
    state: &State,
    team: &str,
    hashes: &[String],
    dir: &std::path::Path,
) -> Result<Vec<u8>, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for h in hashes {
        let file = uploads(state, team).join(h);
        let data = std::fs::read(&file).map_err(|_| {
            format!("the files of hash {h} were never uploaded (PUT /templates/{{id}}/files/{h})")
        })?;
        let target = dir.join(h);
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        let unpack = |r: &mut dyn std::io::Read| {
            let mut a = tar::Archive::new(r);
            a.set_preserve_permissions(true);
            a.unpack(&target)
        };
        let res = if data.starts_with(&[0x1f, 0x8b]) {
            unpack(&mut flate2::read::GzDecoder::new(&data[..]))
        } else {
            unpack(&mut &data[..])
        };
        res.map_err(|e| format!("the upload {h} is not a tar: {e}"))?;
    }
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).map_err(|e| e.to_string())?;
    b.into_inner().map_err(|e| e.to_string())
}

pub(super) async fn start(
    AxState(state): S,
    headers: HeaderMap,
    Path((id, build_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let caller = tri!(super::rest::caller(&state, &headers));
    let b = tri!(open_build(&caller, &id));
    if b.build_id != build_id {
        return api_error_status(
            StatusCode::NOT_FOUND,
            &format!("build {build_id} of {id} not found"),
        );
    }
    let req: Start = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("bad build request: {e}")),
    };
    let (df, hashes) = match dockerfile(&req) {
        Ok(x) => x,
        Err(e) => return bad(format!("template {id}: {e}")),
    };
    let ctx = match context(&state, &b.team, &hashes) {
        Ok(c) => c,
        Err(e) => return bad(format!("template {id}: {e}")),
    };
    set(&b, |x| x.status = "building");
    let st = state.clone();
    tokio::spawn(async move {
        let req = BuildTemplate {
            name: b.name.clone(),
            team: Some(b.team.clone()),
            dockerfile: df,
            context_tar: ctx.into(),
            network: true,
        };
        let out = st.control.build_template(&Caller::Admin, req).await;
        set(&b, |x| match out {
            Ok(built) => {
                x.logs.extend(built.log.lines().map(String::from));
                x.status = "ready";
            }
            Err(e) => {
                x.logs.extend(e.message.lines().map(String::from));
                x.reason = Some(e.message);
                x.status = "error";
            }
        });
    });
    StatusCode::ACCEPTED.into_response()
}

fn set(b: &Build, f: impl FnOnce(&mut Build)) {
    if let Some(x) = BUILDS.lock().get_mut(&(b.team.clone(), b.name.clone()))
        && x.build_id == b.build_id
    {
        f(x);
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusQuery {
    #[serde(default)]
    logs_offset: Option<usize>,
}

pub(super) async fn status(
    AxState(state): S,
    headers: HeaderMap,
    Path((id, build_id)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> Response {
    let caller = tri!(super::rest::caller(&state, &headers));
    let b = tri!(open_build(&caller, &id));
    if b.build_id != build_id {
        return api_error_status(
            StatusCode::NOT_FOUND,
            &format!("build {build_id} of {id} not found"),
        );
    }
    let now = chrono::Utc::now().to_rfc3339();
    let from = q.logs_offset.unwrap_or(0).min(b.logs.len());
    let level = if b.status == "error" { "error" } else { "info" };
    let entries: Vec<Value> = b.logs[from..]
        .iter()
        .take(100)
        .map(|m| json!({"timestamp": now, "message": m, "level": level}))
        .collect();
    let mut v = json!({
        "templateID": id, "buildID": build_id, "status": b.status,
        "logs": b.logs[from..].iter().take(100).collect::<Vec<_>>(),
        "logEntries": entries,
    });
    if let Some(r) = &b.reason {
        v["reason"] = json!({"message": r});
    }
    axum::Json(v).into_response()
}
