//! File requests in the guest: read (streamed out under flow control),
//! write (streamed in), list, stat, mkdir, rename, remove, and tar upload
//! and download of directories. Paths resolve through `Shared::resolve`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use godel_core::{Error, FileEntry, FileKind};

use super::{Credit, Shared, StreamState};
use crate::protocol::{CHUNK, Frame, Message, errno_error};

fn entry(sh: &Shared, p: &Path) -> io::Result<FileEntry> {
    let m = fs::symlink_metadata(p)?;
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let modified = m.modified().ok().map(DateTime::<Utc>::from);
    let symlink_target = if ft.is_symlink() {
        fs::read_link(p)
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(FileEntry {
        name: p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: sh.display_path(p),
        kind,
        size: m.len(),
        mode: m.mode() & 0o7777,
        modified,
        symlink_target,
    })
}

fn resolved(sh: &Shared, id: u32, path: &str) -> Option<PathBuf> {
    match sh.resolve(path) {
        Ok(p) => Some(p),
        Err(e) => {
            sh.error(id, e);
            None
        }
    }
}

fn reply_io(sh: &Shared, id: u32, what: &str, path: &str, r: io::Result<()>) {
    match r {
        Ok(()) => sh.reply(id, Message::Ok),
        Err(e) => sh.error(id, errno_error(format!("{what} {path}"), &e)),
    }
}

/// Create `dir` and missing parents, giving new ones to the workspace owner.
fn create_dirs(sh: &Shared, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        sh.chown_like_workspace(d);
    }
    Ok(())
}

pub(crate) fn list_dir(sh: &Shared, id: u32, path: &str) {
    let Some(p) = resolved(sh, id, path) else {
        return;
    };
    let r = (|| -> io::Result<Vec<FileEntry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&p)? {
            let e = e?;
            if let Ok(fe) = entry(sh, &e.path()) {
                out.push(fe);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    })();
    match r {
        Ok(entries) => sh.reply(id, Message::Entries { entries }),
        Err(e) => sh.error(id, errno_error(format!("list {path}"), &e)),
    }
}

pub(crate) fn stat(sh: &Shared, id: u32, path: &str) {
    let Some(p) = resolved(sh, id, path) else {
        return;
    };
    match entry(sh, &p) {
        Ok(entry) => sh.reply(id, Message::Entry { entry }),
        Err(e) => sh.error(id, errno_error(format!("stat {path}"), &e)),
    }
}

pub(crate) fn make_dir(sh: &Shared, id: u32, path: &str) {
    if let Some(p) = resolved(sh, id, path) {
        reply_io(sh, id, "mkdir", path, create_dirs(sh, &p));
    }
}

pub(crate) fn rename(sh: &Shared, id: u32, from: &str, to: &str) {
    let (Some(a), Some(b)) = (resolved(sh, id, from), resolved(sh, id, to)) else {
        return;
    };
    reply_io(sh, id, "rename", from, fs::rename(a, b));
}

pub(crate) fn remove(sh: &Shared, id: u32, path: &str, recursive: bool) {
    let Some(p) = resolved(sh, id, path) else {
        return;
    };
    if p == sh.cfg.root || p == sh.resolve("").unwrap_or_default() {
        sh.error(id, Error::invalid(format!("refusing to remove {path}")));
        return;
    }
    let r = match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() && recursive => fs::remove_dir_all(&p),
        Ok(m) if m.is_dir() => fs::remove_dir(&p),
        Ok(_) => fs::remove_file(&p),
        Err(e) => Err(e),
    };
    reply_io(sh, id, "remove", path, r);
}

/// Streams `Data` frames to the host, buffering to `CHUNK`, under flow control.
struct FrameWriter {
    sh: Arc<Shared>,
    id: u32,
    credit: Arc<Credit>,
    buf: Vec<u8>,
    total: u64,
}

impl FrameWriter {
    fn emit(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let data = Bytes::from(std::mem::take(&mut self.buf));
        self.credit.take(data.len());
        self.total += data.len() as u64;
        self.sh
            .send(&Frame::with_data(self.id, Message::Data, data));
    }
    fn end(mut self) {
        self.emit();
        self.sh.reply(self.id, Message::End { bytes: self.total });
    }
}

impl Write for FrameWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.credit.is_released() && self.buf.is_empty() && self.total > 0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "host went away"));
        }
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == CHUNK {
            self.emit();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sender(sh: &Arc<Shared>, id: u32) -> FrameWriter {
    let credit = Credit::new();
    sh.streams
        .lock()
        .insert(id, StreamState::Sending(credit.clone()));
    FrameWriter {
        sh: sh.clone(),
        id,
        credit,
        buf: Vec::with_capacity(CHUNK),
        total: 0,
    }
}

pub(crate) fn read_file(sh: Arc<Shared>, id: u32, path: &str) {
    let Some(p) = resolved(&sh, id, path) else {
        return;
    };
    let mut f = match File::open(&p).and_then(|f| {
        if f.metadata()?.is_dir() {
            Err(io::Error::from_raw_os_error(libc::EISDIR))
        } else {
            Ok(f)
        }
    }) {
        Ok(f) => f,
        Err(e) => return sh.error(id, errno_error(format!("read {path}"), &e)),
    };
    let mut w = sender(&sh, id);
    let path = path.to_owned();
    std::thread::spawn(move || {
        let r = io::copy(&mut f, &mut w);
        let sh = w.sh.clone();
        match r {
            Ok(_) => w.end(),
            Err(e) => sh.error(id, errno_error(format!("read {path}"), &e)),
        }
        sh.streams.lock().remove(&id);
    });
}

/// An incoming file write.
pub(crate) struct WriteStream {
    file: File,
    path: String,
    written: u64,
}

pub(crate) fn write_open(sh: &Shared, id: u32, path: &str, mode: Option<u32>) {
    let Some(p) = resolved(sh, id, path) else {
        sh.streams.lock().insert(id, StreamState::Failed);
        return;
    };
    let r = (|| -> io::Result<File> {
        if let Some(parent) = p.parent() {
            create_dirs(sh, parent)?;
        }
        let existed = p.exists();
        let f = File::create(&p)?;
        if let Some(m) = mode {
            f.set_permissions(fs::Permissions::from_mode(m))?;
        }
        if !existed {
            sh.chown_like_workspace(&p);
        }
        Ok(f)
    })();
    let st = match r {
        Ok(file) => StreamState::Write(WriteStream {
            file,
            path: path.to_owned(),
            written: 0,
        }),
        Err(e) => {
            sh.error(id, errno_error(format!("write {path}"), &e));
            StreamState::Failed
        }
    };
    sh.streams.lock().insert(id, st);
}

impl WriteStream {
    /// Returns true when the stream is finished.
    pub(crate) fn input(&mut self, sh: &Shared, id: u32, msg: Message, data: &[u8]) -> bool {
        match msg {
            Message::Data => {
                if let Err(e) = self.file.write_all(data) {
                    sh.error(id, errno_error(format!("write {}", self.path), &e));
                    // Swallow the rest: replace ourselves by a failed stream.
                    self.written = u64::MAX;
                    return false;
                }
                if self.written != u64::MAX {
                    self.written += data.len() as u64;
                }
                false
            }
            Message::End { bytes } => {
                if self.written == u64::MAX {
                    return true;
                }
                if bytes != self.written {
                    sh.error(
                        id,
                        Error::invalid(format!(
                            "write {}: announced {bytes} bytes, received {}",
                            self.path, self.written
                        )),
                    );
                } else {
                    sh.reply(id, Message::Ok);
                }
                true
            }
            _ => false,
        }
    }
}

/// An incoming tar archive, unpacked by a thread as chunks arrive.
pub(crate) struct UploadStream {
    tx: Option<SyncSender<Bytes>>,
}

impl UploadStream {
    pub(crate) fn input(&mut self, msg: Message, data: Bytes) -> bool {
        match msg {
            Message::Data => {
                if let Some(tx) = &self.tx
                    && tx.send(data).is_err()
                {
                    self.tx = None; // the unpacker failed and replied already
                }
                false
            }
            Message::End { .. } => {
                self.tx = None;
                true
            }
            _ => false,
        }
    }
}

/// `Read` over the chunks of an upload.
struct ChunkReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

pub(crate) fn upload_open(sh: Arc<Shared>, id: u32, path: &str) {
    let Some(dir) = resolved(&sh, id, path) else {
        sh.streams.lock().insert(id, StreamState::Failed);
        return;
    };
    if let Err(e) = create_dirs(&sh, &dir) {
        sh.error(id, errno_error(format!("upload into {path}"), &e));
        sh.streams.lock().insert(id, StreamState::Failed);
        return;
    }
    let (tx, rx) = mpsc::sync_channel::<Bytes>(32);
    sh.streams
        .lock()
        .insert(id, StreamState::Upload(UploadStream { tx: Some(tx) }));
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut reader = ChunkReader {
            rx,
            cur: Bytes::new(),
        };
        let r = (|| -> io::Result<()> {
            let mut ar = tar::Archive::new(&mut reader);
            ar.set_preserve_permissions(true);
            ar.set_overwrite(true);
            for e in ar.entries()? {
                let mut e = e?;
                let rel = e.path()?.into_owned();
                if e.unpack_in(&dir)? {
                    sh.chown_like_workspace(&dir.join(rel));
                }
            }
            Ok(())
        })();
        // Drain whatever is left so the reader thread never blocks on us.
        let mut sink = [0u8; 8192];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        reply_io(&sh, id, "upload into", &path, r);
    });
}

pub(crate) fn download(sh: Arc<Shared>, id: u32, path: &str) {
    let Some(p) = resolved(&sh, id, path) else {
        return;
    };
    let meta = match fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(e) => return sh.error(id, errno_error(format!("download {path}"), &e)),
    };
    let w = sender(&sh, id);
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        let r = if meta.is_dir() {
            b.append_dir_all(".", &p)
        } else {
            let name = p.file_name().map(PathBuf::from).unwrap_or_default();
            b.append_path_with_name(&p, name)
        };
        let r = r.and_then(|_| b.into_inner());
        match r {
            Ok(w) => w.end(),
            Err(e) => sh.error(id, errno_error(format!("download {path}"), &e)),
        }
        sh.streams.lock().remove(&id);
    });
}
