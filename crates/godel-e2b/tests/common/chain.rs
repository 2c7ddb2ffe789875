//! An [`E2bBackend`] over any one [`RuntimeProvider`], with records in
//! memory: lets a server expose, say, the `e2b` runtime itself, so a chain
//! SDK → godel (e2b runtime) → godel (host backend) can be tested.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use godel_core::{
    Error, ExecHandle, ExecRequest, FileEntry, Result, RuntimeInfo, RuntimeProvider, RuntimeState,
    SpawnSpec, new_runtime_id,
};
use godel_e2b::E2bBackend;

pub struct ProviderBackend {
    provider: Arc<dyn RuntimeProvider>,
    keys: HashMap<String, String>,
    rts: Mutex<HashMap<String, RuntimeInfo>>,
}

impl ProviderBackend {
    pub fn new(provider: Arc<dyn RuntimeProvider>, keys: &[(&str, &str)]) -> Self {
        ProviderBackend {
            provider,
            keys: keys
                .iter()
                .map(|(k, t)| (k.to_string(), t.to_string()))
                .collect(),
            rts: Mutex::new(HashMap::new()),
        }
    }

    fn rts(&self) -> std::sync::MutexGuard<'_, HashMap<String, RuntimeInfo>> {
        match self.rts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn owned(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        self.rts()
            .get(id)
            .filter(|r| r.team == team)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found")))
    }

    fn set_state(&self, id: &str, st: RuntimeState) -> Option<RuntimeInfo> {
        let mut rts = self.rts();
        let r = rts.get_mut(id)?;
        r.state = st;
        r.updated_at = Utc::now();
        Some(r.clone())
    }
}

#[async_trait]
impl E2bBackend for ProviderBackend {
    async fn authenticate(&self, api_key: &str) -> Result<String> {
        self.keys
            .get(api_key)
            .cloned()
            .ok_or_else(|| Error::unauthenticated("unknown API key"))
    }

    async fn create(&self, team: &str, spec: SpawnSpec) -> Result<RuntimeInfo> {
        let id = new_runtime_id();
        let spawned = self.provider.spawn(&id, &spec).await?;
        let now = Utc::now();
        let info = RuntimeInfo {
            id: id.clone(),
            runtime: self.provider.name().to_string(),
            team: team.to_string(),
            state: RuntimeState::Running,
            spec,
            created_at: now,
            updated_at: now,
            reason: None,
            restored_from: None,
            handle: spawned.handle,
            usage: None,
            pid: spawned.pid,
        };
        self.rts().insert(id, info.clone());
        Ok(info)
    }

    async fn get(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        self.owned(team, id)
    }

    async fn locate(&self, id: &str) -> Result<RuntimeInfo> {
        self.rts()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found")))
    }

    async fn list(&self, team: &str) -> Result<Vec<RuntimeInfo>> {
        Ok(self
            .rts()
            .values()
            .filter(|r| r.team == team)
            .cloned()
            .collect())
    }

    async fn list_all(&self) -> Result<Vec<RuntimeInfo>> {
        Ok(self.rts().values().cloned().collect())
    }

    async fn kill(&self, team: &str, id: &str) -> Result<()> {
        self.owned(team, id)?;
        self.provider.terminate(id).await?;
        self.rts().remove(id);
        Ok(())
    }

    async fn pause(&self, team: &str, id: &str) -> Result<()> {
        self.owned(team, id)?;
        self.provider.pause(id).await?;
        self.set_state(id, RuntimeState::Paused);
        Ok(())
    }

    async fn resume(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        self.owned(team, id)?;
        self.provider.resume(id).await?;
        self.set_state(id, RuntimeState::Running)
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found")))
    }

    async fn set_labels(
        &self,
        team: &str,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.owned(team, id)?;
        if let Some(r) = self.rts().get_mut(id) {
            r.spec.labels.extend(labels);
        }
        Ok(())
    }

    async fn exec(&self, team: &str, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        self.owned(team, id)?;
        self.provider.exec(id, req).await
    }
    async fn read_file(&self, team: &str, id: &str, path: &str) -> Result<Bytes> {
        self.owned(team, id)?;
        self.provider.read_file(id, path).await
    }
    async fn write_file(&self, team: &str, id: &str, path: &str, data: Bytes) -> Result<()> {
        self.owned(team, id)?;
        self.provider.write_file(id, path, data).await
    }
    async fn list_dir(&self, team: &str, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        self.owned(team, id)?;
        self.provider.list_dir(id, path).await
    }
    async fn stat(&self, team: &str, id: &str, path: &str) -> Result<FileEntry> {
        self.owned(team, id)?;
        self.provider.stat(id, path).await
    }
    async fn make_dir(&self, team: &str, id: &str, path: &str) -> Result<()> {
        self.owned(team, id)?;
        self.provider.make_dir(id, path).await
    }
    async fn rename(&self, team: &str, id: &str, from: &str, to: &str) -> Result<()> {
        self.owned(team, id)?;
        self.provider.rename(id, from, to).await
    }
    async fn remove(&self, team: &str, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.owned(team, id)?;
        self.provider.remove(id, path, recursive).await
    }
}
