//! godel-microvm (placeholder until its issue lands).
