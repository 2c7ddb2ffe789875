//! The guest agent binary. As PID 1 (from the initramfs) it boots the VM and
//! serves the host (see `godel_guest::init`). Otherwise:
//!
//! - `godel-guest --version`
//! - `godel-guest serve-port <device>`: serve an already set-up port (under another init)
//! - `godel-guest serve-socket <path> --root <dir>`: listen on a Unix socket and
//!   serve each connection with `<dir>` as the guest's `/` (development aid)

use std::path::PathBuf;
use std::process::ExitCode;

use godel_guest::{Server, ServerConfig, init};

fn main() -> ExitCode {
    if std::process::id() == 1 {
        init::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["--version"] | ["version"] => {
            println!("godel-guest {}", godel_guest::protocol::AGENT_VERSION);
            ExitCode::SUCCESS
        }
        ["serve-port", dev] => {
            let server = Server::new(ServerConfig {
                root: PathBuf::from("/"),
                system: true,
                reap_all: false,
            });
            let r = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev)
                .and_then(|f| server.serve_port(f));
            report(r)
        }
        ["serve-socket", path, "--root", root] => {
            let _ = std::fs::remove_file(path);
            let r = std::os::unix::net::UnixListener::bind(path).and_then(|l| {
                for conn in l.incoming() {
                    let conn = conn?;
                    let server = Server::new(ServerConfig::rooted(root));
                    std::thread::spawn(move || {
                        let w = conn.try_clone()?;
                        server.serve(conn, w)
                    });
                }
                Ok(())
            });
            report(r)
        }
        _ => {
            eprintln!(
                "usage: godel-guest (as PID 1) | --version | serve-port <dev> | serve-socket <path> --root <dir>"
            );
            ExitCode::from(2)
        }
    }
}

fn report(r: std::io::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("godel-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
