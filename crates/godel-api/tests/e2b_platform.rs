//! E2B's fork and snapshot endpoints over real HTTP on loopback, with the
//! real control plane and snapshot store over a runtime of host
//! directories: a fork of 3 carries the source's files and leaves the
//! source running, snapshots are listed, created from and deleted, and bad
//! requests are refused with E2B's status codes.

mod common;

use common::TestServer;
use common::client::*;
use godel_api::e2b::ServeConfig;
use serde_json::{Value, json};

async fn post(s: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", s.url))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", s.url))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn fork_of_three_copies_the_files_and_keeps_the_source() {
    let s = TestServer::start(ServeConfig::default()).await;
    let src = create(
        &s,
        json!({"templateID":"base","timeout":300,"metadata":{"k":"v"}}),
    )
    .await;
    std::fs::write(s.workspace(&src.id).join("state.txt"), "forked").unwrap();

    let (st, v) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/fork", src.id),
        json!({"count":3,"timeout":120}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let forks = v.as_array().unwrap();
    assert_eq!(forks.len(), 3);
    let mut ids = Vec::new();
    for f in forks {
        assert!(f.get("error").is_none(), "{f}");
        let sb = &f["sandbox"];
        for k in [
            "sandboxID",
            "templateID",
            "envdAccessToken",
            "envdVersion",
            "clientID",
        ] {
            assert!(sb.get(k).is_some(), "missing {k} in {sb}");
        }
        let id = sb["sandboxID"].as_str().unwrap().to_string();
        assert_ne!(id, src.id);
        assert_eq!(
            std::fs::read_to_string(s.workspace(&id).join("state.txt")).unwrap(),
            "forked"
        );
        // Each fork is a sandbox of its own, with the metadata of its source
        // and its own deadline.
        let (st, d) = get(&s, &format!("/sandboxes/{id}")).await;
        assert_eq!(st, 200);
        assert_eq!(d["state"], "running");
        assert_eq!(d["metadata"]["k"], "v");
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    // The forks are independent of each other and of the source.
    std::fs::write(s.workspace(&ids[0]).join("state.txt"), "changed").unwrap();
    assert_eq!(
        std::fs::read_to_string(s.workspace(&ids[1]).join("state.txt")).unwrap(),
        "forked"
    );
    let (st, d) = get(&s, &format!("/sandboxes/{}", src.id)).await;
    assert_eq!((st, d["state"].as_str()), (200, Some("running")));
    assert_eq!(s.live(), 4);
    // The snapshot behind the fork is not listed as one of the team's, and
    // is not kept once the forks exist (this runtime's forks do not read it).
    let (st, l) = get(&s, "/snapshots").await;
    assert_eq!((st, l.as_array().map(Vec::len)), (200, Some(0)));
    let kept = s
        .control
        .list_snapshots(&godel_control::Caller::Admin, None)
        .unwrap();
    assert!(kept.is_empty(), "{kept:?}");
    // A default fork: one, with E2B's 15 s time to live.
    let (st, v) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/fork", src.id),
        json!({}),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let id = v[0]["sandbox"]["sandboxID"].as_str().unwrap();
    let (_, d) = get(&s, &format!("/sandboxes/{id}")).await;
    let start = chrono::DateTime::parse_from_rfc3339(d["startedAt"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(d["endAt"].as_str().unwrap()).unwrap();
    assert!((end - start).num_seconds() <= 20, "{d}");
}

#[tokio::test]
async fn fork_refuses_bad_counts_and_unknown_sandboxes() {
    let s = TestServer::start(ServeConfig::default()).await;
    let src = create(&s, json!({"templateID":"base"})).await;
    for body in [
        json!({"count":0}),
        json!({"count":65}),
        json!({"timeout":-1}),
    ] {
        let (st, v) = post(
            &s,
            &s.key,
            &format!("/sandboxes/{}/fork", src.id),
            body.clone(),
        )
        .await;
        assert_eq!(st, 400, "{body} -> {v}");
        assert_eq!(v["code"], 400);
    }
    let (st, _) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/fork", src.id),
        json!({"counts":2}),
    )
    .await;
    assert_eq!(st, 400, "unknown fields are refused");
    let (st, _) = post(&s, &s.key, "/sandboxes/rt-nope/fork", json!({})).await;
    assert_eq!(st, 404);
    // Another team's sandbox is as missing as a missing one.
    let (st, _) = post(
        &s,
        &s.other_key,
        &format!("/sandboxes/{}/fork", src.id),
        json!({}),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(s.live(), 1, "nothing was created by a refused fork");
}

#[tokio::test]
async fn snapshots_are_listed_started_from_and_deleted() {
    let s = TestServer::start(ServeConfig::default()).await;
    let src = create(&s, json!({"templateID":"base"})).await;
    std::fs::write(s.workspace(&src.id).join("a.txt"), "one").unwrap();
    let (st, snap) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/snapshots", src.id),
        json!({"name":"good-state"}),
    )
    .await;
    assert_eq!(st, 201, "{snap}");
    let snap_id = snap["snapshotID"].as_str().unwrap().to_string();
    assert_eq!(snap["names"], json!(["good-state"]));
    std::fs::write(s.workspace(&src.id).join("a.txt"), "two").unwrap();
    let (st, unnamed) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/snapshots", src.id),
        json!({}),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(unnamed["names"], json!([]));

    let (st, l) = get(&s, "/snapshots").await;
    assert_eq!(st, 200);
    assert_eq!(l.as_array().unwrap().len(), 2);
    let (_, l) = get(&s, &format!("/snapshots?sandboxID={}", src.id)).await;
    assert_eq!(l.as_array().unwrap().len(), 2);
    let (_, l) = get(&s, "/snapshots?name=team/good-state:default").await;
    assert_eq!(l, json!([{"snapshotID": snap_id, "names": ["good-state"]}]));
    let (_, l) = get(&s, "/snapshots?sandboxID=rt-other").await;
    assert_eq!(l, json!([]));
    let (_, l) = get(&s, "/snapshots?limit=1").await;
    assert_eq!(l.as_array().unwrap().len(), 1);

    // A sandbox from the snapshot, by id and by name, even after the source is gone.
    let r = reqwest::Client::new()
        .delete(format!("{}/sandboxes/{}", s.url, src.id))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for t in [snap_id.as_str(), "good-state", "good-state:default"] {
        let sb = create(&s, json!({"templateID": t, "metadata": {"from": t}})).await;
        assert_eq!(
            std::fs::read_to_string(s.workspace(&sb.id).join("a.txt")).unwrap(),
            "one"
        );
        let (_, d) = get(&s, &format!("/sandboxes/{}", sb.id)).await;
        assert_eq!(d["metadata"], json!({"from": t}));
    }
    let sb = create(&s, json!({"templateID": unnamed["snapshotID"]})).await;
    assert_eq!(
        std::fs::read_to_string(s.workspace(&sb.id).join("a.txt")).unwrap(),
        "two"
    );

    // Another team neither lists nor uses them.
    let r = reqwest::Client::new()
        .get(format!("{}/snapshots", s.url))
        .header("x-api-key", &s.other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let r = reqwest::Client::new()
        .delete(format!("{}/templates/{snap_id}", s.url))
        .header("x-api-key", &s.other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // delete_snapshot: 204, then 404.
    for want in [204, 404] {
        let r = reqwest::Client::new()
            .delete(format!("{}/templates/{snap_id}", s.url))
            .header("x-api-key", &s.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    let (_, l) = get(&s, "/snapshots").await;
    assert_eq!(l.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn snapshot_requests_godel_cannot_honour_are_refused() {
    let s = TestServer::start(ServeConfig::default()).await;
    let src = create(&s, json!({"templateID":"base"})).await;
    // The runtime keeps files, not memory.
    let (st, v) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/snapshots", src.id),
        json!({"memory":true}),
    )
    .await;
    assert_eq!(st, 400);
    assert!(v["message"].as_str().unwrap().contains("memory"), "{v}");
    let (st, _) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/snapshots", src.id),
        json!({"memory":false}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, v) = post(
        &s,
        &s.key,
        &format!("/sandboxes/{}/snapshots", src.id),
        json!({"name":"Bad Name"}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("Bad Name"), "{v}");
    let (st, _) = post(&s, &s.key, "/sandboxes/rt-nope/snapshots", json!({})).await;
    assert_eq!(st, 404);
    let (st, _) = post(
        &s,
        &s.other_key,
        &format!("/sandboxes/{}/snapshots", src.id),
        json!({}),
    )
    .await;
    assert_eq!(st, 404);
}

async fn call(
    s: &TestServer,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", s.url))
        .header("x-api-key", key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn volumes_are_team_directories_mounted_on_create() {
    use reqwest::Method;
    let s = TestServer::start(ServeConfig::default()).await;
    let (st, v) = call(
        &s,
        &s.key,
        Method::POST,
        "/volumes",
        Some(json!({"name":"data"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let id = v["volumeID"].as_str().unwrap().to_string();
    assert!(v["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(v["name"], "data");
    let (st, _) = call(
        &s,
        &s.key,
        Method::POST,
        "/volumes",
        Some(json!({"name":"data"})),
    )
    .await;
    assert_eq!(st, 409, "a second volume of the same name");
    for bad in [
        json!({"name":"a/b"}),
        json!({"name":""}),
        json!({}),
        json!({"name":"x","size":1}),
    ] {
        let (st, _) = call(&s, &s.key, Method::POST, "/volumes", Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad}");
    }
    let (_, l) = call(&s, &s.key, Method::GET, "/volumes", None).await;
    assert_eq!(l, json!([{"volumeID": id, "name": "data"}]));
    let (st, v) = call(&s, &s.key, Method::GET, &format!("/volumes/{id}"), None).await;
    assert_eq!((st, v["name"].as_str()), (200, Some("data")));
    // Another team neither sees nor uses it; its own "data" is another directory.
    let (_, l) = call(&s, &s.other_key, Method::GET, "/volumes", None).await;
    assert_eq!(l, json!([]));
    let (st, _) = call(
        &s,
        &s.other_key,
        Method::GET,
        &format!("/volumes/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 404);

    // volumeMounts become the spawn's volumes: the team's directory, read-write, at the path.
    let sb = create(
        &s,
        json!({"templateID":"base","volumeMounts":[{"name":"data","path":"/mnt/data"}]}),
    )
    .await;
    let rec = s
        .control
        .visible_sandbox(&godel_control::Caller::Admin, &sb.id)
        .unwrap();
    assert_eq!(rec.spec.volumes.len(), 1);
    let vol = &rec.spec.volumes[0];
    assert_eq!(
        (vol.name.as_str(), vol.destination.as_str(), vol.read_only),
        ("data", "/mnt/data", false)
    );
    assert!(std::path::Path::new(&vol.source).is_dir());
    assert!(vol.source.contains("alpha"), "{}", vol.source);
    // Unknown volumes, another team's, bad shapes and a path twice are refused.
    for (key, body) in [
        (
            &s.key,
            json!({"templateID":"base","volumeMounts":[{"name":"nope","path":"/mnt/x"}]}),
        ),
        (
            &s.other_key,
            json!({"templateID":"base","volumeMounts":[{"name":"data","path":"/mnt/x"}]}),
        ),
        (
            &s.key,
            json!({"templateID":"base","volumeMounts":{"name":"data"}}),
        ),
        (
            &s.key,
            json!({"templateID":"base","volumeMounts":[{"name":"data","path":"/a"},{"name":"data","path":"/a"}]}),
        ),
    ] {
        let (st, v) = call(&s, key, Method::POST, "/v2/sandboxes", Some(body.clone())).await;
        assert_eq!(st, 400, "{body} -> {v}");
        assert!(
            v["message"].as_str().unwrap().starts_with("volumeMounts"),
            "{v}"
        );
    }
    // A mounted volume is not deleted under its sandbox.
    let (st, v) = call(&s, &s.key, Method::DELETE, &format!("/volumes/{id}"), None).await;
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains(&sb.id));
    let (st, _) = call(
        &s,
        &s.key,
        Method::DELETE,
        &format!("/sandboxes/{}", sb.id),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = call(&s, &s.key, Method::DELETE, &format!("/volumes/{id}"), None).await;
    assert_eq!(st, 204);
    let (st, _) = call(&s, &s.key, Method::DELETE, &format!("/volumes/{id}"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn template_builds_are_refused_by_name() {
    use reqwest::Method;
    let s = TestServer::start(ServeConfig::default()).await;
    for (m, path) in [
        (Method::POST, "/v2/templates"),
        (Method::GET, "/templates/t/builds/b/logs"),
    ] {
        let (st, v) = call(&s, &s.key, m, path, Some(json!({"name":"x"}))).await;
        assert_eq!(st, 501, "{path}");
        assert!(
            v["message"].as_str().unwrap().contains("template builds"),
            "{v}"
        );
    }
    // Template.build()'s routes are served: a build nobody opened is 404,
    // a registry image and tags are refused naming them.
    let (st, v) = call(
        &s,
        &s.key,
        Method::GET,
        "/templates/t/builds/b/status",
        None,
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = call(
        &s,
        &s.key,
        Method::POST,
        "/v3/templates",
        Some(json!({"name": "x:v1"})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("tags"), "{v}");
    let (st, v) = call(
        &s,
        &s.key,
        Method::POST,
        "/v3/templates",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let build = v["buildID"].as_str().unwrap().to_string();
    // A COPY step's files go to a signed URL, PUT without a key (as the SDKs
    // do with a presigned bucket URL); the URL is good for that hash only.
    let hash = "ab".repeat(32);
    let (st, v) = call(
        &s,
        &s.key,
        Method::GET,
        &format!("/templates/x/files/{hash}"),
        None,
    )
    .await;
    assert_eq!((st, v["present"].as_bool()), (201, Some(false)), "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    assert!(url.contains("sig="), "{url}");
    let put = |u: String| async move {
        reqwest::Client::new()
            .put(u)
            .body(b"not a tar".to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put(url.replace(&hash, &"cd".repeat(32))).await, 403);
    assert_eq!(put(url.replace("team=alpha", "team=beta")).await, 403);
    assert_eq!(put(url.clone()).await, 200);
    let (st, v) = call(
        &s,
        &s.key,
        Method::GET,
        &format!("/templates/x/files/{hash}"),
        None,
    )
    .await;
    assert_eq!((st, v["present"].as_bool()), (201, Some(true)), "{v}");
    let (st, v) = call(
        &s,
        &s.key,
        Method::POST,
        &format!("/v2/templates/x/builds/{build}"),
        Some(json!({"fromImage": "ubuntu:22.04", "steps": [{"type": "RUN", "args": ["true"]}]})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("ubuntu:22.04"),
        "{v}"
    );
    // Template.exists: the built-in names are public, unknown ones 404.
    let (st, v) = call(&s, &s.key, Method::GET, "/templates/aliases/base", None).await;
    assert_eq!((st, v["public"].as_bool()), (200, Some(true)), "{v}");
    let (st, _) = call(&s, &s.key, Method::GET, "/templates/aliases/nope", None).await;
    assert_eq!(st, 404);
    // Deleting a template that is not a snapshot: 404.
    let (st, _) = call(&s, &s.key, Method::DELETE, "/templates/nope", None).await;
    assert_eq!(st, 404);
}
