//! Waiting for an agent pod to run: a `kube::runtime::wait` condition that
//! also returns on terminal and stuck states, and the classification of
//! what it saw into godel errors that carry the pod's own reason.

use k8s_openapi::api::core::v1::Pod;

/// Container waiting reasons that will not resolve by themselves.
const STUCK_WAITING: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// How a pod ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodOutcome {
    Running,
    /// Not running and not going to: reason and message as Kubernetes said them.
    Failed {
        reason: String,
        message: String,
    },
    /// Still starting.
    Pending(String),
    /// Deleted while waiting.
    Gone,
}

/// Classify a pod.
pub fn classify(pod: Option<&Pod>) -> PodOutcome {
    let Some(pod) = pod else {
        return PodOutcome::Gone;
    };
    let Some(status) = &pod.status else {
        return PodOutcome::Pending("no status yet".into());
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if STUCK_WAITING.contains(&reason.as_str()) {
                return PodOutcome::Failed {
                    reason,
                    message: w.message.clone().unwrap_or_default(),
                };
            }
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
        {
            return PodOutcome::Failed {
                reason: "Unschedulable".into(),
                message: c.message.clone().unwrap_or_default(),
            };
        }
    }
    match phase {
        "Running" => PodOutcome::Running,
        "Failed" | "Succeeded" => PodOutcome::Failed {
            reason: status.reason.clone().unwrap_or_else(|| phase.to_string()),
            message: status
                .message
                .clone()
                .unwrap_or_else(|| format!("pod {phase}")),
        },
        other => PodOutcome::Pending(format!("phase {other}")),
    }
}

/// The `await_condition` condition: anything but "still starting".
pub fn settled(pod: Option<&Pod>) -> bool {
    !matches!(classify(pod), PodOutcome::Pending(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn classifies_states() {
        let p = pod(serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}));
        assert!(matches!(classify(Some(&p)), PodOutcome::Pending(_)));
        assert!(!settled(Some(&p)));
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "agent", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}}}]}}),
        );
        assert_eq!(
            classify(Some(&p)),
            PodOutcome::Failed {
                reason: "ImagePullBackOff".into(),
                message: "back-off".into()
            }
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}]}}),
        );
        assert!(
            matches!(classify(Some(&p)), PodOutcome::Failed { reason, .. } if reason == "Unschedulable")
        );
        let p = pod(serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Running"}}));
        assert_eq!(classify(Some(&p)), PodOutcome::Running);
        assert_eq!(classify(None), PodOutcome::Gone);
        assert!(settled(None));
    }
}
