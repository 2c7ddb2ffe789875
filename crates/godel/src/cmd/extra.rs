//! `godel image build` and `godel kube render`.

use std::io::IsTerminal;

use godel_core::{Error, Result, SpawnSpec};

use crate::Ctx;
use crate::cli::{ImageCmd, KubeCmd};
use crate::output;

pub async fn image(ctx: &Ctx, cmd: ImageCmd) -> Result<i32> {
    let ImageCmd::Build {
        name,
        from_dir,
        from_oci,
    } = cmd;
    let opts = godel_image::ImageOptions {
        name,
        godel_home: Some(ctx.home.clone()),
        from_dir,
        from_oci,
        ..Default::default()
    };
    let json = ctx.json;
    let tty = std::io::stderr().is_terminal();
    let info = tokio::task::spawn_blocking(move || {
        godel_image::build_image(opts, &|p: godel_image::Progress| {
            if json {
                eprintln!("{}", serde_json::to_string(&p).unwrap_or_default());
                return;
            }
            let frac = match (p.done, p.total) {
                (Some(d), Some(t)) if t > 0 => format!(" {:>3}%", d * 100 / t),
                _ => String::new(),
            };
            if tty {
                eprint!("\r\x1b[2K{:<14}{frac} {}", p.step, p.message);
                if p.step == "done" || p.step == "cached" {
                    eprintln!();
                }
            } else {
                eprintln!("{:<14}{frac} {}", p.step, p.message);
            }
        })
    })
    .await
    .map_err(|e| Error::internal(format!("image build task: {e}")))??;
    if json {
        output::json(&info);
    } else {
        println!("{}", info.name);
    }
    Ok(0)
}

pub fn kube(ctx: &Ctx, cmd: KubeCmd) -> Result<i32> {
    let KubeCmd::Render {
        team,
        pod_template,
        config,
    } = cmd;
    let env = crate::cmd::admin::config_env(&ctx.home);
    let cfg = godel_policy::load(config.as_deref(), &env)?;
    let kcfg: godel_kube::KubeConfig = match cfg.kube.clone() {
        Some(t) => t
            .try_into()
            .map_err(|e: toml::de::Error| Error::invalid(format!("kube: {}", e.message())))?,
        None => godel_kube::KubeConfig::default(),
    };
    let yaml = if pod_template {
        let spec = SpawnSpec {
            team: Some(team.clone()),
            ..Default::default()
        };
        godel_kube::render_pod_template(&team, &kcfg, &spec)?
    } else {
        let quota = crate::runtimes::kube_quota(kcfg.default_quota, &cfg.team(&team).quota);
        godel_kube::render_team_manifests(&team, &kcfg, &quota)?
    };
    print!("{yaml}");
    Ok(0)
}
