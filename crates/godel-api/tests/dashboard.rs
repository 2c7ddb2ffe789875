//! The dashboard's side of the TCP app over the real control plane and
//! godel-testkit's `FakeRuntime`: `/ui` answers without a token with the
//! embedded page and a strict CSP, while everything it reads stays behind
//! the bearer token; `/v1/overview` counts a team's own agents only;
//! `/v1/runtimes/{id}/activity` lists the commands run (argv, exit code,
//! duration) and the state history, and is `NOT_FOUND` to another team;
//! `/v1/benchmarks` lists saved results.

use std::sync::Arc;

use godel_control::{Caller, Control, Settings, event_channel};
use godel_core::{ExecRequest, SpawnSpec};
use godel_testkit::FakeRuntime;
use serde_json::Value;

struct Server {
    url: String,
    control: Arc<Control>,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        config: godel_policy::config::from_toml_str_with(
            "[defaults]\nfallback = [\"worktree\"]\n",
            &Default::default(),
            &["worktree"],
        )
        .unwrap(),
        ..Settings::default()
    };
    let control = Control::with_store(
        dir.path(),
        godel_control::Store::open_scratch().unwrap(),
        settings,
    )
    .unwrap();
    let (_sink, rx) = event_channel();
    control.attach_event_receiver(rx);
    control.register(Arc::new(FakeRuntime::new("worktree")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let c = control.clone();
    tokio::spawn(async move {
        let _ = godel_api::serve_tcp(listener, c, std::future::pending()).await;
    });
    Server {
        url,
        control,
        _dir: dir,
    }
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn pages_are_public_and_their_data_is_scoped() {
    let s = server().await;
    let token = |team: &str| {
        s.control
            .create_token(&Caller::Admin, Some(team), false)
            .unwrap()
            .token
    };
    let (alpha, beta) = (token("alpha"), token("beta"));

    // The page itself needs no token and carries its CSP; data does.
    let page = reqwest::get(format!("{}/ui/", s.url)).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(page.text().await.unwrap().contains("Sign in"));
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.headers()["location"], "/ui/");
    let (status, body) = get(&format!("{}/v1/overview", s.url), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );

    // An agent of alpha with two commands.
    let caller = Caller::Team("alpha".into());
    let info = s
        .control
        .spawn(
            &caller,
            SpawnSpec {
                team: Some("alpha".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ok = ExecRequest::new(["sh", "-c", "echo hi"]);
    s.control.exec_collect(&caller, &info.id, ok).await.unwrap();
    let bad = ExecRequest::new(["sh", "-c", "exit 3"]);
    let out = s
        .control
        .exec_collect(&caller, &info.id, bad)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);

    let (status, o) = get(&format!("{}/v1/overview", s.url), Some(&alpha)).await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(o["total"], 1);
    assert_eq!(o["agents"][0]["team"], "alpha");
    assert_eq!(o["spawns"]["ok"], 1);
    assert_eq!(o["teams"][0]["team"], "alpha");
    let (_, o) = get(&format!("{}/v1/overview", s.url), Some(&beta)).await;
    assert_eq!(o["total"], 0);
    assert_eq!(o["spawns"]["ok"], 0, "beta sees alpha's spawn: {o}");
    let (status, body) = get(
        &format!("{}/v1/overview?window_secs=0", s.url),
        Some(&alpha),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );

    let act = format!("{}/v1/runtimes/{}/activity", s.url, info.id);
    let (status, a) = get(&act, Some(&alpha)).await;
    assert_eq!(status, 200, "{a}");
    let execs = a["execs"].as_array().unwrap();
    assert_eq!(execs.len(), 2);
    assert_eq!(execs[0]["cmd"], serde_json::json!(["sh", "-c", "exit 3"]));
    assert_eq!(execs[0]["exit_code"], 3);
    assert_eq!(execs[1]["exit_code"], 0);
    assert!(execs[0]["duration_ms"].is_u64());
    let states: Vec<&str> = a["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["data"]["state"].as_str())
        .collect();
    assert_eq!(states, ["creating", "running"]);
    let (status, body) = get(&act, Some(&beta)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));

    // Benchmarks: none, then the saved one.
    let (_, b) = get(&format!("{}/v1/benchmarks", s.url), Some(&alpha)).await;
    assert_eq!(b, serde_json::json!([]));
    let dir = s.control.home().join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spawn.json"), r#"{"spawn":{"n":1,"p50_ms":2.0}}"#).unwrap();
    std::fs::write(dir.join("broken.json"), "not json").unwrap();
    let (_, b) = get(&format!("{}/v1/benchmarks", s.url), Some(&alpha)).await;
    assert_eq!(b.as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b[0]["suite"], "spawn");
    assert_eq!(b[0]["result"]["spawn"]["p50_ms"], 2.0);
}
