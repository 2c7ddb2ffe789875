//! `render_team_manifests` and `render_pod_template` against golden files
//! (`GODEL_UPDATE_GOLDEN=1` rewrites them), and every rendered document
//! deserialized into its `k8s-openapi` type and round-tripped.

use std::path::PathBuf;

use godel_core::SpawnSpec;
use godel_kube::{KubeConfig, TeamQuota, render_pod_template, render_team_manifests};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("GODEL_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with GODEL_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        want,
        "{} is stale: run with GODEL_UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

fn round_trip<T: Serialize + DeserializeOwned>(doc: &str) -> T {
    let typed: T = serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    let back = serde_yaml::to_string(&typed).unwrap();
    assert_eq!(back, doc, "document survives a k8s-openapi round trip");
    typed
}

fn cfg() -> KubeConfig {
    KubeConfig {
        egress_allow: vec!["0.0.0.0/0:443".into(), "140.82.112.0/20".into()],
        ..Default::default()
    }
}

#[test]
fn team_manifests_match_golden_and_parse() {
    let quota = TeamQuota::default();
    let yaml = render_team_manifests("alpha", &cfg(), &quota).unwrap();
    golden("team-alpha.yaml", &yaml);
    let docs: Vec<&str> = yaml.split("---\n").collect();
    assert_eq!(docs.len(), 8);
    let ns: Namespace = round_trip(docs[0]);
    assert_eq!(ns.metadata.name.as_deref(), Some("godel-team-alpha"));
    let rq: ResourceQuota = round_trip(docs[1]);
    let hard = rq.spec.unwrap().hard.unwrap();
    assert_eq!(hard["requests.cpu"].0, "10");
    assert_eq!(hard["limits.memory"].0, "20Gi");
    assert_eq!(hard["pods"].0, "100");
    let _: LimitRange = round_trip(docs[2]);
    let deny: NetworkPolicy = round_trip(docs[3]);
    let spec = deny.spec.unwrap();
    assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
    assert_eq!(
        spec.pod_selector.unwrap(),
        Default::default(),
        "selects every pod"
    );
    assert!(
        spec.ingress.unwrap().is_empty() && spec.egress.unwrap().is_empty(),
        "default deny"
    );
    let egress: NetworkPolicy = round_trip(docs[4]);
    let spec = egress.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["godel.io/network"],
        "nat"
    );
    assert_eq!(spec.egress.unwrap().len(), 3, "DNS + two allowances");
    let _: ServiceAccount = round_trip(docs[5]);
    let role: Role = round_trip(docs[6]);
    assert!(role.rules.unwrap().iter().any(|r| r.resources.as_deref()
        == Some(&["pods/exec".to_string()][..])
        && r.verbs == ["get", "create"]));
    let rb: RoleBinding = round_trip(docs[7]);
    assert_eq!(rb.role_ref.name, "godel");
    assert!(render_team_manifests("Bad Team", &cfg(), &quota).is_err());
    let bad = KubeConfig {
        egress_allow: vec!["nonsense".into()],
        ..Default::default()
    };
    assert!(render_team_manifests("alpha", &bad, &quota).is_err());
}

#[test]
fn pod_template_matches_golden_and_parses() {
    let mut spec = SpawnSpec::default();
    spec.resources.cpu = Some(godel_core::Cpu(2000));
    spec.resources.memory = Some(godel_core::ByteQuantity(4 << 30));
    spec.resources.disk = Some(godel_core::ByteQuantity(10 << 30));
    spec.env.insert("FOO".into(), "bar".into());
    let yaml = render_pod_template("alpha", &cfg(), &spec).unwrap();
    golden("pod-template.yaml", &yaml);
    let pod: Pod = round_trip(&yaml);
    let ps = pod.spec.unwrap();
    assert_eq!(ps.runtime_class_name.as_deref(), Some("kata"));
    assert_eq!(ps.automount_service_account_token, Some(false));
    let c = &ps.containers[0];
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0,
        "2"
    );
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
    assert_eq!(
        pod.metadata.labels.unwrap()["godel.io/agent"],
        godel_kube::names::POD_TEMPLATE_AGENT_ID
    );
    let kc = KubeConfig {
        runtime_class: "kata-qemu".into(),
        image: "ubuntu:24.04".into(),
        ..Default::default()
    };
    let other = render_pod_template("alpha", &kc, &SpawnSpec::default()).unwrap();
    assert!(other.contains("runtimeClassName: kata-qemu") && other.contains("image: ubuntu:24.04"));
}
