//! godel-e2b (placeholder until its issue lands).
