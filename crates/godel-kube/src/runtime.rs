//! The `RuntimeProvider` implementation of [`KubeProvider`]: a thin layer
//! over the provider's modules (lifecycle, exec, files, snapshots).

use async_trait::async_trait;
use bytes::Bytes;
use godel_core::{
    Availability, Capabilities, ExecHandle, ExecRequest, FileEntry, Result, RuntimeProvider,
    SandboxStatus, SnapshotArtifact, SnapshotInfo, SnapshotRequest, SnapshotTarget, SpawnSpec,
    Spawned,
};

use crate::provider::KubeProvider;

#[async_trait]
impl RuntimeProvider for KubeProvider {
    fn name(&self) -> &str {
        "kata"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            memory_snapshots: false,
            workspace_snapshots: true,
            fork: true,
            pause: false,
            network_policy: true,
            streaming_exec: true,
            stdin: true,
            resource_limits: true,
            isolation: "vm".into(),
            survives_daemon_restart: true,
            host_bound: false,
        }
    }

    async fn available(&self) -> Availability {
        self.inner.available().await
    }

    async fn spawn(&self, id: &str, spec: &SpawnSpec) -> Result<Spawned> {
        self.inner.spawn(id, spec).await
    }

    async fn adopt(
        &self,
        id: &str,
        _spec: &SpawnSpec,
        handle: &Spawned,
    ) -> Result<Option<Spawned>> {
        self.inner.adopt(id, handle).await
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        self.inner.terminate(id).await
    }

    async fn status(&self, id: &str) -> Result<SandboxStatus> {
        self.inner.status(id).await
    }

    async fn list(&self) -> Result<Vec<String>> {
        Ok(self.inner.list_ids())
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        self.inner.exec_stream(id, req).await
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Bytes> {
        self.inner.read_file(id, path).await
    }

    async fn write_file(&self, id: &str, path: &str, data: Bytes) -> Result<()> {
        self.inner.write_file(id, path, data).await
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        self.inner.list_dir(id, path).await
    }

    async fn stat(&self, id: &str, path: &str) -> Result<FileEntry> {
        self.inner.stat(id, path).await
    }

    async fn make_dir(&self, id: &str, path: &str) -> Result<()> {
        self.inner.make_dir(id, path).await
    }

    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        self.inner.rename(id, from, to).await
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.inner.remove(id, path, recursive).await
    }

    async fn upload_tar(&self, id: &str, path: &str, tar: Bytes) -> Result<()> {
        self.inner.upload_tar(id, path, tar).await
    }

    async fn download_tar(&self, id: &str, path: &str) -> Result<Bytes> {
        self.inner.download_tar(id, path).await
    }

    async fn snapshot(
        &self,
        id: &str,
        _req: &SnapshotRequest,
        target: &SnapshotTarget,
    ) -> Result<SnapshotArtifact> {
        self.inner.snapshot(id, target).await
    }

    async fn restore(
        &self,
        id: &str,
        snapshot: &SnapshotInfo,
        spec: &SpawnSpec,
    ) -> Result<Spawned> {
        self.inner.restore(id, snapshot, spec).await
    }
}
