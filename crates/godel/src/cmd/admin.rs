//! token, team, doctor, config check.

use godel_control::{RuntimeReport, TeamRecord, TokenRecord};
use godel_core::{ErrorCode, Result, parse_bytes, parse_cpu};
use http::Method;
use serde_json::{Value, json};

use crate::Ctx;
use crate::cli::{TeamCmd, TokenCmd};
use crate::output;

pub async fn token(ctx: &Ctx, cmd: TokenCmd) -> Result<i32> {
    match cmd {
        TokenCmd::Create {
            team,
            admin,
            format,
        } => {
            let mut body = json!({"team": team, "admin": admin});
            if let Some(f) = format {
                body["format"] = json!(f);
            }
            let v: Value = ctx
                .client
                .json(Method::POST, "/v1/tokens", Some(&body))
                .await?;
            if ctx.json {
                output::json(&v);
            } else {
                let who = team
                    .map(|t| format!("team {t}"))
                    .unwrap_or_else(|| "admin".into());
                eprintln!(
                    "token {} for {who}; it is shown only this once:",
                    v["id"].as_str().unwrap_or("")
                );
                println!("{}", v["token"].as_str().unwrap_or(""));
            }
        }
        TokenCmd::Ls => {
            let list: Vec<TokenRecord> = ctx
                .client
                .json(Method::GET, "/v1/tokens", None::<&()>)
                .await?;
            if ctx.json {
                output::json(&list);
            } else {
                println!(
                    "{:<14} {:<14} {:<6} {:<26} REVOKED",
                    "ID", "TEAM", "ADMIN", "CREATED"
                );
                for t in list {
                    println!(
                        "{:<14} {:<14} {:<6} {:<26} {}",
                        t.id,
                        t.team.unwrap_or_default(),
                        t.admin,
                        t.created_at.to_rfc3339(),
                        t.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default()
                    );
                }
            }
        }
        TokenCmd::Revoke { token } => {
            let rec: TokenRecord = ctx
                .client
                .json(
                    Method::DELETE,
                    &format!("/v1/tokens/{}", crate::client::enc(&token)),
                    None::<&()>,
                )
                .await?;
            if ctx.json {
                output::json(&rec);
            } else {
                println!("{} revoked", rec.id);
            }
        }
    }
    Ok(0)
}

pub async fn team(ctx: &Ctx, cmd: TeamCmd) -> Result<i32> {
    match cmd {
        TeamCmd::Create {
            name,
            max_agents,
            max_cpu,
            max_memory,
            max_disk,
            runtime,
            fallback,
        } => {
            let rec = TeamRecord {
                name,
                created_at: None,
                max_agents,
                max_cpu_millis: max_cpu
                    .as_deref()
                    .map(parse_cpu)
                    .transpose()?
                    .map(|c| c.millis()),
                max_memory_bytes: max_memory
                    .as_deref()
                    .map(parse_bytes)
                    .transpose()?
                    .map(|b| b.get()),
                max_disk_bytes: max_disk
                    .as_deref()
                    .map(parse_bytes)
                    .transpose()?
                    .map(|b| b.get()),
                runtime,
                fallback,
            };
            let out: TeamRecord = ctx
                .client
                .json(Method::POST, "/v1/teams", Some(&rec))
                .await?;
            if ctx.json {
                output::json(&out);
            } else {
                println!("{}", out.name);
            }
        }
        TeamCmd::Ls => {
            let list: Vec<TeamRecord> = ctx
                .client
                .json(Method::GET, "/v1/teams", None::<&()>)
                .await?;
            if ctx.json {
                output::json(&list);
            } else {
                println!(
                    "{:<16} {:>7} {:>7} {:>9} {:<9} FALLBACK",
                    "TEAM", "AGENTS", "CPU", "MEMORY", "RUNTIME"
                );
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                for t in list {
                    println!(
                        "{:<16} {:>7} {:>7} {:>9} {:<9} {}",
                        t.name,
                        opt(t.max_agents.map(|v| v.to_string())),
                        opt(t.max_cpu_millis.map(|v| godel_core::Cpu(v).to_string())),
                        opt(t
                            .max_memory_bytes
                            .map(|v| godel_core::ByteQuantity(v).to_string())),
                        opt(t.runtime),
                        t.fallback.join(",")
                    );
                }
            }
        }
        TeamCmd::Rm { name } => {
            let _: Value = ctx
                .client
                .json(Method::DELETE, &format!("/v1/teams/{name}"), None::<&()>)
                .await?;
            if ctx.json {
                output::json(&json!({"deleted": name}));
            } else {
                println!("{name} removed");
            }
        }
    }
    Ok(0)
}

/// Ask the daemon (for an admin it checks its state database too); when
/// none runs, probe the runtimes in this process.
pub async fn doctor(ctx: &Ctx) -> Result<i32> {
    let mut daemon = true;
    let reports: Vec<RuntimeReport> = match ctx
        .client
        .json(Method::GET, "/v1/doctor", None::<&()>)
        .await
    {
        Ok(r) => r,
        Err(e) if e.code == ErrorCode::Unavailable => {
            eprintln!("(no daemon reachable: probing this machine directly)");
            daemon = false;
            let control = godel_control::Control::with_store(
                &ctx.home,
                godel_control::Store::open_in_memory()?,
                godel_control::Settings::default(),
            )?;
            let (sink, _rx) = godel_control::event_channel();
            crate::runtimes::register_all(
                &control,
                &ctx.home,
                &crate::runtimes::RuntimeOptions::default(),
                sink,
            )
            .await;
            control.doctor().await
        }
        Err(e) => return Err(e),
    };
    if ctx.json {
        output::json(&reports);
    } else {
        for r in &reports {
            let mark = if r.availability.available {
                "ok "
            } else {
                "-- "
            };
            println!("{mark} {:<9} {}", r.name, r.availability.reason);
            if r.kind == godel_control::control::KIND_DATABASE {
                continue;
            }
            for (k, v) in &r.availability.details {
                println!("             {k}: {v}");
            }
        }
        if !reports
            .iter()
            .any(|r| r.kind == godel_control::control::KIND_DATABASE)
        {
            let why = if daemon {
                "not reported: the daemon checks it for admin callers only"
            } else {
                "not checked: no daemon reachable"
            };
            println!("-- {:<9} {why}", "database");
        }
    }
    Ok(0)
}

/// The process environment plus `GODEL_HOME` as the CLI resolved it.
pub fn config_env(home: &std::path::Path) -> std::collections::HashMap<String, String> {
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    env.insert("GODEL_HOME".into(), home.display().to_string());
    env
}

/// `godel config check`: load and validate; the error names the key.
pub fn config_check(ctx: &Ctx, path: Option<&std::path::Path>) -> Result<i32> {
    let env = config_env(&ctx.home);
    let (file, _) = godel_policy::config::config_path(path, &env);
    let cfg = godel_policy::load(path, &env)?;
    if ctx.json {
        output::json(&json!({"ok": true, "file": file, "config": cfg}));
    } else {
        println!(
            "ok: {} ({} team(s), {} pool(s), default runtime {}, fallback {})",
            file.display(),
            cfg.teams.len(),
            cfg.pools.len(),
            cfg.defaults.runtime,
            cfg.defaults.fallback.join(" → ")
        );
    }
    Ok(0)
}
