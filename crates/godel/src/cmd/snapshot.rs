//! snapshot create/ls/rm, restore, fork.

use godel_core::{Result, SandboxInfo, SnapshotInfo, SnapshotRequest};
use http::Method;
use serde_json::json;

use crate::Ctx;
use crate::cli::SnapshotCmd;
use crate::client::enc;
use crate::output;

pub async fn run(ctx: &Ctx, cmd: SnapshotCmd) -> Result<i32> {
    match cmd {
        SnapshotCmd::Create { id, name } => {
            let req = SnapshotRequest {
                name,
                ..Default::default()
            };
            let s: SnapshotInfo = ctx
                .client
                .json(
                    Method::POST,
                    &format!("/v1/runtimes/{id}/snapshots"),
                    Some(&req),
                )
                .await?;
            if ctx.json {
                output::json(&s);
            } else {
                eprintln!(
                    "snapshot of {} ({}, {})",
                    s.runtime_id,
                    s.kind,
                    godel_core::ByteQuantity(s.size_bytes)
                );
                println!("{}", s.id);
            }
        }
        SnapshotCmd::Ls { id } => {
            let path = match id {
                Some(id) => format!("/v1/snapshots?runtime_id={}", enc(&id)),
                None => "/v1/snapshots".to_string(),
            };
            let list: Vec<SnapshotInfo> = ctx.client.json(Method::GET, &path, None::<&()>).await?;
            if ctx.json {
                output::json(&list);
            } else {
                output::snapshots(&list);
            }
        }
        SnapshotCmd::Rm { snapshot } => {
            let _: serde_json::Value = ctx
                .client
                .json(
                    Method::DELETE,
                    &format!("/v1/snapshots/{snapshot}"),
                    None::<&()>,
                )
                .await?;
            if ctx.json {
                output::json(&json!({"deleted": snapshot}));
            } else {
                println!("{snapshot} deleted");
            }
        }
    }
    Ok(0)
}

pub async fn restore(ctx: &Ctx, snap: &str) -> Result<i32> {
    let info: SandboxInfo = ctx
        .client
        .json(
            Method::POST,
            &format!("/v1/snapshots/{snap}/restore"),
            None::<&()>,
        )
        .await?;
    if ctx.json {
        output::json(&info);
    } else {
        println!("{}", info.id);
    }
    Ok(0)
}

pub async fn fork(ctx: &Ctx, snap: &str, count: usize) -> Result<i32> {
    let t = std::time::Instant::now();
    let list: Vec<SandboxInfo> = ctx
        .client
        .json(
            Method::POST,
            &format!("/v1/snapshots/{snap}/fork"),
            Some(&json!({"count": count})),
        )
        .await?;
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    let per_fork_ms = total_ms / list.len().max(1) as f64;
    if ctx.json {
        output::json(&json!({
            "snapshot": snap,
            "count": list.len(),
            "total_ms": (total_ms * 10.0).round() / 10.0,
            "per_fork_ms": (per_fork_ms * 10.0).round() / 10.0,
            "runtimes": list,
        }));
    } else {
        // Ids on stdout (one a line, for scripts); the timing on stderr.
        for i in &list {
            println!("{}", i.id);
        }
        eprintln!(
            "{} forks of {snap} in {total_ms:.0} ms ({per_fork_ms:.1} ms per fork)",
            list.len()
        );
    }
    Ok(0)
}
