//! Exec and file operations on a live runtime, after the team check; each
//! is metered (exec count, bytes in and out).

use bytes::Bytes;
use godel_core::{ExecHandle, ExecOutput, ExecRequest, FileEntry, Result};

use super::{Caller, Control};

impl Control {
    pub async fn exec(&self, caller: &Caller, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        req.validate()?;
        let (_, p) = self.live(caller, id)?;
        let stdin = req.stdin.as_ref().map(|s| s.len() as u64).unwrap_or(0);
        let cmd = req.cmd.clone();
        let h = p.exec(id, req).await.map_err(|e| e.with_runtime(id))?;
        let h = self.activity.track_exec(id, &cmd, h);
        Ok(self.meter_exec(id, stdin, h))
    }

    pub async fn exec_collect(
        &self,
        caller: &Caller,
        id: &str,
        req: ExecRequest,
    ) -> Result<ExecOutput> {
        let started = std::time::Instant::now();
        let (rec, _) = self.live(caller, id)?;
        let out = self
            .exec(caller, id, req)
            .await?
            .collect()
            .await
            .map_err(|e| e.with_runtime(id));
        self.metrics().observe_exec(&rec.runtime, started.elapsed());
        out
    }

    pub async fn read_file(&self, caller: &Caller, id: &str, path: &str) -> Result<Bytes> {
        let (_, p) = self.live(caller, id)?;
        let data = p.read_file(id, path).await?;
        self.meter_bytes(id, data.len() as u64);
        Ok(data)
    }

    pub async fn write_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        data: Bytes,
    ) -> Result<()> {
        let (_, p) = self.live(caller, id)?;
        let n = data.len() as u64;
        p.write_file(id, path, data).await?;
        self.meter_bytes(id, n);
        Ok(())
    }

    pub async fn list_dir(&self, caller: &Caller, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        let (_, p) = self.live(caller, id)?;
        p.list_dir(id, path).await
    }

    pub async fn stat(&self, caller: &Caller, id: &str, path: &str) -> Result<FileEntry> {
        let (_, p) = self.live(caller, id)?;
        p.stat(id, path).await
    }

    pub async fn make_dir(&self, caller: &Caller, id: &str, path: &str) -> Result<()> {
        let (_, p) = self.live(caller, id)?;
        p.make_dir(id, path).await
    }

    pub async fn rename(&self, caller: &Caller, id: &str, from: &str, to: &str) -> Result<()> {
        let (_, p) = self.live(caller, id)?;
        p.rename(id, from, to).await
    }

    pub async fn remove(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<()> {
        let (_, p) = self.live(caller, id)?;
        p.remove(id, path, recursive).await
    }

    pub async fn upload_tar(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        tar: Bytes,
    ) -> Result<()> {
        let (_, p) = self.live(caller, id)?;
        let n = tar.len() as u64;
        p.upload_tar(id, path, tar).await?;
        self.meter_bytes(id, n);
        Ok(())
    }

    pub async fn download_tar(&self, caller: &Caller, id: &str, path: &str) -> Result<Bytes> {
        let (_, p) = self.live(caller, id)?;
        let data = p.download_tar(id, path).await?;
        self.meter_bytes(id, data.len() as u64);
        Ok(data)
    }
}
