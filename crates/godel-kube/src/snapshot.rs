//! Workspace snapshots. Kata cannot checkpoint through Kubernetes, so a
//! snapshot is a tar of `/home/user` streamed out of the pod into
//! `SnapshotTarget::dir/workspace.tar` (with its SHA-256); restore creates a
//! new pod and streams the tar back in. Fork is N restores.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use godel_core::{
    Error, Result, SnapshotArtifact, SnapshotInfo, SnapshotTarget, SpawnSpec, Spawned,
    WORKSPACE_MOUNT,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::files::{TAR, script, verify_tar};
use crate::provider::Inner;

/// File name of the workspace archive inside a snapshot directory.
pub const WORKSPACE_TAR: &str = "workspace.tar";

/// An `AsyncWrite`/`AsyncRead` wrapper that hashes and counts what passes.
struct Hashing<T> {
    inner: T,
    hash: Sha256,
    len: u64,
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Hashing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hash.update(&buf[..n]);
                this.len += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn file_sha256(path: &Path) -> Result<(String, u64)> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f =
            std::fs::File::open(&p).map_err(|e| Error::io(format!("open {}", p.display()), &e))?;
        let mut h = Sha256::new();
        let n = std::io::copy(&mut f, &mut h)
            .map_err(|e| Error::io(format!("read {}", p.display()), &e))?;
        Ok((hex::encode(h.finalize()), n))
    })
    .await
    .map_err(|e| Error::internal(format!("hash task: {e}")))?
}

impl Inner {
    pub(crate) async fn snapshot(
        &self,
        id: &str,
        target: &SnapshotTarget,
    ) -> Result<SnapshotArtifact> {
        let agent = self.agent(id)?;
        let path = target.dir.join(WORKSPACE_TAR);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::io(format!("create {}", path.display()), &e))?;
        let mut sink = Hashing {
            inner: file,
            hash: Sha256::new(),
            len: 0,
        };
        let (code, err) = self
            .exec_raw(&agent, script(TAR, &[WORKSPACE_MOUNT]), None, &mut sink)
            .await?;
        if code != 0 {
            return Err(Error::exec(format!(
                "snapshot of {id}: tar in pod {} failed with exit code {code}: {}",
                agent.pod,
                String::from_utf8_lossy(&err).trim()
            ))
            .with_runtime(id));
        }
        tokio::io::AsyncWriteExt::flush(&mut sink.inner)
            .await
            .map_err(|e| Error::io(format!("write {}", path.display()), &e))?;
        sink.inner
            .sync_all()
            .await
            .map_err(|e| Error::io(format!("sync {}", path.display()), &e))?;
        let (len, sha) = (sink.len, hex::encode(sink.hash.finalize()));
        let check = path.clone();
        let (files, bytes) =
            tokio::task::spawn_blocking(move || std::fs::File::open(&check).and_then(verify_tar))
                .await
                .map_err(|e| Error::internal(format!("verify task: {e}")))?
                .map_err(|e| {
                    Error::exec(format!(
                        "snapshot of {id}: the pod sent a damaged tar archive: {e}"
                    ))
                })?;
        let mut data = std::collections::BTreeMap::new();
        data.insert("format".into(), json!("tar"));
        data.insert("file".into(), json!(WORKSPACE_TAR));
        data.insert("sha256".into(), json!(sha));
        data.insert("files".into(), json!(files));
        data.insert("content_bytes".into(), json!(bytes));
        data.insert("source_namespace".into(), json!(agent.namespace));
        data.insert("source_pod".into(), json!(agent.pod));
        Ok(SnapshotArtifact {
            size_bytes: len,
            kind: "workspace".into(),
            data,
        })
    }

    pub(crate) async fn restore(
        &self,
        id: &str,
        snap: &SnapshotInfo,
        spec: &SpawnSpec,
    ) -> Result<Spawned> {
        let file = snap
            .data
            .get("file")
            .and_then(|v| v.as_str())
            .unwrap_or(WORKSPACE_TAR);
        if file.contains('/') || file == ".." {
            return Err(Error::invalid(format!(
                "snapshot {}: bad archive name {file:?}",
                snap.id
            )));
        }
        let path = snap.dir.join(file);
        if let Some(want) = snap.data.get("sha256").and_then(|v| v.as_str()) {
            let (got, _) = file_sha256(&path).await?;
            if got != want {
                return Err(Error::conflict(format!(
                    "snapshot {}: {} is damaged (sha256 {got}, expected {want})",
                    snap.id,
                    path.display()
                )));
            }
        }
        let mut spec = spec.clone();
        if spec.team.is_none() && !snap.team.is_empty() {
            spec.team = Some(snap.team.clone());
        }
        let spawned = self.spawn(id, &spec).await?;
        let agent = self.agent(id)?;
        let unpack = async {
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| Error::io(format!("open {}", path.display()), &e))?;
            let reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(f);
            self.untar(&agent, WORKSPACE_MOUNT, reader).await
        };
        if let Err(e) = unpack.await {
            self.agents.write().remove(id);
            let _ = self.delete_pod(&agent).await;
            return Err(Error::new(
                e.code,
                format!("restore of snapshot {} into {id}: {}", snap.id, e.message),
            )
            .with_runtime(id));
        }
        Ok(spawned)
    }
}
