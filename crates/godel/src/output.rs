//! Printing results: human tables by default, JSON with `--json`. Errors go
//! to stderr as `CODE: message` (or a JSON error object).

use godel_core::{Error, SandboxInfo, SnapshotInfo};
use serde::Serialize;

pub fn print_error(e: &Error, json: bool) {
    if json {
        eprintln!("{}", serde_json::to_string(e).unwrap_or_default());
    } else {
        eprintln!("{}: {}", e.code, e.message);
    }
}

pub fn json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn age(t: chrono::DateTime<chrono::Utc>) -> String {
    let s = (chrono::Utc::now() - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn runtimes(list: &[SandboxInfo]) {
    println!(
        "{:<20} {:<9} {:<12} {:<11} {:>5}  REASON",
        "ID", "RUNTIME", "TEAM", "STATE", "AGE"
    );
    for r in list {
        println!(
            "{:<20} {:<9} {:<12} {:<11} {:>5}  {}",
            r.id,
            r.runtime,
            r.team,
            r.state,
            age(r.created_at),
            r.reason.as_deref().unwrap_or("")
        );
    }
}

pub fn snapshots(list: &[SnapshotInfo]) {
    println!(
        "{:<22} {:<20} {:<9} {:<10} {:>10} {:>5}  NAME",
        "ID", "RUNTIME ID", "RUNTIME", "KIND", "SIZE", "AGE"
    );
    for s in list {
        println!(
            "{:<22} {:<20} {:<9} {:<10} {:>10} {:>5}  {}",
            s.id,
            s.runtime_id,
            s.runtime,
            s.kind,
            godel_core::ByteQuantity(s.size_bytes).to_string(),
            age(s.created_at),
            s.name.as_deref().unwrap_or("")
        );
    }
}

pub fn status(r: &SandboxInfo) {
    println!("id:       {}", r.id);
    println!("runtime:  {}", r.runtime);
    println!("team:     {}", r.team);
    println!("state:    {}", r.state);
    if let Some(reason) = &r.reason {
        println!("reason:   {reason}");
    }
    if let Some(pid) = r.pid {
        println!("pid:      {pid}");
    }
    if let Some(s) = &r.restored_from {
        println!("restored: {s}");
    }
    println!("created:  {}", r.created_at.to_rfc3339());
    if let Some(u) = &r.usage {
        println!(
            "usage:    cpu {:.2}s, memory {} (peak {}), pids {}, disk {}",
            u.cpu_seconds,
            godel_core::ByteQuantity(u.memory_bytes),
            godel_core::ByteQuantity(u.memory_peak_bytes),
            u.pids,
            godel_core::ByteQuantity(u.disk_bytes)
        );
        if u.oom_kills > 0 {
            println!("oom:      {} kill(s)", u.oom_kills);
        }
    }
    for (k, v) in &r.handle {
        println!("{:<9} {}", format!("{k}:"), v);
    }
}

/// `godel replicas`: the store and who answered, then one replica a line.
pub fn replicas(r: &crate::cmd::replicas::ReplicasView) {
    println!(
        "store: {} {} (schema {}); answered by replica {} (lease {}s)",
        r.store.engine,
        r.store.location,
        r.store.schema_version,
        r.me.as_deref().unwrap_or("-"),
        r.lease_secs
    );
    let rows: Vec<[String; 6]> = r
        .replicas
        .iter()
        .map(|x| {
            let lease = match (&x.taken_over_by, x.live) {
                (Some(by), _) => format!("taken over by {by}"),
                (None, true) => "live".into(),
                (None, false) => format!("expired {} ago", age(x.lease_until)),
            };
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".into()
                } else {
                    s.to_string()
                }
            };
            [
                x.id.clone(),
                dash(&x.host),
                dash(&x.advertise),
                lease,
                x.owns.to_string(),
                x.started_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ]
        })
        .collect();
    let head = ["ID", "HOST", "ADVERTISE", "LEASE", "OWNS", "STARTED"];
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
        )
    };
    line(head);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
}
