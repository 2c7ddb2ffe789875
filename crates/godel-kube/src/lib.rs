//! godel-kube (placeholder until its issue lands).
