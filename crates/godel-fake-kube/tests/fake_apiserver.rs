//! The fake API server itself, through kube-rs: server-side apply conflicts
//! and idempotence, the errors a real API server returns (404 unknown
//! namespace, 409 AlreadyExists, 403 quota), selectors, paging, watch, and
//! both exec protocols over a raw WebSocket client.

use std::collections::BTreeMap;

use futures::{SinkExt, StreamExt};
use godel_fake_kube::{FakeApiServer, FakeOptions};
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;

fn ns_obj(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn quota(pods: &str) -> ResourceQuota {
    ResourceQuota {
        metadata: ObjectMeta {
            name: Some("q".into()),
            ..Default::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                "pods".to_string(),
                Quantity(pods.into()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "godel-agent", "n": name}},
        "spec": {"containers": [{"name": "agent", "image": "debian:bookworm-slim",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

fn api_code(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn server_side_apply_conflicts_and_idempotence() {
    let fake = FakeApiServer::start(FakeOptions::default()).await.unwrap();
    let client = fake.client().unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.patch(
        "a",
        &PatchParams::apply("godel"),
        &Patch::Apply(&ns_obj("a")),
    )
    .await
    .unwrap();
    let rq: Api<ResourceQuota> = Api::namespaced(client.clone(), "a");
    let first = rq
        .patch(
            "q",
            &PatchParams::apply("godel"),
            &Patch::Apply(&quota("10")),
        )
        .await
        .unwrap();
    let again = rq
        .patch(
            "q",
            &PatchParams::apply("godel"),
            &Patch::Apply(&quota("10")),
        )
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version, again.metadata.resource_version,
        "no-op apply"
    );
    // Another manager setting the same field differently: 409 without force.
    let (code, reason, msg) = api_code(
        rq.patch("q", &PatchParams::apply("ops"), &Patch::Apply(&quota("5")))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        msg.contains("conflict with \"godel\"") && msg.contains(".spec.hard.pods"),
        "{msg}"
    );
    // Same value: shared ownership, fine.
    rq.patch("q", &PatchParams::apply("ops"), &Patch::Apply(&quota("10")))
        .await
        .unwrap();
    // Force takes over.
    let forced = rq
        .patch(
            "q",
            &PatchParams::apply("ops").force(),
            &Patch::Apply(&quota("5")),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().hard.unwrap()["pods"].0, "5");
    // Apply without a field manager is refused.
    let raw = client
        .request_text(
            http::Request::patch("/api/v1/namespaces/a/resourcequotas/q")
                .header("content-type", "application/apply-patch+yaml")
                .body(serde_json::to_vec(&quota("1")).unwrap())
                .unwrap(),
        )
        .await;
    assert!(raw.is_err());
}

#[tokio::test]
async fn api_errors_are_real_statuses() {
    let fake = FakeApiServer::start(FakeOptions::default()).await.unwrap();
    let client = fake.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "missing");
    let (code, reason, msg) = api_code(
        pods.create(&PostParams::default(), &pod("p"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (404, "NotFound", "namespaces \"missing\" not found")
    );
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj("n"))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "n");
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let (code, reason, _) = api_code(
        pods.create(&PostParams::default(), &pod("p"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let (code, _, _) = api_code(pods.get("nope").await.unwrap_err());
    assert_eq!(code, 404);
    // Quota: 1 pod allowed, one exists.
    let rq: Api<ResourceQuota> = Api::namespaced(client.clone(), "n");
    rq.create(&PostParams::default(), &quota("1"))
        .await
        .unwrap();
    let (code, reason, msg) = api_code(
        pods.create(&PostParams::default(), &pod("p2"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert!(msg.starts_with("pods \"p2\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"), "{msg}");
    let status = rq.get("q").await.unwrap().status.unwrap();
    assert_eq!(status.used.unwrap()["pods"].0, "1");
    // Unknown RuntimeClass is rejected at admission.
    let mut p = pod("p3");
    p.spec.as_mut().unwrap().runtime_class_name = Some("gvisor".into());
    rq.delete("q", &Default::default()).await.unwrap();
    let (code, _, msg) = api_code(pods.create(&PostParams::default(), &p).await.unwrap_err());
    assert_eq!(code, 403);
    assert!(msg.contains("RuntimeClass \"gvisor\" not found"), "{msg}");
}

#[tokio::test]
async fn list_selectors_paging_and_watch() {
    let fake = FakeApiServer::start(FakeOptions::default()).await.unwrap();
    let client = fake.client().unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj("n"))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "n");
    let start_rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..7 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
    }
    let one = pods
        .list(&ListParams::default().labels("n=p3"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    let by_field = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("metadata.name=p4"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let page = pods.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let rest = pods
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 4);
    // Watch from the old resourceVersion replays history, then streams.
    let mut w = pods
        .watch(&WatchParams::default().labels("n=p1"), &start_rv)
        .await
        .unwrap()
        .boxed();
    match w.next().await.unwrap().unwrap() {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("p1")),
        other => panic!("{other:?}"),
    }
    // p1 becomes Running (the fake's kubelet), then is deleted.
    loop {
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Modified(p)
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") =>
            {
                break;
            }
            _ => {}
        }
    }
    pods.delete("p1", &Default::default()).await.unwrap();
    loop {
        if let WatchEvent::Deleted(p) = w.next().await.unwrap().unwrap() {
            assert_eq!(p.metadata.name.as_deref(), Some("p1"));
            break;
        }
    }
}

/// Exec with a raw WebSocket client speaking the given subprotocol.
async fn raw_exec(
    fake: &FakeApiServer,
    protocol: &str,
    stdin: &[u8],
) -> (Vec<u8>, serde_json::Value) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v1/namespaces/n/pods/p/exec?command=sh&command=-c&command=cat%3B%20exit%205&stdin=true&stdout=true&stderr=true",
        fake.url().replace("http", "ws")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    let mut frame = vec![0u8];
    frame.extend_from_slice(stdin);
    ws.send(Message::binary(frame)).await.unwrap();
    ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let mut out = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Binary(b) = msg {
            match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                3 => return (out, serde_json::from_slice(&b[1..]).unwrap()),
                _ => {}
            }
        }
    }
    panic!("no status frame");
}

#[tokio::test]
async fn exec_protocols_and_status_frames() {
    let fake = FakeApiServer::start(FakeOptions::default()).await.unwrap();
    let client = fake.client().unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj("n"))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "n");
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    kube::runtime::wait::await_condition(
        pods.clone(),
        "p",
        kube::runtime::conditions::is_pod_running(),
    )
    .await
    .unwrap();
    let (out, status) = raw_exec(&fake, "v5.channel.k8s.io", b"through stdin").await;
    assert_eq!(out, b"through stdin");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "5"})
    );
    let (out, _) = raw_exec(&fake, "v4.channel.k8s.io", b"v4 too").await;
    assert_eq!(out, b"v4 too");
}
