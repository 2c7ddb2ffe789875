//! Exec: streaming, exit codes, stdin, env, cwd, signals and timeouts that
//! kill the whole process group.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use godel_core::{ErrorCode, ExecEvent, ExecRequest, RuntimeProvider, WorkspaceMode};

async fn env_with(id: &str) -> Env {
    let e = Env::new();
    let mut spec = e.spec(WorkspaceMode::Cow);
    spec.env.insert("FROM_SPEC".into(), "spec".into());
    spec.env.insert("OVERRIDDEN".into(), "spec".into());
    e.p.spawn(id, &spec).await.unwrap();
    e
}

#[tokio::test]
async fn exit_codes_and_separate_streams() {
    let e = env_with("rt-x").await;
    let out = sh(&e.p, "rt-x", "echo out; echo err >&2; exit 7").await;
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (7, "out\n", "err\n")
    );
    let out = sh(&e.p, "rt-x", "kill -TERM $$").await;
    assert_eq!((out.exit_code, out.signal), (128 + 15, Some(15)));
    let err = err_of(
        e.p.exec("rt-x", ExecRequest::new(["definitely-not-a-command"]))
            .await,
    );
    assert_eq!(err.code, ErrorCode::ExecutionError);
    assert_eq!(
        err_of(e.p.exec("nope", ExecRequest::new(["true"])).await).code,
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn output_streams_while_the_command_runs() {
    let e = env_with("rt-s").await;
    // The command waits for a file that is only created after we saw its first line.
    let mut h =
        e.p.exec(
            "rt-s",
            ExecRequest::new([
                "sh",
                "-c",
                "echo first; while [ ! -e go ]; do sleep 0.01; done; echo second",
            ]),
        )
        .await
        .unwrap();
    assert!(matches!(
        h.events.next().await,
        Some(ExecEvent::Started { .. })
    ));
    match h.events.next().await {
        Some(ExecEvent::Stdout { data }) => assert_eq!(&data[..], b"first\n"),
        other => panic!("expected first line, got {other:?}"),
    }
    e.p.write_file("rt-s", "go", Bytes::from_static(b""))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let mut exit = None;
    while let Some(ev) = h.events.next().await {
        match ev {
            ExecEvent::Stdout { data } => rest.extend_from_slice(&data),
            ExecEvent::Exit(st) => exit = Some(st),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rest, b"second\n");
    assert_eq!(exit.unwrap().code, 0);
}

#[tokio::test]
async fn stdin_env_and_cwd() {
    let e = env_with("rt-i").await;
    let mut req = ExecRequest::new(["sh", "-c", "tr a-z A-Z"]);
    req.stdin = Some("hello\n".into());
    assert_eq!(
        e.p.exec_collect("rt-i", req).await.unwrap().stdout,
        "HELLO\n"
    );

    let mut req = ExecRequest::new(["sh", "-c", "echo $FROM_SPEC $OVERRIDDEN $FROM_REQ"]);
    req.env.insert("OVERRIDDEN".into(), "req".into());
    req.env.insert("FROM_REQ".into(), "r".into());
    assert_eq!(
        e.p.exec_collect("rt-i", req).await.unwrap().stdout,
        "spec req r\n"
    );

    let ws = e.ws("rt-i");
    for cwd in ["src", "/home/user/src", "./src/"] {
        let mut req = ExecRequest::new(["pwd"]);
        req.cwd = Some(cwd.into());
        let out = e.p.exec_collect("rt-i", req).await.unwrap();
        assert_eq!(
            out.stdout,
            format!("{}\n", ws.join("src").display()),
            "{cwd}"
        );
    }
    for cwd in ["../", "/etc"] {
        let mut req = ExecRequest::new(["pwd"]);
        req.cwd = Some(cwd.into());
        assert_eq!(
            err_of(e.p.exec("rt-i", req).await).code,
            ErrorCode::InvalidArgument
        );
    }
}

#[tokio::test]
async fn interactive_stdin_stays_open() {
    let e = env_with("rt-in").await;
    let mut req = ExecRequest::new(["sh", "-c", "while read l; do echo got:$l; done; echo done"]);
    req.interactive = true;
    let mut h = e.p.exec("rt-in", req).await.unwrap();
    let tx = h.stdin.take().expect("stdin kept open");
    assert!(matches!(
        h.events.next().await,
        Some(ExecEvent::Started { .. })
    ));
    tx.send(Bytes::from_static(b"a\n")).await.unwrap();
    match h.events.next().await {
        Some(ExecEvent::Stdout { data }) => assert_eq!(&data[..], b"got:a\n"),
        other => panic!("{other:?}"),
    }
    tx.send(Bytes::from_static(b"b\n")).await.unwrap();
    drop(tx);
    let out = h.collect().await.unwrap();
    assert_eq!(out.stdout, "got:b\ndone\n");
}

fn err_of(r: godel_core::Result<godel_core::ExecHandle>) -> godel_core::Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')),
    }
}

async fn wait_dead(pid: i32) -> bool {
    for _ in 0..500 {
        if dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let e = env_with("rt-t").await;
    let mut req = ExecRequest::new(["sh", "-c", "sleep 100 & echo $!; sleep 100"]);
    req.timeout_ms = Some(300);
    let mut h = e.p.exec("rt-t", req).await.unwrap();
    let mut out = Vec::new();
    let mut exit = None;
    while let Some(ev) = h.events.next().await {
        match ev {
            ExecEvent::Stdout { data } => out.extend_from_slice(&data),
            ExecEvent::Exit(st) => exit = Some(st),
            _ => {}
        }
    }
    let exit = exit.expect("exit event");
    assert!(exit.timed_out);
    assert_eq!(exit.signal, Some(9));
    let grandchild: i32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
    assert!(
        wait_dead(grandchild).await,
        "grandchild {grandchild} survived the timeout"
    );

    // collect() turns a timeout into a TIMEOUT error.
    let mut req = ExecRequest::new(["sleep", "100"]);
    req.timeout_ms = Some(100);
    assert_eq!(
        e.p.exec_collect("rt-t", req).await.unwrap_err().code,
        ErrorCode::Timeout
    );
}

#[tokio::test]
async fn signals_reach_the_group() {
    let e = env_with("rt-g").await;
    let mut h =
        e.p.exec(
            "rt-g",
            ExecRequest::new(["sh", "-c", "sleep 100 & echo $!; wait"]),
        )
        .await
        .unwrap();
    assert!(matches!(
        h.events.next().await,
        Some(ExecEvent::Started { .. })
    ));
    let line = match h.events.next().await {
        Some(ExecEvent::Stdout { data }) => String::from_utf8(data.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    };
    let child: i32 = line.trim().parse().unwrap();
    h.signal
        .as_ref()
        .unwrap()
        .send(libc::SIGTERM)
        .await
        .unwrap();
    let out = h.collect().await.unwrap();
    assert_eq!(out.signal, Some(libc::SIGTERM));
    assert!(wait_dead(child).await);
}

#[tokio::test]
async fn background_process_does_not_hold_the_exec() {
    let e = env_with("rt-bg").await;
    // The background sleep keeps stdout open; the exec still ends, and the
    // sleep keeps running until the runtime is terminated.
    let out = sh(&e.p, "rt-bg", "sleep 60 & echo $!").await;
    assert_eq!(out.exit_code, 0);
    let pid: i32 = out.stdout.trim().parse().unwrap();
    assert!(!dead(pid), "background process died with the exec");
    e.p.terminate("rt-bg").await.unwrap();
    assert!(wait_dead(pid).await, "terminate left {pid} running");
}
