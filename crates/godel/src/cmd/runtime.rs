//! spawn, exec, ls, status, rm, pause, resume.

use std::io::{Read, Write};

use futures::StreamExt;
use godel_core::{
    Error, ExecEvent, ExecOutput, ExecRequest, Isolation, NetworkMode, Result, SandboxInfo,
    SpawnSpec, WorkspaceMode, parse_bytes, parse_cpu, parse_key_values,
};
use http::Method;

use crate::Ctx;
use crate::cli::{ExecArgs, SpawnArgs};
use crate::output;

/// Build a spawn spec from CLI flags, rejecting malformed values locally.
pub fn spec_from_args(a: &SpawnArgs) -> Result<SpawnSpec> {
    let mut spec = SpawnSpec {
        runtime: a.runtime.clone(),
        image: a.image.clone(),
        template: a.template.clone(),
        repo: a.repo.clone(),
        git_ref: a.git_ref.clone(),
        team: a.team.clone(),
        timeout_secs: a.timeout,
        ..Default::default()
    };
    if let Some(r) = &spec.repo {
        // Paths are resolved here: the daemon may run with another cwd.
        let p = std::path::Path::new(r);
        if p.exists() {
            spec.repo = Some(
                std::fs::canonicalize(p)
                    .map_err(|e| Error::io(format!("repo {r}"), &e))?
                    .display()
                    .to_string(),
            );
        }
    }
    spec.resources.cpu = a.cpu.as_deref().map(parse_cpu).transpose()?;
    spec.resources.memory = a.memory.as_deref().map(parse_bytes).transpose()?;
    spec.resources.disk = a.disk.as_deref().map(parse_bytes).transpose()?;
    spec.env = parse_key_values(&a.env, "--env")?;
    spec.labels = parse_key_values(&a.label, "--label")?;
    spec.restart = a
        .restart
        .as_deref()
        .map(godel_core::RestartPolicy::parse)
        .transpose()?;
    spec.ttl_secs = a.ttl;
    if let Some(t) = &a.on_timeout {
        spec.on_timeout = godel_core::OnTimeout::parse(t)?;
    }
    if let Some(n) = &a.network {
        spec.network.mode = match n.as_str() {
            "none" => NetworkMode::None,
            "nat" => NetworkMode::Nat,
            "host" => NetworkMode::Host,
            other => {
                return Err(Error::invalid(format!(
                    "--network {other:?}: use none or nat"
                )));
            }
        };
    }
    spec.network.allow = a.allow.clone();
    if !a.allow_out.is_empty() || !a.deny_out.is_empty() {
        if a.network.is_none() {
            spec.network.mode = NetworkMode::Nat;
        }
        spec.network.allow.extend(a.allow_out.iter().cloned());
        spec.network.deny = a.deny_out.clone();
        spec.network.internet = !a.deny_out.is_empty();
        godel_core::parse_net_rules("--allow-out", &a.allow_out)?;
        godel_core::parse_net_rules("--deny-out", &a.deny_out)?;
    }
    if let Some(i) = &a.isolation {
        spec.isolation = match i.as_str() {
            "sandbox" => Isolation::Sandbox,
            "none" => Isolation::None,
            other => {
                return Err(Error::invalid(format!(
                    "--isolation {other:?}: use sandbox or none"
                )));
            }
        };
    }
    if let Some(w) = &a.workspace {
        spec.workspace = match w.as_str() {
            "cow" => WorkspaceMode::Cow,
            "git-worktree" => WorkspaceMode::GitWorktree,
            other => {
                return Err(Error::invalid(format!(
                    "--workspace {other:?}: use cow or git-worktree"
                )));
            }
        };
    }
    spec.validate()?;
    Ok(spec)
}

pub async fn spawn(ctx: &Ctx, a: SpawnArgs) -> Result<i32> {
    let spec = spec_from_args(&a)?;
    let path = match a.wait {
        Some(w) => format!("/v1/runtimes?wait_secs={w}"),
        None => "/v1/runtimes".to_string(),
    };
    let info: SandboxInfo = ctx.client.json(Method::POST, &path, Some(&spec)).await?;
    if ctx.json {
        output::json(&info);
    } else {
        eprintln!("spawned {} runtime for team {}", info.runtime, info.team);
        println!("{}", info.id);
    }
    Ok(0)
}

pub async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32> {
    let mut req = ExecRequest {
        cmd: a.cmd.clone(),
        env: parse_key_values(&a.env, "--env")?,
        cwd: a.cwd.clone(),
        timeout_ms: a.timeout.map(|s| (s * 1000.0).round() as u64),
        ..Default::default()
    };
    if let Some(t) = a.timeout
        && !(t > 0.0 && t.is_finite())
    {
        return Err(Error::invalid(format!(
            "--timeout {t} must be a positive number of seconds"
        )));
    }
    if a.stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read stdin", &e))?;
        req.stdin =
            Some(String::from_utf8(buf).map_err(|_| Error::invalid("stdin must be UTF-8 text"))?);
    }
    req.validate()?;
    let path = format!("/v1/runtimes/{}/exec", a.id);
    if ctx.json {
        let out: ExecOutput = ctx.client.json(Method::POST, &path, Some(&req)).await?;
        output::json(&out);
        return Ok(out.exit_code);
    }
    let mut events = Box::pin(
        ctx.client
            .sse(Method::POST, &format!("{path}/stream"), Some(&req))
            .await?,
    );
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(item) = events.next().await {
        let (_, data) = item?;
        let ev: ExecEvent = serde_json::from_str(&data)
            .map_err(|e| Error::internal(format!("bad exec event: {e}")))?;
        match ev {
            ExecEvent::Started { .. } => {}
            ExecEvent::Stdout { data } => {
                let _ = stdout.write_all(&data);
                let _ = stdout.flush();
            }
            ExecEvent::Stderr { data } => {
                let _ = stderr.write_all(&data);
                let _ = stderr.flush();
            }
            ExecEvent::Error(e) => return Err(e),
            ExecEvent::Exit(st) => {
                if st.timed_out {
                    return Err(Error::timeout(format!(
                        "command timed out after {} ms and was killed",
                        st.duration_ms
                    )));
                }
                return Ok(st.code);
            }
        }
    }
    Err(Error::unavailable(
        "the exec stream ended without an exit status",
    ))
}

pub async fn ls(ctx: &Ctx, all: bool) -> Result<i32> {
    let list: Vec<SandboxInfo> = ctx
        .client
        .json(Method::GET, &format!("/v1/runtimes?all={all}"), None::<&()>)
        .await?;
    if ctx.json {
        output::json(&list);
    } else {
        output::runtimes(&list);
    }
    Ok(0)
}

pub async fn status(ctx: &Ctx, id: &str) -> Result<i32> {
    let info: SandboxInfo = ctx
        .client
        .json(Method::GET, &format!("/v1/runtimes/{id}"), None::<&()>)
        .await?;
    if ctx.json {
        output::json(&info);
    } else {
        output::status(&info);
    }
    Ok(0)
}

pub async fn rm(ctx: &Ctx, id: &str, snapshot: bool) -> Result<i32> {
    let path = format!("/v1/runtimes/{id}?snapshot={snapshot}");
    state_call(ctx, Method::DELETE, &path).await
}

pub async fn pause_resume(ctx: &Ctx, id: &str, verb: &str) -> Result<i32> {
    state_call(ctx, Method::POST, &format!("/v1/runtimes/{id}/{verb}")).await
}

pub async fn ttl(ctx: &Ctx, id: &str, secs: &str) -> Result<i32> {
    let ttl_secs: Option<u64> = match secs {
        "none" => None,
        s => Some(
            s.parse()
                .map_err(|_| Error::invalid(format!("ttl {s:?}: give whole seconds or `none`")))?,
        ),
    };
    let body = serde_json::json!({ "ttl_secs": ttl_secs });
    let path = format!("/v1/runtimes/{id}/ttl");
    let info: SandboxInfo = ctx.client.json(Method::POST, &path, Some(&body)).await?;
    if ctx.json {
        output::json(&info);
    } else {
        let until = info
            .expires_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "no deadline".into());
        println!("{} {} {until}", info.id, info.state);
    }
    Ok(0)
}

/// A call that returns the runtime record; prints `ID STATE` (or the JSON).
async fn state_call(ctx: &Ctx, method: Method, path: &str) -> Result<i32> {
    let info: SandboxInfo = ctx.client.json(method, path, None::<&()>).await?;
    if ctx.json {
        output::json(&info);
    } else {
        println!("{} {}", info.id, info.state);
    }
    Ok(0)
}
