//! Which runtimes this binary registers and how each is built from the
//! daemon's options. A runtime that cannot be built is noted with the reason
//! so `godel doctor` can say why it is unavailable.

use std::path::Path;

use godel_control::Control;
use godel_core::{Error, EventSink, Isolation, Result};

use crate::cli::ServeArgs;

/// Options that shape the runtimes.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Default process isolation of local runtimes.
    pub isolation: Isolation,
    /// The configuration file (its `[kube]`, `[e2b]`, `[microvm]` tables).
    pub config: godel_policy::Config,
}

impl RuntimeOptions {
    pub fn from_args(args: &ServeArgs) -> Result<Self> {
        let isolation = match args.isolation.as_deref() {
            None | Some("sandbox") => Isolation::Sandbox,
            Some("none") => {
                tracing::warn!(
                    "ISOLATION IS OFF: agents run as the daemon's user with full access to this host; use only for trusted local work"
                );
                Isolation::None
            }
            Some(other) => {
                return Err(Error::invalid(format!(
                    "--isolation {other:?}: use sandbox or none"
                )));
            }
        };
        Ok(RuntimeOptions {
            isolation,
            config: godel_policy::Config::default(),
        })
    }
}

/// Work that must happen before anything else in `main` (e.g. a sandbox init re-exec).
pub fn early_init() {
    godel_sandbox::maybe_run_init();
}

/// Build and register every runtime this machine can offer.
pub async fn register_all(
    control: &Control,
    home: &Path,
    opts: &RuntimeOptions,
    events: EventSink,
) {
    register_worktree(control, home, events.clone());
    register_microvm(control, home, opts, events.clone());
    register_kube(control, opts, events.clone()).await;
    register_e2b(control, opts, events);
}

/// A string field of an opaque config table.
fn table_str(t: Option<&toml::Table>, key: &str) -> Option<String> {
    t.and_then(|t| t.get(key))
        .and_then(|v| v.as_str())
        .map(String::from)
}

fn register_microvm(control: &Control, home: &Path, opts: &RuntimeOptions, events: EventSink) {
    let t = opts.config.microvm.as_ref();
    let mut cfg = godel_microvm::MicrovmConfig::new(home).with_events(events);
    if let Some(image) = table_str(t, "image") {
        cfg.image = image;
    }
    if let Some(n) = t
        .and_then(|t| t.get("warm_pool"))
        .and_then(|v| v.as_integer())
    {
        cfg.warm_pool = n.max(0) as usize;
    }
    match godel_microvm::MicrovmProvider::new(cfg) {
        Ok(p) => control.register(std::sync::Arc::new(p)),
        Err(e) => control.note_unregistered("microvm", e.message),
    }
}

async fn register_kube(control: &Control, opts: &RuntimeOptions, events: EventSink) {
    let cfg: godel_kube::KubeConfig = match &opts.config.kube {
        Some(t) => match t.clone().try_into() {
            Ok(c) => c,
            Err(e) => {
                return control.note_unregistered("kata", format!("[kube] in the config: {e}"));
            }
        },
        None => {
            let has_kubeconfig = std::env::var_os("KUBECONFIG").is_some()
                || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                || std::env::var_os("HOME")
                    .is_some_and(|h| Path::new(&h).join(".kube/config").exists());
            if !has_kubeconfig {
                return control.note_unregistered(
                    "kata",
                    "no Kubernetes cluster configured: set KUBECONFIG or [kube] kubeconfig in godel.toml (in-cluster config is used inside a pod)",
                );
            }
            godel_kube::KubeConfig::default()
        }
    };
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        godel_kube::KubeProvider::new(cfg, events),
    )
    .await
    {
        Ok(Ok(p)) => {
            // Each team's namespace quota follows its godel quota.
            for (name, t) in &opts.config.teams {
                p.set_team_quota(name, kube_quota(p.config().default_quota, &t.quota));
            }
            control.register(std::sync::Arc::new(p))
        }
        Ok(Err(e)) => control.note_unregistered("kata", e.message),
        Err(_) => control.note_unregistered("kata", "building the Kubernetes client timed out"),
    }
}

/// A team's namespace quota: its godel quota over the cluster default.
pub fn kube_quota(
    mut q: godel_kube::TeamQuota,
    quota: &godel_policy::config::QuotaConfig,
) -> godel_kube::TeamQuota {
    if let Some(c) = quota.cpu {
        q.cpu = c;
    }
    if let Some(m) = quota.memory {
        q.memory = m;
    }
    if let Some(n) = quota.max_agents {
        q.pods = n;
    }
    q
}

fn register_e2b(control: &Control, opts: &RuntimeOptions, events: EventSink) {
    let t = opts.config.e2b.as_ref();
    let cfg = godel_e2b::E2bConfig {
        api_key: table_str(t, "api_key"),
        api_url: table_str(t, "api_url"),
        sandbox_url: table_str(t, "sandbox_url"),
        domain: table_str(t, "domain"),
        ..Default::default()
    };
    if cfg.api_key.is_none()
        && std::env::var("E2B_API_KEY")
            .map(|k| k.is_empty())
            .unwrap_or(true)
    {
        return control.note_unregistered(
            "e2b",
            "no E2B API key: set E2B_API_KEY or [e2b] api_key in godel.toml (api_url may point at another godel)",
        );
    }
    match godel_e2b::E2bProvider::new(cfg, events) {
        Ok(p) => control.register(std::sync::Arc::new(p)),
        Err(e) => control.note_unregistered("e2b", e.message),
    }
}

fn register_worktree(control: &Control, home: &Path, events: EventSink) {
    // The small `godel-sandbox-init` next to godel (or on PATH) when there is
    // one; else godel re-executes itself (see `early_init`).
    let sandbox = godel_sandbox::NamespaceIsolator::new(godel_sandbox::NamespaceOptions {
        init: None,
        events: events.clone(),
        ..Default::default()
    });
    let cfg = godel_worktree::WorktreeConfig::new(home)
        .with_events(events)
        .with_sandbox(std::sync::Arc::new(sandbox))
        .with_templates(control.template_resolver());
    match godel_worktree::WorktreeProvider::new(cfg) {
        Ok(p) => {
            // The worktree runtime also builds templates (Dockerfiles).
            let p = std::sync::Arc::new(p);
            control.set_template_builder(p.clone());
            control.register(p)
        }
        Err(e) => control.note_unregistered("worktree", e.message),
    }
}
