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
    let list: Vec<SandboxInfo> = ctx
        .client
        .json(
            Method::POST,
            &format!("/v1/snapshots/{snap}/fork"),
            Some(&json!({"count": count})),
        )
        .await?;
    if ctx.json {
        output::json(&list);
    } else {
        for i in list {
            println!("{}", i.id);
        }
    }
    Ok(0)
}
