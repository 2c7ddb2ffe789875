//! Health: a kube-runtime watcher over all `app=godel-agent` pods turns
//! phase changes, container restarts and deaths into `godel_core::Event`s
//! (`pod_phase`, `container_restarted`, `died`) for the control plane.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use godel_core::Event;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WEvent};
use serde_json::json;

use crate::names::{AGENT_LABEL, AGENT_SELECTOR, TEAM_LABEL};
use crate::provider::Inner;

/// What was last seen of one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    phase: String,
    restarts: HashMap<String, i32>,
}

fn seen(pod: &Pod) -> Seen {
    let status = pod.status.as_ref();
    Seen {
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        restarts: status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| (c.name.clone(), c.restart_count))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn base(kind: godel_core::EventKind, pod: &Pod) -> Event {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let runtime = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("godel.io/runtime-id").cloned())
        .or_else(|| labels.get(AGENT_LABEL).cloned());
    let mut ev = Event::new(kind);
    if let Some(r) = runtime {
        ev = ev.runtime(r);
    }
    if let Some(t) = labels.get(TEAM_LABEL) {
        ev = ev.team(t.clone());
    }
    ev
}

/// Events for the change from `before` to the pod's current state.
fn diff(before: Option<&Seen>, pod: &Pod, initial: bool) -> Vec<Event> {
    let now = seen(pod);
    let mut out = Vec::new();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if initial && before.is_none() {
        return out;
    }
    if before.map(|b| &b.phase) != Some(&now.phase) {
        out.push(base(godel_core::EventKind::PodPhase, pod).data(json!({
            "namespace": ns, "pod": name, "phase": now.phase,
            "previous": before.map(|b| b.phase.clone()),
        })));
        if matches!(now.phase.as_str(), "Failed" | "Succeeded") {
            let st = pod.status.as_ref();
            out.push(base(godel_core::EventKind::Died, pod).data(json!({
                "namespace": ns, "pod": name, "phase": now.phase,
                "reason": st.and_then(|s| s.reason.clone()),
                "message": st.and_then(|s| s.message.clone()),
            })));
        }
    }
    for cs in pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        let prev = before
            .and_then(|b| b.restarts.get(&cs.name).copied())
            .unwrap_or(0);
        if cs.restart_count > prev && before.is_some() {
            let term = cs.last_state.as_ref().and_then(|l| l.terminated.as_ref());
            out.push(
                base(godel_core::EventKind::ContainerRestarted, pod).data(json!({
                    "namespace": ns, "pod": name, "container": cs.name,
                    "restart_count": cs.restart_count,
                    "reason": term.and_then(|t| t.reason.clone()),
                    "exit_code": term.map(|t| t.exit_code),
                })),
            );
        }
    }
    out
}

/// Watch agent pods until the provider is dropped.
pub(crate) async fn run(inner: Arc<Inner>) {
    let Some(client) = inner.client.clone() else {
        return;
    };
    let api: Api<Pod> = Api::all(client);
    let stream =
        watcher::watcher(api, watcher::Config::default().labels(AGENT_SELECTOR)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut state: HashMap<String, Seen> = HashMap::new();
    let mut initial = false;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!("kata: pod watcher: {e}");
                continue;
            }
        };
        match ev {
            WEvent::Init => initial = true,
            WEvent::InitDone => initial = false,
            WEvent::InitApply(pod) | WEvent::Apply(pod) => {
                let k = key(&pod);
                for e in diff(state.get(&k), &pod, initial) {
                    (inner.events)(e);
                }
                state.insert(k, seen(&pod));
            }
            WEvent::Delete(pod) => {
                let k = key(&pod);
                state.remove(&k);
                let ours = inner.terminating.lock().remove(&k);
                if !ours {
                    (inner.events)(base(godel_core::EventKind::Died, &pod).data(json!({
                        "namespace": pod.metadata.namespace, "pod": pod.metadata.name,
                        "reason": "PodDeleted", "message": "the pod was deleted outside godel",
                    })));
                }
            }
        }
    }
}
