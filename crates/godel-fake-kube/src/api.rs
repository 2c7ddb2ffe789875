//! HTTP routing of the fake API server: `/version`, the exec WebSocket,
//! and generic create/get/list/watch/replace/patch/delete for every kind in
//! [`super::store::KINDS`], with Kubernetes' status codes and `Status` bodies.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{any, get};
use futures::StreamExt;
use serde_json::{Value, json};

use super::Shared;
use super::apply;
use super::exec;
use super::pods;
use super::status::{ApiError, json_response};
use super::store::{Kind, Selector, field, find_kind, label};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            any(exec::handle),
        )
        .fallback(handle)
        .with_state(shared)
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-godel-fake", "gitCommit": "fake",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                "compiler": "gc", "platform": "linux/amd64"}),
    )
}

/// What a request addresses.
struct Target {
    kind: &'static Kind,
    ns: Option<String>,
    name: Option<String>,
}

fn parse_target(path: &str) -> Result<Target, ApiError> {
    let p = path.trim_matches('/');
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let (prefix, rest) = if let Some(r) = p.strip_prefix("api/v1") {
        ("api/v1".to_string(), r)
    } else if let Some(r) = p.strip_prefix("apis/") {
        let mut it = r.splitn(3, '/');
        let (g, v) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        (format!("apis/{g}/{v}"), it.next().unwrap_or(""))
    } else {
        return Err(not_found());
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (ns, plural, name, sub) = if segs.first() == Some(&"namespaces") && segs.len() >= 3 {
        (
            Some(segs[1]),
            segs[2],
            segs.get(3).copied(),
            segs.get(4).copied(),
        )
    } else {
        (
            None,
            *segs.first().ok_or_else(not_found)?,
            segs.get(1).copied(),
            segs.get(2).copied(),
        )
    };
    let kind = find_kind(&prefix, plural).ok_or_else(not_found)?;
    if sub.is_some()
        || (kind.namespaced && ns.is_none() && name.is_some())
        || (!kind.namespaced && ns.is_some())
    {
        return Err(not_found());
    }
    Ok(Target {
        kind,
        ns: ns.map(str::to_string),
        name: name.map(str::to_string),
    })
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = route(&shared, &method, &uri, &headers, &body);
    match result {
        Ok(resp) => resp,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let t = parse_target(uri.path())?;
    let q = query(uri);
    match (method.clone(), t.name.is_some()) {
        (Method::GET, false) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(shared, &t, &q)
        }
        (Method::GET, false) => list(shared, &t, &q),
        (Method::GET, true) => get_one(shared, &t),
        (Method::POST, false) => create(shared, &t, body),
        (Method::PUT, true) => replace(shared, &t, body),
        (Method::PATCH, true) => patch(shared, &t, &q, headers, body),
        (Method::DELETE, true) => delete(shared, &t),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("method {method} not allowed on {}", uri.path()),
        )),
    }
}

fn ok(code: StatusCode, v: &Value) -> Result<Response, ApiError> {
    Ok(json_response(code, v))
}

fn ns_key(t: &Target) -> &str {
    t.ns.as_deref().unwrap_or("")
}

fn with_status(shared: &Shared, kind: &Kind, mut obj: Value) -> Value {
    if kind.plural == "resourcequotas" {
        pods::fill_quota_status(&shared.store.lock(), &mut obj);
    }
    obj
}

fn get_one(shared: &Shared, t: &Target) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let obj = shared
        .store
        .lock()
        .get(t.kind.plural, ns_key(t), name)
        .map(|e| e.obj.clone())
        .ok_or_else(|| ApiError::not_found(t.kind.plural, name))?;
    ok(StatusCode::OK, &with_status(shared, t.kind, obj))
}

fn selectors(q: &BTreeMap<String, String>) -> Result<(Selector, Selector), ApiError> {
    let l = Selector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let f = Selector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    Ok((l, f))
}

fn matches(obj: &Value, l: &Selector, f: &Selector) -> bool {
    l.matches(|k| label(obj, k)) && f.matches(|k| field(obj, k))
}

fn list(shared: &Shared, t: &Target, q: &BTreeMap<String, String>) -> Result<Response, ApiError> {
    let (l, f) = selectors(q)?;
    let (items, rv) = {
        let store = shared.store.lock();
        let candidates: Vec<&Value> = match (t.ns.as_deref(), f.exact("metadata.name")) {
            (Some(ns), Some(name)) => store
                .get(t.kind.plural, ns, name)
                .map(|e| &e.obj)
                .into_iter()
                .collect(),
            _ => store.list(t.kind.plural, t.ns.as_deref()),
        };
        let items: Vec<Value> = candidates
            .into_iter()
            .filter(|o| matches(o, &l, &f))
            .cloned()
            .collect();
        (items, store.rv())
    };
    let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|c| c.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items[start.min(end)..end]
        .iter()
        .map(|o| with_status(shared, t.kind, o.clone()))
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        meta["continue"] = json!(end.to_string());
        meta["remainingItemCount"] = json!(items.len() - end);
    }
    ok(
        StatusCode::OK,
        &json!({"kind": format!("{}List", t.kind.kind), "apiVersion": t.kind.api_version, "metadata": meta, "items": page}),
    )
}

fn event_line(etype: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": etype, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch(shared: &Shared, t: &Target, q: &BTreeMap<String, String>) -> Result<Response, ApiError> {
    let (l, f) = selectors(q)?;
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let plural = t.kind.plural;
    let ns = t.ns.clone();
    // Cluster-wide watches of a namespaced kind can still pin a namespace and name.
    let pin_ns = ns
        .clone()
        .or_else(|| f.exact("metadata.namespace").map(str::to_string));
    let pin_name = f.exact("metadata.name").map(str::to_string);
    let (initial, last_rv, rx) = {
        let mut store = shared.store.lock();
        let rx = store.subscribe(
            plural,
            pin_ns.as_deref(),
            pin_name.as_deref().filter(|_| pin_ns.is_some()),
        );
        if rv_param.is_empty() || rv_param == "0" {
            let objs: Vec<Bytes> = store
                .list(plural, ns.as_deref())
                .into_iter()
                .filter(|o| matches(o, &l, &f))
                .map(|o| event_line("ADDED", o))
                .collect();
            (objs, store.rv(), rx)
        } else {
            let rv: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}"))
            })?;
            match store.since(rv) {
                Some(changes) => {
                    let lines = changes
                        .iter()
                        .filter(|c| {
                            c.plural == plural
                                && ns.as_deref().is_none_or(|n| n == c.namespace)
                                && matches(&c.obj, &l, &f)
                        })
                        .map(|c| event_line(c.etype, &c.obj))
                        .collect();
                    (lines, store.rv(), rx)
                }
                None => {
                    let gone = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {rv} ({})", store.rv()),
                    );
                    let body = Body::from(event_line("ERROR", &gone.to_json()));
                    return Ok(Response::builder()
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap_or_else(|_| Response::new(Body::empty())));
                }
            }
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let live = futures::stream::unfold((rx, last_rv), move |(mut rx, mut last_rv)| {
        let (l, f, ns) = (l.clone(), f.clone(), ns.clone());
        async move {
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(c)) => {
                        if c.rv <= last_rv
                            || c.plural != plural
                            || ns.as_deref().is_some_and(|n| n != c.namespace)
                            || !matches(&c.obj, &l, &f)
                        {
                            continue;
                        }
                        last_rv = c.rv;
                        return Some((event_line(c.etype, &c.obj), (rx, last_rv)));
                    }
                    // Timed out: end the watch; the client resumes from its last resourceVersion.
                    _ => return None,
                }
            }
        }
    });
    let stream = futures::stream::iter(initial)
        .chain(live)
        .map(Ok::<_, Infallible>);
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })
}

/// Defaults the API server sets on every new object.
fn stamp_new(t: &Target, obj: &mut Value) {
    obj["apiVersion"] = json!(t.kind.api_version);
    obj["kind"] = json!(t.kind.kind);
    if let Some(ns) = &t.ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    obj["metadata"]["creationTimestamp"] = json!(now());
    if t.kind.plural == "namespaces" {
        let name = obj["metadata"]["name"].clone();
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
        obj["status"] = json!({"phase": "Active"});
    }
}

/// Namespaced objects need their namespace (404 otherwise).
fn check_namespace(store: &super::store::Store, t: &Target) -> Result<(), ApiError> {
    if let Some(ns) = &t.ns
        && store.get("namespaces", "", ns).is_none()
    {
        return Err(ApiError::namespace_not_found(ns));
    }
    Ok(())
}

fn create(shared: &Arc<Shared>, t: &Target, body: &Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut obj = parse_body(body)?;
    let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        let gen_name = obj["metadata"]["generateName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if gen_name.is_empty() {
            return Err(ApiError::invalid(
                t.kind.plural,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        name = format!(
            "{gen_name}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..5]
        );
        obj["metadata"]["name"] = json!(name);
    }
    stamp_new(t, &mut obj);
    let is_pod = t.kind.plural == "pods";
    let stored = {
        let mut store = shared.store.lock();
        check_namespace(&store, t)?;
        if store.get(t.kind.plural, ns_key(t), &name).is_some() {
            return Err(ApiError::already_exists(t.kind.plural, &name));
        }
        if is_pod {
            pods::admit(&store, ns_key(t), &mut obj)?;
            pods::initial_status(&mut obj);
        }
        store.put(t.kind.plural, ns_key(t), &name, obj, BTreeMap::new())
    };
    if is_pod {
        let uid = stored["metadata"]["uid"].as_str().unwrap_or("").to_string();
        pods::start(shared.clone(), ns_key(t).to_string(), name, uid);
        shared.create_times.lock().push(started.elapsed());
    }
    ok(StatusCode::CREATED, &stored)
}

fn replace(shared: &Arc<Shared>, t: &Target, body: &Bytes) -> Result<Response, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let mut obj = parse_body(body)?;
    let mut store = shared.store.lock();
    let entry = store
        .get(t.kind.plural, ns_key(t), &name)
        .ok_or_else(|| ApiError::not_found(t.kind.plural, &name))?;
    let want_rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if !want_rv.is_empty() && entry.obj["metadata"]["resourceVersion"] != want_rv {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                t.kind.plural
            ),
        ));
    }
    for k in ["uid", "creationTimestamp"] {
        obj["metadata"][k] = entry.obj["metadata"][k].clone();
    }
    if t.kind.plural == "pods" {
        obj["status"] = entry.obj["status"].clone();
    }
    let owners = entry.owners.clone();
    let stored = store.put(t.kind.plural, ns_key(t), &name, obj, owners);
    ok(StatusCode::OK, &stored)
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    if let Some(m) = target.as_object_mut() {
                        m.remove(k);
                    }
                } else {
                    merge_patch(&mut target[k.as_str()], v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn strip_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

fn patch(
    shared: &Arc<Shared>,
    t: &Target,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let patch = parse_body(body)?;
    if ctype.starts_with("application/apply-patch") {
        let manager = q.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::bad_request("PATCH, application/apply-patch+yaml: fieldManager is required for apply requests")
        })?;
        let force = q.get("force").is_some_and(|f| f == "true");
        if patch["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let (stored, created, is_pod) = {
            let mut store = shared.store.lock();
            check_namespace(&store, t)?;
            let existing = store.get(t.kind.plural, ns_key(t), &name).cloned();
            let (mut obj, owners) = apply::apply(
                existing.as_ref().map(|e| (&e.obj, &e.owners)),
                &patch,
                manager,
                force,
            )
            .map_err(|c| ApiError::new(409, "Conflict", c.message(t.kind.api_version)))?;
            obj["metadata"]["name"] = json!(name);
            let created = existing.is_none();
            let is_pod = created && t.kind.plural == "pods";
            if created {
                stamp_new(t, &mut obj);
                if is_pod {
                    pods::admit(&store, ns_key(t), &mut obj)?;
                    pods::initial_status(&mut obj);
                }
            }
            obj["metadata"]["managedFields"] =
                apply::managed_fields(&owners, t.kind.api_version, &now());
            match &existing {
                Some(e) if strip_volatile(&e.obj) == strip_volatile(&obj) && e.owners == owners => {
                    (e.obj.clone(), false, false)
                }
                _ => (
                    store.put(t.kind.plural, ns_key(t), &name, obj, owners),
                    created,
                    is_pod,
                ),
            }
        };
        if is_pod {
            let uid = stored["metadata"]["uid"].as_str().unwrap_or("").to_string();
            pods::start(shared.clone(), ns_key(t).to_string(), name, uid);
        }
        return ok(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &with_status(shared, t.kind, stored),
        );
    }
    if !(ctype.starts_with("application/merge-patch")
        || ctype.starts_with("application/strategic-merge-patch"))
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ctype:?})"
            ),
        ));
    }
    let mut store = shared.store.lock();
    let entry = store
        .get(t.kind.plural, ns_key(t), &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.kind.plural, &name))?;
    let mut obj = entry.obj.clone();
    merge_patch(&mut obj, &patch);
    if strip_volatile(&obj) == strip_volatile(&entry.obj) {
        return ok(StatusCode::OK, &entry.obj);
    }
    let stored = store.put(t.kind.plural, ns_key(t), &name, obj, entry.owners);
    ok(StatusCode::OK, &stored)
}

fn delete(shared: &Arc<Shared>, t: &Target) -> Result<Response, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let (obj, dirs) = {
        let mut store = shared.store.lock();
        let obj = store
            .remove(t.kind.plural, ns_key(t), &name)
            .ok_or_else(|| ApiError::not_found(t.kind.plural, &name))?;
        let mut dirs = Vec::new();
        if t.kind.plural == "pods" {
            dirs.push(shared.pod_dir(ns_key(t), &name));
        }
        if t.kind.plural == "namespaces" {
            for k in super::store::KINDS.iter().filter(|k| k.namespaced) {
                let names: Vec<String> = store
                    .list(k.plural, Some(&name))
                    .iter()
                    .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
                    .collect();
                for n in names {
                    store.remove(k.plural, &name, &n);
                }
            }
            dirs.push(shared.pods_root.join(&name));
        }
        (obj, dirs)
    };
    if !dirs.is_empty() {
        tokio::task::spawn_blocking(move || {
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        });
    }
    ok(StatusCode::OK, &obj)
}
