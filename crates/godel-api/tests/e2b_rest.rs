//! The E2B-compatible server over real HTTP on loopback, with a real backend
//! (host directories and processes): REST status codes and shapes, auth,
//! envd routing and tokens, pause/connect, pagination, the timeout reaper,
//! body limits.

mod common;

use chrono::Utc;
use common::TestServer;
use godel_api::e2b::ServeConfig;
use serde_json::{Value, json};

use common::client::*;

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
        .header("x-api-key", &s.key)
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
        .header("x-api-key", &s.other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Kill: 204, then 404.
    let r = c
        .delete(format!("{}/sandboxes/{}", s.url, sb.id))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(format!("{}/sandboxes/{}", s.url, sb.id))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.live(), 0);
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
async fn pause_connect_list_and_pagination() {
    let s = TestServer::start(ServeConfig::default()).await;
    let c = reqwest::Client::new();
    let a = create(&s, json!({"templateID":"base","metadata":{"g":"1"}})).await;
    let _b = create(&s, json!({"templateID":"base","metadata":{"g":"1"}})).await;
    let _c = create(&s, json!({"templateID":"base","metadata":{"g":"2"}})).await;
    let post = |p: String| {
        c.post(format!("{}{p}", s.url))
            .header("x-api-key", &s.key)
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
        .header("x-api-key", &s.key)
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
        .header("x-api-key", &s.key)
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
        .header("x-api-key", &s.key)
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
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    let v = r.json::<Value>().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["sandboxID"], a.id.as_str());
    // Connect resumes (201) under the same id, then reports running (200).
    let connect = || {
        c.post(format!("{}/v2/sandboxes/{}/connect", s.url, a.id))
            .header("x-api-key", &s.key)
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
        .header("x-api-key", &s.key)
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
    assert!(s.control.reap_expired(Utc::now()).await.is_empty());
    let mut acted = s
        .control
        .reap_expired(Utc::now() + chrono::Duration::seconds(60))
        .await;
    acted.sort();
    let mut want = vec![kill.id.clone(), pause.id.clone()];
    want.sort();
    assert_eq!(acted, want);
    let get = |id: String| {
        c.get(format!("{}/sandboxes/{id}", s.url))
            .header("x-api-key", &s.key)
            .send()
    };
    assert_eq!(get(kill.id.clone()).await.unwrap().status(), 404);
    let v: Value = get(pause.id.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(v["state"], "paused");
    assert_eq!(get(keep.id.clone()).await.unwrap().status(), 200);
    // set_timeout moves the deadline: a shorter one makes it expire.
    let r = c
        .post(format!("{}/sandboxes/{}/timeout", s.url, keep.id))
        .header("x-api-key", &s.key)
        .json(&json!({"timeout": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let acted = s
        .control
        .reap_expired(Utc::now() + chrono::Duration::seconds(10))
        .await;
    assert_eq!(acted, vec![keep.id.clone()]);
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
        std::fs::read(s.workspace(&sb.id).join("big2.bin"))
            .unwrap()
            .len(),
        big.len()
    );
    let r = c
        .post(format!("{}/sandboxes", s.url))
        .header("x-api-key", &s.key)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}
