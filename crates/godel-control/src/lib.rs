//! godel-control (placeholder until its issue lands).
