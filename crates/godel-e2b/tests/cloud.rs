//! The `e2b` runtime against E2B's cloud (or any endpoint named by
//! `E2B_API_URL` / `E2B_DOMAIN`). Needs a real key:
//! `E2B_API_KEY=e2b_… cargo test -p godel-e2b --test cloud -- --ignored`.

use bytes::Bytes;
use godel_core::{ExecRequest, RuntimeProvider, SandboxState, SpawnSpec, null_sink};
use godel_e2b::{E2bConfig, E2bProvider};

#[tokio::test]
#[ignore = "needs E2B_API_KEY"]
async fn cloud_sandbox_lifecycle() {
    let p = E2bProvider::new(
        E2bConfig {
            sandbox_timeout: std::time::Duration::from_secs(300),
            ..E2bConfig::default()
        },
        null_sink(),
    )
    .unwrap();
    let a = p.available().await;
    assert!(a.available, "{}", a.reason);
    p.spawn("rt-cloud", &SpawnSpec::default()).await.unwrap();
    let res = async {
        let out = p
            .exec_collect(
                "rt-cloud",
                ExecRequest::new(["/bin/sh", "-c", "echo hi; uname -s"]),
            )
            .await?;
        assert_eq!(out.stdout, "hi\nLinux\n");
        p.write_file("rt-cloud", "godel/x.txt", Bytes::from_static(b"x"))
            .await?;
        assert_eq!(&p.read_file("rt-cloud", "godel/x.txt").await?[..], b"x");
        assert_eq!(p.list_dir("rt-cloud", "godel").await?.len(), 1);
        p.pause("rt-cloud").await?;
        assert_eq!(p.status("rt-cloud").await?.state, SandboxState::Paused);
        p.resume("rt-cloud").await?;
        assert_eq!(&p.read_file("rt-cloud", "godel/x.txt").await?[..], b"x");
        Ok::<_, godel_core::Error>(())
    }
    .await;
    p.terminate("rt-cloud").await.unwrap();
    res.unwrap();
}
