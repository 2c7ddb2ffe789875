//! What E2B's own SDK tests showed about godel's E2B surface, over real HTTP
//! with the real control plane: both token shapes authenticate (the SDKs
//! that check the key's shape need `e2b_` + hex); a sandbox killed under a
//! running command drops the stream's connection (the SDKs then probe
//! `/health`, get 502 and report the sandbox killed); file metadata and
//! create fields godel cannot honour are refused by name.

mod common;

use std::time::Duration;

use common::TestServer;
use futures::StreamExt;
use godel_api::e2b::ServeConfig;
use godel_control::{Caller, TokenFormat};
use godel_e2b::connect::{Codec, FLAG_END_STREAM, envelope};
use serde_json::{Value, json};

use common::client::*;

#[tokio::test]
async fn both_token_shapes_are_api_keys() {
    let s = TestServer::start(ServeConfig::default()).await;
    assert!(
        s.key.starts_with("e2b_") && s.key.len() == 44,
        "the default team key has E2B's shape: {}",
        s.key
    );
    let gdl = s
        .control
        .create_token_as(&Caller::Admin, Some("alpha"), false, Some(TokenFormat::Gdl))
        .unwrap();
    let c = reqwest::Client::new();
    for key in [&s.key, &gdl.token] {
        let r = c
            .get(format!("{}/v2/sandboxes", s.url))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{key}");
    }
    s.control.revoke_token(&Caller::Admin, &s.key).unwrap();
    let r = c
        .get(format!("{}/v2/sandboxes", s.url))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Read a streaming response to its end; `Err` when the connection drops
/// before the body ends, else whether an end-of-stream envelope came.
async fn read_stream(r: reqwest::Response) -> Result<bool, String> {
    let mut body = r.bytes_stream();
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.map_err(|e| format!("{e:?}"))?);
    }
    let mut dec = godel_e2b::connect::EnvelopeDecoder::new();
    dec.push(&all);
    while let Some(env) = dec.next_envelope().unwrap() {
        if env.flags & FLAG_END_STREAM != 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

#[tokio::test]
async fn killing_a_sandbox_drops_its_command_streams() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let req = start_req("sleep 60");
    let r = reqwest::Client::new()
        .post(format!("{}/process.Process/Start", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", Codec::Json.stream_content_type())
        .body(envelope(0, &Codec::Json.encode(&req)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let run = tokio::spawn(read_stream(r));
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
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let ended = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(
        ended.is_err(),
        "the connection is dropped, not ended with a Connect error: {ended:?}"
    );
    // The SDKs' health probe then sees the sandbox gone.
    let r = reqwest::Client::new()
        .get(format!("{}/health", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn file_metadata_is_refused_by_name() {
    let s = TestServer::start(ServeConfig::default()).await;
    let sb = create(&s, json!({"templateID":"base"})).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/files?path=/home/user/m.txt", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", "application/octet-stream")
        .header("X-Metadata-Author", "mish")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("metadata") && msg.contains("x-metadata-author"),
        "{msg}"
    );
    assert!(
        !s.workspace(&sb.id).join("m.txt").exists(),
        "nothing written"
    );
    // Without metadata the same upload works.
    let r = c
        .post(format!("{}/files?path=/home/user/m.txt", s.url))
        .header("e2b-sandbox-id", &sb.id)
        .header("x-access-token", &sb.token)
        .header("content-type", "application/octet-stream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn create_fields_godel_cannot_honour_are_refused() {
    let s = TestServer::start(ServeConfig::default()).await;
    let c = reqwest::Client::new();
    for (body, field) in [
        (
            json!({"templateID":"base","autoPause":true,"autoResume":{"enabled":true}}),
            "autoResume",
        ),
        (json!({"templateID":"base","mcp":{"x":{}}}), "mcp"),
        (
            json!({"templateID":"base","volumeMounts":[{"name":"v","path":"/v"}]}),
            "volumeMounts",
        ),
    ] {
        let r = c
            .post(format!("{}/v2/sandboxes", s.url))
            .header("x-api-key", &s.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        let msg = v["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{msg}");
    }
    assert_eq!(s.live(), 0, "nothing was created");
    // Their "off" values, as some SDK versions send on every create, pass.
    create(
        &s,
        json!({"templateID":"base","autoResume":{"enabled":false},"mcp":null,"volumeMounts":[],"iam":null}),
    )
    .await;
}
