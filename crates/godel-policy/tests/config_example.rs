//! The shipped example configuration loads and means what its comments say.

use std::collections::HashMap;
use std::path::Path;

use godel_core::{ByteQuantity, Cpu};
use godel_policy::RestartPolicy;
use godel_policy::pool::{PoolKey, PoolSource};

fn example() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/godel.toml"))
}

#[test]
fn example_config_loads() {
    let cfg = godel_policy::load(Some(example()), &HashMap::new()).unwrap();
    assert_eq!(cfg.server.listen.as_deref(), Some("127.0.0.1:7070"));
    assert_eq!(
        cfg.defaults.fallback,
        ["e2b", "kata", "microvm", "worktree"]
    );
    let alpha = cfg.team("alpha");
    assert_eq!(alpha.quota.max_agents, Some(10));
    assert_eq!(alpha.quota.memory, Some(ByteQuantity(16 << 30)));
    assert_eq!(alpha.limits.cpu, Some(Cpu(4000)));
    assert_eq!(
        alpha.limits.disk,
        Some(ByteQuantity(10 << 30)),
        "from defaults"
    );
    assert_eq!(alpha.fallback, ["kata", "microvm", "worktree"]);
    assert_eq!(alpha.queue_timeout.as_secs(), 60);
    let beta = cfg.team("beta");
    assert_eq!(beta.runtime, "worktree");
    assert_eq!(beta.fallback.len(), 4);
    assert_eq!(cfg.pools.len(), 2);
    let k = PoolKey::from_config(&cfg.pools[0]).unwrap();
    assert_eq!(
        k.source,
        PoolSource::Repo {
            repo: "/srv/repos/app".into(),
            git_ref: "main".into()
        }
    );
    assert_eq!(cfg.retry.policy().max_attempts, 4);
    assert_eq!(cfg.circuit.policy().open_for.as_secs(), 60);
    assert_eq!(cfg.health.policy().restart, RestartPolicy::OnFailure);
    assert_eq!(
        cfg.kube.as_ref().unwrap()["runtime_class"].as_str(),
        Some("kata-qemu")
    );
    assert!(cfg.e2b.is_some() && cfg.microvm.is_some());
}

#[test]
fn example_config_with_env_overrides() {
    let env: HashMap<String, String> = [
        ("GODEL_RETRY_MAX_ATTEMPTS", "2"),
        ("GODEL_HEALTH_RESTART", "never"),
        (
            "GODEL_CONFIG",
            "/nonexistent/ignored-because-explicit-path-wins",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cfg = godel_policy::load(Some(example()), &env).unwrap();
    assert_eq!(cfg.retry.max_attempts, 2);
    assert_eq!(cfg.health.restart, RestartPolicy::Never);
}
