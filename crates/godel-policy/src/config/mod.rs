//! The daemon's configuration file (`$GODEL_HOME/godel.toml` or `--config FILE`)
//! and its environment overrides, validated once at load.
//!
//! Loading works in four steps:
//! 1. Pick the file: the explicit path (must exist), else `$GODEL_CONFIG`, else
//!    `$GODEL_HOME/godel.toml` (`$HOME/.godel/godel.toml`); a missing default
//!    file means "all defaults".
//! 2. Parse it as a TOML table and apply the environment overrides listed in
//!    [`ENV_OVERRIDES`] on top of that table.
//! 3. Deserialize with `deny_unknown_fields` everywhere; any error names the
//!    key path (`teams.alpha.quota.memory: malformed byte quantity "lots" ...`).
//! 4. [`Config::validate`]: cross-field rules (known runtime names, per-agent
//!    limits within team quotas, pools pointing at real teams ...).
//!
//! Submodules: `env` (the override table), `validate` (the cross-field rules).
//!
//! Every error is a `godel_core::Error` with code `INVALID_ARGUMENT` (or
//! `NOT_FOUND` for an explicit file that does not exist) whose message starts
//! with the key path or the environment variable's name.
//!
//! ## Environment overrides
//! `GODEL_<SECTION>_<KEY>` with the key upper-cased, for the scalar settings of
//! `server`, `defaults`, `defaults.limits`, `retry`, `circuit` and `health`
//! (the full list is [`ENV_OVERRIDES`]). Lists (`GODEL_DEFAULTS_FALLBACK`,
//! `GODEL_HEALTH_PROBE`) are comma-separated. Teams, pools and the opaque
//! runtime tables are file-only. An unknown variable with one of those section
//! prefixes (`GODEL_RETRY_MAX_ATEMPTS`) is an error, so typos do not pass
//! silently; other `GODEL_*` variables (`GODEL_HOME`, `GODEL_TOKEN` ...) are ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use godel_core::{ByteQuantity, Cpu, Error, Isolation, ResourceLimits, Result};
use serde::{Deserialize, Serialize};

use crate::circuit::CircuitPolicy;
use crate::health::{HealthPolicy, RestartPolicy};
use crate::retry::RetryPolicy;

mod billing;
mod env;
mod validate;

pub use billing::{BudgetsConfig, MeteringConfig, price_of, webhook_target};
pub use env::{ENV_OVERRIDES, EnvKind};
pub use validate::known_runtimes;

/// Runtime names the daemon knows.
pub const KNOWN_RUNTIMES: &[&str] = &["worktree", "microvm", "kata", "e2b"];

/// The default fallback chain (DESIGN.md): strongest remote isolation first.
pub const DEFAULT_FALLBACK: &[&str] = &["e2b", "kata", "microvm", "worktree"];

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the state lives and how replicas sharing it behave.
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub defaults: DefaultsConfig,
    /// Teams by name. A caller whose team is not listed gets the defaults and no quota.
    #[serde(default)]
    pub teams: BTreeMap<String, TeamConfig>,
    /// Warm pools (`[[pool]]`).
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub circuit: CircuitConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// USD per vCPU-second and GiB-second per runtime (`[prices.RUNTIME]`);
    /// a runtime without an entry costs what `e2b` costs (E2B's public prices).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, crate::cost::Price>,
    #[serde(default)]
    pub metering: MeteringConfig,
    #[serde(default)]
    pub budgets: BudgetsConfig,
    /// Passed unchanged to the kube runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<toml::Table>,
    /// Passed unchanged to the e2b runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2b: Option<toml::Table>,
    /// Passed unchanged to the microvm runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microvm: Option<toml::Table>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// TCP address of the native API (bearer tokens required). Unset: Unix socket only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// TCP address of the E2B-compatible API. Unset: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2b_listen: Option<String>,
    /// Process isolation of local runtimes (`sandbox` or `none`).
    #[serde(default)]
    pub isolation: Isolation,
}

/// `[database]`: the store, and the replicas that share it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` (shared by replicas; `?schema=NAME` picks a schema)
    /// or a SQLite path. Unset: SQLite at `$GODEL_HOME/godel.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long a replica's lease lasts without renewal (seconds, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<f64>,
    /// The native API address peers forward to (default: from `server.listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The E2B API address peers forward to (default: from `server.e2b_listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_e2b: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            e2b_listen: None,
            isolation: Isolation::Sandbox,
        }
    }
}

/// Per-agent resource limits (`[defaults.limits]`, `[teams.X.limits]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteQuantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteQuantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_exec_timeout_secs: Option<u64>,
}

impl LimitsConfig {
    /// `self` with unset fields taken from `base`.
    pub fn or(&self, base: &LimitsConfig) -> LimitsConfig {
        LimitsConfig {
            cpu: self.cpu.or(base.cpu),
            memory: self.memory.or(base.memory),
            disk: self.disk.or(base.disk),
            pids: self.pids.or(base.pids),
            max_exec_timeout_secs: self.max_exec_timeout_secs.or(base.max_exec_timeout_secs),
        }
    }

    /// Check a spawn request's resources against these maxima and fill unset
    /// fields with them (the maxima double as defaults).
    pub fn apply(&self, req: &ResourceLimits) -> Result<ResourceLimits> {
        fn check<T: PartialOrd + std::fmt::Display + Copy>(
            what: &str,
            asked: Option<T>,
            max: Option<T>,
        ) -> Result<Option<T>> {
            match (asked, max) {
                (Some(a), Some(m)) if a > m => Err(Error::invalid(format!(
                    "resources.{what}: {a} is above the per-agent limit {m}"
                ))),
                (Some(a), _) => Ok(Some(a)),
                (None, m) => Ok(m),
            }
        }
        Ok(ResourceLimits {
            cpu: check("cpu", req.cpu, self.cpu)?,
            memory: check("memory", req.memory, self.memory)?,
            // A disk limit costs a filesystem of its own: only when asked for.
            disk: check("disk", req.disk, self.disk)?.filter(|_| req.disk.is_some()),
            pids: check("pids", req.pids, self.pids)?,
        })
    }
}

/// `[defaults]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    /// Runtime used when a request names none.
    #[serde(default = "default_runtime")]
    pub runtime: String,
    /// Fallback chain when the request names no runtime.
    #[serde(default = "default_fallback")]
    pub fallback: Vec<String>,
    #[serde(default = "default_limits")]
    pub limits: LimitsConfig,
    /// Seconds a spawn over quota waits in the fair queue (0: fail at once).
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_secs: u64,
}

fn default_runtime() -> String {
    "worktree".into()
}
fn default_fallback() -> Vec<String> {
    DEFAULT_FALLBACK.iter().map(|s| s.to_string()).collect()
}
fn default_queue_timeout() -> u64 {
    30
}
fn default_limits() -> LimitsConfig {
    LimitsConfig {
        cpu: Some(Cpu(2000)),
        memory: Some(ByteQuantity(4 << 30)),
        disk: Some(ByteQuantity(10 << 30)),
        pids: None,
        max_exec_timeout_secs: Some(3600),
    }
}

impl Default for DefaultsConfig {
    fn default() -> Self {
        DefaultsConfig {
            runtime: default_runtime(),
            fallback: default_fallback(),
            limits: default_limits(),
            queue_timeout_secs: default_queue_timeout(),
        }
    }
}

/// `[teams.NAME.quota]`: totals over all of a team's live runtimes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteQuantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteQuantity>,
}

/// `[teams.NAME]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// Default runtime of this team (else `defaults.runtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Runtimes the team may use; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_runtimes: Vec<String>,
    /// Fallback chain (else `defaults.fallback`, filtered by `allowed_runtimes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Vec<String>>,
    #[serde(default)]
    pub quota: QuotaConfig,
    /// Per-agent maxima (unset fields come from `defaults.limits`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Seconds a spawn over quota may wait in the fair queue (else `defaults.queue_timeout_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_secs: Option<u64>,
}

/// `[[pool]]`: a warm pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub runtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub size: usize,
    /// Only this team's spawns may claim from the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// `[retry]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "d_base_delay_ms")]
    pub base_delay_ms: u64,
    #[serde(default = "d_max_delay_ms")]
    pub max_delay_ms: u64,
}
fn d_max_attempts() -> u32 {
    4
}
fn d_base_delay_ms() -> u64 {
    1000
}
fn d_max_delay_ms() -> u64 {
    4000
}
impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: d_max_attempts(),
            base_delay_ms: d_base_delay_ms(),
            max_delay_ms: d_max_delay_ms(),
        }
    }
}
impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            base_delay: Duration::from_millis(self.base_delay_ms),
            max_delay: Duration::from_millis(self.max_delay_ms),
        }
    }
}

/// `[circuit]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    #[serde(default = "d_failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "d_open_secs")]
    pub open_secs: u64,
    #[serde(default = "d_half_open_calls")]
    pub half_open_calls: u32,
}
fn d_failure_threshold() -> u32 {
    5
}
fn d_open_secs() -> u64 {
    60
}
fn d_half_open_calls() -> u32 {
    3
}
impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_threshold: d_failure_threshold(),
            open_secs: d_open_secs(),
            half_open_calls: d_half_open_calls(),
        }
    }
}
impl CircuitConfig {
    pub fn policy(&self) -> CircuitPolicy {
        CircuitPolicy {
            failure_threshold: self.failure_threshold,
            open_for: Duration::from_secs(self.open_secs),
            half_open_calls: self.half_open_calls,
        }
    }
}

/// `[health]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "d_interval")]
    pub interval_secs: u64,
    /// Command run inside the runtime as the liveness probe.
    #[serde(default = "d_probe")]
    pub probe: Vec<String>,
    /// Seconds one probe may take before it counts as failed.
    #[serde(default = "d_probe_timeout")]
    pub probe_timeout_secs: u64,
    /// Consecutive failed probes before a live runtime is unhealthy.
    #[serde(default = "d_unhealthy_after")]
    pub unhealthy_after: u32,
    /// Consecutive failed probes before an unresponsive runtime is treated as dead.
    #[serde(default = "d_dead_after")]
    pub dead_after: u32,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default = "d_max_restarts")]
    pub max_restarts: u32,
    /// First restart delay; doubles per restart up to `max_backoff_secs`.
    #[serde(default = "d_backoff")]
    pub backoff_secs: u64,
    #[serde(default = "d_max_backoff")]
    pub max_backoff_secs: u64,
    /// Healthy this long after a restart and the restart count starts over.
    #[serde(default = "d_stable")]
    pub stable_secs: u64,
}
fn d_interval() -> u64 {
    10
}
fn d_probe() -> Vec<String> {
    vec!["true".into()]
}
fn d_probe_timeout() -> u64 {
    5
}
fn d_unhealthy_after() -> u32 {
    2
}
fn d_dead_after() -> u32 {
    6
}
fn d_max_restarts() -> u32 {
    3
}
fn d_backoff() -> u64 {
    1
}
fn d_max_backoff() -> u64 {
    300
}
fn d_stable() -> u64 {
    600
}
impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_secs: d_interval(),
            probe: d_probe(),
            probe_timeout_secs: d_probe_timeout(),
            unhealthy_after: d_unhealthy_after(),
            dead_after: d_dead_after(),
            restart: RestartPolicy::default(),
            max_restarts: d_max_restarts(),
            backoff_secs: d_backoff(),
            max_backoff_secs: d_max_backoff(),
            stable_secs: d_stable(),
        }
    }
}
impl HealthConfig {
    pub fn policy(&self) -> HealthPolicy {
        HealthPolicy {
            interval: Duration::from_secs(self.interval_secs),
            probe_timeout: Duration::from_secs(self.probe_timeout_secs),
            unhealthy_after: self.unhealthy_after,
            dead_after: self.dead_after,
            restart: self.restart,
            max_restarts: self.max_restarts,
            backoff: Duration::from_secs(self.backoff_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs),
            stable_for: Duration::from_secs(self.stable_secs),
        }
    }
}

/// The effective policy of one team, defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamPolicy {
    pub name: String,
    pub runtime: String,
    /// Empty: every runtime.
    pub allowed_runtimes: Vec<String>,
    pub fallback: Vec<String>,
    pub quota: QuotaConfig,
    pub limits: LimitsConfig,
    pub queue_timeout: Duration,
}

impl TeamPolicy {
    /// Whether the team may use `runtime`.
    pub fn allows(&self, runtime: &str) -> bool {
        self.allowed_runtimes.is_empty() || self.allowed_runtimes.iter().any(|r| r == runtime)
    }
}

/// Which file `load` reads: `(path, must_exist)`.
pub fn config_path(explicit: Option<&Path>, env: &HashMap<String, String>) -> (PathBuf, bool) {
    if let Some(p) = explicit {
        return (p.to_path_buf(), true);
    }
    if let Some(p) = env.get("GODEL_CONFIG").filter(|p| !p.is_empty()) {
        return (PathBuf::from(p), true);
    }
    let home = match env.get("GODEL_HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(env.get("HOME").map(String::as_str).unwrap_or(".")).join(".godel"),
    };
    (home.join("godel.toml"), false)
}

/// Load, override from `env` and validate the configuration.
pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config> {
    load_with(path, env, &known_runtimes())
}

/// [`load`] accepting the runtime names in `known` (a daemon that registers
/// extra providers, e.g. several fault-injecting instances in tests).
pub fn load_with(
    path: Option<&Path>,
    env: &HashMap<String, String>,
    known: &[&str],
) -> Result<Config> {
    let (file, must_exist) = config_path(path, env);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => String::new(),
        Err(e) => return Err(Error::io(format!("config file {}", file.display()), &e)),
    };
    from_toml_str_with(&text, env, known).map_err(|e| Error {
        message: format!("{} (in {})", e.message, file.display()),
        ..e
    })
}

/// Parse a configuration from TOML text, apply `env` overrides and validate.
pub fn from_toml_str(text: &str, env: &HashMap<String, String>) -> Result<Config> {
    from_toml_str_with(text, env, &known_runtimes())
}

/// [`from_toml_str`] accepting the runtime names in `known`.
pub fn from_toml_str_with(
    text: &str,
    env: &HashMap<String, String>,
    known: &[&str],
) -> Result<Config> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::invalid(format!("malformed TOML: {e}")))?;
    env::apply_env(&mut table, env)?;
    let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().message().trim().to_string();
        if path == "." || path.is_empty() {
            Error::invalid(msg)
        } else {
            Error::invalid(format!("{path}: {msg}"))
        }
    })?;
    cfg.validate_with(known)?;
    Ok(cfg)
}

impl Config {
    /// The effective policy of `team` (a team missing from the file gets the
    /// defaults and no quota).
    pub fn team(&self, team: &str) -> TeamPolicy {
        let t = self.teams.get(team).cloned().unwrap_or_default();
        let allowed = t.allowed_runtimes.clone();
        let fallback = t.fallback.clone().unwrap_or_else(|| {
            self.defaults
                .fallback
                .iter()
                .filter(|r| allowed.is_empty() || allowed.contains(r))
                .cloned()
                .collect()
        });
        let runtime = t.runtime.clone().unwrap_or_else(|| {
            if allowed.is_empty() || allowed.contains(&self.defaults.runtime) {
                self.defaults.runtime.clone()
            } else {
                allowed[0].clone()
            }
        });
        TeamPolicy {
            name: team.to_string(),
            runtime,
            allowed_runtimes: allowed,
            fallback,
            quota: t.quota.clone(),
            limits: t.limits.or(&self.defaults.limits),
            queue_timeout: Duration::from_secs(
                t.queue_timeout_secs
                    .unwrap_or(self.defaults.queue_timeout_secs),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(text: &str) -> Error {
        from_toml_str(text, &HashMap::new()).unwrap_err()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = from_toml_str("", &HashMap::new()).unwrap();
        assert_eq!(c.defaults.runtime, "worktree");
        assert_eq!(c.defaults.fallback, ["e2b", "kata", "microvm", "worktree"]);
        assert_eq!(c.retry.policy().base_delay, Duration::from_secs(1));
        assert_eq!(c.circuit.failure_threshold, 5);
        assert_eq!(c.health.restart, RestartPolicy::Never);
    }

    #[test]
    fn malformed_quantity_names_the_key() {
        let e = err("[teams.alpha.quota]\nmemory = \"lots\"\n");
        assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument);
        assert!(
            e.message
                .starts_with("teams.alpha.quota.memory: malformed byte quantity \"lots\""),
            "{}",
            e.message
        );
        let e = err("[defaults.limits]\ncpu = \"two\"\n");
        assert!(
            e.message.starts_with("defaults.limits.cpu: malformed CPU"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err("[retry]\nmax_atempts = 3\n");
        assert!(
            e.message
                .starts_with("retry.max_atempts: unknown field `max_atempts`"),
            "{}",
            e.message
        );
        let e = err("[teams.alpha.quota]\nmemroy = \"1Gi\"\n");
        assert!(
            e.message
                .starts_with("teams.alpha.quota.memroy: unknown field `memroy`"),
            "{}",
            e.message
        );
        let e = err("[servr]\n");
        assert!(e.message.contains("unknown field `servr`"), "{}", e.message);
        let e = err("[[pool]]\nruntime = \"worktree\"\nrepo = \"/r\"\nsize = 1\nsise = 2\n");
        assert!(
            e.message.starts_with("pool[0].sise: unknown field `sise`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn runtime_names_are_checked() {
        let e = err("[defaults]\nruntime = \"docker\"\n");
        assert!(
            e.message
                .starts_with("defaults.runtime: unknown runtime \"docker\""),
            "{}",
            e.message
        );
        let e = err("[defaults]\nfallback = [\"e2b\", \"kvm\"]\n");
        assert!(
            e.message.starts_with("defaults.fallback[1]:"),
            "{}",
            e.message
        );
        let e = err("[teams.a]\nallowed_runtimes = [\"worktree\"]\nruntime = \"e2b\"\n");
        assert!(e.message.starts_with("teams.a.runtime:"), "{}", e.message);
        let e = err("[teams.a]\nfallback = [\"kata\", \"kata\"]\n");
        assert!(e.message.contains("appears twice"), "{}", e.message);
    }

    #[test]
    fn pool_templates_are_built_in_names_or_forwarded() {
        let e = err("[[pool]]\nruntime = \"worktree\"\ntemplate = \"app\"\nsize = 1\n");
        assert!(
            e.message
                .starts_with("pool[0].template: \"app\" is not a built-in template"),
            "{}",
            e.message
        );
        for ok in [
            "[[pool]]\nruntime = \"worktree\"\ntemplate = \"base\"\nsize = 1\n",
            "[[pool]]\nruntime = \"e2b\"\ntemplate = \"python\"\nsize = 1\n",
        ] {
            from_toml_str(ok, &HashMap::new()).unwrap();
        }
    }

    #[test]
    fn cross_field_rules() {
        let e = err("[teams.a.quota]\ncpu = \"1\"\n");
        assert!(
            e.message
                .starts_with("teams.a.limits.cpu: per-agent limit 2 is above the team quota 1"),
            "{}",
            e.message
        );
        let e = err("[teams.Bad]\n");
        assert!(
            e.message.starts_with("teams.Bad: invalid team name"),
            "{}",
            e.message
        );
        let e = err("[[pool]]\nruntime = \"worktree\"\nsize = 1\n");
        assert!(
            e.message.starts_with("pool[0]: a pool needs a repo"),
            "{}",
            e.message
        );
        let e =
            err("[[pool]]\nruntime = \"worktree\"\nrepo = \"/r\"\nsize = 1\nteam = \"ghost\"\n");
        assert!(e.message.starts_with("pool[0].team:"), "{}", e.message);
        let e = err("[retry]\nbase_delay_ms = 5000\n");
        assert!(
            e.message.starts_with("retry.base_delay_ms:"),
            "{}",
            e.message
        );
        let e = err("[circuit]\nopen_secs = 0\n");
        assert!(
            e.message
                .starts_with("circuit.open_secs: must be above zero"),
            "{}",
            e.message
        );
        let e = err("[server]\nlisten = \"localhost\"\n");
        assert!(e.message.starts_with("server.listen:"), "{}", e.message);
        let e = err("[health]\nrestart = \"always\"\n");
        assert!(
            e.message
                .starts_with("health.restart: unknown variant `always`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn env_overrides_apply_and_are_checked() {
        let text = "[retry]\nmax_attempts = 2\n";
        let c = from_toml_str(
            text,
            &env(&[
                ("GODEL_RETRY_MAX_ATTEMPTS", "7"),
                ("GODEL_DEFAULTS_FALLBACK", "kata, worktree"),
                ("GODEL_DEFAULTS_LIMITS_MEMORY", "1Gi"),
                ("GODEL_HEALTH_RESTART", "on-failure"),
                ("GODEL_SERVER_LISTEN", "127.0.0.1:9000"),
                ("GODEL_HOME", "/tmp/ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.retry.max_attempts, 7);
        assert_eq!(c.defaults.fallback, ["kata", "worktree"]);
        assert_eq!(c.defaults.limits.memory, Some(ByteQuantity(1 << 30)));
        assert_eq!(c.health.restart, RestartPolicy::OnFailure);
        assert_eq!(c.server.listen.as_deref(), Some("127.0.0.1:9000"));

        let e = from_toml_str("", &env(&[("GODEL_RETRY_MAX_ATEMPTS", "7")])).unwrap_err();
        assert!(
            e.message.starts_with("GODEL_RETRY_MAX_ATEMPTS: unknown"),
            "{}",
            e.message
        );
        let e = from_toml_str("", &env(&[("GODEL_RETRY_MAX_ATTEMPTS", "x")])).unwrap_err();
        assert!(
            e.message
                .starts_with("GODEL_RETRY_MAX_ATTEMPTS (retry.max_attempts)"),
            "{}",
            e.message
        );
        let e = from_toml_str("", &env(&[("GODEL_DEFAULTS_LIMITS_MEMORY", "lots")])).unwrap_err();
        assert!(
            e.message.starts_with("defaults.limits.memory: malformed"),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_env_override_maps_to_a_real_key() {
        for (var, path, kind) in ENV_OVERRIDES {
            let sample = match (kind, *path) {
                (EnvKind::Int, _) => "5",
                (EnvKind::List, _) => "worktree",
                (_, p) if p.ends_with("listen") => "127.0.0.1:1",
                (_, "server.isolation") => "none",
                (_, "defaults.runtime") => "worktree",
                (_, "health.restart") => "never",
                (_, "defaults.limits.cpu") => "1",
                _ => "1Gi",
            };
            match from_toml_str("", &env(&[(var, sample)])) {
                Ok(_) => {}
                Err(e) => assert!(
                    // Cross-field rules may object to the sample; a wrong
                    // key or kind in the table may not.
                    !e.message.contains("unknown field") && !e.message.contains("invalid type"),
                    "{var}: {}",
                    e.message
                ),
            }
        }
    }

    #[test]
    fn team_policy_resolution() {
        let c = from_toml_str(
            r#"
[defaults]
runtime = "e2b"
[teams.alpha]
allowed_runtimes = ["worktree", "microvm"]
[teams.alpha.limits]
memory = "1Gi"
[teams.beta]
runtime = "kata"
fallback = ["kata", "worktree"]
"#,
            &HashMap::new(),
        )
        .unwrap();
        let a = c.team("alpha");
        assert_eq!(a.runtime, "worktree");
        assert_eq!(a.fallback, ["microvm", "worktree"]);
        assert_eq!(a.limits.memory, Some(ByteQuantity(1 << 30)));
        assert_eq!(a.limits.cpu, Some(Cpu(2000)));
        assert!(!a.allows("e2b"));
        let b = c.team("beta");
        assert_eq!((b.runtime.as_str(), b.fallback.len()), ("kata", 2));
        let z = c.team("unknown-team");
        assert_eq!(z.runtime, "e2b");
        assert!(z.allows("kata"));
    }

    #[test]
    fn limits_apply_fills_and_refuses() {
        let l = default_limits();
        let got = l.apply(&ResourceLimits::default()).unwrap();
        assert_eq!(got.cpu, Some(Cpu(2000)));
        let asked = ResourceLimits {
            memory: Some(ByteQuantity(8 << 30)),
            ..Default::default()
        };
        let e = l.apply(&asked).unwrap_err();
        assert!(
            e.message.starts_with("resources.memory: 8Gi is above"),
            "{}",
            e.message
        );
    }

    #[test]
    fn load_picks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_string();
        // Missing default file: defaults.
        let c = load(None, &env(&[("GODEL_HOME", &home)])).unwrap();
        assert_eq!(c, from_toml_str("", &HashMap::new()).unwrap());
        std::fs::write(dir.path().join("godel.toml"), "[retry]\nmax_attempts = 9\n").unwrap();
        let c = load(None, &env(&[("GODEL_HOME", &home)])).unwrap();
        assert_eq!(c.retry.max_attempts, 9);
        // An explicit file must exist.
        let e = load(Some(&dir.path().join("nope.toml")), &HashMap::new()).unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::NotFound);
        std::fs::write(dir.path().join("bad.toml"), "[retry\n").unwrap();
        let e = load(Some(&dir.path().join("bad.toml")), &HashMap::new()).unwrap_err();
        assert!(e.message.starts_with("malformed TOML"), "{}", e.message);
        assert!(e.message.contains("bad.toml"), "{}", e.message);
    }
}
