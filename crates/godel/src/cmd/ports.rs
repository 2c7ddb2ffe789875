//! `godel port ID PORT` and `godel forward ID PORT [LOCAL]`: ports inside a
//! sandbox, through `GET /v1/runtimes/{id}/ports/{port}`. `port` asks once
//! whether it answers (and prints the E2B port-URL host); `forward` listens
//! on a local TCP address and, for every connection, opens an
//! `Upgrade: tcp` tunnel through the daemon and copies bytes both ways.

use godel_core::{Error, Result};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::Ctx;
use crate::client::enc;

fn path(id: &str, port: u32) -> String {
    format!("/v1/runtimes/{}/ports/{port}", enc(id))
}

/// `godel port ID PORT`.
pub async fn port(ctx: &Ctx, id: &str, port: u32) -> Result<i32> {
    let v: Value = ctx
        .client
        .json(http::Method::GET, &path(id, port), None::<&()>)
        .await?;
    if ctx.json {
        println!("{v}");
    } else {
        println!(
            "port {port} of {id} is open; E2B port URL host: {port}-{id}.<e2b-domain> (godel serve --e2b-domain, default localhost); `godel forward {id} {port}` forwards it to a local port"
        );
    }
    Ok(0)
}

/// `godel forward ID PORT [LOCAL]`: `LOCAL` is `PORT` or `ADDR:PORT`
/// (default: the same port on 127.0.0.1).
pub async fn forward(ctx: &Ctx, id: &str, port: u32, local: Option<&str>) -> Result<i32> {
    // Refuse at once what the daemon would refuse for every connection.
    let _: Value = ctx
        .client
        .json(http::Method::GET, &path(id, port), None::<&()>)
        .await?;
    let addr = match local {
        None => format!("127.0.0.1:{port}"),
        Some(l) if l.bytes().all(|b| b.is_ascii_digit()) => format!("127.0.0.1:{l}"),
        Some(l) => l.to_string(),
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::io(format!("listen on {addr}"), &e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("local address", &e))?;
    eprintln!("forwarding {bound} -> {id}:{port} (Ctrl-C stops)");
    let p = path(id, port);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(0),
            r = listener.accept() => {
                let (mut conn, _) = r.map_err(|e| Error::io("accept", &e))?;
                let client = ctx.client.clone();
                let p = p.clone();
                tokio::spawn(async move {
                    match client.tunnel(&p).await {
                        Ok(up) => {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut TokioIo::new(up)).await;
                        }
                        Err(e) => eprintln!("forward: {e}"),
                    }
                });
            }
        }
    }
}
