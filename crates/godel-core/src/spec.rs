//! What a caller asks for when spawning: `SpawnSpec`, `ResourceLimits`,
//! network and volume settings. Request bodies reject unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::quantity::{Bytes, Cpu};

/// Resource limits of one runtime. All optional: providers apply defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU cores (`0.5`, `2`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Memory (`512Mi`, `2Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// Disk for the workspace (`10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Bytes>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

/// Network mode of a runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only (the default).
    #[default]
    None,
    /// Egress through NAT, filtered by `allow`.
    Nat,
    /// The host's network (trusted local use only).
    Host,
}

/// Network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default)]
    pub mode: NetworkMode,
    /// Egress entries accepted first, `CIDR` or `CIDR:PORT` (NAT mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Egress entries rejected next, same form (NAT mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// What happens to egress neither list matched: reachable (`true`, as
    /// E2B sandboxes have it) or rejected (`false`, the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internet: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

impl NetworkConfig {
    /// Every entry parses, and rules come with network mode `nat`.
    pub fn validate(&self) -> Result<()> {
        let rules = !self.allow.is_empty() || !self.deny.is_empty() || self.internet;
        if self.mode != NetworkMode::Nat && rules {
            let field = if !self.allow.is_empty() {
                "network.allow"
            } else if !self.deny.is_empty() {
                "network.deny"
            } else {
                "network.internet"
            };
            return Err(Error::invalid(format!("{field} needs network.mode = nat")));
        }
        crate::netrule::parse_net_rules("network.allow", &self.allow)?;
        crate::netrule::parse_net_rules("network.deny", &self.deny)?;
        Ok(())
    }
}

/// A host directory mounted into the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Process isolation for local runtimes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The process sandbox (namespaces, cgroups, seccomp): the default.
    #[default]
    Sandbox,
    /// No isolation: processes run as the daemon's user on the host. Trusted use only.
    None,
}

/// How a worktree workspace is materialised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceMode {
    /// Copy-on-write overlay over a shared checkout (spawn time independent of repo size).
    #[default]
    Cow,
    /// `git worktree add` (what the seed system did).
    GitWorktree,
}

/// What happens when a sandbox's time to live runs out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Terminate it (the default).
    #[default]
    Kill,
    /// Snapshot it and stop it; `resume` brings it back under the same id.
    Pause,
}

impl OnTimeout {
    pub fn is_kill(&self) -> bool {
        *self == OnTimeout::Kill
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Kill => "kill",
            OnTimeout::Pause => "pause",
        }
    }

    pub fn parse(s: &str) -> Result<OnTimeout> {
        match s {
            "kill" => Ok(OnTimeout::Kill),
            "pause" => Ok(OnTimeout::Pause),
            _ => Err(Error::invalid(format!(
                "invalid on_timeout {s:?}: use kill or pause"
            ))),
        }
    }
}

/// What to do with a sandbox that dies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        match s {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            _ => Err(Error::invalid(format!(
                "invalid restart policy {s:?}: use never or on-failure"
            ))),
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// What to spawn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnSpec {
    /// Runtime name (`worktree`, `microvm`, `kata`, `e2b`); the team default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Container image (kata) or guest image name (microvm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Template (e2b) or warm-pool template name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Git repository (path or URL) the workspace comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Git ref to check out (default `HEAD`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub resources: ResourceLimits,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    #[serde(default)]
    pub network: NetworkConfig,
    /// Spawn deadline in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Time to live in seconds: when it runs out the control plane kills or
    /// parks the sandbox (`on_timeout`). `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// What happens when `ttl_secs` runs out.
    #[serde(default, skip_serializing_if = "OnTimeout::is_kill")]
    pub on_timeout: OnTimeout,
    /// Restart the sandbox when it dies (`None`: the `[health]` default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// How many godel E2B servers this spawn already passed through; the
    /// `e2b` runtime sends it on, plus one, so a godel whose `e2b` runtime
    /// points back at itself stops quickly.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u32,
    /// Owning team (filled by the control plane from the caller's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub workspace: WorkspaceMode,
}

/// Maximum length of a label or env key.
const MAX_KEY: usize = 253;

impl SpawnSpec {
    /// Check the parts that do not depend on a provider.
    pub fn validate(&self) -> Result<()> {
        for (k, _) in self.env.iter() {
            if k.is_empty() || k.len() > MAX_KEY || k.contains('=') || k.contains('\0') {
                return Err(Error::invalid(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
        }
        for (k, v) in self.labels.iter() {
            if k.is_empty() || k.len() > MAX_KEY || v.len() > 1024 {
                return Err(Error::invalid(format!("invalid label {k:?}")));
            }
        }
        for v in &self.volumes {
            if !v.destination.starts_with('/') {
                return Err(Error::invalid(format!(
                    "volume {:?}: destination {:?} must be absolute",
                    v.name, v.destination
                )));
            }
        }
        if let Some(t) = &self.team {
            validate_name("team", t)?;
        }
        self.network.validate()?;
        Ok(())
    }
}

/// Names of teams, pools and snapshots: `[a-z0-9][a-z0-9-_.]{0,62}`.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} name {name:?}: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// Parse `K=V` pairs (CLI flags) into a map.
pub fn parse_key_values(pairs: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("{what} {p:?} must look like KEY=VALUE")))?;
        if k.is_empty() {
            return Err(Error::invalid(format!("{what} {p:?} has an empty key")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_rejects_unknown_fields() {
        let err =
            serde_json::from_str::<SpawnSpec>(r#"{"runtime":"worktree","bogus":1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }

    #[test]
    fn spec_parses_resources() {
        let s: SpawnSpec = serde_json::from_str(
            r#"{"runtime":"worktree","repo":"/r","ref":"main","resources":{"cpu":0.5,"memory":"512Mi"}}"#,
        )
        .unwrap();
        assert_eq!(s.resources.cpu.unwrap().millis(), 500);
        assert_eq!(s.resources.memory.unwrap().get(), 512 << 20);
        assert_eq!(s.git_ref.as_deref(), Some("main"));
        assert!(serde_json::from_str::<SpawnSpec>(r#"{"resources":{"memory":"lots"}}"#).is_err());
    }

    #[test]
    fn validation() {
        let mut s = SpawnSpec::default();
        s.env.insert("A=B".into(), "x".into());
        assert!(s.validate().is_err());
        let mut s = SpawnSpec::default();
        s.network.allow.push("10.0.0.0/8".into());
        assert!(s.validate().is_err());
        assert!(validate_name("team", "Team").is_err());
        assert!(validate_name("team", "team-a").is_ok());
        assert!(parse_key_values(&["A".into()], "--env").is_err());
        assert_eq!(
            parse_key_values(&["A=b=c".into()], "--env").unwrap()["A"],
            "b=c"
        );
    }
}
