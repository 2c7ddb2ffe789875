//! File operations and tar transfer, including every escape we know of:
//! `..`, absolute paths, symlinks to `/etc` or `..`, and tar entries with
//! `../`, absolute names or a path through a symlink. None may write outside.

mod common;

use bytes::Bytes;
use common::*;
use godel_core::{ErrorCode, FileKind, RuntimeProvider, WorkspaceMode};

async fn setup(id: &str, mode: WorkspaceMode) -> Env {
    let e = Env::new();
    e.p.spawn(id, &e.spec(mode)).await.unwrap();
    e
}

#[tokio::test]
async fn basic_operations_both_modes() {
    for (i, mode) in MODES.into_iter().enumerate() {
        let id = format!("rt-f{i}");
        let e = setup(&id, mode).await;
        let p = &e.p;
        p.write_file(&id, "a/b/c.txt", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            &p.read_file(&id, "/home/user/a/b/c.txt").await.unwrap()[..],
            b"hello"
        );
        assert_eq!(
            std::fs::read(e.ws(&id).join("a/b/c.txt")).unwrap(),
            b"hello"
        );
        let st = p.stat(&id, "a/b/c.txt").await.unwrap();
        assert_eq!(
            (st.kind, st.size, st.name.as_str(), st.path.as_str()),
            (FileKind::File, 5, "c.txt", "a/b/c.txt")
        );
        let link = p.stat(&id, "readme-link").await.unwrap();
        assert_eq!(link.kind, FileKind::Symlink);
        assert_eq!(link.symlink_target.as_deref(), Some("README.md"));
        assert_eq!(p.stat(&id, "src/run.sh").await.unwrap().mode & 0o111, 0o111);
        let names: Vec<_> = p
            .list_dir(&id, "")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        for n in [".gitignore", "README.md", "a", "readme-link", "src"] {
            assert!(names.contains(&n.to_string()), "{n} in {names:?}");
        }
        p.make_dir(&id, "x/y").await.unwrap();
        assert_eq!(p.stat(&id, "x/y").await.unwrap().kind, FileKind::Dir);
        // Renaming a directory that comes from the repo (the overlay's lower layer).
        p.rename(&id, "src", "moved/src").await.unwrap();
        assert_eq!(
            &p.read_file(&id, "moved/src/run.sh").await.unwrap()[..],
            b"#!/bin/sh\necho run\n"
        );
        assert_eq!(
            p.stat(&id, "src").await.unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(
            p.read_file(&id, "nope").await.unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(
            p.remove(&id, "a", false).await.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        p.remove(&id, "a", true).await.unwrap();
        p.remove(&id, "README.md", false).await.unwrap();
        assert!(!e.ws(&id).join("a").exists() && !e.ws(&id).join("README.md").exists());
        assert_eq!(
            p.read_file(&id, "x").await.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            p.remove(&id, "", true).await.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}

#[tokio::test]
async fn escapes_are_refused_and_write_nothing() {
    let e = setup("rt-esc", WorkspaceMode::Cow).await;
    let p = &e.p;
    let id = "rt-esc";
    let outside = e.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    // Symlinks planted by the agent: absolute to /etc, absolute to our
    // outside dir, and relative past the root.
    let ws = e.ws(id);
    std::os::unix::fs::symlink("/etc", ws.join("etc-link")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("out-abs")).unwrap();
    std::os::unix::fs::symlink("../../../outside", ws.join("out-rel")).unwrap();

    // Lexical escapes: INVALID_ARGUMENT.
    for path in ["../x", "/etc/passwd", "a/../../x", "/home/user/../x"] {
        assert_eq!(
            p.read_file(id, path).await.unwrap_err().code,
            ErrorCode::InvalidArgument,
            "{path}"
        );
        assert_eq!(
            p.write_file(id, path, Bytes::from_static(b"x"))
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument,
            "{path}"
        );
    }
    // Symlink escapes: PERMISSION_DENIED, for every operation.
    for path in ["etc-link/passwd", "out-abs/secret", "out-rel/secret"] {
        let code = p.read_file(id, path).await.unwrap_err().code;
        assert_eq!(code, ErrorCode::PermissionDenied, "read {path}");
        let code = p
            .write_file(id, path, Bytes::from_static(b"pwned"))
            .await
            .unwrap_err()
            .code;
        assert_eq!(code, ErrorCode::PermissionDenied, "write {path}");
        assert!(p.stat(id, path).await.is_err());
        assert!(p.remove(id, path, true).await.is_err());
        assert!(p.make_dir(id, &format!("{path}-dir/x")).await.is_err());
    }
    assert!(
        p.write_file(id, "out-abs/new", Bytes::from_static(b"x"))
            .await
            .is_err()
    );
    assert!(p.list_dir(id, "etc-link").await.is_err());
    assert!(p.list_dir(id, "out-rel").await.is_err());
    assert!(
        p.rename(id, "README.md", "out-abs/README.md")
            .await
            .is_err()
    );
    // Downloading a link packs the link itself, never what it points at.
    let t = p.download_tar(id, "out-abs").await.unwrap();
    let kinds: Vec<_> = tar::Archive::new(&t[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().entry_type())
        .collect();
    assert_eq!(kinds, vec![tar::EntryType::Symlink]);
    assert!(p.download_tar(id, "out-abs/secret").await.is_err());
    assert!(
        p.upload_tar(id, "out-abs", tar_of(&[("f", b"x".as_slice())]))
            .await
            .is_err()
    );
    // Nothing was written or removed outside.
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["secret"]);
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "secret"
    );
    // The links themselves are inside and can be inspected and removed.
    assert_eq!(
        p.stat(id, "etc-link").await.unwrap().kind,
        FileKind::Symlink
    );
    p.remove(id, "etc-link", false).await.unwrap();
    assert!(std::path::Path::new("/etc/passwd").exists());
}

fn tar_of(files: &[(&str, &[u8])]) -> Bytes {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    Bytes::from(b.into_inner().unwrap())
}

/// A raw tar entry with an arbitrary (possibly hostile) name.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        let lb = l.as_bytes();
        h.as_old_mut().linkname[..lb.len()].copy_from_slice(lb);
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[tokio::test]
async fn hostile_tars_are_refused_whole() {
    let e = setup("rt-tar", WorkspaceMode::Cow).await;
    let (p, id) = (&e.p, "rt-tar");
    type Entry<'a> = (&'a str, tar::EntryType, Option<&'a str>);
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dotdot",
            vec![
                ("ok.txt", tar::EntryType::Regular, None),
                ("../evil.txt", tar::EntryType::Regular, None),
            ],
        ),
        (
            "absolute",
            vec![
                ("ok.txt", tar::EntryType::Regular, None),
                ("/tmp/evil.txt", tar::EntryType::Regular, None),
            ],
        ),
        (
            "through-link",
            vec![
                ("ok.txt", tar::EntryType::Regular, None),
                ("l", tar::EntryType::Symlink, Some("/tmp")),
                ("l/evil.txt", tar::EntryType::Regular, None),
            ],
        ),
        (
            "hardlink-out",
            vec![
                ("ok.txt", tar::EntryType::Regular, None),
                ("h", tar::EntryType::Link, Some("../../etc/passwd")),
            ],
        ),
    ];
    for (what, entries) in cases {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let data: &[u8] = if kind == tar::EntryType::Regular {
                b"evil"
            } else {
                b""
            };
            raw_entry(&mut b, name, kind, link, data);
        }
        let bytes = Bytes::from(b.into_inner().unwrap());
        let err = p.upload_tar(id, "up", bytes).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{what}: {err}");
        assert!(
            !e.ws(id).join("up").exists(),
            "{what}: something was written"
        );
        assert!(!e.ws(id).join("ok.txt").exists());
    }
    assert!(!std::path::Path::new("/tmp/evil.txt").exists());
    assert!(!e.tmp.path().join("home/workspaces/evil.txt").exists());
}

#[tokio::test]
async fn tar_round_trip_keeps_modes_and_links() {
    let e = setup("rt-rt", WorkspaceMode::Cow).await;
    let (p, id) = (&e.p, "rt-rt");
    let tar = p.download_tar(id, "").await.unwrap();
    let mut names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"src/run.sh".to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with(".git/")),
        "the workspace's .git is part of the tree"
    );
    p.upload_tar(id, "copy", tar).await.unwrap();
    let ws = e.ws(id);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.join("copy/src/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(ws.join("copy/readme-link"))
            .unwrap()
            .to_string_lossy(),
        "README.md"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("copy/readme-link")).unwrap(),
        "two\n"
    );
    // A single file downloads as one entry named after it.
    let one = p.download_tar(id, "src/run.sh").await.unwrap();
    let entries: Vec<String> = tar::Archive::new(&one[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec!["run.sh"]);
    // Uploading over an existing symlink replaces the link, not its target.
    p.upload_tar(id, "", tar_of(&[("readme-link", b"replaced")]))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md")).unwrap(),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("readme-link")).unwrap(),
        "replaced"
    );
}

/// A host sandbox that claims its agents run as uid 4242 / gid 4343.
struct OwnedJail(std::sync::Arc<dyn godel_sandbox::Jail>);

#[async_trait::async_trait]
impl godel_sandbox::Jail for OwnedJail {
    fn id(&self) -> &str {
        self.0.id()
    }
    fn init_pid(&self) -> Option<u32> {
        None
    }
    fn workspace_view(&self) -> String {
        self.0.workspace_view()
    }
    async fn launch(
        &self,
        spec: godel_sandbox::ProcessSpec,
    ) -> godel_core::Result<godel_sandbox::Process> {
        self.0.launch(spec).await
    }
    async fn alive(&self) -> bool {
        self.0.alive().await
    }
    async fn usage(&self) -> godel_core::Result<godel_core::ResourceUsage> {
        self.0.usage().await
    }
    async fn freeze(&self, frozen: bool) -> godel_core::Result<()> {
        self.0.freeze(frozen).await
    }
    async fn destroy(&self) -> godel_core::Result<()> {
        self.0.destroy().await
    }
    fn handle(&self) -> serde_json::Value {
        self.0.handle()
    }
    fn workspace_owner(&self) -> Option<(u32, u32)> {
        Some((4242, 4343))
    }
}

struct OwnedIsolator;

#[async_trait::async_trait]
impl godel_sandbox::Isolator for OwnedIsolator {
    fn name(&self) -> &str {
        "owned-test"
    }
    async fn available(&self) -> godel_core::Availability {
        godel_core::Availability::yes("test")
    }
    async fn create(
        &self,
        cfg: godel_sandbox::JailConfig,
    ) -> godel_core::Result<std::sync::Arc<dyn godel_sandbox::Jail>> {
        let inner = godel_sandbox::HostIsolator.create(cfg).await?;
        Ok(std::sync::Arc::new(OwnedJail(inner)))
    }
    async fn adopt(
        &self,
        cfg: godel_sandbox::JailConfig,
        _h: &serde_json::Value,
    ) -> godel_core::Result<Option<std::sync::Arc<dyn godel_sandbox::Jail>>> {
        Ok(Some(self.create(cfg).await?))
    }
}

#[tokio::test]
async fn created_entries_belong_to_the_agent() {
    use godel_sandbox::Isolator;
    use std::os::unix::fs::MetadataExt;
    let e = Env::new();
    let mut cfg = godel_worktree::WorktreeConfig::new(e.home.join("owned"));
    cfg.host = std::sync::Arc::new(OwnedIsolator);
    let p = godel_worktree::WorktreeProvider::new(cfg).unwrap();
    p.spawn("rt-own", &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    let ws = p.workspace_path("rt-own").unwrap();
    p.write_file("rt-own", "n1/n2/f", Bytes::from_static(b"x"))
        .await
        .unwrap();
    p.make_dir("rt-own", "m/x").await.unwrap();
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "d/", tar::EntryType::Directory, None, b"");
    raw_entry(&mut b, "d/file", tar::EntryType::Regular, None, b"data");
    raw_entry(&mut b, "d/link", tar::EntryType::Symlink, Some("file"), b"");
    p.upload_tar("rt-own", "t/u", Bytes::from(b.into_inner().unwrap()))
        .await
        .unwrap();
    p.rename("rt-own", "README.md", "r/README.md")
        .await
        .unwrap();
    for path in [
        "n1",
        "n1/n2",
        "n1/n2/f",
        "m",
        "m/x",
        "t",
        "t/u",
        "t/u/d",
        "t/u/d/file",
        "t/u/d/link",
        "r",
    ] {
        let md = std::fs::symlink_metadata(ws.join(path)).unwrap();
        assert_eq!((md.uid(), md.gid()), (4242, 4343), "{path}");
    }
    // Entries that were already there keep their owner.
    assert_eq!(std::fs::metadata(ws.join("src")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(&ws).unwrap().uid(), 0);
    let _ = OwnedIsolator.name();
    p.terminate("rt-own").await.unwrap();
}
