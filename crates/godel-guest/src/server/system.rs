//! System requests in the guest: the `Hello` self-description, resource
//! usage from `/proc` and statvfs, "you were restored" (RNG reseed, clock
//! step, new hostname) and shutdown.

use std::fs;
use std::sync::atomic::Ordering;

use godel_core::Error;

use super::Shared;
use crate::protocol::frame::PROTOCOL_VERSION;
use crate::protocol::{AGENT_VERSION, GuestUsage, Hello, Message, errno_error};
use crate::sys;

pub(crate) fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn uptime_ms() -> u64 {
    sys::uptime_ms()
}

fn hostname(sh: &Shared) -> String {
    let mut cached = sh.hostname.lock();
    if let Some(h) = cached.as_ref() {
        return h.clone();
    }
    let etc = sh.cfg.root.join("etc/hostname");
    let h = match fs::read_to_string(etc) {
        Ok(h) if !sh.cfg.system => h.trim().to_owned(),
        _ => read_trim("/proc/sys/kernel/hostname"),
    };
    *cached = Some(h.clone());
    h
}

/// Who the agent is: no file is read once the hostname is cached.
pub(crate) fn hello(sh: &Shared) -> Hello {
    Hello {
        agent_version: AGENT_VERSION.to_owned(),
        protocol: PROTOCOL_VERSION,
        boot_id: sh.boot_id.clone(),
        uptime_ms: uptime_ms(),
        hostname: hostname(sh),
        restores: sh.restores.load(Ordering::SeqCst),
    }
}

fn meminfo_kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn usage(sh: &Shared) -> GuestUsage {
    let mut u = GuestUsage::default();
    let mem = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    u.mem_total_bytes = meminfo_kb(&mem, "MemTotal") * 1024;
    u.mem_available_bytes = meminfo_kb(&mem, "MemAvailable") * 1024;
    u.mem_used_bytes = u.mem_total_bytes.saturating_sub(u.mem_available_bytes);
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                let total: u64 = v.iter().take(8).sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                // USER_HZ is 100 on Linux.
                u.cpu_busy_seconds = total.saturating_sub(idle) as f64 / 100.0;
            }
            Some(c) if c.starts_with("cpu") => u.cpu_count += 1,
            _ => {}
        }
    }
    let load = read_trim("/proc/loadavg");
    let l: Vec<f64> = load
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    if l.len() == 3 {
        (u.load1, u.load5, u.load15) = (l[0], l[1], l[2]);
    }
    let ws = sh.resolve("").unwrap_or_else(|_| sh.cfg.root.clone());
    let ws = if ws.exists() { ws } else { sh.cfg.root.clone() };
    if let Ok((total, free)) = sys::statvfs(&ws) {
        u.disk_total_bytes = total;
        u.disk_used_bytes = total.saturating_sub(free);
    }
    u.processes = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    u.uptime_ms = uptime_ms();
    u
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with('-')
}

/// "You were restored": reseed, step the clock, take the new hostname; the
/// reply goes out as soon as the kernel has all three, and `/etc/hostname`
/// is written after it (before the next request is read: requests are
/// handled in order on this thread).
pub(crate) fn restored(sh: &Shared, id: u32, entropy: &[u8], unix_ns: u64, host: Option<&str>) {
    let r = (|| -> godel_core::Result<()> {
        if !entropy.is_empty() {
            let credited = sh
                .urandom
                .as_ref()
                .is_some_and(|f| sys::add_entropy(f, entropy).is_ok());
            if !credited {
                // Writing mixes the bytes in without crediting them.
                fs::write("/dev/urandom", entropy)
                    .map_err(|e| errno_error("write /dev/urandom", &e))?;
            }
        }
        if sh.cfg.system && unix_ns > 0 {
            sys::set_realtime(unix_ns).map_err(|e| errno_error("set the clock", &e))?;
        }
        if let Some(h) = host {
            if !valid_hostname(h) {
                return Err(Error::invalid(format!("invalid hostname {h:?}")));
            }
            if sh.cfg.system {
                sys::sethostname(h).map_err(|e| errno_error("sethostname", &e))?;
            }
            *sh.hostname.lock() = Some(h.to_owned());
        }
        Ok(())
    })();
    match r {
        Ok(()) => {
            sh.restores.fetch_add(1, Ordering::SeqCst);
            sh.reply(id, Message::Ok);
        }
        Err(e) => return sh.error(id, e),
    }
    if let Some(h) = host {
        let etc = sh.cfg.root.join("etc");
        if etc.is_dir()
            && let Err(e) = fs::write(etc.join("hostname"), format!("{h}\n"))
        {
            eprintln!("godel-guest: write /etc/hostname: {e}");
        }
    }
}

pub(crate) fn shutdown(sh: &Shared, id: u32, poweroff: bool) {
    sys::sync();
    sh.reply(id, Message::Ok);
    if sh.cfg.system {
        let e = sys::reboot(poweroff);
        sh.error(id, errno_error("power off", &e));
    } else {
        sh.stop.store(true, Ordering::SeqCst);
    }
}
