//! The E2B-compatible server as the daemon runs it: the real control plane
//! (SQLite store, teams, tokens, snapshots, reaper) over one real runtime
//! — by default godel-testkit's `FakeRuntime`, whose sandboxes are host
//! directories and whose commands are real processes — served over HTTP on
//! loopback. Nothing here is a mock of the E2B surface.

#![allow(dead_code)]

pub mod client;

use std::path::PathBuf;
use std::sync::Arc;

use godel_api::e2b::{E2bServer, ServeConfig};
use godel_control::{Caller, Control, Settings, event_channel};
use godel_core::RuntimeProvider;
use godel_testkit::FakeRuntime;

/// A server on a loopback port over a fresh control plane.
pub struct TestServer {
    pub url: String,
    pub control: Arc<Control>,
    /// The runtime behind the server when it is the fake (else `None`).
    pub fake: Option<Arc<FakeRuntime>>,
    pub server: E2bServer,
    /// An API key of team `alpha`, and one of team `beta`.
    pub key: String,
    pub other_key: String,
    pub task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

const CONFIG: &str = r#"
[defaults]
runtime = "worktree"
fallback = ["worktree"]
"#;

impl TestServer {
    /// Serve over a fresh `FakeRuntime` registered as `worktree`. The reaper
    /// is not started: tests call `control.reap_expired` with the time they want.
    pub async fn start(cfg: ServeConfig) -> TestServer {
        let fake = Arc::new(FakeRuntime::new("worktree"));
        let f = fake.clone();
        let mut s =
            TestServer::build(cfg, "worktree", move |_, _| f as Arc<dyn RuntimeProvider>).await;
        s.fake = Some(fake);
        s
    }

    /// Serve over one runtime, `name`, the default and only one. `make` gets the server's own URL and team `alpha`'s key (so a
    /// runtime may even point back at the server itself).
    pub async fn build(
        cfg: ServeConfig,
        name: &str,
        make: impl FnOnce(&str, &str) -> Arc<dyn RuntimeProvider>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let settings = Settings {
            default_runtime: name.to_string(),
            config: godel_policy::config::from_toml_str_with(
                &CONFIG.replace("worktree", name),
                &Default::default(),
                &[name],
            )
            .expect("config"),
            ..Settings::default()
        };
        let control = Control::with_store(
            dir.path(),
            godel_control::Store::open_scratch().unwrap(),
            settings,
        )
        .expect("control");
        let (_sink, rx) = event_channel();
        control.attach_event_receiver(rx);
        let token = |team: &str| {
            control
                .create_token(&Caller::Admin, Some(team), false)
                .expect("token")
                .token
        };
        let (key, other_key) = (token("alpha"), token("beta"));
        let provider = make(&url, &key);
        assert_eq!(provider.name(), name);
        control.register(provider);
        let server = E2bServer::new(control.clone(), cfg);
        server.follow_events();
        let app = server.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer {
            url,
            control,
            fake: None,
            server,
            key,
            other_key,
            task,
            _dir: dir,
        }
    }

    /// The host directory of a sandbox of the fake runtime.
    pub fn workspace(&self, id: &str) -> PathBuf {
        self.fake
            .as_ref()
            .and_then(|f| f.dir(id))
            .expect("a sandbox of the fake runtime")
    }

    /// How many sandboxes the runtime holds.
    pub fn live(&self) -> usize {
        self.fake.as_ref().map(|f| f.live().len()).unwrap_or(0)
    }
}
