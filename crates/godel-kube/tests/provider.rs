//! The kata provider against the fake API server, over real HTTP and
//! WebSocket through kube-rs: spawn and team set-up, exec, files, tar,
//! snapshots, fork, quota, failures, terminate, adopt and watcher events.

mod common;

use std::io::Read;

use bytes::Bytes;
use common::*;
use godel_core::{
    ErrorCode, ExecEvent, ExecRequest, RuntimeProvider, SandboxState, SnapshotRequest,
    SnapshotTarget,
};
use godel_fake_kube::FakeOptions;
use godel_kube::{KubeConfig, KubeProvider, TeamQuota};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_sets_up_team_once_and_idempotently() {
    let e = env().await;
    let id = godel_core::new_sandbox_id();
    let mut s = spec("alpha");
    s.resources.cpu = Some(godel_core::Cpu(1500));
    s.resources.memory = Some(godel_core::ByteQuantity(512 << 20));
    s.env.insert("FOO".into(), "bar".into());
    let spawned = e.provider.spawn(&id, &s).await.unwrap();
    let ns = "godel-team-alpha";
    assert_eq!(spawned.handle["namespace"], ns);
    let nsobj = e.fake.object("namespaces", "", ns).expect("namespace");
    assert_eq!(nsobj["metadata"]["labels"]["godel.io/team"], "alpha");
    assert_eq!(nsobj["metadata"]["managedFields"][0]["manager"], "godel");
    for (plural, name) in [
        ("resourcequotas", "godel-quota-alpha"),
        ("limitranges", "godel-limits"),
        ("networkpolicies", "godel-default-deny"),
        ("networkpolicies", "godel-egress"),
        ("serviceaccounts", "godel"),
        ("roles", "godel"),
        ("rolebindings", "godel"),
    ] {
        assert!(
            e.fake.object(plural, ns, name).is_some(),
            "{plural}/{name} applied"
        );
    }
    let role = e.fake.object("roles", ns, "godel").unwrap();
    let exec_rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0] == "pods/exec")
        .unwrap();
    assert_eq!(exec_rule["verbs"], serde_json::json!(["get", "create"]));
    let pod = e
        .fake
        .object("pods", ns, spawned.handle["pod"].as_str().unwrap())
        .unwrap();
    assert_eq!(pod["spec"]["runtimeClassName"], "kata");
    assert_eq!(pod["metadata"]["labels"]["app"], "godel-agent");
    assert_eq!(pod["metadata"]["labels"]["godel.io/agent"], id.as_str());
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "1500m"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "512Mi"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/home/user"
    );
    let quota_rv = e
        .fake
        .object("resourcequotas", ns, "godel-quota-alpha")
        .unwrap()["metadata"]["resourceVersion"]
        .clone();
    // A second agent of the same team: nothing re-applied.
    let id2 = godel_core::new_sandbox_id();
    e.provider.spawn(&id2, &spec("alpha")).await.unwrap();
    // A fresh provider re-applies everything: a no-op for the server.
    let (sink, _) = recorder();
    let other =
        KubeProvider::with_client(e.fake.client().unwrap(), KubeConfig::default(), sink).unwrap();
    other.ensure_team("alpha").await.unwrap();
    let quota = e
        .fake
        .object("resourcequotas", ns, "godel-quota-alpha")
        .unwrap();
    assert_eq!(
        quota["metadata"]["resourceVersion"], quota_rv,
        "re-apply is idempotent"
    );
    assert_eq!(quota["status"]["used"]["pods"], "2", "{quota:#}");
    let st = e.provider.status(&id).await.unwrap();
    assert_eq!(st.state, SandboxState::Running);
    assert_eq!(st.details["namespace"], ns);
    let mut ids = e.provider.list().await.unwrap();
    ids.sort();
    let mut want = vec![id.clone(), id2.clone()];
    want.sort();
    assert_eq!(ids, want);
    let out = sh(&e.provider, &id, "echo $FOO $HOME").await;
    assert!(out.stdout.starts_with("bar /"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_output_exit_codes_and_stdin() {
    let e = env().await;
    let id = godel_core::new_sandbox_id();
    e.provider.spawn(&id, &spec("t")).await.unwrap();
    let p: &dyn RuntimeProvider = &e.provider;
    let out = sh(p, &id, "echo out; echo err >&2; exit 3").await;
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit_code),
        ("out\n", "err\n", 3)
    );
    // Large interleaved output on both streams does not stall.
    let out = sh(
        p,
        &id,
        "i=0; while [ $i -lt 2000 ]; do echo line-$i; echo e-$i >&2; i=$((i+1)); done",
    )
    .await;
    assert_eq!(out.stdout.lines().count(), 2000);
    assert_eq!(out.stderr.lines().count(), 2000);
    // Buffered stdin.
    let mut r = ExecRequest::new(["cat"]);
    r.stdin = Some("hello stdin".into());
    assert_eq!(p.exec_collect(&id, r).await.unwrap().stdout, "hello stdin");
    // Streaming stdin and streaming output.
    let mut r = ExecRequest::new(["sh", "-c", "while read l; do echo got:$l; done; echo done"]);
    r.interactive = true;
    let mut h = p.exec(&id, r).await.unwrap();
    let tx = h.stdin.take().unwrap();
    tx.send(Bytes::from_static(b"one\n")).await.unwrap();
    use futures::StreamExt;
    assert_eq!(
        h.events.next().await.unwrap(),
        ExecEvent::Started { pid: 0 }
    );
    let first = h.events.next().await.unwrap();
    assert_eq!(
        first,
        ExecEvent::Stdout {
            data: Bytes::from_static(b"got:one\n")
        }
    );
    tx.send(Bytes::from_static(b"two\n")).await.unwrap();
    drop(tx);
    let out = h.collect().await.unwrap();
    assert_eq!(out.stdout, "got:two\ndone\n");
    assert_eq!(out.exit_code, 0);
    // cwd and env.
    p.make_dir(&id, "sub/dir").await.unwrap();
    let mut r = ExecRequest::new(["sh", "-c", "pwd; echo $X"]);
    r.cwd = Some("sub/dir".into());
    r.env.insert("X".into(), "y".into());
    let out = p.exec_collect(&id, r).await.unwrap();
    assert!(out.stdout.ends_with("/sub/dir\ny\n"), "{}", out.stdout);
    // Missing command.
    let out = p
        .exec_collect(&id, ExecRequest::new(["no-such-command-xyz"]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 127);
    // Unknown runtime.
    assert_eq!(
        p.exec_collect("rt-nope", ExecRequest::new(["true"]))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_timeout_is_timeout() {
    let e = env().await;
    let id = godel_core::new_sandbox_id();
    e.provider.spawn(&id, &spec("t")).await.unwrap();
    let mut r = ExecRequest::new(["sleep", "30"]);
    r.timeout_ms = Some(300);
    let err = e.provider.exec_collect(&id, r).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);
    // The pod still works afterwards.
    assert_eq!(sh(&e.provider, &id, "echo ok").await.stdout, "ok\n");
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_including_large_files() {
    let e = env().await;
    let id = godel_core::new_sandbox_id();
    e.provider.spawn(&id, &spec("t")).await.unwrap();
    let p: &dyn RuntimeProvider = &e.provider;
    let big = pseudo_random(12 << 20);
    let want = hex::encode(Sha256::digest(&big));
    p.write_file(&id, "data/big.bin", Bytes::from(big))
        .await
        .unwrap();
    let back = p.read_file(&id, "/home/user/data/big.bin").await.unwrap();
    assert_eq!(back.len(), 12 << 20);
    assert_eq!(hex::encode(Sha256::digest(&back)), want);
    // The checksum in the pod agrees.
    let out = sh(p, &id, "sha256sum data/big.bin").await;
    assert!(out.stdout.starts_with(&want));
    p.write_file(&id, "data/small.txt", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    let st = p.stat(&id, "data/small.txt").await.unwrap();
    assert_eq!(
        (st.size, st.kind, st.name.as_str(), st.path.as_str()),
        (2, godel_core::FileKind::File, "small.txt", "data/small.txt")
    );
    let names: Vec<String> = p
        .list_dir(&id, "data")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["big.bin", "small.txt"]);
    p.rename(&id, "data/small.txt", "moved/small.txt")
        .await
        .unwrap();
    assert_eq!(
        &p.read_file(&id, "moved/small.txt").await.unwrap()[..],
        b"hi"
    );
    assert_eq!(
        p.read_file(&id, "data/small.txt").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        p.read_file(&id, "data").await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        p.read_file(&id, "../etc/passwd").await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        p.remove(&id, "data", false).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    p.remove(&id, "data", true).await.unwrap();
    assert_eq!(
        p.stat(&id, "data").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    p.write_file(&id, "empty", Bytes::new()).await.unwrap();
    assert!(p.read_file(&id, "empty").await.unwrap().is_empty());
    // Names with spaces and quotes are arguments, not script text.
    p.write_file(&id, "we'ird $name.txt", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(
        &p.read_file(&id, "we'ird $name.txt").await.unwrap()[..],
        b"x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_upload_and_download() {
    let e = env().await;
    let id = godel_core::new_sandbox_id();
    e.provider.spawn(&id, &spec("t")).await.unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("a.txt", &b"alpha"[..]),
        ("src/main.rs", &b"fn main() {}"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }
    let tarball = b.into_inner().unwrap();
    e.provider
        .upload_tar(&id, "proj", Bytes::from(tarball))
        .await
        .unwrap();
    assert_eq!(
        &e.provider.read_file(&id, "proj/src/main.rs").await.unwrap()[..],
        b"fn main() {}"
    );
    let out = e.provider.download_tar(&id, "proj").await.unwrap();
    let mut ar = tar::Archive::new(&out[..]);
    let mut found = Vec::new();
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut s = String::new();
        if entry.header().entry_type().is_file() {
            entry.read_to_string(&mut s).unwrap();
            found.push((path, s));
        }
    }
    found.sort();
    assert_eq!(
        found,
        [
            ("./a.txt".to_string(), "alpha".to_string()),
            ("./src/main.rs".into(), "fn main() {}".into())
        ]
    );
    let single = e.provider.download_tar(&id, "proj/a.txt").await.unwrap();
    let names: Vec<String> = tar::Archive::new(&single[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["a.txt"]);
    let err = e
        .provider
        .upload_tar(
            &id,
            "x",
            Bytes::from_static(b"not a tar archive at all, clearly"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(
        e.provider.download_tar(&id, "nope").await.unwrap_err().code,
        ErrorCode::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_change_restore_and_fork() {
    let e = env().await;
    let dir = tempfile::tempdir().unwrap();
    let id = godel_core::new_sandbox_id();
    e.provider.spawn(&id, &spec("t")).await.unwrap();
    e.provider
        .write_file(&id, "state.txt", Bytes::from_static(b"old"))
        .await
        .unwrap();
    e.provider
        .write_file(&id, "deep/x/y.txt", Bytes::from_static(b"y"))
        .await
        .unwrap();
    let target = SnapshotTarget {
        snapshot_id: godel_core::new_snapshot_id(),
        dir: dir.path().to_path_buf(),
    };
    let art = e
        .provider
        .snapshot(&id, &SnapshotRequest::default(), &target)
        .await
        .unwrap();
    assert!(dir.path().join(godel_kube::WORKSPACE_TAR).exists());
    assert_eq!(
        art.size_bytes,
        std::fs::metadata(dir.path().join("workspace.tar"))
            .unwrap()
            .len()
    );
    assert_eq!(art.data["sha256"].as_str().unwrap().len(), 64);
    e.provider
        .write_file(&id, "state.txt", Bytes::from_static(b"new"))
        .await
        .unwrap();
    let info = snapshot_info(&id, "t", dir.path(), &art);
    // Fork 3 from the snapshot.
    let mut forks = Vec::new();
    for i in 0..3 {
        let f = godel_core::new_sandbox_id();
        e.provider.restore(&f, &info, &spec("t")).await.unwrap();
        assert_eq!(
            &e.provider.read_file(&f, "state.txt").await.unwrap()[..],
            b"old"
        );
        assert_eq!(
            &e.provider.read_file(&f, "deep/x/y.txt").await.unwrap()[..],
            b"y"
        );
        e.provider
            .write_file(&f, "me.txt", Bytes::from(format!("fork {i}")))
            .await
            .unwrap();
        forks.push(f);
    }
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(
            e.provider.read_file(f, "me.txt").await.unwrap(),
            Bytes::from(format!("fork {i}"))
        );
    }
    assert_eq!(
        &e.provider.read_file(&id, "state.txt").await.unwrap()[..],
        b"new"
    );
    // A damaged archive is refused.
    std::fs::write(dir.path().join("workspace.tar"), b"garbage").unwrap();
    let err = e
        .provider
        .restore(&godel_core::new_sandbox_id(), &info, &spec("t"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_against_fake() {
    let e = env().await;
    let dir = tempfile::tempdir().unwrap();
    scenario(&e.provider, "scenario", dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_is_resource_exhausted() {
    let e = env().await;
    e.provider.set_team_quota(
        "small",
        TeamQuota {
            cpu: godel_core::Cpu(2000),
            memory: godel_core::ByteQuantity(8 << 30),
            pods: 10,
        },
    );
    let mut s = spec("small");
    s.resources.cpu = Some(godel_core::Cpu(1000));
    e.provider
        .spawn(&godel_core::new_sandbox_id(), &s)
        .await
        .unwrap();
    e.provider
        .spawn(&godel_core::new_sandbox_id(), &s)
        .await
        .unwrap();
    let err = e
        .provider
        .spawn(&godel_core::new_sandbox_id(), &s)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceExhausted, "{err}");
    assert!(
        err.message.contains("exceeded quota: godel-quota-small"),
        "{}",
        err.message
    );
    assert!(err.retryable);
    // Pod count quota.
    e.provider.set_team_quota(
        "few",
        TeamQuota {
            cpu: godel_core::Cpu(100_000),
            memory: godel_core::ByteQuantity(100 << 30),
            pods: 1,
        },
    );
    let first = godel_core::new_sandbox_id();
    let mut nat = spec("few");
    nat.network.mode = godel_core::NetworkMode::Nat;
    let spawned = e.provider.spawn(&first, &nat).await.unwrap();
    let pod = e
        .fake
        .object(
            "pods",
            "godel-team-few",
            spawned.handle["pod"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(pod["metadata"]["labels"]["godel.io/network"], "nat");
    let err = e
        .provider
        .spawn(&godel_core::new_sandbox_id(), &spec("few"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceExhausted);
    assert!(err.message.contains("pods=1"), "{}", err.message);
    // Terminating frees the quota.
    e.provider.terminate(&first).await.unwrap();
    e.provider
        .spawn(&godel_core::new_sandbox_id(), &spec("few"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failures_are_spawn_errors_with_the_pods_reason() {
    let e = env().await;
    let mut s = spec("t");
    s.image = Some("registry.example/invalid-image:1".into());
    let id = godel_core::new_sandbox_id();
    let err = e.provider.spawn(&id, &s).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::SpawnError);
    assert!(err.message.contains("ErrImagePull"), "{}", err.message);
    assert!(!err.retryable);
    assert_eq!(err.runtime_id.as_deref(), Some(id.as_str()));
    assert!(
        e.fake.names("pods", Some("godel-team-t")).is_empty(),
        "failed pod cleaned up"
    );
    assert!(e.provider.list().await.unwrap().is_empty());
    let mut s = spec("t");
    s.image = Some("crashloop:latest".into());
    let err = e
        .provider
        .spawn(&godel_core::new_sandbox_id(), &s)
        .await
        .unwrap_err();
    assert!(err.message.contains("CrashLoopBackOff"), "{}", err.message);
    // Requests beyond the node: Unschedulable.
    e.provider.set_team_quota(
        "big",
        TeamQuota {
            cpu: godel_core::Cpu(500_000),
            memory: godel_core::ByteQuantity(1 << 40),
            pods: 10,
        },
    );
    let mut s = spec("big");
    s.resources.cpu = Some(godel_core::Cpu(100_000));
    let err = e
        .provider
        .spawn(&godel_core::new_sandbox_id(), &s)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::SpawnError);
    assert!(
        err.message.contains("Unschedulable") && err.message.contains("Insufficient cpu"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_timeout_is_timeout() {
    let e = env_with(
        FakeOptions {
            pod_startup: std::time::Duration::from_secs(30),
            ..Default::default()
        },
        KubeConfig::default(),
    )
    .await;
    let mut s = spec("t");
    s.timeout_secs = Some(1);
    let err = e
        .provider
        .spawn(&godel_core::new_sandbox_id(), &s)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(e.fake.names("pods", None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_adopt_and_status() {
    let e = env().await;
    let id = godel_core::new_sandbox_id();
    let spawned = e.provider.spawn(&id, &spec("t")).await.unwrap();
    // A second provider (a restarted daemon) adopts it from the handle.
    let (sink, _) = recorder();
    let again =
        KubeProvider::with_client(e.fake.client().unwrap(), KubeConfig::default(), sink).unwrap();
    let adopted = again
        .adopt(&id, &spec("t"), &spawned)
        .await
        .unwrap()
        .expect("alive");
    assert_eq!(adopted.handle, spawned.handle);
    assert_eq!(sh(&again, &id, "echo adopted").await.stdout, "adopted\n");
    e.provider.terminate(&id).await.unwrap();
    assert!(e.fake.names("pods", None).is_empty());
    e.provider.terminate(&id).await.unwrap();
    assert_eq!(
        e.provider.status(&id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(again.status(&id).await.unwrap().state, SandboxState::Error);
    assert!(
        again
            .adopt(&id, &spec("t"), &spawned)
            .await
            .unwrap()
            .is_none()
    );
    // Terminate by label when the provider never knew the runtime.
    let id2 = godel_core::new_sandbox_id();
    e.provider.spawn(&id2, &spec("t")).await.unwrap();
    again.terminate(&id2).await.unwrap();
    assert!(e.fake.names("pods", None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reports_phases_restarts_and_deaths() {
    let e = env().await;
    let id = godel_core::new_sandbox_id();
    let spawned = e.provider.spawn(&id, &spec("w")).await.unwrap();
    let (ns, pod) = (
        spawned.handle["namespace"].as_str().unwrap().to_string(),
        spawned.handle["pod"].as_str().unwrap().to_string(),
    );
    let running = wait_event(&e.events, |ev| {
        ev.kind == "pod_phase"
            && ev.runtime_id.as_deref() == Some(id.as_str())
            && ev.data["phase"] == "Running"
    })
    .await;
    assert!(running.is_some(), "pod_phase Running");
    assert_eq!(running.unwrap().team.as_deref(), Some("w"));
    assert!(e.fake.restart_container(&ns, &pod, 137));
    let restarted = wait_event(&e.events, |ev| {
        ev.kind == "container_restarted" && ev.runtime_id.as_deref() == Some(id.as_str())
    })
    .await
    .expect("restart event");
    assert_eq!(restarted.data["restart_count"], 1);
    assert_eq!(restarted.data["reason"], "OOMKilled");
    // godel's own terminate is not a death; a deletion behind its back is.
    let quiet = godel_core::new_sandbox_id();
    e.provider.spawn(&quiet, &spec("w")).await.unwrap();
    e.provider.terminate(&quiet).await.unwrap();
    assert!(e.fake.delete_pod(&ns, &pod));
    let died = wait_event(&e.events, |ev| {
        ev.kind == "died" && ev.runtime_id.as_deref() == Some(id.as_str())
    })
    .await
    .expect("died");
    assert_eq!(died.data["reason"], "PodDeleted");
    assert!(
        !e.events
            .lock()
            .iter()
            .any(|ev| ev.kind == "died" && ev.runtime_id.as_deref() == Some(quiet.as_str()))
    );
    // A failed pod is reported as died too.
    let id3 = godel_core::new_sandbox_id();
    let s3 = e.provider.spawn(&id3, &spec("w")).await.unwrap();
    e.fake.fail_pod(
        &ns,
        s3.handle["pod"].as_str().unwrap(),
        "Evicted",
        "The node was low on resource: memory.",
    );
    let died = wait_event(&e.events, |ev| {
        ev.kind == "died" && ev.runtime_id.as_deref() == Some(id3.as_str())
    })
    .await
    .expect("died");
    assert_eq!(died.data["reason"], "Evicted");
    assert_eq!(
        e.provider.status(&id3).await.unwrap().state,
        SandboxState::Error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_and_unreachable_server() {
    let e = env().await;
    let a = e.provider.available().await;
    assert!(a.available, "{}", a.reason);
    assert_eq!(e.provider.capabilities().isolation, "vm");
    assert_eq!(e.provider.name(), "kata");
    // The runtime class must exist.
    let (sink, _) = recorder();
    let cfg = KubeConfig {
        runtime_class: "kata-fc".into(),
        ..Default::default()
    };
    let p = KubeProvider::with_client(e.fake.client().unwrap(), cfg, sink).unwrap();
    let a = p.available().await;
    assert!(!a.available);
    assert!(a.reason.contains("kata-fc"), "{}", a.reason);
    // Connection refused: UNAVAILABLE, retryable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    ))
    .unwrap();
    let (sink, _) = recorder();
    let p = KubeProvider::with_client(client, KubeConfig::default(), sink).unwrap();
    let err = p
        .spawn(&godel_core::new_sandbox_id(), &spec("t"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(err.retryable);
    assert!(!p.available().await.available);
    // No kubeconfig at all: constructed, but unavailable with a reason.
    let cfg = KubeConfig {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        ..Default::default()
    };
    let (sink, _) = recorder();
    let p = KubeProvider::new(cfg, sink).await.unwrap();
    let a = p.available().await;
    assert!(
        !a.available && a.reason.contains("/nonexistent/kubeconfig"),
        "{}",
        a.reason
    );
    assert_eq!(
        p.spawn("rt-x", &spec("t")).await.unwrap_err().code,
        ErrorCode::Unavailable
    );
}
