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

pub mod connect;
pub mod pb;
pub mod provider;
pub mod serve;
pub mod wire;

pub use provider::{E2bConfig, E2bProvider};
pub use serve::{E2bBackend, E2bServer, ServeConfig, router};
