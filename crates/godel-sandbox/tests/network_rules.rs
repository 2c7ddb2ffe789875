//! Egress rules of the `nat` network mode against servers in network
//! namespaces this test makes (loopback-only addresses, never outside):
//! with `internet`, the deny list is rejected and the rest reachable; the
//! allow list wins over a deny of everything; rules change on a running
//! sandbox (`Jail::update_network`); the host itself stays closed; and a
//! sandbox's port is reached from inside its namespace (`connect_port`).

mod common;

use common::*;
use godel_core::{NetworkConfig, NetworkMode};
use godel_sandbox::{Isolator, JailLimits};
use godel_testkit::Need;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: [(&str, &str, &str); 2] = [
    ("gdlnrA", "10.253.0.1", "10.253.0.2"),
    ("gdlnrB", "10.253.0.5", "10.253.0.6"),
];

fn ip(args: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ip {args}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args}: {out:?}");
}

fn down(name: &str) {
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", name])
        .output();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &format!("v{name}")])
        .output();
}

/// Two namespaces, each with a one-line TCP server on its own address.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (n, _, _) in NS {
            down(n);
        }
    }
}

fn servers() -> Servers {
    let mut kids = Vec::new();
    for (n, host, inner) in NS {
        down(n);
        ip(&format!("netns add {n}"));
        ip(&format!("link add v{n} type veth peer name eth0 netns {n}"));
        ip(&format!("addr add {host}/30 dev v{n}"));
        ip(&format!("link set v{n} up"));
        ip(&format!("-n {n} addr add {inner}/30 dev eth0"));
        ip(&format!("-n {n} link set eth0 up"));
        ip(&format!("-n {n} route add default via {host}"));
        let code = format!(
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{inner}', 8080)); s.listen()\nwhile True:\n  c,_=s.accept(); c.sendall(b'hi'); c.close()"
        );
        kids.push(
            std::process::Command::new("ip")
                .args(["netns", "exec", n, "python3", "-c", &code])
                .spawn()
                .unwrap(),
        );
    }
    for (_, _, inner) in NS {
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect((inner, 8080)).is_err() {
            assert!(
                t.elapsed().as_secs() < 10,
                "server on {inner} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Servers(kids)
}

/// `ok` or `blocked` for A's and B's server, from inside the sandbox.
async fn reach(sb: &dyn godel_sandbox::Jail) -> (String, String) {
    let probe = |addr: &str| {
        format!(
            "if (exec 3<>/dev/tcp/{addr}/8080) 2>/dev/null; then echo ok; else echo blocked; fi"
        )
    };
    let a = sh(sb, &probe(NS[0].2)).await.stdout.trim().to_string();
    let b = sh(sb, &probe(NS[1].2)).await.stdout.trim().to_string();
    (a, b)
}

#[tokio::test]
async fn deny_internet_allow_and_live_updates() {
    godel_testkit::require!(Need::Root, Need::Nft);
    let _servers = servers();
    let iso = isolator(&Events::default());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, &id("netrules"), JailLimits::default());
    cfg.network = NetworkConfig {
        mode: NetworkMode::Nat,
        deny: vec![format!("{}/32", NS[1].2)],
        internet: true,
        ..Default::default()
    };
    let jail = iso.create(cfg).await.unwrap();
    let _g = Guard(jail.clone());
    assert_eq!(reach(&*jail).await, ("ok".into(), "blocked".into()));

    // Allow wins over a deny of everything; replaced while running.
    let update = NetworkConfig {
        mode: NetworkMode::Nat,
        allow: vec![NS[1].2.to_string()],
        deny: vec!["0.0.0.0/0".into()],
        internet: true,
        ..Default::default()
    };
    jail.update_network(&update).await.unwrap();
    assert_eq!(reach(&*jail).await, ("blocked".into(), "ok".into()));

    // Internet without lists: both; the host's own address stays closed.
    let open = NetworkConfig {
        mode: NetworkMode::Nat,
        internet: true,
        ..Default::default()
    };
    jail.update_network(&open).await.unwrap();
    assert_eq!(reach(&*jail).await, ("ok".into(), "ok".into()));
    let host = std::net::TcpListener::bind((NS[0].1, 0)).unwrap();
    let port = host.local_addr().unwrap().port();
    let out = sh(
        &*jail,
        &format!(
            "(exec 3<>/dev/tcp/{}/{port}) 2>/dev/null && echo open || echo closed",
            NS[0].1
        ),
    )
    .await;
    assert_eq!(out.stdout.trim(), "closed");

    // A bad entry is refused naming the field, and the rules stay.
    let bad = NetworkConfig {
        mode: NetworkMode::Nat,
        deny: vec!["10.0.0.0/99".into()],
        internet: true,
        ..Default::default()
    };
    let e = jail.update_network(&bad).await.unwrap_err();
    assert!(e.message.contains("network.deny[0]"), "{e}");
    assert_eq!(reach(&*jail).await, ("ok".into(), "ok".into()));

    // A port inside: reached from the sandbox's namespace, no host port.
    let mut server = jail
        .launch(godel_sandbox::ProcessSpec {
            argv: vec![
                "python3".into(),
                "-c".into(),
                "import socket; s=socket.socket(); s.bind(('127.0.0.1', 9099)); s.listen(); print('up', flush=True); c,_=s.accept(); c.sendall(c.recv(5)[::-1])".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut up = [0u8; 3];
    server.stdout.read_exact(&mut up).await.unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", 9099)).is_err());
    let mut s = jail.connect_port(9099).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"olleh");
    let e = jail.connect_port(9098).await.unwrap_err();
    assert_eq!(e.code, godel_core::ErrorCode::Unavailable);

    jail.destroy().await.unwrap();
}

#[tokio::test]
async fn a_sandbox_without_network_cannot_get_rules_later() {
    godel_testkit::require!(Need::Root);
    let iso = isolator(&Events::default());
    let dir = tempfile::tempdir().unwrap();
    let jail = iso
        .create(config(&dir, &id("nonet"), JailLimits::default()))
        .await
        .unwrap();
    let _g = Guard(jail.clone());
    let e = jail
        .update_network(&NetworkConfig {
            mode: NetworkMode::Nat,
            internet: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument, "{e}");
    jail.destroy().await.unwrap();
}
