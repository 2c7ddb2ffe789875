//! The `none` isolator: processes run directly on the host as the daemon's
//! user, in their own process group, with the workspace as cwd. For trusted
//! local use only; the daemon warns loudly when it is selected.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use godel_core::{Availability, Error, ResourceUsage, Result, WORKSPACE_MOUNT};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::launcher::{Isolator, Jail, JailConfig, Process, ProcessExit, ProcessSpec};

/// Isolator that does not isolate.
#[derive(Debug, Default)]
pub struct HostIsolator;

/// A "sandbox" that is just a directory on the host.
#[derive(Debug)]
pub struct HostJail {
    cfg: JailConfig,
}

/// Map a cwd in the agent's view onto the host workspace.
pub fn host_cwd(workspace: &std::path::Path, cwd: Option<&str>) -> Result<PathBuf> {
    let Some(cwd) = cwd else {
        return Ok(workspace.to_path_buf());
    };
    let rel = godel_core::workspace_relative(cwd)?;
    let _ = WORKSPACE_MOUNT;
    Ok(workspace.join(rel))
}

/// Processes on the host use the host's network: egress rules cannot be
/// enforced there, so asking for them is refused (plain `nat` with internet
/// is what the host's network already gives).
fn refuse_rules(net: &godel_core::NetworkConfig) -> Result<()> {
    let field = if !net.allow.is_empty() {
        Some("network.allow")
    } else if !net.deny.is_empty() {
        Some("network.deny")
    } else if net.mode == godel_core::NetworkMode::Nat && !net.internet {
        Some("network.mode nat without internet")
    } else {
        None
    };
    match field {
        Some(f) => Err(Error::invalid(format!(
            "{f}: isolation 'none' runs processes on the host's network and cannot enforce egress rules; use isolation 'sandbox'"
        ))),
        None => Ok(()),
    }
}

#[async_trait]
impl Isolator for HostIsolator {
    fn name(&self) -> &str {
        "none"
    }

    async fn available(&self) -> Availability {
        Availability::yes(
            "NO ISOLATION (trusted local use only): processes run as the daemon's user, with its \
             privileges, on the host; see docs/threat-model.md",
        )
    }

    async fn create(&self, cfg: JailConfig) -> Result<Arc<dyn Jail>> {
        tracing::warn!(
            runtime = %cfg.id,
            "isolation 'none': this agent's processes run unsandboxed as the daemon's user"
        );
        refuse_rules(&cfg.network)?;
        Ok(Arc::new(HostJail { cfg }))
    }

    async fn adopt(
        &self,
        cfg: JailConfig,
        _handle: &serde_json::Value,
    ) -> Result<Option<Arc<dyn Jail>>> {
        if cfg.workspace.is_dir() {
            Ok(Some(Arc::new(HostJail { cfg })))
        } else {
            Ok(None)
        }
    }
}

#[async_trait]
impl Jail for HostJail {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn init_pid(&self) -> Option<u32> {
        None
    }

    async fn connect_port(&self, port: u16) -> Result<tokio::net::TcpStream> {
        crate::portfwd::connect_host(port, &self.cfg.id).await
    }

    fn workspace_view(&self) -> String {
        self.cfg.workspace.display().to_string()
    }

    async fn launch(&self, spec: ProcessSpec) -> Result<Process> {
        let (prog, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| Error::invalid("exec needs a command"))?;
        let cwd = host_cwd(&self.cfg.workspace, spec.cwd.as_deref())?;
        if !cwd.is_dir() {
            return Err(Error::invalid(format!(
                "working directory {:?} does not exist in the workspace",
                spec.cwd.unwrap_or_default()
            )));
        }
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .current_dir(&cwd)
            .env("HOME", &self.cfg.workspace)
            .envs(&self.cfg.env)
            .envs(&spec.env)
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            let mut err = Error::io(format!("cannot start {prog:?}"), &e);
            if e.kind() == std::io::ErrorKind::NotFound {
                err = Error::exec(format!("command not found: {prog}"));
            }
            err
        })?;
        let pid = child
            .id()
            .ok_or_else(|| Error::exec("process exited before it was tracked"))?;
        let stdin = child.stdin.take().map(|s| Box::pin(s) as _);
        let stdout = Box::pin(child.stdout.take().expect("stdout piped"));
        let stderr = Box::pin(child.stderr.take().expect("stderr piped"));
        let exit = async move {
            let st = child.wait().await?;
            Ok(match st.signal() {
                Some(sig) => ProcessExit {
                    code: 128 + sig,
                    signal: Some(sig),
                },
                None => ProcessExit {
                    code: st.code().unwrap_or(-1),
                    signal: None,
                },
            })
        }
        .boxed();
        let signal = Arc::new(move |sig: i32| {
            let sig = Signal::try_from(sig).map_err(std::io::Error::from)?;
            killpg(Pid::from_raw(pid as i32), sig).map_err(std::io::Error::from)
        });
        Ok(Process {
            pid,
            stdin,
            stdout,
            stderr,
            exit,
            signal,
        })
    }

    async fn alive(&self) -> bool {
        self.cfg.workspace.is_dir()
    }

    async fn usage(&self) -> Result<ResourceUsage> {
        Ok(ResourceUsage::default())
    }

    async fn freeze(&self, _frozen: bool) -> Result<()> {
        Err(Error::invalid("isolation 'none' cannot pause processes"))
    }

    async fn destroy(&self) -> Result<()> {
        Ok(())
    }

    fn handle(&self) -> serde_json::Value {
        serde_json::json!({ "isolator": "none" })
    }
}
