//! The `/v1` routes. Each handler parses the request into one call on
//! `Control` and renders the result; no policy lives here. The table in
//! [`ROUTES`] is the single source for both the router and the OpenAPI
//! document, so the two cannot drift.

mod admin;
mod costs;
mod dashboard;
mod events;
mod files;
mod ports;
mod replicas;
mod runtimes;
mod snapshots;
mod templates;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use godel_control::Control;

/// Largest JSON body accepted.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;
/// Largest file or tar upload accepted in one request.
pub const FILE_BODY_LIMIT: usize = 1024 * 1024 * 1024;

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Request body: a schema name, `bytes`, or empty.
    pub request: &'static str,
    /// Success response: a schema name, `bytes`, `sse:<schema>`, or empty.
    pub response: &'static str,
    pub status: u16,
}

macro_rules! r {
    ($m:literal, $p:literal, $s:literal, $req:literal, $resp:literal, $st:literal) => {
        RouteDoc {
            method: $m,
            path: $p,
            summary: $s,
            request: $req,
            response: $resp,
            status: $st,
        }
    };
}

/// Every `/v1` route with its documentation.
pub const ROUTES: &[RouteDoc] = &[
    r!(
        "get",
        "/v1/health",
        "Liveness of the daemon",
        "",
        "Health",
        200
    ),
    r!(
        "get",
        "/v1/doctor",
        "Which runtimes are available here, and why not; for an admin, a last entry of kind database: the store's engine, location, schema version and whether it answers",
        "",
        "RuntimeReport[]",
        200
    ),
    r!(
        "post",
        "/v1/runtimes",
        "Spawn a runtime (?wait_secs=N waits in the team's fair queue when its quota is full)",
        "SpawnSpec",
        "SandboxInfo",
        201
    ),
    r!(
        "get",
        "/v1/runtimes",
        "List runtimes (?all=true includes stopped ones)",
        "",
        "SandboxInfo[]",
        200
    ),
    r!(
        "get",
        "/v1/runtimes/{id}",
        "Status of a runtime, with usage",
        "",
        "SandboxInfo",
        200
    ),
    r!(
        "delete",
        "/v1/runtimes/{id}",
        "Terminate a runtime (?snapshot=true snapshots it first)",
        "",
        "SandboxInfo",
        200
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/pause",
        "Pause a runtime",
        "",
        "SandboxInfo",
        200
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/resume",
        "Resume a paused runtime",
        "",
        "SandboxInfo",
        200
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/ttl",
        "Set the time to live from now (ttl_secs), or clear it (null)",
        "TtlRequest",
        "SandboxInfo",
        200
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/wait",
        "Wait for a state (?state=running&timeout_ms=N)",
        "",
        "SandboxInfo",
        200
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/exec",
        "Run a command and return its buffered output",
        "ExecRequest",
        "ExecOutput",
        200
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/exec/stream",
        "Run a command, streaming ExecEvents over SSE",
        "ExecRequest",
        "sse:ExecEvent",
        200
    ),
    r!(
        "get",
        "/v1/runtimes/{id}/files",
        "Read a file (?path=)",
        "",
        "bytes",
        200
    ),
    r!(
        "put",
        "/v1/runtimes/{id}/files",
        "Write a file, creating parents (?path=)",
        "bytes",
        "",
        204
    ),
    r!(
        "delete",
        "/v1/runtimes/{id}/files",
        "Remove a file or directory (?path=&recursive=true)",
        "",
        "",
        204
    ),
    r!(
        "get",
        "/v1/runtimes/{id}/ls",
        "List a directory (?path=)",
        "",
        "FileEntry[]",
        200
    ),
    r!(
        "get",
        "/v1/runtimes/{id}/stat",
        "Stat a path (?path=)",
        "",
        "FileEntry",
        200
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/mkdir",
        "Create a directory with parents (?path=)",
        "",
        "",
        204
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/rename",
        "Rename (?from=&to=)",
        "",
        "",
        204
    ),
    r!(
        "get",
        "/v1/runtimes/{id}/tar",
        "Download a directory as tar (?path=)",
        "",
        "bytes",
        200
    ),
    r!(
        "put",
        "/v1/runtimes/{id}/tar",
        "Unpack a tar into a directory (?path=)",
        "bytes",
        "",
        204
    ),
    r!(
        "post",
        "/v1/runtimes/{id}/snapshots",
        "Snapshot a runtime",
        "SnapshotRequest",
        "SnapshotInfo",
        201
    ),
    r!(
        "get",
        "/v1/snapshots",
        "List snapshots (?runtime_id=)",
        "",
        "SnapshotInfo[]",
        200
    ),
    r!(
        "get",
        "/v1/snapshots/{id}",
        "One snapshot",
        "",
        "SnapshotInfo",
        200
    ),
    r!(
        "delete",
        "/v1/snapshots/{id}",
        "Delete a snapshot",
        "",
        "",
        204
    ),
    r!(
        "post",
        "/v1/snapshots/{id}/restore",
        "A new runtime from a snapshot",
        "",
        "SandboxInfo",
        201
    ),
    r!(
        "post",
        "/v1/snapshots/{id}/fork",
        "N new runtimes from a snapshot",
        "ForkRequest",
        "SandboxInfo[]",
        201
    ),
    r!(
        "get",
        "/v1/events",
        "Event stream over SSE (?since=SEQ)",
        "",
        "sse:Event",
        200
    ),
    r!(
        "get",
        "/v1/events/log",
        "Stored events as one JSON array (?since=SEQ&team=&kind=&limit=)",
        "",
        "Event[]",
        200
    ),
    r!(
        "get",
        "/v1/usage",
        "Usage and cost (?team=&since=YYYY-MM-DD&by=agent|runtime|day); a team sees its own",
        "",
        "UsageReport",
        200
    ),
    r!(
        "get",
        "/v1/budgets",
        "Budgets with their spend this period (?team=)",
        "",
        "BudgetStatus[]",
        200
    ),
    r!(
        "post",
        "/v1/budgets",
        "Set a team's (or agent's) budget (admin)",
        "BudgetRequest",
        "BudgetStatus",
        200
    ),
    r!(
        "delete",
        "/v1/budgets/{team}",
        "Remove a budget (?agent=) (admin)",
        "",
        "",
        204
    ),
    r!(
        "post",
        "/v1/migrations",
        "Move running agents to another runtime (dry_run: the plan and its cost change)",
        "MigrateRequest",
        "MigrationReport",
        200
    ),
    r!(
        "get",
        "/v1/rollouts",
        "Canary rollouts with per-step counters",
        "",
        "Rollout[]",
        200
    ),
    r!(
        "post",
        "/v1/rollouts",
        "Start a canary rollout of a team's new spawns to a runtime",
        "RolloutRequest",
        "Rollout",
        201
    ),
    r!(
        "post",
        "/v1/rollouts/{team}/{action}",
        "pause, resume or rollback a team's rollout",
        "",
        "Rollout",
        200
    ),
    r!(
        "get",
        "/v1/overview",
        "Agents by team, runtime and state; spawn and error rates (?window_secs=300); circuit breakers, warm-pool fill, queue depth",
        "",
        "Overview",
        200
    ),
    r!(
        "get",
        "/v1/runtimes/{id}/activity",
        "One agent's status, state history, recent commands, usage samples and events",
        "",
        "AgentActivity",
        200
    ),
    r!(
        "get",
        "/v1/benchmarks",
        "The latest `godel bench` result of each suite",
        "",
        "BenchResult[]",
        200
    ),
    r!("get", "/v1/teams", "List teams", "", "TeamRecord[]", 200),
    r!(
        "post",
        "/v1/teams",
        "Create a team (admin)",
        "TeamRecord",
        "TeamRecord",
        201
    ),
    r!(
        "delete",
        "/v1/teams/{name}",
        "Remove a team (admin)",
        "",
        "",
        204
    ),
    r!(
        "get",
        "/v1/replicas",
        "The shared store, the replica answering (me) and every replica with its lease and the sandboxes it owns (admin)",
        "",
        "ReplicasReport",
        200
    ),
    r!(
        "get",
        "/v1/tokens",
        "List tokens (never their secrets)",
        "",
        "TokenRecord[]",
        200
    ),
    r!(
        "post",
        "/v1/tokens",
        "Create a token, shown once (admin)",
        "TokenRequest",
        "CreatedToken",
        201
    ),
    r!(
        "delete",
        "/v1/tokens/{id}",
        "Revoke a token by id or value (admin)",
        "",
        "TokenRecord",
        200
    ),
    r!(
        "get",
        "/v1/runtimes/{id}/ports/{port}",
        "Whether a port inside a runtime answers; with Connection: upgrade and Upgrade: tcp, a raw byte tunnel to it (101)",
        "",
        "PortInfo",
        200
    ),
    r!(
        "get",
        "/metrics",
        "Prometheus/OpenMetrics metrics (admin)",
        "",
        "text",
        200
    ),
    r!("get", "/v1/openapi.json", "This document", "", "json", 200),
    r!(
        "post",
        "/v1/templates",
        "Build a template from a Dockerfile: the body is the build context as a tar holding the Dockerfile (query: name, dockerfile, team, network); answers when the build is done, with its steps and log",
        "bytes",
        "TemplateBuild",
        201
    ),
    r!(
        "get",
        "/v1/templates",
        "List the templates the caller's team built (all for an admin)",
        "",
        "TemplateInfo[]",
        200
    ),
    r!(
        "get",
        "/v1/templates/{name}",
        "One template of the caller's team",
        "",
        "TemplateInfo",
        200
    ),
    r!(
        "delete",
        "/v1/templates/{name}",
        "Remove a template (its layers stay as build cache)",
        "",
        "",
        204
    ),
];

/// The `/v1` router (without auth layers).
pub fn router(control: Arc<Control>) -> Router {
    let files = Router::new()
        .route(
            "/v1/runtimes/{id}/files",
            get(files::read).put(files::write).delete(files::remove),
        )
        .route(
            "/v1/runtimes/{id}/tar",
            get(files::download_tar).put(files::upload_tar),
        )
        .route("/v1/templates", post(templates::build).get(templates::list))
        .layer(DefaultBodyLimit::max(FILE_BODY_LIMIT));
    Router::new()
        .route(
            "/v1/templates/{name}",
            get(templates::get).delete(templates::remove),
        )
        .route("/v1/health", get(admin::health))
        .route("/v1/doctor", get(admin::doctor))
        .route("/v1/runtimes", post(runtimes::spawn).get(runtimes::list))
        .route(
            "/v1/runtimes/{id}",
            get(runtimes::status).delete(runtimes::terminate),
        )
        .route("/v1/runtimes/{id}/pause", post(runtimes::pause))
        .route("/v1/runtimes/{id}/resume", post(runtimes::resume))
        .route("/v1/runtimes/{id}/ttl", post(runtimes::set_ttl))
        .route("/v1/runtimes/{id}/wait", post(runtimes::wait))
        .route("/v1/runtimes/{id}/exec", post(runtimes::exec))
        .route("/v1/runtimes/{id}/exec/stream", post(runtimes::exec_stream))
        .route("/v1/runtimes/{id}/ls", get(files::list))
        .route("/v1/runtimes/{id}/stat", get(files::stat))
        .route("/v1/runtimes/{id}/mkdir", post(files::mkdir))
        .route("/v1/runtimes/{id}/rename", post(files::rename))
        .route("/v1/runtimes/{id}/ports/{port}", get(ports::port))
        .route("/v1/runtimes/{id}/snapshots", post(snapshots::create))
        .route("/v1/snapshots", get(snapshots::list))
        .route(
            "/v1/snapshots/{id}",
            get(snapshots::get).delete(snapshots::remove),
        )
        .route("/v1/snapshots/{id}/restore", post(snapshots::restore))
        .route("/v1/snapshots/{id}/fork", post(snapshots::fork))
        .route("/v1/events", get(events::stream))
        .route("/v1/events/log", get(costs::event_log))
        .route("/v1/usage", get(costs::usage))
        .route(
            "/v1/budgets",
            get(costs::list_budgets).post(costs::set_budget),
        )
        .route("/v1/budgets/{team}", delete(costs::delete_budget))
        .route("/v1/migrations", post(costs::migrate))
        .route(
            "/v1/rollouts",
            get(costs::list_rollouts).post(costs::start_rollout),
        )
        .route("/v1/rollouts/{team}/{action}", post(costs::control_rollout))
        .route("/v1/overview", get(dashboard::overview))
        .route("/v1/runtimes/{id}/activity", get(dashboard::activity))
        .route("/v1/benchmarks", get(dashboard::benchmarks))
        .route("/v1/teams", get(admin::list_teams).post(admin::create_team))
        .route("/v1/teams/{name}", delete(admin::delete_team))
        .route(
            "/v1/tokens",
            get(admin::list_tokens).post(admin::create_token),
        )
        .route("/v1/tokens/{id}", delete(admin::revoke_token))
        .route("/v1/replicas", get(replicas::list))
        .route("/metrics", get(admin::metrics))
        .route("/v1/openapi.json", get(admin::openapi))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .merge(files)
        .with_state(control)
}
