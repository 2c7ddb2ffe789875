//! Configuration of the Kubernetes runtime (`[kube]` in the daemon's TOML)
//! and the per-team quota input. Durations are written as `"120s"`,
//! `"2m"`, `"500ms"` or a plain number of seconds.

use std::path::PathBuf;
use std::time::Duration;

use godel_core::quantity::{Bytes, Cpu};
use serde::{Deserialize, Serialize};

/// How godel reaches the cluster and what it creates there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeConfig {
    /// Path of a kubeconfig file; `KUBECONFIG` / `~/.kube/config` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Context inside the kubeconfig; its current context when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Use the pod's service account (godel running inside the cluster).
    pub in_cluster: bool,
    /// `runtimeClassName` of agent pods (kata-deploy names: `kata-qemu`, `kata-fc`, ...).
    pub runtime_class: String,
    /// Image of agent pods when the spawn names none; needs `sh`, `tar`,
    /// GNU `find`, `timeout` and `env -C` (coreutils/findutils).
    pub image: String,
    /// Team namespaces are `<prefix><team>`.
    pub namespace_prefix: String,
    /// Egress allowed besides DNS: `CIDR` or `CIDR:PORT` (e.g. `0.0.0.0/0:443`).
    pub egress_allow: Vec<String>,
    /// How long a spawn waits for its pod to run.
    #[serde(with = "duration_str")]
    pub spawn_timeout: Duration,
    /// Mount the container's root file system read-only (writable emptyDirs
    /// hold `/home/user` and `/tmp`). Turn off for images that write elsewhere.
    pub read_only_root_fs: bool,
    /// UID/GID agent containers run as (non-root).
    pub run_as_user: i64,
    /// CPU of an agent when the spawn gives none (requests = limits).
    pub default_cpu: Cpu,
    /// Memory of an agent when the spawn gives none (requests = limits).
    pub default_memory: Bytes,
    /// Quota of teams that have none set with `KubeProvider::set_team_quota`.
    pub default_quota: TeamQuota,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig {
            kubeconfig: None,
            context: None,
            in_cluster: false,
            runtime_class: "kata".into(),
            image: "debian:bookworm-slim".into(),
            namespace_prefix: "godel-team-".into(),
            egress_allow: Vec::new(),
            spawn_timeout: Duration::from_secs(120),
            read_only_root_fs: true,
            run_as_user: 1000,
            default_cpu: Cpu(1000),
            default_memory: Bytes(1 << 30),
            default_quota: TeamQuota::default(),
        }
    }
}

/// A team's share of the cluster (SPEC-002 §8.1). Becomes the namespace's
/// `ResourceQuota`: `requests.*` and `limits.*` both get these values
/// because agent pods request what they limit (Kata sizes the VM from limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamQuota {
    pub cpu: Cpu,
    pub memory: Bytes,
    pub pods: u32,
}

impl Default for TeamQuota {
    fn default() -> Self {
        TeamQuota {
            cpu: Cpu(10_000),
            memory: Bytes(20 << 30),
            pods: 100,
        }
    }
}

/// `Duration` as `"120s"`, `"2m"`, `"1h"`, `"500ms"` or a number of seconds.
pub mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() == 0 {
            s.serialize_str(&format!("{}s", d.as_secs()))
        } else {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Duration::from_secs(n)),
            Raw::S(s) => parse(&s).map_err(serde::de::Error::custom),
        }
    }

    /// Parse `"90s"`, `"2m"`, `"1h"`, `"250ms"`, `"30"`.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("malformed duration {s:?}: use e.g. \"90s\", \"2m\", \"500ms\"")
        })?;
        match unit {
            "" | "s" => Ok(Duration::from_secs(n)),
            "ms" => Ok(Duration::from_millis(n)),
            "m" => Ok(Duration::from_secs(n * 60)),
            "h" => Ok(Duration::from_secs(n * 3600)),
            _ => Err(format!("malformed duration {s:?}: unknown unit {unit:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_toml_with_defaults() {
        let cfg: KubeConfig = serde_json::from_value(serde_json::json!({
            "runtime_class": "kata-qemu",
            "spawn_timeout": "90s",
            "egress_allow": ["0.0.0.0/0:443"],
            "default_quota": {"cpu": "4", "memory": "8Gi", "pods": 10}
        }))
        .unwrap();
        assert_eq!(cfg.runtime_class, "kata-qemu");
        assert_eq!(cfg.spawn_timeout, Duration::from_secs(90));
        assert_eq!(cfg.image, "debian:bookworm-slim");
        assert_eq!(cfg.namespace_prefix, "godel-team-");
        assert_eq!(cfg.default_quota.cpu.millis(), 4000);
        let back = serde_json::to_value(&cfg).unwrap();
        assert_eq!(back["spawn_timeout"], "90s");
        assert!(serde_json::from_value::<KubeConfig>(serde_json::json!({"bogus": 1})).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_str::parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            duration_str::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration_str::parse("7").unwrap(), Duration::from_secs(7));
        assert!(duration_str::parse("7 weeks").is_err());
    }
}
