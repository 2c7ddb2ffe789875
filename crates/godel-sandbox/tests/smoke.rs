//! Temporary smoke test.
use godel_sandbox::*;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn smoke() {
    let opts = NamespaceOptions {
        init: Some(InitProgram::Path(env!("CARGO_BIN_EXE_godel-sandbox-init").into())),
        ..Default::default()
    };
    let iso = Arc::new(NamespaceIsolator::new(opts));
    println!("{:?}", iso.available().await);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("hello"), "x").unwrap();
    let cfg = SandboxConfig {
        id: format!("smoke-{}", std::process::id()),
        workspace: ws.clone(),
        state_dir: dir.path().join("state"),
        limits: Default::default(),
        network: Default::default(),
        env: Default::default(),
    };
    let sb = iso.create(cfg).await.unwrap();
    println!("handle {}", sb.handle());
    let mut p = sb.launch(ProcessSpec { argv: vec!["sh".into(), "-c".into(), "id; pwd; hostname; ls -la / /home/user; echo hi > f; ls -la; cat /etc/shadow; ps ax".into()], ..Default::default() }).await.unwrap();
    println!("pid {}", p.pid);
    let mut out = String::new();
    p.stdout.read_to_string(&mut out).await.unwrap();
    let mut err = String::new();
    p.stderr.read_to_string(&mut err).await.unwrap();
    let st = p.exit.await.unwrap();
    println!("out:\n{out}\nerr:\n{err}\nexit {st:?}");
    println!("usage {:?}", sb.usage().await);
    sb.destroy().await.unwrap();
}
