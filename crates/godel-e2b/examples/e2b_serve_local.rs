//! Serves the E2B-compatible API over the host-directory test backend, for
//! running the official SDK scenarios (`tests/e2b_sdk`) without a daemon:
//!
//! ```text
//! cargo run -p godel-e2b --example e2b_serve_local -- --listen 127.0.0.1:3049 --key e2b_test
//! E2B_API_URL=http://127.0.0.1:3049 E2B_SANDBOX_URL=http://127.0.0.1:3049 \
//!   E2B_API_KEY=e2b_test python tests/e2b_sdk/scenario.py
//! ```
//!
//! Sandboxes are directories under `--root` (a temporary directory by
//! default) and commands run as the current user: trusted local use only.
//! With `--upstream URL --upstream-key KEY` the sandboxes live on another
//! E2B-compatible endpoint instead, driven through the `e2b` runtime.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use godel_e2b::ServeConfig;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:3049".into());
    let key = arg(&args, "--key").unwrap_or_else(|| "e2b_test".into());
    let tmp = tempfile::tempdir()?;
    let root = arg(&args, "--root")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    // `--upstream URL --upstream-key KEY`: sandboxes live on another
    // E2B-compatible endpoint, driven through the `e2b` runtime.
    let backend: Arc<dyn godel_e2b::E2bBackend> = match arg(&args, "--upstream") {
        Some(up) => {
            let provider = godel_e2b::E2bProvider::new(
                godel_e2b::E2bConfig {
                    api_key: arg(&args, "--upstream-key"),
                    api_url: Some(up.clone()),
                    sandbox_url: Some(up),
                    ..godel_e2b::E2bConfig::default()
                },
                godel_core::null_sink(),
            )?;
            Arc::new(common::chain::ProviderBackend::new(
                Arc::new(provider),
                &[(key.as_str(), "local")],
            ))
        }
        None => Arc::new(common::HostBackend::new(
            root.clone(),
            &[(key.as_str(), "local")],
        )),
    };
    let cfg = ServeConfig {
        domain: arg(&args, "--domain"),
        ..ServeConfig::default()
    };
    let app = godel_e2b::router(backend, cfg);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "e2b_serve_local: listening on http://{} (sandboxes under {})",
        listener.local_addr()?,
        root.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
