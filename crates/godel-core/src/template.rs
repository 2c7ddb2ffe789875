//! Templates built from a Dockerfile: what a build asks for and answers,
//! the registered template, and the builder a runtime offers. The worktree
//! runtime builds them (layers under `$GODEL_HOME/templates/`); the control
//! plane registers them per team.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Template names every sandbox runtime knows without a build: E2B's
/// default `base` and godel's built-in `code-interpreter-v1`.
pub const BUILTIN_TEMPLATES: [&str; 2] = ["base", "code-interpreter-v1"];

/// A built template of one team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    pub team: String,
    /// The runtime that starts it (`worktree`).
    pub runtime: String,
    /// Cache key of the last step: identifies the build's content.
    pub key: String,
    /// Layer keys, top first (directories under `$GODEL_HOME/templates/layers`).
    pub layers: Vec<String>,
    /// `ENV` of the Dockerfile: every process of its sandboxes starts with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `WORKDIR` of the Dockerfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `CMD`/`ENTRYPOINT`: started in the background when a sandbox starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    /// Bytes of its layers (shared layers counted in full).
    pub size_bytes: u64,
}

/// One step of a build, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStep {
    /// Line of the Dockerfile.
    pub line: usize,
    /// The instruction as written.
    pub instruction: String,
    /// Taken from the cache (a cached RUN does not run).
    pub cached: bool,
    /// Milliseconds the step took.
    pub ms: u64,
}

/// A build request (the control plane fills `team` and `templates`).
#[derive(Debug, Clone, Default)]
pub struct TemplateBuildRequest {
    pub name: String,
    pub team: String,
    pub dockerfile: String,
    /// The build context as an uncompressed tar.
    pub context_tar: bytes::Bytes,
    /// Give `RUN` steps NAT network access (none by default).
    pub network: bool,
    /// The team's templates, for `FROM <template>`.
    pub templates: BTreeMap<String, TemplateInfo>,
}

/// What a successful build returns (registered by the control plane).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBuild {
    pub template: TemplateInfo,
    pub steps: Vec<TemplateStep>,
    /// Output of the steps that ran.
    pub log: String,
}

/// A runtime that builds templates.
#[async_trait]
pub trait TemplateBuilder: Send + Sync {
    async fn build(&self, req: TemplateBuildRequest) -> Result<TemplateBuild>;
}

/// Finds a team's built template by name (the control plane's registry).
pub type TemplateResolver = Arc<dyn Fn(&str, &str) -> Option<TemplateInfo> + Send + Sync>;
