//! Kubernetes names and labels godel uses: team namespaces, agent pod
//! names, the label keys, and sanitising into DNS-1123 labels (team names
//! may hold `_` and `.`, which namespace names may not).

use sha2::{Digest, Sha256};

use crate::config::KubeConfig;

/// `app` label value of every agent pod (the watcher selects on it).
pub const APP_LABEL_VALUE: &str = "godel-agent";
/// Label holding the owning team.
pub const TEAM_LABEL: &str = "godel.io/team";
/// Label holding the godel runtime id.
pub const AGENT_LABEL: &str = "godel.io/agent";
/// Field manager of every server-side apply godel makes.
pub const FIELD_MANAGER: &str = "godel";
/// The agent container's name.
pub const CONTAINER: &str = "agent";
/// Label selector of all agent pods.
pub const AGENT_SELECTOR: &str = "app=godel-agent";
/// The agent id used by `render_pod_template`.
pub const POD_TEMPLATE_AGENT_ID: &str = "rt-0000000000000000";

/// Lowercase `[a-z0-9-]`, trimmed of `-`, at most `max` bytes. When the
/// input had to change, a short hash keeps distinct inputs distinct.
pub fn dns_label(raw: &str, max: usize) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let changed = s != raw || s.len() > max;
    if changed {
        let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..4]);
        s.truncate(max.saturating_sub(hash.len() + 1));
        s = format!("{}-{hash}", s.trim_end_matches('-'));
    }
    s.trim_matches('-').to_string()
}

/// A label value: `[A-Za-z0-9_.-]`, at most 63, alphanumeric at both ends.
pub fn label_value(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The namespace of a team: `<prefix><team>`.
pub fn team_namespace(team: &str, cfg: &KubeConfig) -> String {
    dns_label(&format!("{}{team}", cfg.namespace_prefix), 63)
}

/// The pod of an agent: `godel-agent-<id>`.
pub fn pod_name(id: &str) -> String {
    dns_label(&format!("godel-agent-{id}"), 63)
}

/// Name of the team's ResourceQuota (SPEC-002 §8.1).
pub fn quota_name(team: &str) -> String {
    dns_label(&format!("godel-quota-{team}"), 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        let cfg = KubeConfig::default();
        assert_eq!(team_namespace("alpha", &cfg), "godel-team-alpha");
        assert_eq!(
            pod_name("rt-0123456789abcdef"),
            "godel-agent-rt-0123456789abcdef"
        );
        let a = team_namespace("a_b", &cfg);
        let b = team_namespace("a.b", &cfg);
        assert_ne!(a, b);
        assert!(a.starts_with("godel-team-a-b-"));
        let long = team_namespace(&"x".repeat(80), &cfg);
        assert!(long.len() <= 63);
        assert_eq!(label_value("-a b_"), "a-b");
    }
}
