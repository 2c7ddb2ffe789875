//! Templates from a Dockerfile, built for real in jails of the process
//! sandbox, and the layers sandboxes start from.
//!
//! ```text
//! $GODEL_HOME/templates/layers/<key>/{root,sys/<dir>}   one layer per RUN or COPY
//! $GODEL_HOME/templates/tmp/<unique>/                    a build's scratch space
//! ```
//!
//! A step's key is the SHA-256 of its parent's key, the instruction (and
//! for `RUN` the environment and working directory it runs with; for
//! `COPY`/`ADD` the content of its sources). A layer directory named by its
//! key is complete: steps write into a scratch directory and rename it into
//! place, so a cached step (its layer exists) runs nothing. `RUN` runs
//! `/bin/sh -c` (or the exec form) in a build jail as root of the jail's
//! user namespace, the layers so far read-only below and the new layer as
//! the writable upper of the root and of each system directory; with no
//! network unless the build asks for NAT. `COPY` writes the layer directly
//! from the unpacked context (files owned by root, modes kept).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use godel_core::{
    Error, NetworkConfig, NetworkMode, Result, TemplateBuild, TemplateBuildRequest, TemplateInfo,
    TemplateStep,
};
use godel_sandbox::{Isolator, JailConfig, JailRoot, ProcessSpec};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::dockerfile::{self, Base, Instr};
use crate::layout::{remove_tree, unique};

/// Most output of one build kept in its log.
const LOG_LIMIT: usize = 256 * 1024;
/// Output lines of a failed step shown in the error.
const TAIL_LINES: usize = 20;

/// Where templates live under `$GODEL_HOME`.
#[derive(Debug, Clone)]
pub struct TemplateDirs {
    root: PathBuf,
}

impl TemplateDirs {
    pub fn new(home: &Path) -> Self {
        TemplateDirs {
            root: home.join("templates"),
        }
    }
    pub fn layer(&self, key: &str) -> PathBuf {
        self.root.join("layers").join(key)
    }
    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// The layer directories of a template, top first; each must exist.
    pub fn layers_of(&self, t: &TemplateInfo) -> Result<Vec<PathBuf>> {
        t.layers
            .iter()
            .map(|k| {
                let p = self.layer(k);
                if p.join("root").is_dir() {
                    Ok(p)
                } else {
                    Err(Error::not_found(format!(
                        "template {}: its layer {k} is missing from {}; build it again",
                        t.name,
                        p.display()
                    )))
                }
            })
            .collect()
    }
}

fn hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The state a Dockerfile builds up, step by step.
struct State {
    key: String,
    layers: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    start_cmd: Option<Vec<String>>,
}

/// Build a template. `isolator` must be the process sandbox.
pub async fn build(
    dirs: &TemplateDirs,
    isolator: Arc<dyn Isolator>,
    req: TemplateBuildRequest,
) -> Result<TemplateBuild> {
    godel_core::validate_name("template", &req.name)?;
    if godel_core::BUILTIN_TEMPLATES.contains(&req.name.as_str()) {
        return Err(Error::invalid(format!(
            "template name {} is built in; pick another name",
            req.name
        )));
    }
    let steps = dockerfile::parse(&req.dockerfile)?;
    for d in [dirs.root.join("layers"), dirs.tmp()] {
        std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("mkdir {}", d.display()), &e))?;
    }
    let scratch = dirs.tmp().join(unique());
    let context = scratch.join("context");
    let res = async {
        unpack_context(&req.context_tar, &context)?;
        let mut st = State {
            key: hash(&[b"godel-template-v1"]),
            layers: Vec::new(),
            env: BTreeMap::new(),
            workdir: None,
            start_cmd: None,
        };
        let mut log = String::new();
        let mut reports = Vec::new();
        let total = steps.len();
        for (n, step) in steps.iter().enumerate() {
            let started = Instant::now();
            let head = format!("step {}/{total}, line {} ({})", n + 1, step.line, step.text);
            log.push_str(&format!("#{} {}\n", n + 1, step.text));
            let mut cached = false;
            match &step.instr {
                Instr::From(Base::Host) => st.key = hash(&[st.key.as_bytes(), b"FROM host"]),
                Instr::From(Base::Template(name)) => {
                    let base = req.templates.get(name).ok_or_else(|| {
                        Error::not_found(format!(
                            "{head}: no template {name} in team {}; build it first or use FROM host",
                            req.team
                        ))
                    })?;
                    dirs.layers_of(base)?;
                    st.key = hash(&[st.key.as_bytes(), b"FROM", base.key.as_bytes()]);
                    st.layers = base.layers.clone();
                    st.env = base.env.clone();
                    st.workdir = base.workdir.clone();
                    st.start_cmd = base.start_cmd.clone();
                }
                Instr::Env(pairs) => {
                    st.env.extend(pairs.iter().cloned());
                    st.key = hash(&[st.key.as_bytes(), step.text.as_bytes()]);
                }
                Instr::Workdir(d) => {
                    let abs = absolute(st.workdir.as_deref(), d);
                    st.workdir = Some(abs.display().to_string());
                    st.key = hash(&[st.key.as_bytes(), step.text.as_bytes()]);
                }
                Instr::Arg(..) => st.key = hash(&[st.key.as_bytes(), step.text.as_bytes()]),
                Instr::Start(argv) => {
                    st.start_cmd = Some(argv.clone());
                    st.key = hash(&[st.key.as_bytes(), step.text.as_bytes()]);
                }
                Instr::Run(argv) => {
                    let ctx = serde_json::json!([argv, st.env, st.workdir]).to_string();
                    let key = hash(&[st.key.as_bytes(), b"RUN", ctx.as_bytes()]);
                    cached = dirs.layer(&key).is_dir();
                    if !cached {
                        let out = run_step(dirs, &isolator, &st, argv, req.network, &scratch).await;
                        let (code, output, layer) = out.map_err(|e| {
                            Error::new(e.code, format!("{head}: {}", e.message))
                        })?;
                        push_log(&mut log, &output);
                        if code != 0 {
                            return Err(Error::invalid(format!(
                                "{head} failed with exit code {code}; last output:\n{}",
                                tail(&output)
                            )));
                        }
                        publish(&layer, &dirs.layer(&key))?;
                    }
                    st.layers.insert(0, key.clone());
                    st.key = key;
                }
                Instr::Copy { sources, dest } => {
                    let srcs = sources
                        .iter()
                        .map(|s| inside(&context, s).map_err(|e| Error::invalid(format!("{head}: {e}"))))
                        .collect::<Result<Vec<_>>>()?;
                    let mut h = Sha256::new();
                    for s in &srcs {
                        content_hash(s, &mut h)
                            .map_err(|e| Error::io(format!("{head}: read {}", s.display()), &e))?;
                    }
                    let sums = hex::encode(h.finalize());
                    let dest = absolute(st.workdir.as_deref(), dest);
                    let key = hash(&[st.key.as_bytes(), step.text.as_bytes(), dest.as_os_str().as_encoded_bytes(), sums.as_bytes()]);
                    cached = dirs.layer(&key).is_dir();
                    if !cached {
                        let layer = scratch.join(format!("copy-{n}"));
                        copy_step(&srcs, sources, &dest, &layer)
                            .map_err(|e| Error::io(format!("{head}: copy"), &e))?;
                        publish(&layer, &dirs.layer(&key))?;
                    }
                    st.layers.insert(0, key.clone());
                    st.key = key;
                }
            }
            if cached {
                log.push_str("CACHED\n");
            }
            reports.push(TemplateStep {
                line: step.line,
                instruction: step.text.clone(),
                cached,
                ms: started.elapsed().as_millis() as u64,
            });
        }
        let size_bytes = st
            .layers
            .iter()
            .map(|k| godel_sandbox::jail::du(&dirs.layer(k)))
            .sum();
        Ok(TemplateBuild {
            template: TemplateInfo {
                name: req.name.clone(),
                team: req.team.clone(),
                runtime: "worktree".into(),
                key: st.key,
                layers: st.layers,
                env: st.env,
                workdir: st.workdir,
                start_cmd: st.start_cmd,
                created_at: chrono::Utc::now(),
                size_bytes,
            },
            steps: reports,
            log,
        })
    }
    .await;
    let _ = remove_tree(&scratch);
    res
}

fn push_log(log: &mut String, out: &str) {
    if log.len() < LOG_LIMIT {
        log.push_str(out);
        if !out.is_empty() && !out.ends_with('\n') {
            log.push('\n');
        }
    }
}

fn tail(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// `d` against the working directory so far (`/` by default).
fn absolute(workdir: Option<&str>, d: &str) -> PathBuf {
    let base = Path::new(workdir.unwrap_or("/"));
    let mut out = PathBuf::from("/");
    for c in base.join(d).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    if d.ends_with('/') {
        out.push("");
    }
    out
}

/// Move a finished layer into place (another build may have made the same
/// key meanwhile: then keep that one).
fn publish(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) if to.join("root").is_dir() => Ok(()),
        Err(e) => Err(Error::io(format!("publish layer {}", to.display()), &e)),
    }
}

fn unpack_context(tar: &[u8], to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io("mkdir the build context", &e))?;
    if tar.is_empty() {
        return Ok(());
    }
    let mut a = tar::Archive::new(tar);
    a.set_preserve_permissions(true);
    a.set_overwrite(true);
    // `unpack` refuses entries that would land outside `to`.
    a.unpack(to)
        .map_err(|e| Error::invalid(format!("the build context is not a readable tar: {e}")))
}

/// A source path inside the context (no escape through `..` or symlinks).
fn inside(context: &Path, src: &str) -> std::result::Result<PathBuf, String> {
    let rel = src.trim_start_matches('/');
    let p = if rel.is_empty() || rel == "." {
        context.to_path_buf()
    } else {
        context.join(rel)
    };
    let real = p
        .canonicalize()
        .map_err(|_| format!("{src} is not in the build context"))?;
    let root = context
        .canonicalize()
        .map_err(|e| format!("build context: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!("{src} points outside the build context"));
    }
    Ok(real)
}

fn content_hash(p: &Path, h: &mut Sha256) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p)?;
    h.update(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b"."));
    h.update(m.mode().to_le_bytes());
    if m.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)?.collect::<std::io::Result<_>>()?;
        names.sort_by_key(|e| e.file_name());
        h.update(b"dir");
        for e in names {
            content_hash(&e.path(), h)?;
        }
        h.update(b"end");
    } else if m.file_type().is_symlink() {
        h.update(std::fs::read_link(p)?.as_os_str().as_encoded_bytes());
    } else {
        h.update(std::fs::read(p)?);
    }
    Ok(())
}

/// Where an absolute path of the sandbox lands in a layer directory:
/// `sys/<dir>/...` for a host system directory (through the host's
/// `/bin -> usr/bin` style links), `root/...` otherwise.
pub fn layer_path(layer: &Path, abs: &Path) -> PathBuf {
    let host = godel_sandbox::mounts::HostView::probe();
    let rel: PathBuf = abs.components().skip(1).collect();
    let Some(first) = rel.components().next() else {
        return layer.join("root");
    };
    let top = format!("/{}", first.as_os_str().to_string_lossy());
    let rest: PathBuf = rel.components().skip(1).collect();
    for (dir, link) in &host.system {
        if *dir != top {
            continue;
        }
        return match link {
            Some(to) => layer_path(layer, &Path::new("/").join(to).join(&rest)),
            None => layer.join("sys").join(&top[1..]).join(rest),
        };
    }
    layer.join("root").join(rel)
}

fn copy_step(srcs: &[PathBuf], names: &[String], dest: &Path, layer: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(layer.join("root"))?;
    std::fs::create_dir_all(layer.join("sys"))?;
    let dest_s = dest.display().to_string();
    let into_dir = dest_s.ends_with('/') || srcs.len() > 1;
    for (src, name) in srcs.iter().zip(names) {
        let m = std::fs::symlink_metadata(src)?;
        let target = if m.is_dir() {
            dest.to_path_buf()
        } else if into_dir {
            dest.join(
                Path::new(name.trim_end_matches('/'))
                    .file_name()
                    .unwrap_or_default(),
            )
        } else {
            dest.to_path_buf()
        };
        copy_tree(src, &layer_path(layer, &target))?;
    }
    Ok(())
}

/// Copy a file, link or the contents of a directory (modes kept, owned by root).
fn copy_tree(src: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::symlink_metadata(src)?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if m.is_dir() {
        std::fs::create_dir_all(to)?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.permissions().mode()))?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else if m.file_type().is_symlink() {
        let _ = std::fs::remove_file(to);
        std::os::unix::fs::symlink(std::fs::read_link(src)?, to)?;
    } else {
        std::fs::copy(src, to)?;
    }
    std::os::unix::fs::lchown(to, Some(0), Some(0))
}

/// Run one `RUN` in a build jail; returns its exit code, output and the
/// new layer's directory.
async fn run_step(
    dirs: &TemplateDirs,
    isolator: &Arc<dyn Isolator>,
    st: &State,
    argv: &[String],
    network: bool,
    scratch: &Path,
) -> Result<(i32, String, PathBuf)> {
    let u = unique();
    let step = scratch.join(format!("run-{u}"));
    let ws = step.join("ws");
    std::fs::create_dir_all(&ws).map_err(|e| Error::io("mkdir the build workspace", &e))?;
    let lower: Vec<PathBuf> = st.layers.iter().map(|k| dirs.layer(k)).collect();
    let mut net = NetworkConfig::default();
    if network {
        net.mode = NetworkMode::Nat;
    }
    let cfg = JailConfig {
        id: format!("tb-{u}"),
        workspace: ws,
        state_dir: step.join("state"),
        limits: Default::default(),
        network: net,
        env: st.env.clone(),
        volumes: Vec::new(),
    };
    let root = JailRoot {
        layers: lower,
        upper: Some(step.join("upper")),
    };
    let jail = isolator.create_rooted(cfg, root).await?;
    // The working directory is made on the way, as Docker does.
    let wd = st.workdir.clone().unwrap_or_else(|| "/".into());
    let mut full = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        "mkdir -p \"$0\" && cd \"$0\" && exec \"$@\" 2>&1".into(),
        wd,
    ];
    full.extend(argv.iter().cloned());
    let res = async {
        let mut p = jail
            .launch(ProcessSpec {
                argv: full,
                env: st.env.clone(),
                cwd: Some("/".into()),
                stdin: false,
            })
            .await?;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (r1, r2) = tokio::join!(p.stdout.read_to_end(&mut o), p.stderr.read_to_end(&mut e));
        r1.and(r2)
            .map_err(|e| Error::io("read the step's output", &e))?;
        let st = p
            .exit
            .await
            .map_err(|e| Error::io("wait for the step", &e))?;
        o.extend_from_slice(&e); // only the wrapper's own errors
        Ok((st.code, String::from_utf8_lossy(&o).into_owned()))
    }
    .await;
    let _ = jail.destroy().await;
    let (code, out) = res?;
    Ok((code, out, step.join("upper/layer")))
}

/// The built template a spawn names, if any, with its layer directories:
/// `None` for no template or a built-in one; `NOT_FOUND` for a name nobody
/// built for the spawn's team.
pub(crate) fn resolve(
    resolver: Option<&godel_core::TemplateResolver>,
    dirs: &TemplateDirs,
    spec: &godel_core::SpawnSpec,
) -> Result<Option<(TemplateInfo, Vec<PathBuf>)>> {
    let Some(name) = spec.template.as_deref() else {
        return Ok(None);
    };
    if godel_core::BUILTIN_TEMPLATES.contains(&name) {
        return Ok(None);
    }
    let team = spec.team.as_deref().unwrap_or("default");
    let found = resolver.and_then(|r| r(team, name));
    let Some(t) = found else {
        return Err(Error::not_found(format!(
            "template {name} not found: it is not built in ({}) and team {team} has built no template of that name (godel template build)",
            godel_core::BUILTIN_TEMPLATES.join(", ")
        )));
    };
    if spec.isolation != godel_core::Isolation::Sandbox {
        return Err(Error::invalid(format!(
            "template {name} needs isolation 'sandbox' (its layers are mounted by the process sandbox)"
        )));
    }
    let layers = dirs.layers_of(&t)?;
    Ok(Some((t, layers)))
}

/// Put the template's `/home/user` (its layers' `root/home/user`, lowest
/// first) into a new workspace.
pub(crate) fn seed_workspace(layers: &[PathBuf], ws: &Path) -> Result<()> {
    for l in layers.iter().rev() {
        let home = l
            .join("root")
            .join(godel_core::WORKSPACE_MOUNT.trim_start_matches('/'));
        if home.is_dir() {
            copy_merge(&home, ws).map_err(|e| {
                Error::io(
                    format!(
                        "copy the template's {} into the workspace",
                        godel_core::WORKSPACE_MOUNT
                    ),
                    &e,
                )
            })?;
        }
    }
    Ok(())
}

/// Start a template's `CMD`/`ENTRYPOINT` in the background (as the agent,
/// in the template's `WORKDIR`), as E2B starts a template's start command;
/// its output is drained and logged at debug level.
pub(crate) async fn start_command(
    jail: &dyn godel_sandbox::Jail,
    t: &godel_core::TemplateInfo,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let Some(argv) = t.start_cmd.clone() else {
        return Ok(());
    };
    let p = jail
        .launch(ProcessSpec {
            argv,
            env: t.env.clone(),
            cwd: t.workdir.clone(),
            stdin: false,
        })
        .await
        .map_err(|e| {
            Error::new(
                e.code,
                format!("template {}: its start command: {}", t.name, e.message),
            )
        })?;
    let name = t.name.clone();
    tokio::spawn(async move {
        let (mut out, mut err) = (p.stdout, p.stderr);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b));
        let st = p.exit.await;
        tracing::debug!(template = %name, exit = ?st.map(|s| s.code).ok(), "template start command ended");
    });
    Ok(())
}

/// Copy `src`'s contents over `dst` (kept ownership and modes; overlay
/// whiteouts, character devices 0/0, are skipped).
fn copy_merge(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let m = std::fs::symlink_metadata(&from)?;
        if m.file_type().is_char_device() {
            continue;
        }
        if m.is_dir() {
            std::fs::create_dir_all(&to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m.mode()))?;
            copy_merge(&from, &to)?;
        } else if m.file_type().is_symlink() {
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
        std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_land_in_the_right_part_of_a_layer() {
        let l = Path::new("/L");
        assert_eq!(
            layer_path(l, Path::new("/opt/a")),
            Path::new("/L/root/opt/a")
        );
        assert_eq!(
            layer_path(l, Path::new("/usr/local/x")),
            Path::new("/L/sys/usr/local/x")
        );
        assert_eq!(
            layer_path(l, Path::new("/home/user/f")),
            Path::new("/L/root/home/user/f")
        );
        assert_eq!(absolute(Some("/app"), "x/../y"), Path::new("/app/y"));
        assert_eq!(absolute(None, "/a/"), Path::new("/a/"));
    }
}
