//! Client helpers of the server tests: create a sandbox, call envd RPCs
//! (unary and streaming) the way the SDKs do.

#![allow(dead_code)]

use super::TestServer;
use godel_e2b::connect::{Codec, EnvelopeDecoder, FLAG_END_STREAM, envelope, parse_end_stream};
use godel_e2b::pb::process::{ProcessConfig, StartRequest};
use serde_json::Value;

pub struct Sbx {
    pub id: String,
    pub token: String,
}

pub async fn create(s: &TestServer, body: Value) -> Sbx {
    let r = reqwest::Client::new()
        .post(format!("{}/v2/sandboxes", s.url))
        .header("x-api-key", &s.key)
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

pub async fn rpc(url: &str, sb: &Sbx, method: &str, body: Value) -> (u16, Value) {
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
pub async fn stream(
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

pub fn start_req(script: &str) -> StartRequest {
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
