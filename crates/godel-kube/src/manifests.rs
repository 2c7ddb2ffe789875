//! The Kubernetes objects godel creates, as typed `k8s-openapi` values:
//! per team a Namespace, ResourceQuota, LimitRange, default-deny
//! NetworkPolicy and godel's ServiceAccount/Role/RoleBinding; per agent a
//! Pod following SPEC-002 §6.1 (hardened: non-root, no token, read-only root).

use std::collections::BTreeMap;
use std::net::IpAddr;

use godel_core::{Error, Result, SpawnSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, LimitRange, LimitRangeItem,
    LimitRangeSpec, Namespace, Pod, PodSecurityContext, PodSpec, ResourceQuota, ResourceQuotaSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::{KubeConfig, TeamQuota};
use crate::names::{
    AGENT_LABEL, APP_LABEL_VALUE, CONTAINER, TEAM_LABEL, label_value, pod_name, quota_name,
    team_namespace,
};

/// Name of godel's own ServiceAccount, Role and RoleBinding in a team namespace.
pub const GODEL_SA: &str = "godel";
/// Name of the default-deny NetworkPolicy.
pub const NETWORK_POLICY: &str = "godel-default-deny";
/// Name of the NetworkPolicy allowing egress to `nat`-mode agents.
pub const EGRESS_POLICY: &str = "godel-egress";
/// Pod label holding the agent's network mode (`none` or `nat`).
pub const NETWORK_LABEL: &str = "godel.io/network";
/// Name of the LimitRange.
pub const LIMIT_RANGE: &str = "godel-limits";
/// Keeps the container alive and exits promptly on SIGTERM.
const KEEPALIVE: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

fn q(s: impl ToString) -> Quantity {
    Quantity(s.to_string())
}

fn team_labels(team: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TEAM_LABEL.to_string(), label_value(team)),
        ("godel.io/managed-by".to_string(), "godel".to_string()),
    ])
}

fn meta(name: &str, ns: Option<&str>, team: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: ns.map(str::to_string),
        labels: Some(team_labels(team)),
        ..Default::default()
    }
}

/// The team's namespace.
pub fn namespace(team: &str, cfg: &KubeConfig) -> Namespace {
    let mut m = meta(&team_namespace(team, cfg), None, team);
    if let Some(l) = m.labels.as_mut() {
        l.insert("godel.io/quota".into(), "enabled".into());
    }
    Namespace {
        metadata: m,
        ..Default::default()
    }
}

/// The team's ResourceQuota: requests and limits of CPU and memory, and pods.
pub fn resource_quota(team: &str, cfg: &KubeConfig, quota: &TeamQuota) -> ResourceQuota {
    let ns = team_namespace(team, cfg);
    let hard = BTreeMap::from([
        ("requests.cpu".to_string(), q(quota.cpu)),
        ("limits.cpu".to_string(), q(quota.cpu)),
        ("requests.memory".to_string(), q(quota.memory)),
        ("limits.memory".to_string(), q(quota.memory)),
        ("pods".to_string(), q(quota.pods)),
    ]);
    ResourceQuota {
        metadata: meta(&quota_name(team), Some(&ns), team),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Defaults for containers without resources (so the quota can count them)
/// and a per-container ceiling of the whole team quota.
pub fn limit_range(team: &str, cfg: &KubeConfig, quota: &TeamQuota) -> LimitRange {
    let ns = team_namespace(team, cfg);
    let default = BTreeMap::from([
        ("cpu".to_string(), q(cfg.default_cpu)),
        ("memory".to_string(), q(cfg.default_memory)),
    ]);
    let max = BTreeMap::from([
        ("cpu".to_string(), q(quota.cpu)),
        ("memory".to_string(), q(quota.memory)),
    ]);
    LimitRange {
        metadata: meta(LIMIT_RANGE, Some(&ns), team),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(default.clone()),
                default_request: Some(default),
                max: Some(max),
                ..Default::default()
            }],
        }),
    }
}

/// One parsed `egress_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressAllow {
    pub cidr: String,
    pub port: Option<u16>,
}

/// Parse `CIDR`, `CIDR:PORT`, `IP` or `IPv4:PORT`.
pub fn parse_egress(entry: &str) -> Result<EgressAllow> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "egress_allow entry {entry:?}: {why} (use CIDR or CIDR:PORT, e.g. \"0.0.0.0/0:443\")"
        ))
    };
    let (addr_part, port) = match entry.find('/') {
        Some(slash) => match entry[slash..].find(':') {
            Some(colon) => (&entry[..slash + colon], Some(&entry[slash + colon + 1..])),
            None => (entry, None),
        },
        None => match entry.rsplit_once(':') {
            Some((a, p)) if !a.contains(':') => (a, Some(p)),
            _ => (entry, None),
        },
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("bad port"))
        })
        .transpose()?;
    let (ip, len) = match addr_part.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (addr_part, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad("bad IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| bad("bad prefix length"))?,
        None => max,
    };
    Ok(EgressAllow {
        cidr: format!("{ip}/{len}"),
        port,
    })
}

/// Cluster-internal ranges (pod and service networks, link-local metadata)
/// carved out of broad allowances so teams cannot reach each other's pods.
const PRIVATE_V4: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
];
const PRIVATE_V6: [&str; 2] = ["fc00::/7", "fe80::/10"];

fn contains(outer: &str, inner: &str) -> bool {
    let parse = |c: &str| -> Option<(IpAddr, u8)> {
        let (ip, len) = c.split_once('/')?;
        Some((ip.parse().ok()?, len.parse().ok()?))
    };
    let (Some((oip, olen)), Some((iip, ilen))) = (parse(outer), parse(inner)) else {
        return false;
    };
    if olen >= ilen {
        return false;
    }
    match (oip, iip) {
        (IpAddr::V4(o), IpAddr::V4(i)) => {
            let mask = if olen == 0 {
                0
            } else {
                u32::MAX << (32 - olen)
            };
            u32::from(o) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(o), IpAddr::V6(i)) => {
            let mask = if olen == 0 {
                0
            } else {
                u128::MAX << (128 - olen)
            };
            u128::from(o) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Default deny, ingress and egress, for every pod of the namespace: agents
/// spawned with network mode `none` (the default) get no network at all.
pub fn network_policy(team: &str, cfg: &KubeConfig) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(NETWORK_POLICY, Some(&team_namespace(team, cfg)), team),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(Vec::new()),
            egress: Some(Vec::new()),
        }),
    }
}

/// Egress for agents spawned with network mode `nat` (label
/// `godel.io/network=nat`): cluster DNS and the configured allowances, with
/// cluster-internal ranges carved out so teams cannot reach each other's pods.
pub fn egress_policy(team: &str, cfg: &KubeConfig) -> Result<NetworkPolicy> {
    let ns = team_namespace(team, cfg);
    let dns_ports = ["UDP", "TCP"]
        .into_iter()
        .map(|proto| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(proto.to_string()),
            ..Default::default()
        })
        .collect();
    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    "kube-system".to_string(),
                )])),
                ..Default::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "k8s-app".to_string(),
                    "kube-dns".to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(dns_ports),
    }];
    for entry in &cfg.egress_allow {
        let allow = parse_egress(entry)?;
        let except: Vec<String> = PRIVATE_V4
            .iter()
            .chain(PRIVATE_V6.iter())
            .filter(|p| contains(&allow.cidr, p))
            .map(|p| p.to_string())
            .collect();
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: allow.cidr.clone(),
                    except: (!except.is_empty()).then_some(except),
                }),
                ..Default::default()
            }]),
            ports: allow.port.map(|p| {
                vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(p))),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]
            }),
        });
    }
    Ok(NetworkPolicy {
        metadata: meta(EGRESS_POLICY, Some(&ns), team),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NETWORK_LABEL.to_string(),
                    "nat".to_string(),
                )])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Egress".into()]),
            ingress: None,
            egress: Some(egress),
        }),
    })
}

/// godel's own identity in the namespace (for a godel running in-cluster).
pub fn service_account(team: &str, cfg: &KubeConfig) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(GODEL_SA, Some(&team_namespace(team, cfg)), team),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        ..Default::default()
    }
}

/// What godel needs in a team namespace. `pods/exec` needs both `get` and
/// `create` (Kubernetes ≥ 1.35 checks `create` for WebSocket upgrades).
/// The `namespaces` rule covers the team's own Namespace object only.
pub fn role(team: &str, cfg: &KubeConfig) -> Role {
    let rw = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    Role {
        metadata: meta(GODEL_SA, Some(&team_namespace(team, cfg)), team),
        rules: Some(vec![
            rule(&[""], &["pods"], &rw),
            rule(&[""], &["pods/exec"], &["get", "create"]),
            rule(&[""], &["pods/log", "pods/status"], &["get"]),
            rule(&[""], &["namespaces"], &["get", "patch"]),
            rule(
                &[""],
                &["resourcequotas", "limitranges", "serviceaccounts"],
                &rw,
            ),
            rule(&["networking.k8s.io"], &["networkpolicies"], &rw),
        ]),
    }
}

/// Binds the Role to godel's ServiceAccount.
pub fn role_binding(team: &str, cfg: &KubeConfig) -> RoleBinding {
    let ns = team_namespace(team, cfg);
    RoleBinding {
        metadata: meta(GODEL_SA, Some(&ns), team),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: GODEL_SA.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: GODEL_SA.into(),
            namespace: Some(ns),
            ..Default::default()
        }]),
    }
}

/// The agent pod for runtime `id` of `team` (SPEC-002 §6.1).
pub fn agent_pod(team: &str, id: &str, cfg: &KubeConfig, spec: &SpawnSpec) -> Result<Pod> {
    let cpu = spec.resources.cpu.unwrap_or(cfg.default_cpu);
    let memory = spec.resources.memory.unwrap_or(cfg.default_memory);
    let image = spec.image.clone().unwrap_or_else(|| cfg.image.clone());
    if image.trim().is_empty() {
        return Err(Error::invalid("kata: the image name is empty"));
    }
    let resources = BTreeMap::from([
        ("cpu".to_string(), q(cpu)),
        ("memory".to_string(), q(memory)),
    ]);
    let mut labels = team_labels(team);
    labels.insert("app".into(), APP_LABEL_VALUE.into());
    labels.insert("runtime".into(), "kata".into());
    labels.insert(AGENT_LABEL.into(), label_value(id));
    let net = match spec.network.mode {
        godel_core::NetworkMode::None => "none",
        // Kata has no host networking: `host` gets the team's NAT egress.
        godel_core::NetworkMode::Nat | godel_core::NetworkMode::Host => "nat",
    };
    labels.insert(NETWORK_LABEL.into(), net.into());
    let mut annotations = BTreeMap::from([("godel.io/runtime-id".to_string(), id.to_string())]);
    if !spec.labels.is_empty() {
        let json = serde_json::to_string(&spec.labels)
            .map_err(|e| Error::internal(format!("encode labels: {e}")))?;
        annotations.insert("godel.io/labels".into(), json);
    }
    let mut env = vec![EnvVar {
        name: "HOME".into(),
        value: Some(godel_core::WORKSPACE_MOUNT.into()),
        ..Default::default()
    }];
    env.extend(
        spec.env
            .iter()
            .filter(|(k, _)| k.as_str() != "HOME")
            .map(|(k, v)| EnvVar {
                name: k.clone(),
                value: Some(v.clone()),
                ..Default::default()
            }),
    );
    let uid = cfg.run_as_user;
    let empty = |name: &str, size: Option<Quantity>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: size,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(id)),
            namespace: Some(team_namespace(team, cfg)),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            runtime_class_name: Some(cfg.runtime_class.clone()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(5),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(uid),
                run_as_group: Some(uid),
                fs_group: Some(uid),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(image),
                command: Some(vec!["/bin/sh".into(), "-c".into(), KEEPALIVE.into()]),
                working_dir: Some(godel_core::WORKSPACE_MOUNT.into()),
                env: Some(env),
                resources: Some(ResourceRequirements {
                    requests: Some(resources.clone()),
                    limits: Some(resources),
                    ..Default::default()
                }),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(cfg.read_only_root_fs),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                volume_mounts: Some(vec![
                    mount("context", godel_core::WORKSPACE_MOUNT),
                    mount("tmp", "/tmp"),
                ]),
                ..Default::default()
            }],
            volumes: Some(vec![
                empty("context", spec.resources.disk.map(q)),
                empty("tmp", None),
            ]),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_entries() {
        assert_eq!(
            parse_egress("0.0.0.0/0:443").unwrap(),
            EgressAllow {
                cidr: "0.0.0.0/0".into(),
                port: Some(443)
            }
        );
        assert_eq!(parse_egress("1.2.3.4").unwrap().cidr, "1.2.3.4/32");
        assert_eq!(parse_egress("1.2.3.4:80").unwrap().port, Some(80));
        assert_eq!(parse_egress("::/0").unwrap().cidr, "::/0");
        assert_eq!(parse_egress("2001:db8::/32:443").unwrap().port, Some(443));
        for bad in ["x", "1.2.3.4/33", "1.2.3.4:0", "10.0.0.0/8:http"] {
            assert!(parse_egress(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn broad_egress_excludes_cluster_ranges() {
        let cfg = KubeConfig {
            egress_allow: vec!["0.0.0.0/0:443".into(), "8.8.8.8/32".into()],
            ..Default::default()
        };
        let np = egress_policy("t", &cfg).unwrap();
        let eg = np.spec.unwrap().egress.unwrap();
        assert_eq!(eg.len(), 3);
        let block = eg[1].to.as_ref().unwrap()[0].ip_block.clone().unwrap();
        assert_eq!(block.except.unwrap().len(), 4);
        assert!(
            eg[2].to.as_ref().unwrap()[0]
                .ip_block
                .clone()
                .unwrap()
                .except
                .is_none()
        );
    }
}
