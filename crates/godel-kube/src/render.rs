//! `godel kube render`: the manifests godel applies for a team and the pod
//! it creates per agent, as multi-document YAML, so an operator can review
//! them or apply them with kubectl ahead of time.

use godel_core::{Error, Result, SpawnSpec, validate_name};
use serde::Serialize;

use crate::config::{KubeConfig, TeamQuota};
use crate::manifests;
use crate::names::POD_TEMPLATE_AGENT_ID;

fn yaml<T: Serialize>(obj: &T) -> Result<String> {
    serde_yaml::to_string(obj).map_err(|e| Error::internal(format!("render YAML: {e}")))
}

/// Namespace, ResourceQuota, LimitRange, the two NetworkPolicies (default
/// deny, egress for `nat` agents), ServiceAccount,
/// Role and RoleBinding of `team`, in apply order, separated by `---`.
pub fn render_team_manifests(team: &str, cfg: &KubeConfig, quota: &TeamQuota) -> Result<String> {
    validate_name("team", team)?;
    let docs = [
        yaml(&manifests::namespace(team, cfg))?,
        yaml(&manifests::resource_quota(team, cfg, quota))?,
        yaml(&manifests::limit_range(team, cfg, quota))?,
        yaml(&manifests::network_policy(team, cfg))?,
        yaml(&manifests::egress_policy(team, cfg)?)?,
        yaml(&manifests::service_account(team, cfg))?,
        yaml(&manifests::role(team, cfg))?,
        yaml(&manifests::role_binding(team, cfg))?,
    ];
    Ok(docs.join("---\n"))
}

/// The agent Pod godel would create for `spec` in `team`, with the
/// placeholder agent id [`POD_TEMPLATE_AGENT_ID`].
pub fn render_pod_template(team: &str, cfg: &KubeConfig, spec: &SpawnSpec) -> Result<String> {
    validate_name("team", team)?;
    spec.validate()?;
    yaml(&manifests::agent_pod(
        team,
        POD_TEMPLATE_AGENT_ID,
        cfg,
        spec,
    )?)
}
