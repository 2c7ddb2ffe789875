//! `filesystem.Filesystem`: stat, mkdir, move, list, remove and directory
//! watches over the control plane's file calls. Paths come from the SDK as
//! `/home/user/…` (or relative to it) and go to the control plane unchanged;
//! entries go back with absolute sandbox paths and `mode` holding only the
//! permission bits, as the SDK's tests expect.
//!
//! Watches poll: the runtime contract has no change notification, so
//! watchers compare listings (names, sizes, mtimes) and report CREATE /
//! CHMOD / WRITE / REMOVE. `WatchDir` streams list the tree every
//! `ServeConfig::watch_interval`; `CreateWatcher` watchers list it on each
//! `GetWatcherEvents`, so a change made before that call is always seen.
//!
//! Symlinks are reported as envd does: with the type of their target and the
//! target's absolute path in `symlinkTarget`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use godel_core::{Error, ErrorCode, FileEntry, FileKind, WORKSPACE_MOUNT};

use super::envd::{Ctx, StreamIn, stream_codec, stream_response, unary, unimplemented};
use godel_e2b::connect::parse_timeout;
use godel_e2b::pb::filesystem::watch_dir_response::{Event as WatchEvent, KeepAlive, StartEvent};
use godel_e2b::pb::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, EntryInfo, EventType, FileType, FilesystemEvent,
    GetWatcherEventsRequest, GetWatcherEventsResponse, ListDirRequest, ListDirResponse,
    MakeDirRequest, MakeDirResponse, MoveRequest, MoveResponse, RemoveRequest, RemoveResponse,
    RemoveWatcherRequest, RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest,
    WatchDirResponse,
};

/// Deepest `ListDir` walk served.
const MAX_DEPTH: u32 = 32;
/// Keepalive interval of `WatchDir` streams.
const WATCH_KEEPALIVE: Duration = Duration::from_secs(30);

/// The sandbox path of a workspace-relative path.
pub(crate) fn sandbox_path(rel: &str) -> String {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        WORKSPACE_MOUNT.to_string()
    } else {
        format!("{WORKSPACE_MOUNT}/{rel}")
    }
}

fn permissions(kind: FileKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// A godel entry as an envd `EntryInfo`.
pub(crate) fn entry_info(e: &FileEntry) -> EntryInfo {
    let kind = match e.kind {
        FileKind::File => FileType::File,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Other => FileType::Unspecified,
    };
    let mode = e.mode & 0o7777;
    EntryInfo {
        name: e.name.clone(),
        r#type: kind as i32,
        path: sandbox_path(&e.path),
        size: e.size as i64,
        mode,
        permissions: permissions(e.kind, mode),
        owner: "user".into(),
        group: "user".into(),
        modified_time: e.modified.map(|t| pbjson_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }),
        symlink_target: e.symlink_target.clone(),
        metadata: Default::default(),
    }
}

fn not_found(path: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| {
        if e.code == ErrorCode::NotFound {
            Error::not_found(format!("path {path} not found"))
        } else {
            e
        }
    }
}

/// Follow a symlink entry to its target's type, keeping the absolute target path.
async fn resolve_link(ctx: &Ctx, mut e: FileEntry) -> FileEntry {
    if e.kind != FileKind::Symlink {
        return e;
    }
    let Some(t) = e.symlink_target.clone() else {
        return e;
    };
    let target = if t.starts_with('/') {
        t
    } else {
        let link = sandbox_path(&e.path);
        let parent = link
            .rsplit_once('/')
            .map(|(p, _)| p)
            .unwrap_or(WORKSPACE_MOUNT);
        format!("{parent}/{t}")
    };
    if let Ok(te) = stat(ctx, &target).await {
        e.kind = te.kind;
        e.size = te.size;
    }
    e.symlink_target = Some(target);
    e
}

async fn stat(ctx: &Ctx, path: &str) -> godel_core::Result<FileEntry> {
    ctx.state
        .control
        .stat(&ctx.entry.caller, ctx.id(), path)
        .await
        .map_err(not_found(path))
}

pub(super) async fn dispatch(ctx: Ctx, method: &str, headers: HeaderMap, body: Body) -> Response {
    match method {
        "Stat" => {
            unary(&headers, body, |r: StatRequest| async move {
                let e = resolve_link(&ctx, stat(&ctx, &r.path).await?).await;
                Ok(StatResponse {
                    entry: Some(entry_info(&e)),
                })
            })
            .await
        }
        "MakeDir" => {
            unary(&headers, body, |r: MakeDirRequest| async move {
                match stat(&ctx, &r.path).await {
                    Ok(_) => {
                        return Err(Error::conflict(format!("path {} already exists", r.path)));
                    }
                    Err(e) if e.code == ErrorCode::NotFound => {}
                    Err(e) => return Err(e),
                }
                let b = &ctx.state.control;
                b.make_dir(&ctx.entry.caller, ctx.id(), &r.path).await?;
                let e = stat(&ctx, &r.path).await?;
                Ok(MakeDirResponse {
                    entry: Some(entry_info(&e)),
                })
            })
            .await
        }
        "Move" => {
            unary(&headers, body, |r: MoveRequest| async move {
                let b = &ctx.state.control;
                b.rename(&ctx.entry.caller, ctx.id(), &r.source, &r.destination)
                    .await
                    .map_err(not_found(&r.source))?;
                let e = stat(&ctx, &r.destination).await?;
                Ok(MoveResponse {
                    entry: Some(entry_info(&e)),
                })
            })
            .await
        }
        "ListDir" => {
            unary(&headers, body, |r: ListDirRequest| async move {
                let depth = r.depth.clamp(1, MAX_DEPTH);
                let root = stat(&ctx, &r.path).await?;
                if root.kind != FileKind::Dir {
                    return Err(Error::invalid(format!(
                        "path {} is not a directory",
                        r.path
                    )));
                }
                let mut entries = Vec::new();
                for e in walk(&ctx, &r.path, depth).await? {
                    entries.push(entry_info(&resolve_link(&ctx, e).await));
                }
                Ok(ListDirResponse { entries })
            })
            .await
        }
        "Remove" => {
            unary(&headers, body, |r: RemoveRequest| async move {
                let b = &ctx.state.control;
                match b.remove(&ctx.entry.caller, ctx.id(), &r.path, true).await {
                    Ok(()) => Ok(RemoveResponse {}),
                    // Removing a missing path is a no-op, as with envd.
                    Err(e) if e.code == ErrorCode::NotFound => Ok(RemoveResponse {}),
                    Err(e) => Err(e),
                }
            })
            .await
        }
        "WatchDir" => watch_dir(ctx, headers, body).await,
        "CreateWatcher" => {
            unary(&headers, body, |r: CreateWatcherRequest| async move {
                let id = create_watcher(&ctx, r).await?;
                Ok(CreateWatcherResponse { watcher_id: id })
            })
            .await
        }
        "GetWatcherEvents" => {
            unary(&headers, body, |r: GetWatcherEventsRequest| async move {
                let events = watcher_events(&ctx, &r.watcher_id).await?;
                Ok(GetWatcherEventsResponse { events })
            })
            .await
        }
        "RemoveWatcher" => {
            unary(&headers, body, |r: RemoveWatcherRequest| async move {
                ctx.entry.watchers.remove(&r.watcher_id)?;
                Ok(RemoveWatcherResponse {})
            })
            .await
        }
        other => unimplemented("filesystem.Filesystem", other),
    }
}

/// List `path` and its subdirectories down to `depth` levels.
async fn walk(ctx: &Ctx, path: &str, depth: u32) -> godel_core::Result<Vec<FileEntry>> {
    let b = &ctx.state.control;
    let mut out = Vec::new();
    let mut level = vec![path.to_string()];
    for d in 0..depth {
        let mut next = Vec::new();
        for dir in level {
            let entries = b
                .list_dir(&ctx.entry.caller, ctx.id(), &dir)
                .await
                .map_err(not_found(&dir))?;
            for e in entries {
                if e.kind == FileKind::Dir && d + 1 < depth {
                    next.push(sandbox_path(&e.path));
                }
                out.push(e);
            }
        }
        level = next;
    }
    // Depth-first order, as envd walks.
    out.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(out)
}

/// What a watcher remembers of one entry.
type Seen = HashMap<String, (FileKind, u64, Option<chrono::DateTime<chrono::Utc>>)>;

/// The watched directory as workspace-relative path, after checking it.
async fn watch_root(ctx: &Ctx, path: &str) -> godel_core::Result<String> {
    let e = stat(ctx, path).await?;
    if e.kind != FileKind::Dir {
        return Err(Error::invalid(format!("path {path} is not a directory")));
    }
    Ok(e.path)
}

async fn scan(ctx: &Ctx, root: &str, recursive: bool) -> godel_core::Result<Seen> {
    let entries = walk(
        ctx,
        &sandbox_path(root),
        if recursive { MAX_DEPTH } else { 1 },
    )
    .await?;
    let prefix = if root.is_empty() {
        String::new()
    } else {
        format!("{}/", root.trim_end_matches('/'))
    };
    Ok(entries
        .into_iter()
        .map(|e| {
            let name = e.path.strip_prefix(&prefix).unwrap_or(&e.path).to_string();
            (name, (e.kind, e.size, e.modified))
        })
        .collect())
}

fn diff(old: &Seen, new: &Seen) -> Vec<FilesystemEvent> {
    let mut out = Vec::new();
    let ev = |name: &str, t: EventType| FilesystemEvent {
        name: name.to_string(),
        r#type: t as i32,
        entry: None,
    };
    let mut names: Vec<&String> = new.keys().collect();
    names.sort();
    for name in names {
        match (old.get(name), &new[name]) {
            // envd's inotify sees a created file as create, chmod (chown),
            // then write; the same sequence keeps SDK-side event counts equal.
            (None, n) if n.0 == FileKind::File => {
                out.push(ev(name, EventType::Create));
                out.push(ev(name, EventType::Chmod));
                if n.1 > 0 {
                    out.push(ev(name, EventType::Write));
                }
            }
            (None, _) => out.push(ev(name, EventType::Create)),
            (Some(o), n) if o.0 == FileKind::File && (o.1 != n.1 || o.2 != n.2) => {
                out.push(ev(name, EventType::Write))
            }
            _ => {}
        }
    }
    let mut gone: Vec<&String> = old.keys().filter(|k| !new.contains_key(*k)).collect();
    gone.sort();
    for name in gone {
        out.push(ev(name, EventType::Remove));
    }
    out
}

async fn with_entries(
    ctx: &Ctx,
    root: &str,
    mut events: Vec<FilesystemEvent>,
    include: bool,
) -> Vec<FilesystemEvent> {
    if include {
        for e in &mut events {
            if e.r#type != EventType::Remove as i32 {
                let path = sandbox_path(&format!("{root}/{}", e.name));
                e.entry = stat(ctx, &path).await.ok().map(|f| entry_info(&f));
            }
        }
    }
    events
}

async fn watch_dir(ctx: Ctx, headers: HeaderMap, body: Body) -> Response {
    let codec = match stream_codec(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let req: Result<WatchDirRequest, Error> = StreamIn::new(codec, body).one().await;
    let (out, resp) = stream_response(codec);
    let deadline = parse_timeout(&headers);
    tokio::spawn(async move {
        let req = match req {
            Ok(r) => r,
            Err(e) => return out.fail(&e).await,
        };
        let root = match watch_root(&ctx, &req.path).await {
            Ok(r) => r,
            Err(e) => return out.fail(&e).await,
        };
        let mut seen = match scan(&ctx, &root, req.recursive).await {
            Ok(s) => s,
            Err(e) => return out.fail(&e).await,
        };
        let msg = |e: WatchEvent| WatchDirResponse { event: Some(e) };
        if !out.send(&msg(WatchEvent::Start(StartEvent {}))).await {
            return;
        }
        let started = tokio::time::Instant::now();
        let mut last_sent = started;
        let interval = ctx.state.cfg.watch_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = out.closed() => return,
            }
            if deadline.is_some_and(|d| started.elapsed() >= d) {
                return out.end(None).await;
            }
            let now = match scan(&ctx, &root, req.recursive).await {
                Ok(s) => s,
                Err(e) => return out.fail(&e).await,
            };
            let events = with_entries(&ctx, &root, diff(&seen, &now), req.include_entry).await;
            seen = now;
            for ev in events {
                if !out.send(&msg(WatchEvent::Filesystem(ev))).await {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
            if last_sent.elapsed() >= WATCH_KEEPALIVE {
                if !out.send(&msg(WatchEvent::Keepalive(KeepAlive {}))).await {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
        }
    });
    resp
}

/// A watcher of the `CreateWatcher` API: each `GetWatcherEvents` lists the
/// tree and reports what changed since the previous call, so a change made
/// before the call is always reported (a file created and removed between two
/// calls is not).
struct PollWatcher {
    root: String,
    recursive: bool,
    include_entry: bool,
    seen: tokio::sync::Mutex<Seen>,
}

/// The polling watchers of one sandbox.
#[derive(Default)]
pub(crate) struct Watchers {
    map: Mutex<HashMap<String, Arc<PollWatcher>>>,
}

impl Watchers {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Arc<PollWatcher>>> {
        self.map.lock()
    }

    fn get(&self, id: &str) -> godel_core::Result<Arc<PollWatcher>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("watcher {id} not found")))
    }

    fn remove(&self, id: &str) -> godel_core::Result<()> {
        self.lock()
            .remove(id)
            .map(drop)
            .ok_or_else(|| Error::not_found(format!("watcher {id} not found")))
    }

    /// Stop every watcher.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

async fn create_watcher(ctx: &Ctx, r: CreateWatcherRequest) -> godel_core::Result<String> {
    let root = watch_root(ctx, &r.path).await?;
    let seen = scan(ctx, &root, r.recursive).await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    ctx.entry.watchers.lock().insert(
        id.clone(),
        Arc::new(PollWatcher {
            root,
            recursive: r.recursive,
            include_entry: r.include_entry,
            seen: tokio::sync::Mutex::new(seen),
        }),
    );
    Ok(id)
}

async fn watcher_events(ctx: &Ctx, id: &str) -> godel_core::Result<Vec<FilesystemEvent>> {
    let w = ctx.entry.watchers.get(id)?;
    let mut seen = w.seen.lock().await;
    let now = scan(ctx, &w.root, w.recursive).await?;
    let events = diff(&seen, &now);
    *seen = now;
    Ok(with_entries(ctx, &w.root, events, w.include_entry).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_use_sandbox_paths_and_permission_bits() {
        let e = FileEntry {
            name: "a.txt".into(),
            path: "d/a.txt".into(),
            kind: FileKind::File,
            size: 3,
            mode: 0o100644,
            modified: None,
            symlink_target: None,
        };
        let i = entry_info(&e);
        assert_eq!(i.path, "/home/user/d/a.txt");
        assert_eq!(i.mode, 0o644);
        assert_eq!(i.permissions, "-rw-r--r--");
        assert_eq!(sandbox_path(""), "/home/user");
    }

    #[test]
    fn diffs_report_create_write_remove() {
        let mut a = Seen::new();
        a.insert("x".into(), (FileKind::File, 1, None));
        a.insert("gone".into(), (FileKind::File, 1, None));
        let mut b = Seen::new();
        b.insert("x".into(), (FileKind::File, 2, None));
        b.insert("new".into(), (FileKind::Dir, 0, None));
        let ev: Vec<(String, i32)> = diff(&a, &b)
            .into_iter()
            .map(|e| (e.name, e.r#type))
            .collect();
        assert_eq!(
            ev,
            vec![
                ("new".into(), EventType::Create as i32),
                ("x".into(), EventType::Write as i32),
                ("gone".into(), EventType::Remove as i32),
            ]
        );
    }
}
