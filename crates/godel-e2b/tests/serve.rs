//! The E2B-compatible server over real HTTP on loopback, with a real backend
//! (host directories and processes): REST status codes and shapes, envd auth
//! and routing, both Connect codecs, deadlines, the process table, watchers,
//! signed URLs, pagination and the timeout reaper.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{KEY, OTHER_KEY, TestServer};
use godel_e2b::ServeConfig;
use godel_e2b::connect::{Codec, EnvelopeDecoder, FLAG_END_STREAM, envelope, parse_end_stream};
use godel_e2b::pb::filesystem::{ListDirRequest, ListDirResponse};
use godel_e2b::pb::process::process_event::Event;
use godel_e2b::pb::process::{ProcessConfig, StartRequest, StartResponse};
use serde_json::{Value, json};

struct Sbx {
    id: String,
    token: String,
}

async fn create(s: &TestServer, body: Value) -> Sbx {
    let r = reqwest::Client::new()
        .post(format!("{}/v2/sandboxes", s.url))
        .header("x-api-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    for k in [
        "sandboxID",
        "templateID",
        "clientID",
        "envdVersion",
        "envdAccessToken",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    Sbx {
        id: v["sandboxID"].as_str().unwrap().to_string(),
        token: v["envdAccessToken"].as_str().unwrap().to_string(),
    }
}

async fn rpc(url: &str, sb: &Sbx, method: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/{method}"))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A whole server stream: data payloads, then the end-of-stream error if any.
async fn stream(
    url: &str,
    sb: &Sbx,
    method: &str,
    codec: Codec,
    body: bytes::Bytes,
    timeout_ms: Option<u64>,
) -> (Vec<bytes::Bytes>, Option<godel_e2b::connect::ConnectError>) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/{method}"))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", codec.stream_content_type())
        .body(envelope(0, &body));
    if let Some(t) = timeout_ms {
        req = req.header("connect-timeout-ms", t.to_string());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let mut dec = EnvelopeDecoder::new();
    dec.push(&bytes);
    let mut msgs = Vec::new();
    while let Some(env) = dec.next_envelope().unwrap() {
        if env.flags & FLAG_END_STREAM != 0 {
            return (msgs, parse_end_stream(&env.payload).unwrap());
        }
        msgs.push(env.payload);
    }
    panic!("stream without end-of-stream envelope");
}

fn start_req(script: &str) -> StartRequest {
    StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    }
}

#[tokio::test]
async fn rest_auth_and_required_fields() {
    let s = TestServer::start(ServeConfig::default()).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/sandboxes", s.url))
        .json(&json!({"templateID":"base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{}/sandboxes", s.url))
        .header("x-api-key", "wrong")
        .json(&json!({"templateID":"base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 401);

    let sb = create(
        &s,
        json!({"templateID":"base","timeout":60,"metadata":{"k":"v"},"envVars":{"A":"1"}}),
    )
    .await;
    let r = c
        .get(format!("{}/sandboxes/{}", s.url, sb.id))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    for k in [
        "startedAt",
        "endAt",
        "cpuCount",
        "memoryMB",
        "diskSizeMB",
        "state",
        "envdVersion",
        "clientID",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["metadata"]["k"], "v");
    assert_eq!(v["state"], "running");
    // Another team sees nothing.
    let r = c
        .get(format!("{}/sandboxes/{}", s.url, sb.id))
        .header("x-api-key", OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Kill: 204, then 404.
    let r = c
        .delete(format!("{}/sandboxes/{}", s.url, sb.id))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(format!("{}/sandboxes/{}", s.url, sb.id))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.backend.live(), 0);
}

#[tokio::test]
async fn envd_routing_tokens_and_health() {
    let s = TestServer::start(ServeConfig {
        domain: Some("godel.test".into()),
        ..ServeConfig::default()
    })
    .await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let c = reqwest::Client::new();
    let health =
        |h: (&'static str, String)| c.get(format!("{}/health", s.url)).header(h.0, h.1).send();
    assert_eq!(
        health(("e2b-sandbox-id", sb.id.clone()))
            .await
            .unwrap()
            .status(),
        204
    );
    // Host routing: 49983-{id}.{domain}
    assert_eq!(
        health(("host", format!("49983-{}.godel.test", sb.id)))
            .await
            .unwrap()
            .status(),
        204
    );
    let r = health(("e2b-sandbox-id", "rt-nope".into())).await.unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("was not found"));
    // Wrong or missing token on an RPC.
    let bad = Sbx {
        id: sb.id.clone(),
        token: "tok_wrong".into(),
    };
    let (st, v) = rpc(
        &s.url,
        &bad,
        "filesystem.Filesystem/ListDir",
        json!({"path":"/home/user"}),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(v["code"], "unauthenticated");
    // Unknown method.
    let (st, v) = rpc(&s.url, &sb, "filesystem.Filesystem/Nope", json!({})).await;
    assert_eq!((st, v["code"].as_str()), (501, Some("unimplemented")));
}

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
    let sig = godel_e2b::serve::signature("/home/user/d/a.bin", "read", "", &sb.token, None);
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
    std::fs::write(s.backend.workspace(&sb.id).join("new.txt"), "x").unwrap();
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
async fn pause_connect_list_and_pagination() {
    let s = TestServer::start(ServeConfig::default()).await;
    let c = reqwest::Client::new();
    let a = create(&s, json!({"templateID":"base","metadata":{"g":"1"}})).await;
    let _b = create(&s, json!({"templateID":"base","metadata":{"g":"1"}})).await;
    let _c = create(&s, json!({"templateID":"base","metadata":{"g":"2"}})).await;
    let post = |p: String| {
        c.post(format!("{}{p}", s.url))
            .header("x-api-key", KEY)
            .send()
    };
    assert_eq!(
        post(format!("/sandboxes/{}/pause", a.id))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        post(format!("/sandboxes/{}/pause", a.id))
            .await
            .unwrap()
            .status(),
        409
    );
    let r = c
        .get(format!("{}/health", s.url))
        .header("e2b-sandbox-id", &a.id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // Old list shows running only; v2 both, filtered and paged.
    let r = c
        .get(format!("{}/sandboxes", s.url))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
    let r = c
        .get(format!(
            "{}/v2/sandboxes?limit=2&state=running,paused",
            s.url
        ))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    let next = r.headers()["x-next-token"].to_str().unwrap().to_string();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
    let r = c
        .get(format!("{}/v2/sandboxes?limit=2&nextToken={next}", s.url))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-next-token").is_none());
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        1
    );
    let r = c
        .get(format!(
            "{}/v2/sandboxes?metadata=g%3D1&state=paused",
            s.url
        ))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    let v = r.json::<Value>().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["sandboxID"], a.id.as_str());
    // Connect resumes (201) under the same id, then reports running (200).
    let connect = || {
        c.post(format!("{}/v2/sandboxes/{}/connect", s.url, a.id))
            .header("x-api-key", KEY)
            .json(&json!({"timeout": 60}))
            .send()
    };
    let r = connect().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["sandboxID"], a.id.as_str());
    assert_eq!(connect().await.unwrap().status(), 200);
    let r = c
        .get(format!("{}/health", s.url))
        .header("e2b-sandbox-id", &a.id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{}/sandboxes/{}/metrics", s.url, a.id))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(v[0]["memTotal"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn reaper_kills_or_pauses_expired_sandboxes() {
    let s = TestServer::start(ServeConfig::default()).await;
    let c = reqwest::Client::new();
    let kill = create(&s, json!({"templateID":"base","timeout":30})).await;
    let pause = create(
        &s,
        json!({"templateID":"base","timeout":30,"autoPause":true}),
    )
    .await;
    let keep = create(&s, json!({"templateID":"base","timeout":3000})).await;
    assert!(s.server.reap_expired(Utc::now()).await.is_empty());
    let mut acted = s
        .server
        .reap_expired(Utc::now() + chrono::Duration::seconds(60))
        .await;
    acted.sort();
    let mut want = vec![kill.id.clone(), pause.id.clone()];
    want.sort();
    assert_eq!(acted, want);
    let get = |id: String| {
        c.get(format!("{}/sandboxes/{id}", s.url))
            .header("x-api-key", KEY)
            .send()
    };
    assert_eq!(get(kill.id.clone()).await.unwrap().status(), 404);
    let v: Value = get(pause.id.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(v["state"], "paused");
    assert_eq!(get(keep.id.clone()).await.unwrap().status(), 200);
    // set_timeout moves the deadline: a shorter one makes it expire.
    let r = c
        .post(format!("{}/sandboxes/{}/timeout", s.url, keep.id))
        .header("x-api-key", KEY)
        .json(&json!({"timeout": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let acted = s
        .server
        .reap_expired(Utc::now() + chrono::Duration::seconds(10))
        .await;
    assert_eq!(acted, vec![keep.id.clone()]);
}

#[tokio::test]
async fn killing_a_sandbox_ends_its_streams_with_unavailable() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let (url, sb2) = (
        s.url.clone(),
        Sbx {
            id: sb.id.clone(),
            token: sb.token.clone(),
        },
    );
    let run = tokio::spawn(async move {
        let req = start_req("sleep 60");
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
    for tries in 0.. {
        let (_, v) = rpc(&s.url, &sb, "process.Process/List", json!({})).await;
        if v["processes"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(tries < 500, "process never listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = reqwest::Client::new()
        .delete(format!("{}/sandboxes/{}", s.url, sb.id))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, err) = run.await.unwrap();
    assert_eq!(
        err.unwrap().code,
        godel_e2b::connect::ConnectCode::Unavailable
    );
    let r = reqwest::Client::new()
        .get(format!("{}/health", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
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
        std::fs::read(s.backend.workspace(&sb.id).join("got.txt")).unwrap(),
        b"abcdef"
    );
}

#[tokio::test]
async fn large_uploads_pass_and_large_rest_bodies_do_not() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let c = reqwest::Client::new();
    let big = vec![7u8; 3 << 20];
    let r = c
        .post(format!("{}/files?path=big.bin", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(big.clone()).file_name("/home/user/big2.bin"),
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
    assert_eq!(
        std::fs::read(s.backend.workspace(&sb.id).join("big2.bin"))
            .unwrap()
            .len(),
        big.len()
    );
    let r = c
        .post(format!("{}/sandboxes", s.url))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}
