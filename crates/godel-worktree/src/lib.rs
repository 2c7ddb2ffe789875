//! godel-worktree (placeholder until its issue lands).
