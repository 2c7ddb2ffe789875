//! Built templates in the control plane: per-team visibility, spawns pinned
//! to the worktree runtime, another runtime asked for one refused naming
//! both, unknown names refused with NOT_FOUND (except for the `e2b` runtime,
//! which forwards names to its E2B), and a build with no builder refused.

use std::sync::Arc;

use godel_control::{BuildTemplate, Caller, Control, Settings};
use godel_core::{ErrorCode, SpawnSpec, TemplateInfo};
use godel_testkit::FakeRuntime;

fn template(team: &str, name: &str) -> TemplateInfo {
    TemplateInfo {
        name: name.into(),
        team: team.into(),
        runtime: "worktree".into(),
        key: "k".into(),
        layers: vec!["l".into()],
        env: Default::default(),
        workdir: None,
        start_cmd: None,
        created_at: chrono::Utc::now(),
        size_bytes: 0,
    }
}

fn spec(runtime: &str, template: &str) -> SpawnSpec {
    SpawnSpec {
        runtime: Some(runtime.into()),
        template: Some(template.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn templates_are_per_team_and_pin_their_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let c: Arc<Control> = Control::with_store(
        dir.path(),
        godel_control::Store::open_scratch().unwrap(),
        Settings::default(),
    )
    .unwrap();
    for n in ["worktree", "microvm", "e2b"] {
        c.register(Arc::new(FakeRuntime::new(n)));
    }
    c.store().put_template(&template("a", "tpl")).unwrap();
    let a = Caller::Team("a".into());
    let b = Caller::Team("b".into());

    // Visibility: team b neither lists nor gets nor deletes a's template.
    assert_eq!(c.list_templates(&a).unwrap().len(), 1);
    assert!(c.list_templates(&b).unwrap().is_empty());
    assert_eq!(
        c.get_template(&b, None, "tpl").unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.delete_template(&b, None, "tpl").unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.get_template(&b, Some("a"), "tpl").unwrap_err().code,
        ErrorCode::PermissionDenied
    );

    // A built template goes to the worktree runtime; microvm is refused.
    let info = c.spawn(&a, spec("worktree", "tpl")).await.unwrap();
    assert_eq!(info.runtime, "worktree");
    let mut s = spec("worktree", "tpl");
    s.runtime = None;
    assert_eq!(c.spawn(&a, s).await.unwrap().runtime, "worktree");
    let err = c.spawn(&a, spec("microvm", "tpl")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(
        err.message.contains("tpl") && err.message.contains("microvm"),
        "{err}"
    );

    // Unknown names: NOT_FOUND naming the template, on any local runtime;
    // team b does not see a's template; built-in names and e2b pass.
    for (caller, rt, name) in [(&a, "microvm", "nope"), (&b, "worktree", "tpl")] {
        let err = c.spawn(caller, spec(rt, name)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound, "{err}");
        assert!(err.message.contains(name), "{err}");
    }
    c.spawn(&a, spec("microvm", "base")).await.unwrap();
    c.spawn(&a, spec("e2b", "remote-template")).await.unwrap();

    // No builder registered: the build is refused, nothing registered.
    let err = c
        .build_template(
            &a,
            BuildTemplate {
                name: "x".into(),
                dockerfile: "FROM host\n".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert_eq!(c.list_templates(&a).unwrap().len(), 1);
    assert!(c.delete_template(&a, None, "tpl").is_ok());
}
