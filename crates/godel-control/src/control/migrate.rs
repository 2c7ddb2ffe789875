//! Moving running agents to another runtime (`godel migrate`). Each move:
//! snapshot the source (a rollback point) → a new sandbox on the target
//! (restored from that snapshot when the target is the same runtime kind,
//! else spawned from the source's spec with its workspace copied in as a
//! tar) → verify (a checksum of every workspace file of the source, except
//! `.git`, recomputed on the target, and a probe exec) → switch (a
//! `migrated` event naming `new_id`) → terminate the source. Any failure
//! removes the new sandbox and leaves the source running
//! (`migration_failed`). A dry run changes nothing and prints the plan with
//! the estimated change of cost per hour.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;
use godel_core::{
    Error, Event, EventKind, ExecRequest, Result, SandboxInfo, SandboxState, SnapshotRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Caller, Control, POOL_TEAM};

/// `godel migrate` / `POST /v1/migrations`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// Sandbox ids to move (else every running agent of `team` on `from`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Only agents on this runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// One move, planned or done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationMove {
    /// The source sandbox.
    pub id: String,
    pub team: String,
    pub from: String,
    pub to: String,
    /// The sandbox that replaced it (after a move that worked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_id: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    /// SHA-256 of the workspace as verified on both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub files: u64,
    /// USD per hour of this agent's allocation on its runtime, before and after.
    pub hourly_before_usd: f64,
    pub hourly_after_usd: f64,
}

/// What a migration did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    pub dry_run: bool,
    pub to: String,
    pub moves: Vec<MigrationMove>,
    pub moved: usize,
    pub failed: usize,
    /// Sum over the moves of (after - before), USD per hour.
    pub estimated_hourly_change_usd: f64,
}

/// Path of an entry, without a leading `./`; `None` for the workspace root.
fn norm(p: &str) -> Option<String> {
    let p = p.trim_start_matches("./").trim_end_matches('/');
    (!p.is_empty() && p != ".").then(|| p.to_string())
}

fn is_git(p: &str) -> bool {
    p == ".git" || p.starts_with(".git/")
}

/// Files (path → content digest or link target) of a workspace tar, `.git` excluded.
fn tar_files(tar: &[u8]) -> Result<BTreeMap<String, String>> {
    let bad = |e: std::io::Error| Error::internal(format!("workspace tar: {e}"));
    let mut a = tar::Archive::new(tar);
    let mut out = BTreeMap::new();
    for e in a.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let path = e.path().map_err(bad)?.to_string_lossy().to_string();
        let Some(path) = norm(&path) else { continue };
        if is_git(&path) {
            continue;
        }
        let kind = e.header().entry_type();
        if kind.is_file() {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).map_err(bad)?;
            out.insert(path, hex::encode(Sha256::digest(&buf)));
        } else if kind.is_symlink() {
            let t = e.link_name().map_err(bad)?.unwrap_or_default();
            out.insert(path, format!("-> {}", t.to_string_lossy()));
        }
    }
    Ok(out)
}

/// The checksum of `files` (sorted path and digest lines).
fn checksum(files: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (p, d) in files {
        h.update(p.as_bytes());
        h.update(b"\0");
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The tar without a `.git` pointer file (a git worktree's link to its store).
fn without_git_pointer(tar: &[u8]) -> Result<Bytes> {
    let bad = |e: std::io::Error| Error::internal(format!("workspace tar: {e}"));
    let mut a = tar::Archive::new(tar);
    let mut b = tar::Builder::new(Vec::new());
    for e in a.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let path = e.path().map_err(bad)?.to_string_lossy().to_string();
        if norm(&path).as_deref() == Some(".git") && e.header().entry_type().is_file() {
            continue;
        }
        let h = e.header().clone();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).map_err(bad)?;
        b.append(&h, &buf[..]).map_err(bad)?;
    }
    Ok(Bytes::from(b.into_inner().map_err(bad)?))
}

impl Control {
    /// Plan and (unless dry) carry out a migration.
    pub async fn migrate(&self, caller: &Caller, req: MigrateRequest) -> Result<MigrationReport> {
        let sources = self.migration_sources(caller, &req)?;
        let price = |rt: &str| godel_policy::config::price_of(&self.policy.config.prices, rt);
        let mut moves: Vec<MigrationMove> = sources
            .iter()
            .map(|s| {
                let (cpu, mem) = (
                    s.spec.resources.cpu.map(|c| c.millis()).unwrap_or(0),
                    s.spec.resources.memory.map(|m| m.get()).unwrap_or(0),
                );
                MigrationMove {
                    id: s.id.clone(),
                    team: s.team.clone(),
                    from: s.runtime.clone(),
                    to: req.to.clone(),
                    hourly_before_usd: price(&s.runtime).hourly(cpu, mem),
                    hourly_after_usd: price(&req.to).hourly(cpu, mem),
                    ..Default::default()
                }
            })
            .collect();
        if !req.dry_run {
            for (m, src) in moves.iter_mut().zip(&sources) {
                match self.move_one(src, &req.to).await {
                    Ok((new_id, sum, files)) => {
                        m.ok = true;
                        m.new_id = Some(new_id);
                        m.checksum = Some(sum);
                        m.files = files;
                    }
                    Err(e) => {
                        self.emit(
                            Event::new(EventKind::MigrationFailed)
                                .runtime(&src.id)
                                .team(&src.team)
                                .data(json!({"from": src.runtime, "to": req.to, "code": e.code,
                                             "reason": e.message, "source": "still running"})),
                        );
                        m.error = Some(e);
                    }
                }
            }
        }
        Ok(MigrationReport {
            dry_run: req.dry_run,
            to: req.to.clone(),
            moved: moves.iter().filter(|m| m.ok).count(),
            failed: moves.iter().filter(|m| !m.ok && !req.dry_run).count(),
            estimated_hourly_change_usd: moves
                .iter()
                .map(|m| m.hourly_after_usd - m.hourly_before_usd)
                .sum(),
            moves,
        })
    }

    /// The running sandboxes a request names, after every check.
    fn migration_sources(&self, caller: &Caller, req: &MigrateRequest) -> Result<Vec<SandboxInfo>> {
        self.provider(&req.to).map_err(|e| Error {
            message: format!("to: {}", e.message),
            ..e
        })?;
        if let Some(f) = &req.from {
            self.provider(f).map_err(|e| Error {
                message: format!("from: {}", e.message),
                ..e
            })?;
        }
        let mut out = Vec::new();
        if !req.agents.is_empty() {
            if req.team.is_some() {
                return Err(Error::invalid("name either agents or team, not both"));
            }
            for id in &req.agents {
                let r = self.visible_sandbox(caller, id)?;
                if r.state != SandboxState::Running {
                    return Err(Error::conflict(format!(
                        "agent {id} is {}; only running agents move",
                        r.state
                    ))
                    .with_runtime(id));
                }
                if req.from.as_ref().is_some_and(|f| *f != r.runtime) {
                    return Err(Error::invalid(format!(
                        "agent {id} runs on {}, not on {}",
                        r.runtime,
                        req.from.as_deref().unwrap_or_default()
                    )));
                }
                out.push(r);
            }
        } else {
            let team = match (caller, &req.team) {
                (_, None) => {
                    return Err(Error::invalid(
                        "name the agents (--agents) or a team (--team)",
                    ));
                }
                (c, Some(t)) => c.spawn_team(Some(t), t)?,
            };
            godel_core::validate_name("team", &team)?;
            out = self
                .store
                .list_sandboxes(Some(&team), false)?
                .into_iter()
                .filter(|r| r.state == SandboxState::Running && r.team != POOL_TEAM)
                .filter(|r| req.from.as_ref().is_none_or(|f| *f == r.runtime))
                .filter(|r| req.from.is_some() || r.runtime != req.to)
                .collect();
        }
        for r in &out {
            let (tp, _) = self.team_policy(&r.team)?;
            if !tp.allows(&req.to) {
                return Err(Error::denied(format!(
                    "to: team {} may not use runtime {}",
                    r.team, req.to
                )));
            }
        }
        Ok(out)
    }

    /// One move; on error the new sandbox is gone and the source untouched.
    async fn move_one(&self, src: &SandboxInfo, to: &str) -> Result<(String, String, u64)> {
        let admin = Caller::Admin;
        let snap = self
            .snapshot(
                &admin,
                &src.id,
                SnapshotRequest {
                    description: Some(format!("before moving {} to {to}", src.id)),
                    ..Default::default()
                },
            )
            .await?;
        let source_tar = self.download_tar(&admin, &src.id, ".").await;
        let res = async {
            let source_files = tar_files(&source_tar.clone()?)?;
            let new = if src.runtime == to {
                self.restore(&admin, &snap.id).await?
            } else {
                let mut spec = src.spec.clone();
                spec.runtime = Some(to.to_string());
                spec.team = Some(src.team.clone());
                if to != "worktree" {
                    spec.repo = None;
                    spec.git_ref = None;
                }
                spec.labels
                    .insert("godel.migrated_from".into(), src.id.clone());
                self.spawn(&admin, spec).await?
            };
            let verified = async {
                if src.runtime != to {
                    let tar = without_git_pointer(&source_tar.clone()?)?;
                    self.upload_tar(&admin, &new.id, ".", tar).await?;
                }
                let target = tar_files(&self.download_tar(&admin, &new.id, ".").await?)?;
                let seen: BTreeMap<String, String> = source_files
                    .keys()
                    .filter_map(|k| target.get(k).map(|v| (k.clone(), v.clone())))
                    .collect();
                let (want, got) = (checksum(&source_files), checksum(&seen));
                if want != got {
                    let differ = source_files
                        .iter()
                        .find(|(k, v)| target.get(*k) != Some(*v))
                        .map(|(k, _)| k.clone())
                        .unwrap_or_default();
                    return Err(Error::internal(format!(
                        "workspace checksum differs on {} ({want} vs {got}; first differing file {differ:?})",
                        new.id
                    )));
                }
                let probe = self
                    .exec_collect(&admin, &new.id, ExecRequest::new(["true"]))
                    .await?;
                if probe.exit_code != 0 {
                    return Err(Error::internal(format!(
                        "probe exec on {} exited {}",
                        new.id, probe.exit_code
                    )));
                }
                Ok(want)
            }
            .await;
            match verified {
                Ok(sum) => Ok((new.id, sum)),
                Err(e) => {
                    let _ = self.terminate(&admin, &new.id).await;
                    Err(e)
                }
            }
        }
        .await;
        let _ = self.delete_snapshot(&admin, &snap.id).await;
        let (new_id, sum) = res?;
        self.emit(
            Event::new(EventKind::Migrated)
                .runtime(&src.id)
                .team(&src.team)
                .data(
                    json!({"new_id": new_id, "from": src.runtime, "to": to, "checksum": sum,
                             "files": source_files_len(&source_tar)}),
                ),
        );
        let _ = self.terminate(&admin, &src.id).await;
        Ok((new_id, sum, source_files_len(&source_tar)))
    }
}

fn source_files_len(tar: &Result<Bytes>) -> u64 {
    tar.as_ref()
        .ok()
        .and_then(|t| tar_files(t).ok())
        .map(|f| f.len() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_git_and_dot_prefix() {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in [
            ("./a.txt", &b"x"[..]),
            (".git", b"gitdir: /x"),
            ("d/b", b"yy"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, d).unwrap();
        }
        let t = b.into_inner().unwrap();
        let f = tar_files(&t).unwrap();
        assert_eq!(f.keys().cloned().collect::<Vec<_>>(), vec!["a.txt", "d/b"]);
        let stripped = without_git_pointer(&t).unwrap();
        assert_eq!(tar_files(&stripped).unwrap(), f);
        assert_eq!(checksum(&f).len(), 64);
    }
}
