//! godel-e2b: E2B's wire protocol and the `e2b` runtime.
//!
//! - [`wire`]: the control-plane REST shapes ([`platform`]: fork,
//!   snapshots, volumes); [`pb`]: the envd protobuf
//!   types (generated at build time); [`connect`]: the Connect protocol codec
//!   (unary and streaming, JSON and binary, error codes, deadlines).
//! - [`provider`]: the `e2b` runtime, a [`godel_core::RuntimeProvider`] that
//!   drives sandboxes on a remote E2B-compatible endpoint (E2B's cloud or
//!   another godel).
//!
//! Serving the E2B API (so the official SDKs drive godel sandboxes) is a
//! transport like the native REST API and lives beside it in `godel-api`.

pub mod connect;
pub mod pb;
pub mod platform;
pub mod provider;
pub mod wire;

pub use provider::{E2bConfig, E2bProvider};
