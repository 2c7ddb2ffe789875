//! godel-e2b: E2B compatibility for godel, in both directions.
//!
//! - [`wire`]: the control-plane REST shapes; [`pb`]: the envd protobuf
//!   types (generated at build time); [`connect`]: the Connect protocol codec
//!   (unary and streaming, JSON and binary, error codes, deadlines).
//! - [`serve`]: the E2B-compatible server, so the official `e2b` SDKs drive
//!   godel sandboxes unchanged ([`serve::router`] over an [`E2bBackend`]).
//! - [`provider`]: the `e2b` runtime, a [`godel_core::RuntimeProvider`] that
//!   drives sandboxes on a remote E2B-compatible endpoint (E2B's cloud or
//!   another godel).

//!
//! # Wiring it into the daemon
//!
//! ```ignore
//! // `godel serve --e2b-listen ADDR`: one listener serves REST and envd.
//! let backend: Arc<dyn godel_e2b::E2bBackend> = Arc::new(ControlPlaneE2b { .. });
//! let cfg = godel_e2b::ServeConfig {
//!     token_secret: stored_secret,           // stable across restarts
//!     domain: Some("sandbox.example".into()), // optional Host routing
//!     ..Default::default()
//! };
//! axum::serve(listener, godel_e2b::router(backend, cfg)).await?;
//!
//! // The `e2b` runtime:
//! let e2b = godel_e2b::E2bProvider::new(godel_e2b::E2bConfig::default(), events)?;
//! providers.push(Arc::new(e2b) as Arc<dyn RuntimeProvider>);
//! ```
//!
//! Clients then set `E2B_API_URL=http://ADDR E2B_SANDBOX_URL=http://ADDR
//! E2B_API_KEY=<team token>`.

pub mod connect;
pub mod pb;
pub mod provider;
pub mod serve;
pub mod wire;

pub use provider::{E2bConfig, E2bProvider};
pub use serve::{E2bBackend, E2bServer, ServeConfig, router};
