//! Snapshots: create (provider writes into staging, we publish atomically),
//! list, delete, restore and fork.

use std::time::Instant;

use chrono::Utc;
use godel_core::{
    Error, Event, Result, SandboxInfo, SandboxState, SnapshotInfo, SnapshotRequest, SnapshotTarget,
    SpawnSpec, new_sandbox_id, new_snapshot_id,
};
use serde_json::json;

use super::{Caller, Control};

/// Key under `SnapshotInfo::data` holding the spec of the snapshotted runtime.
const SPEC_KEY: &str = "godel.spawn_spec";

/// Most runtimes one fork request may create.
pub const MAX_FORK: usize = 64;

impl Control {
    pub async fn snapshot(
        &self,
        caller: &Caller,
        id: &str,
        req: SnapshotRequest,
    ) -> Result<SnapshotInfo> {
        if let Some(n) = &req.name {
            godel_core::validate_name("snapshot", n)?;
        }
        let rec = self.visible_sandbox(caller, id)?;
        if !matches!(rec.state, SandboxState::Running | SandboxState::Paused) {
            return Err(Error::conflict(format!(
                "runtime {id} is {}; only running or paused runtimes can be snapshotted",
                rec.state
            )));
        }
        let provider = self.provider(&rec.runtime)?;
        let snap_id = new_snapshot_id();
        let dir = self.snapshots.stage(&snap_id)?;
        let target = SnapshotTarget {
            snapshot_id: snap_id.clone(),
            dir,
        };
        let started = Instant::now();
        let artifact = match provider.snapshot(id, &req, &target).await {
            Ok(a) => a,
            Err(e) => {
                self.snapshots.abandon(&snap_id);
                return Err(e.with_runtime(id));
            }
        };
        let mut data = artifact.data;
        data.insert(
            SPEC_KEY.into(),
            serde_json::to_value(&rec.spec).unwrap_or_default(),
        );
        let mut info = SnapshotInfo {
            id: snap_id.clone(),
            runtime_id: id.to_string(),
            runtime: rec.runtime.clone(),
            team: rec.team.clone(),
            created_at: Utc::now(),
            size_bytes: artifact.size_bytes,
            kind: artifact.kind,
            name: req.name,
            description: req.description,
            labels: req.labels,
            dir: target.dir.clone(),
            data,
        };
        if let Err(e) = self.snapshots.publish(&mut info) {
            self.snapshots.abandon(&snap_id);
            let _ = provider.delete_snapshot(&info).await;
            return Err(e);
        }
        self.store.insert_snapshot(&info)?;
        self.health_snapshot(id, &snap_id);
        self.emit(
            Event::new(godel_core::EventKind::SnapshotCreated)
                .runtime(id)
                .team(&rec.team)
                .data(
                    json!({"snapshot_id": snap_id, "size_bytes": info.size_bytes,
                             "duration_ms": started.elapsed().as_millis() as u64}),
                ),
        );
        Ok(info)
    }

    pub fn list_snapshots(
        &self,
        caller: &Caller,
        runtime_id: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>> {
        if let Some(rid) = runtime_id {
            self.visible_sandbox(caller, rid)?;
        }
        self.store.list_snapshots(caller.team_filter(), runtime_id)
    }

    pub fn get_snapshot(&self, caller: &Caller, snap: &str) -> Result<SnapshotInfo> {
        match self.store.get_snapshot(snap)? {
            Some(s) if caller.sees(&s.team) => Ok(s),
            _ => Err(Error::not_found(format!("snapshot {snap} not found"))),
        }
    }

    pub async fn delete_snapshot(&self, caller: &Caller, snap: &str) -> Result<()> {
        let info = self.get_snapshot(caller, snap)?;
        if let Ok(p) = self.provider(&info.runtime) {
            p.delete_snapshot(&info).await?;
        }
        self.store.delete_snapshot(snap)?;
        self.snapshots.remove(snap)?;
        self.emit(
            Event::new(godel_core::EventKind::SnapshotDeleted)
                .team(&info.team)
                .data(json!({"snapshot_id": snap})),
        );
        Ok(())
    }

    /// A new runtime from a snapshot, owned by the snapshot's team.
    pub async fn restore(&self, caller: &Caller, snap: &str) -> Result<SandboxInfo> {
        self.restore_as(caller, snap, new_sandbox_id()).await
    }

    /// Restore under a given runtime id (used to keep ids stable, e.g. E2B resume).
    pub async fn restore_as(&self, caller: &Caller, snap: &str, id: String) -> Result<SandboxInfo> {
        self.restore_with(caller, snap, id, |_| {}).await
    }

    /// Restore under a given id with the snapshotted spec changed by `edit`
    /// first (time to live, labels, env of the new sandbox); the runtime and
    /// team stay the snapshot's.
    pub async fn restore_with(
        &self,
        caller: &Caller,
        snap: &str,
        id: String,
        edit: impl FnOnce(&mut SpawnSpec),
    ) -> Result<SandboxInfo> {
        let info = self.get_snapshot(caller, snap)?;
        let provider = self.provider(&info.runtime)?;
        let mut spec: SpawnSpec = info
            .data
            .get(SPEC_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        edit(&mut spec);
        spec.validate()?;
        spec.runtime = Some(info.runtime.clone());
        spec.team = Some(info.team.clone());
        if self.store.get_sandbox(&id)?.is_some() {
            return Err(Error::conflict(format!("runtime {id} already exists")));
        }
        self.create_record(&id, &spec, Some(snap))?;
        let started = Instant::now();
        let res = provider.restore(&id, &info, &spec).await;
        self.confirm_spawn(&id, provider.as_ref(), res, started)
            .await
    }

    /// `count` independent runtimes from one snapshot, restored concurrently.
    pub async fn fork(
        &self,
        caller: &Caller,
        snap: &str,
        count: usize,
    ) -> Result<Vec<SandboxInfo>> {
        if count == 0 || count > MAX_FORK {
            return Err(Error::invalid(format!(
                "fork count must be 1..={MAX_FORK}, got {count}"
            )));
        }
        self.get_snapshot(caller, snap)?;
        let results =
            futures::future::join_all((0..count).map(|_| self.restore(caller, snap))).await;
        let mut out = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(i) => out.push(i),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            // All or nothing: do not leave a partial fork behind.
            for i in &out {
                let _ = self.terminate(caller, &i.id).await;
            }
            return Err(e);
        }
        Ok(out)
    }
}
