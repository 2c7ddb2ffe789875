//! The envd surface of the E2B-compatible server over real HTTP on loopback:
//! both Connect codecs, deadlines, the process table, stdin, client
//! streams, filesystem RPCs, watchers and the /files routes.

mod common;

use std::time::Duration;

use common::TestServer;
use godel_api::e2b::ServeConfig;
use godel_e2b::connect::{Codec, EnvelopeDecoder, envelope, parse_end_stream};
use godel_e2b::pb::filesystem::{ListDirRequest, ListDirResponse};
use godel_e2b::pb::process::StartResponse;
use godel_e2b::pb::process::process_event::Event;
use serde_json::{Value, json};

use common::client::*;

#[tokio::test]
async fn start_streams_in_json_and_proto() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(
        &s,
        json!({"templateID":"base","envVars":{"FROM_CREATE":"yes"}}),
    )
    .await;
    for codec in [Codec::Json, Codec::Proto] {
        let req = start_req("echo out; echo err >&2; echo $FROM_CREATE; exit 4");
        let (msgs, err) = stream(
            &s.url,
            &sb,
            "process.Process/Start",
            codec,
            codec.encode(&req),
            None,
        )
        .await;
        assert!(err.is_none(), "{err:?}");
        let events: Vec<Event> = msgs
            .iter()
            .map(|m| {
                codec
                    .decode::<StartResponse>(m)
                    .unwrap()
                    .event
                    .unwrap()
                    .event
                    .unwrap()
            })
            .collect();
        assert!(matches!(events[0], Event::Start(_)), "{events:?}");
        let mut out = Vec::new();
        let mut errb = Vec::new();
        for e in &events {
            if let Event::Data(d) = e {
                match d.output.as_ref().unwrap() {
                    godel_e2b::pb::process::process_event::data_event::Output::Stdout(b) => {
                        out.extend_from_slice(b)
                    }
                    godel_e2b::pb::process::process_event::data_event::Output::Stderr(b) => {
                        errb.extend_from_slice(b)
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(out, b"out\nyes\n");
        assert_eq!(errb, b"err\n");
        match events.last().unwrap() {
            Event::End(e) => assert_eq!((e.exit_code, e.exited), (4, true)),
            other => panic!("last event {other:?}"),
        }
    }
    // Binary unary call.
    let r = reqwest::Client::new()
        .post(format!("{}/filesystem.Filesystem/ListDir", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", "application/proto")
        .body(Codec::Proto.encode(&ListDirRequest {
            path: "/home/user".into(),
            depth: 1,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/proto");
    let resp: ListDirResponse = Codec::Proto.decode(&r.bytes().await.unwrap()).unwrap();
    assert!(resp.entries.is_empty());
}

#[tokio::test]
async fn stream_deadline_and_missing_process() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let req = start_req("sleep 30");
    let (msgs, err) = stream(
        &s.url,
        &sb,
        "process.Process/Start",
        Codec::Json,
        Codec::Json.encode(&req),
        Some(300),
    )
    .await;
    assert_eq!(msgs.len(), 1, "only the start event");
    assert_eq!(
        err.unwrap().code,
        godel_e2b::connect::ConnectCode::DeadlineExceeded
    );
    // The command outlives the stream (as with envd) and can be killed by pid.
    let (_, list) = rpc(&s.url, &sb, "process.Process/List", json!({})).await;
    let pid = list["processes"][0]["pid"].as_u64().unwrap();
    let (st, _) = rpc(
        &s.url,
        &sb,
        "process.Process/SendSignal",
        json!({"process":{"pid":pid},"signal":"SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(st, 200);
    // Connect to a process that does not exist: end-of-stream not_found.
    let body = Codec::Json.encode(&godel_e2b::pb::process::ConnectRequest {
        process: Some(godel_e2b::pb::process::ProcessSelector {
            selector: Some(godel_e2b::pb::process::process_selector::Selector::Pid(
                424242,
            )),
        }),
    });
    let (_, err) = stream(
        &s.url,
        &sb,
        "process.Process/Connect",
        Codec::Json,
        body,
        None,
    )
    .await;
    assert_eq!(err.unwrap().code, godel_e2b::connect::ConnectCode::NotFound);
    let (st, v) = rpc(
        &s.url,
        &sb,
        "process.Process/SendSignal",
        json!({"process":{"pid":424242},"signal":"SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn tagged_process_stdin_and_connect() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let mut req = start_req("read line; echo got:$line");
    req.stdin = Some(true);
    req.tag = Some("reader".into());
    // Start in the background (the stream is read in a task).
    let sb2 = Sbx {
        id: sb.id.clone(),
        token: sb.token.clone(),
    };
    let url = s.url.clone();
    let reader = tokio::spawn(async move {
        stream(
            &url,
            &sb2,
            "process.Process/Start",
            Codec::Json,
            Codec::Json.encode(&req),
            None,
        )
        .await
    });
    // Wait until the table lists it, then write to it by tag.
    let mut tries = 0;
    loop {
        let (_, v) = rpc(&s.url, &sb, "process.Process/List", json!({})).await;
        if v["processes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["tag"] == "reader"))
        {
            break;
        }
        tries += 1;
        assert!(tries < 500, "process never listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (st, v) = rpc(
        &s.url,
        &sb,
        "process.Process/SendInput",
        json!({"process":{"tag":"reader"},"input":{"stdin":"aGkK"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (msgs, err) = reader.await.unwrap();
    assert!(err.is_none());
    let text: String = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    // "got:hi\n" base64
    assert!(text.contains("Z290OmhpCg=="), "{text}");
}

#[tokio::test]
async fn filesystem_rpcs_and_files_routes() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let c = reqwest::Client::new();
    // Octet-stream upload, then multipart.
    let r = c
        .post(format!("{}/files?path=%2Fhome%2Fuser%2Fd%2Fa.bin", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["path"], "/home/user/d/a.bin");
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"one".to_vec()).file_name("/home/user/m/1.txt"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"two".to_vec()).file_name("/home/user/m/2.txt"),
        );
    let r = c
        .post(format!("{}/files", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    // Download with a signed URL and no token.
    let sig = godel_api::e2b::signature("/home/user/d/a.bin", "read", "", &sb.token, None);
    let r = c
        .get(format!("{}/files", s.url))
        .query(&[("path", "/home/user/d/a.bin"), ("signature", sig.as_str())])
        .header("e2b-sandbox-id", &sb.id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], &[0u8, 1, 2, 255]);
    let r = c
        .get(format!("{}/files", s.url))
        .query(&[("path", "/home/user/d/a.bin"), ("signature", "v1_forged")])
        .header("e2b-sandbox-id", &sb.id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // RPCs.
    let (st, v) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/ListDir",
        json!({"path":"/home/user","depth":2}),
    )
    .await;
    assert_eq!(st, 200);
    let mut paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/home/user/d",
            "/home/user/d/a.bin",
            "/home/user/m",
            "/home/user/m/1.txt",
            "/home/user/m/2.txt"
        ]
    );
    let (_, v) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/Stat",
        json!({"path":"/home/user/d/a.bin"}),
    )
    .await;
    assert_eq!(v["entry"]["size"], "4");
    assert_eq!(v["entry"]["type"], "FILE_TYPE_FILE");
    let (st, v) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/MakeDir",
        json!({"path":"/home/user/d"}),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("already_exists")));
    let (st, v) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/Stat",
        json!({"path":"/home/user/none"}),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")));
    let (st, _) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/Remove",
        json!({"path":"/home/user/none"}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/Stat",
        json!({"path":"/etc/passwd"}),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (400, Some("invalid_argument")));
}

#[tokio::test]
async fn polling_watcher_reports_changes() {
    let s = TestServer::start(ServeConfig {
        watch_interval: Duration::from_millis(20),
        ..ServeConfig::default()
    })
    .await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let (st, v) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path":"/home/user","recursive":true}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let wid = v["watcherId"].as_str().unwrap().to_string();
    std::fs::write(s.workspace(&sb.id).join("new.txt"), "x").unwrap();
    let mut seen = Vec::new();
    for _ in 0..500 {
        let (_, v) = rpc(
            &s.url,
            &sb,
            "filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": wid}),
        )
        .await;
        seen.extend(v["events"].as_array().cloned().unwrap_or_default());
        if seen
            .iter()
            .any(|e| e["name"] == "new.txt" && e["type"] == "EVENT_TYPE_CREATE")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.iter()
            .any(|e| e["name"] == "new.txt" && e["type"] == "EVENT_TYPE_CREATE"),
        "{seen:?}"
    );
    let (st, _) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/RemoveWatcher",
        json!({"watcherId": wid}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": wid}),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = rpc(
        &s.url,
        &sb,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path":"/home/user/missing"}),
    )
    .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn stream_input_is_a_client_stream() {
    use godel_e2b::pb::process::stream_input_request::{DataEvent, Event as In, StartEvent};
    use godel_e2b::pb::process::{
        ProcessInput, ProcessSelector, StreamInputRequest, process_input, process_selector,
    };
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let mut req = start_req("head -c 6 > got.txt");
    req.stdin = Some(true);
    let (url, sb2) = (
        s.url.clone(),
        Sbx {
            id: sb.id.clone(),
            token: sb.token.clone(),
        },
    );
    let run = tokio::spawn(async move {
        stream(
            &url,
            &sb2,
            "process.Process/Start",
            Codec::Json,
            Codec::Json.encode(&req),
            None,
        )
        .await
    });
    let pid = loop {
        let (_, v) = rpc(&s.url, &sb, "process.Process/List", json!({})).await;
        if let Some(p) = v["processes"][0]["pid"].as_u64() {
            break p as u32;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let msg = |e: In| Codec::Json.encode(&StreamInputRequest { event: Some(e) });
    let data = |b: &[u8]| {
        In::Data(DataEvent {
            input: Some(ProcessInput {
                input: Some(process_input::Input::Stdin(b.to_vec())),
            }),
        })
    };
    let mut body = Vec::new();
    body.extend_from_slice(&envelope(
        0,
        &msg(In::Start(StartEvent {
            process: Some(ProcessSelector {
                selector: Some(process_selector::Selector::Pid(pid)),
            }),
        })),
    ));
    body.extend_from_slice(&envelope(0, &msg(data(b"abc"))));
    body.extend_from_slice(&envelope(0, &msg(data(b"def"))));
    let r = reqwest::Client::new()
        .post(format!("{}/process.Process/StreamInput", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", "application/connect+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let mut dec = EnvelopeDecoder::new();
    dec.push(&bytes);
    assert!(!dec.next_envelope().unwrap().unwrap().is_end());
    let end = dec.next_envelope().unwrap().unwrap();
    assert!(end.is_end());
    assert_eq!(parse_end_stream(&end.payload).unwrap(), None);
    let (_, err) = run.await.unwrap();
    assert!(err.is_none());
    assert_eq!(
        std::fs::read(s.workspace(&sb.id).join("got.txt")).unwrap(),
        b"abcdef"
    );
}
