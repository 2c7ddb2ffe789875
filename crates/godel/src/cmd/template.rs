//! `godel template build|ls|rm`: templates from a Dockerfile, built by the
//! daemon (`POST /v1/templates` with the context as a tar).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use godel_core::{Error, Result, TemplateBuild, TemplateInfo};
use http::Method;
use serde_json::json;

use crate::Ctx;
use crate::cli::TemplateCmd;
use crate::client::enc;
use crate::output;

/// Entry of the context tar the CLI puts the Dockerfile in.
const DOCKERFILE_ENTRY: &str = ".godel-build/Dockerfile";

pub async fn run(ctx: &Ctx, cmd: TemplateCmd) -> Result<i32> {
    match cmd {
        TemplateCmd::Build {
            file,
            name,
            network,
            team,
            context,
        } => build(ctx, file, name, network, team, context).await,
        TemplateCmd::Ls => {
            let list: Vec<TemplateInfo> = ctx
                .client
                .json(Method::GET, "/v1/templates", None::<&()>)
                .await?;
            if ctx.json {
                output::json(&list);
            } else {
                println!(
                    "{:<24} {:<12} {:>7} {:>10}  CREATED",
                    "NAME", "TEAM", "LAYERS", "SIZE"
                );
                for t in &list {
                    println!(
                        "{:<24} {:<12} {:>7} {:>10}  {}",
                        t.name,
                        t.team,
                        t.layers.len(),
                        godel_core::ByteQuantity(t.size_bytes).to_string(),
                        t.created_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
            Ok(0)
        }
        TemplateCmd::Rm { name } => {
            let _: serde_json::Value = ctx
                .client
                .json(
                    Method::DELETE,
                    &format!("/v1/templates/{}", enc(&name)),
                    None::<&()>,
                )
                .await?;
            if ctx.json {
                output::json(&json!({"deleted": name}));
            } else {
                println!("{name} deleted");
            }
            Ok(0)
        }
    }
}

/// The context directory as a tar, plus the Dockerfile under [`DOCKERFILE_ENTRY`].
fn context_tar(dir: &Path, dockerfile: &str) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir)
        .map_err(|e| Error::io(format!("read the build context {}", dir.display()), &e))?;
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, DOCKERFILE_ENTRY, dockerfile.as_bytes())
        .map_err(|e| Error::io("add the Dockerfile", &e))?;
    b.into_inner()
        .map_err(|e| Error::io("finish the context tar", &e))
}

async fn build(
    ctx: &Ctx,
    file: Option<PathBuf>,
    name: Option<String>,
    network: bool,
    team: Option<String>,
    context: PathBuf,
) -> Result<i32> {
    if !context.is_dir() {
        return Err(Error::invalid(format!(
            "build context {} is not a directory",
            context.display()
        )));
    }
    let file = file.unwrap_or_else(|| context.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&file)
        .map_err(|e| Error::io(format!("read {}", file.display()), &e))?;
    let name = match name {
        Some(n) => n,
        None => std::fs::canonicalize(&context)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_lowercase()))
            .ok_or_else(|| Error::invalid("name the template with --name"))?,
    };
    let tar = context_tar(&context, &dockerfile)?;
    let mut path = format!(
        "/v1/templates?name={}&dockerfile={}",
        enc(&name),
        enc(DOCKERFILE_ENTRY)
    );
    if network {
        path.push_str("&network=true");
    }
    if let Some(t) = &team {
        path.push_str(&format!("&team={}", enc(t)));
    }
    let tty = std::io::stderr().is_terminal() && !ctx.json;
    if tty {
        eprintln!(
            "building template {name} from {} ({} context, RUN network: {})…",
            file.display(),
            godel_core::ByteQuantity(tar.len() as u64),
            if network { "nat" } else { "none" }
        );
    }
    let started = std::time::Instant::now();
    let out = ctx
        .client
        .call(Method::POST, &path, tar.into(), "application/x-tar")
        .await?;
    let built: TemplateBuild = serde_json::from_slice(&out)
        .map_err(|e| Error::internal(format!("unexpected response from the daemon: {e}")))?;
    if ctx.json {
        output::json(&built);
        return Ok(0);
    }
    eprint!("{}", built.log);
    for s in &built.steps {
        eprintln!(
            "  line {:>3}  {:<6}  {:>6} ms  {}",
            s.line,
            if s.cached { "cached" } else { "" },
            s.ms,
            s.instruction
        );
    }
    eprintln!(
        "built {} in {:.1} s: {} layers, {}",
        built.template.name,
        started.elapsed().as_secs_f64(),
        built.template.layers.len(),
        godel_core::ByteQuantity(built.template.size_bytes)
    );
    println!("{}", built.template.name);
    Ok(0)
}
