//! Pod admission and lifecycle in the fake: RuntimeClass admission,
//! LimitRange defaulting, ResourceQuota enforcement (403 `exceeded quota`),
//! then Pending → Running, or an image pull error (`*invalid*` images), a
//! crash loop (`*crashloop*` images) or Unschedulable (requests above the
//! node's capacity), with the conditions and container statuses a kubelet sets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use godel_core::quantity::{parse_bytes, parse_cpu};
use serde_json::{Value, json};

use super::Shared;
use super::status::ApiError;
use super::store::Store;

/// Millicores of a CPU quantity (`0` allowed).
pub(crate) fn cpu_millis(v: &Value) -> Option<u64> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if s.trim() == "0" {
        return Some(0);
    }
    parse_cpu(&s).ok().map(|c| c.millis())
}

/// Bytes of a memory quantity (`0` allowed).
pub(crate) fn mem_bytes(v: &Value) -> Option<u64> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    parse_bytes(&s).ok().map(|b| b.get())
}

/// Amount of a quota resource (`requests.cpu`, `limits.memory`, `pods`, ...) a pod uses.
pub(crate) fn pod_usage(pod: &Value, resource: &str) -> u64 {
    if resource == "pods" || resource == "count/pods" {
        return 1;
    }
    let (section, res) = match resource.split_once('.') {
        Some((s, r)) => (s, r),
        None => ("requests", resource),
    };
    let Some(containers) = pod["spec"]["containers"].as_array() else {
        return 0;
    };
    containers
        .iter()
        .map(|c| {
            let v = &c["resources"][section][res];
            if res == "cpu" {
                cpu_millis(v).unwrap_or(0)
            } else {
                mem_bytes(v).unwrap_or(0)
            }
        })
        .sum()
}

fn is_cpu(resource: &str) -> bool {
    resource.ends_with("cpu")
}

fn fmt_amount(resource: &str, v: u64) -> String {
    if resource == "pods" || resource == "count/pods" {
        v.to_string()
    } else if is_cpu(resource) {
        godel_core::Cpu(v).to_string()
    } else {
        godel_core::ByteQuantity(v).to_string()
    }
}

pub(crate) fn terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// Admission for a new pod in `ns`: RuntimeClass, LimitRange defaults, quota.
pub(crate) fn admit(store: &Store, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    if let Some(rc) = pod["spec"]["runtimeClassName"].as_str()
        && store.get("runtimeclasses", "", rc).is_none()
    {
        return Err(ApiError::forbidden(
            "pods",
            &name,
            &format!("pod rejected: RuntimeClass \"{rc}\" not found"),
        ));
    }
    // LimitRange defaulting of containers without resources.
    for lr in store.list("limitranges", Some(ns)) {
        for item in lr["spec"]["limits"].as_array().cloned().unwrap_or_default() {
            if item["type"] != "Container" {
                continue;
            }
            let Some(containers) = pod["spec"]["containers"].as_array_mut() else {
                continue;
            };
            for c in containers.iter_mut() {
                for res in ["cpu", "memory"] {
                    if c["resources"]["limits"][res].is_null() && !item["default"][res].is_null() {
                        c["resources"]["limits"][res] = item["default"][res].clone();
                    }
                    if c["resources"]["requests"][res].is_null() {
                        let d = if item["defaultRequest"][res].is_null() {
                            c["resources"]["limits"][res].clone()
                        } else {
                            item["defaultRequest"][res].clone()
                        };
                        if !d.is_null() {
                            c["resources"]["requests"][res] = d;
                        }
                    }
                    let max = &item["max"][res];
                    let lim = &c["resources"]["limits"][res];
                    let over = if res == "cpu" {
                        matches!((cpu_millis(lim), cpu_millis(max)), (Some(l), Some(m)) if l > m)
                    } else {
                        matches!((mem_bytes(lim), mem_bytes(max)), (Some(l), Some(m)) if l > m)
                    };
                    if over {
                        return Err(ApiError::forbidden(
                            "pods",
                            &name,
                            &format!(
                                "maximum {res} usage per Container is {}, but limit is {}",
                                max.as_str().unwrap_or(""),
                                lim.as_str().unwrap_or("")
                            ),
                        ));
                    }
                }
            }
        }
    }
    // ResourceQuota, against the usage the store keeps per namespace.
    for quota in store.list("resourcequotas", Some(ns)) {
        let qname = quota["metadata"]["name"].as_str().unwrap_or("");
        let Some(hard) = quota["spec"]["hard"].as_object() else {
            continue;
        };
        let (mut requested, mut used, mut limited) = (Vec::new(), Vec::new(), Vec::new());
        let mut missing = Vec::new();
        for (res, limit) in hard {
            let tracked = res == "pods"
                || res == "count/pods"
                || res.contains("cpu")
                || res.contains("memory");
            if !tracked {
                continue;
            }
            let limit = if is_cpu(res) {
                cpu_millis(limit)
            } else if res.contains("memory") {
                mem_bytes(limit)
            } else {
                limit
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or(limit.as_u64())
            };
            let Some(limit) = limit else { continue };
            let want = pod_usage(pod, res);
            if want == 0 && res != "pods" && res != "count/pods" {
                missing.push(res.clone());
                continue;
            }
            let have = store.usage(ns, res);
            if have + want > limit {
                requested.push(format!("{res}={}", fmt_amount(res, want)));
                used.push(format!("{res}={}", fmt_amount(res, have)));
                limited.push(format!("{res}={}", fmt_amount(res, limit)));
            }
        }
        if !missing.is_empty() {
            return Err(ApiError::forbidden(
                "pods",
                &name,
                &format!("failed quota: {qname}: must specify {}", missing.join(",")),
            ));
        }
        if !requested.is_empty() {
            return Err(ApiError::forbidden(
                "pods",
                &name,
                &format!(
                    "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    requested.join(","),
                    used.join(","),
                    limited.join(",")
                ),
            ));
        }
    }
    Ok(())
}

/// Fill in what the API server sets on create, and the Pending status.
pub(crate) fn initial_status(pod: &mut Value) {
    pod["spec"]["restartPolicy"] = pod["spec"]["restartPolicy"]
        .as_str()
        .map(|s| json!(s))
        .unwrap_or(json!("Always"));
    pod["status"] = json!({"phase": "Pending", "qosClass": "Guaranteed"});
}

/// What becomes of a pod once "scheduled".
enum Outcome {
    Run,
    ImagePull(String),
    CrashLoop,
    Unschedulable(String),
}

fn outcome(shared: &Shared, pod: &Value) -> Outcome {
    let image = pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let cpu = pod_usage(pod, "requests.cpu");
    let mem = pod_usage(pod, "requests.memory");
    let mut short = Vec::new();
    if cpu > shared.opts.node_cpu_millis {
        short.push("1 Insufficient cpu");
    }
    if mem > shared.opts.node_memory_bytes {
        short.push("1 Insufficient memory");
    }
    if !short.is_empty() {
        return Outcome::Unschedulable(format!(
            "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
            short.join(", ")
        ));
    }
    if image.contains("invalid") {
        return Outcome::ImagePull(image);
    }
    if image.contains("crashloop") {
        return Outcome::CrashLoop;
    }
    Outcome::Run
}

fn cond(t: &str, status: &str, now: &str) -> Value {
    json!({"type": t, "status": status, "lastTransitionTime": now, "lastProbeTime": null})
}

/// Drive a new pod to its outcome after the configured startup delay.
pub(crate) fn start(shared: Arc<Shared>, ns: String, name: String, uid: String) {
    tokio::spawn(async move {
        if !shared.opts.pod_startup.is_zero() {
            tokio::time::sleep(shared.opts.pod_startup).await;
        }
        let dir = shared.pod_dir(&ns, &name);
        let pod = {
            let store = shared.store.lock();
            match store.get("pods", &ns, &name) {
                Some(e) if e.obj["metadata"]["uid"] == uid.as_str() => e.obj.clone(),
                _ => return,
            }
        };
        let out = outcome(&shared, &pod);
        if matches!(out, Outcome::Run)
            && let Err(e) = tokio::fs::create_dir_all(&dir).await
        {
            tracing::warn!("fake apiserver: cannot create {}: {e}", dir.display());
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let image = pod["spec"]["containers"][0]["image"].clone();
        let cname = pod["spec"]["containers"][0]["name"].clone();
        let ip = shared.next_ip.fetch_add(1, Ordering::Relaxed);
        let pod_ip = format!("10.244.{}.{}", (ip >> 8) & 0xff, ip & 0xff);
        let status = match out {
            Outcome::Run => json!({
                "phase": "Running",
                "conditions": [cond("PodScheduled", "True", &now), cond("Initialized", "True", &now), cond("ContainersReady", "True", &now), cond("Ready", "True", &now)],
                "hostIP": "10.0.0.1", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": now, "qosClass": "Guaranteed",
                "containerStatuses": [{"name": cname, "image": image, "imageID": "", "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now}}}],
            }),
            Outcome::ImagePull(img) => json!({
                "phase": "Pending",
                "conditions": [cond("PodScheduled", "True", &now), cond("Initialized", "True", &now), cond("Ready", "False", &now)],
                "hostIP": "10.0.0.1", "podIP": pod_ip, "startTime": now, "qosClass": "Guaranteed",
                "containerStatuses": [{"name": cname, "image": image, "imageID": "", "ready": false, "started": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": format!(
                        "failed to pull and unpack image \"docker.io/library/{img}\": failed to resolve reference \"docker.io/library/{img}\": pull access denied, repository does not exist or may require authorization")}}}],
            }),
            Outcome::CrashLoop => json!({
                "phase": "Running",
                "conditions": [cond("PodScheduled", "True", &now), cond("Initialized", "True", &now), cond("Ready", "False", &now)],
                "hostIP": "10.0.0.1", "podIP": pod_ip, "startTime": now, "qosClass": "Guaranteed",
                "containerStatuses": [{"name": cname, "image": image, "imageID": "", "ready": false, "started": false, "restartCount": 3,
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}},
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off 40s restarting failed container={} pod={name}", cname.as_str().unwrap_or(""))}}}],
            }),
            Outcome::Unschedulable(msg) => json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastTransitionTime": now, "lastProbeTime": null}],
                "qosClass": "Guaranteed",
            }),
        };
        shared.update_pod(&ns, &name, &uid, |p| {
            p["status"] = status;
            if p["status"]["phase"] == "Running" || p["status"]["hostIP"].is_string() {
                p["spec"]["nodeName"] = json!("fake-node-1");
            }
        });
    });
}

/// `status.hard` and `status.used` of a ResourceQuota, computed from the pods of its namespace.
pub(crate) fn fill_quota_status(store: &Store, quota: &mut Value) {
    let ns = quota["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let Some(hard) = quota["spec"]["hard"].as_object().cloned() else {
        return;
    };
    let mut used = serde_json::Map::new();
    for res in hard.keys() {
        let n = store.usage(&ns, res);
        used.insert(res.clone(), json!(fmt_amount(res, n)));
    }
    quota["status"] = json!({"hard": hard, "used": used});
}
