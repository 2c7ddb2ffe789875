//! Templates from a Dockerfile with the real process sandbox: a build with
//! RUN/COPY/ENV/WORKDIR and a sandbox that sees what it made; a rebuild
//! taken from the cache runs no RUN; a failing RUN names its step and shows
//! its output; unsupported instructions and registry images are refused; a
//! spawn naming an unknown template is refused; a template of another team
//! is not visible.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use godel_core::{
    ErrorCode, Isolation, RuntimeProvider, TemplateBuildRequest, TemplateBuilder, TemplateInfo,
};
use godel_sandbox::{InitProgram, NamespaceIsolator, NamespaceOptions};
use godel_worktree::{WorktreeConfig, WorktreeProvider};
use parking_lot::Mutex;

type Registry = Arc<Mutex<BTreeMap<(String, String), TemplateInfo>>>;

fn provider(e: &Env, reg: &Registry) -> Option<WorktreeProvider> {
    godel_testkit::require!(else None; godel_testkit::Need::Root);
    let init = InitProgram::discover();
    godel_testkit::require!(else None; godel_testkit::Need::Other {
        key: "sandbox-init",
        met: init.is_some(),
        what: "the godel-sandbox-init binary",
        how: "cargo build -p godel-sandbox; a workspace-wide cargo test builds it",
    });
    let iso = NamespaceIsolator::new(NamespaceOptions {
        init,
        run_dir: e.tmp.path().join("run"),
        ..Default::default()
    });
    let r = reg.clone();
    let cfg = WorktreeConfig::new(e.home.join("tp"))
        .with_sandbox(Arc::new(iso))
        .with_templates(Arc::new(move |team: &str, name: &str| {
            r.lock().get(&(team.to_string(), name.to_string())).cloned()
        }));
    Some(WorktreeProvider::new(cfg).unwrap())
}

fn context(files: &[(&str, &str)]) -> bytes::Bytes {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap().into()
}

const DOCKERFILE: &str = "FROM host\n\
ENV GREETING=hello\n\
WORKDIR /opt/app\n\
RUN echo \"$GREETING from run\" > made-by-run && echo ran-step-$((40+2))\n\
COPY greeting.txt /opt/app/\n\
COPY home.txt /home/user/notes/\n\
RUN [\"sh\", \"-c\", \"cat /opt/app/greeting.txt >> /usr/local/share/from-template\"]\n";

fn request(name: &str, team: &str, dockerfile: &str) -> TemplateBuildRequest {
    TemplateBuildRequest {
        name: name.into(),
        team: team.into(),
        dockerfile: dockerfile.into(),
        context_tar: context(&[("greeting.txt", "copied\n"), ("home.txt", "mine\n")]),
        network: false,
        templates: BTreeMap::new(),
    }
}

#[tokio::test]
async fn build_then_spawn_cache_and_refusals() {
    let e = Env::new();
    let reg: Registry = Arc::default();
    let Some(p) = provider(&e, &reg) else { return };

    let built = p.build(request("tpl", "team-a", DOCKERFILE)).await.unwrap();
    assert!(built.steps.iter().all(|s| !s.cached), "{:?}", built.steps);
    assert!(built.log.contains("ran-step-42"), "{}", built.log);
    assert_eq!(built.template.layers.len(), 4);
    assert_eq!(built.template.workdir.as_deref(), Some("/opt/app"));
    reg.lock()
        .insert(("team-a".into(), "tpl".into()), built.template.clone());

    // A sandbox from it sees the RUN's and COPY's files, read-only, and its ENV.
    let mut spec = empty_spec();
    spec.isolation = Isolation::Sandbox;
    spec.team = Some("team-a".into());
    spec.template = Some("tpl".into());
    p.spawn("tpl-sb", &spec).await.unwrap();
    let out = sh(
        &p,
        "tpl-sb",
        "cat /opt/app/made-by-run /opt/app/greeting.txt /usr/local/share/from-template notes/home.txt; echo $GREETING; touch /opt/app/x 2>/dev/null || echo read-only; ls /usr/bin/env",
    )
    .await;
    assert_eq!(
        out.stdout, "hello from run\ncopied\ncopied\nmine\nhello\nread-only\n/usr/bin/env\n",
        "{out:?}"
    );
    p.terminate("tpl-sb").await.unwrap();
    // The host's own directories never changed.
    assert!(!std::path::Path::new("/usr/local/share/from-template").exists());

    // Built again: every step from the cache, no RUN runs, same content.
    let again = p.build(request("tpl", "team-a", DOCKERFILE)).await.unwrap();
    let layered = |s: &&godel_core::TemplateStep| {
        s.instruction.starts_with("RUN") || s.instruction.starts_with("COPY")
    };
    assert_eq!(again.steps.iter().filter(layered).count(), 4);
    assert!(
        again.steps.iter().filter(layered).all(|s| s.cached),
        "{:?}",
        again.steps
    );
    assert!(!again.log.contains("ran-step-42"));
    assert_eq!(again.template.key, built.template.key);

    // FROM a template of the team: its layers below, its ENV kept.
    let mut child = request(
        "child",
        "team-a",
        "FROM tpl\nRUN test -f /opt/app/made-by-run && echo $GREETING > /opt/child\nWORKDIR /home/user\nCMD [\"sh\", \"-c\", \"cat /opt/child > started\"]\n",
    );
    child.templates.insert("tpl".into(), built.template.clone());
    let c = p.build(child).await.unwrap();
    assert_eq!(c.template.layers.len(), 5);
    // Its CMD is the start command: it runs when a sandbox starts.
    assert!(c.template.start_cmd.is_some());
    reg.lock()
        .insert(("team-a".into(), "child".into()), c.template.clone());
    let mut cs = spec.clone();
    cs.template = Some("child".into());
    p.spawn("child-sb", &cs).await.unwrap();
    let mut seen = String::new();
    for _ in 0..600 {
        seen = sh(&p, "child-sb", "cat started 2>/dev/null").await.stdout;
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "hello\n");
    p.terminate("child-sb").await.unwrap();

    // A failing RUN: the step, its line, exit code and output.
    let bad = "FROM host\nRUN echo first-step\nRUN echo about-to-fail && exit 3\n";
    let err = p.build(request("bad", "team-a", bad)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    for want in ["step 3/3", "line 3", "exit code 3", "about-to-fail"] {
        assert!(err.message.contains(want), "{want}: {}", err.message);
    }

    // Refused before anything runs.
    for (df, want) in [
        (
            "FROM host\nHEALTHCHECK CMD true\n",
            "instruction HEALTHCHECK",
        ),
        ("FROM ubuntu:22.04\nRUN true\n", "pulls no registry images"),
        ("FROM nope\nRUN true\n", "no template nope"),
    ] {
        let err = p.build(request("r", "team-a", df)).await.unwrap_err();
        assert!(err.message.contains(want), "{df}: {err}");
    }

    // Unknown template on spawn; another team's template is not visible.
    let mut spec2 = spec.clone();
    spec2.template = Some("no-such-template".into());
    let err = p.spawn("tpl-sb2", &spec2).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(err.message.contains("no-such-template"), "{err}");
    spec2.template = Some("tpl".into());
    spec2.team = Some("team-b".into());
    let err = p.spawn("tpl-sb3", &spec2).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
}
