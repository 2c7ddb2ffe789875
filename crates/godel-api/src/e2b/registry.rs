//! Per-sandbox state of the E2B surface that only lives while the sandbox
//! runs: its envd access token (derived, so it survives restarts), the live
//! process table and the directory watchers. Everything durable (deadline,
//! timeout action, template, metadata) is in the control plane's record and
//! read from there ([`SandboxView`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use godel_control::Caller;
use godel_core::{OnTimeout, SandboxInfo};
use godel_e2b::wire::DEFAULT_TEMPLATE;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::filesystem::Watchers;
use super::process::ProcessTable;

/// Prefix of the labels that hold E2B metadata.
pub const META_PREFIX: &str = "e2b.meta.";

/// A sandbox record as E2B shows it.
#[derive(Debug, Clone)]
pub struct SandboxView {
    pub template: String,
    pub metadata: BTreeMap<String, String>,
    /// `None` for sandboxes without a time to live.
    pub end_at: Option<DateTime<Utc>>,
    pub auto_pause: bool,
    pub started_at: DateTime<Utc>,
    pub cpu: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
}

impl SandboxView {
    pub fn of(info: &SandboxInfo) -> SandboxView {
        let metadata = info
            .spec
            .labels
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(META_PREFIX)
                    .map(|k| (k.to_string(), v.clone()))
            })
            .collect();
        let res = &info.spec.resources;
        SandboxView {
            template: info
                .spec
                .template
                .clone()
                .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string()),
            metadata,
            end_at: info.expires_at,
            auto_pause: info.spec.on_timeout == OnTimeout::Pause,
            started_at: info.created_at,
            cpu: res
                .cpu
                .map(|c| (c.millis() as i64 / 1000).max(1))
                .unwrap_or(2),
            memory_mb: res.memory.map(|m| (m.get() >> 20) as i64).unwrap_or(512),
            disk_mb: res.disk.map(|d| (d.get() >> 20) as i64).unwrap_or(10240),
        }
    }
}

/// One sandbox the surface has seen.
pub struct Entry {
    pub id: String,
    /// The owning team, as the caller of every control-plane call.
    pub caller: Caller,
    pub token: String,
    pub procs: ProcessTable,
    pub watchers: Watchers,
}

impl Entry {
    /// Drop every process and watcher (the sandbox stopped).
    pub fn clear_live(&self) {
        self.procs.clear();
        self.watchers.clear();
    }
}

/// All sandboxes the surface has seen, by id.
#[derive(Default)]
pub struct Registry {
    map: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Registry {
    /// The entry for a sandbox record: existing or new.
    pub fn learn(&self, info: &SandboxInfo, secret: &[u8]) -> Arc<Entry> {
        self.map
            .lock()
            .entry(info.id.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    id: info.id.clone(),
                    caller: Caller::Team(info.team.clone()),
                    token: access_token(secret, &info.id),
                    procs: ProcessTable::default(),
                    watchers: Watchers::default(),
                })
            })
            .clone()
    }

    pub fn forget(&self, id: &str) -> Option<Arc<Entry>> {
        let e = self.map.lock().remove(id);
        if let Some(e) = &e {
            e.clear_live();
        }
        e
    }

    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.map.lock().values().cloned().collect()
    }
}

/// The envd access token of a sandbox: derived from the server secret and the
/// id, so it needs no storage and survives restarts.
pub fn access_token(secret: &[u8], id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"godel-e2b-envd\0");
    h.update(secret);
    h.update([0]);
    h.update(id.as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("tok_{hex}")
}

/// Compare secrets without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_and_distinct() {
        let a = access_token(b"s", "rt-1");
        assert_eq!(a, access_token(b"s", "rt-1"));
        assert_ne!(a, access_token(b"s", "rt-2"));
        assert_ne!(a, access_token(b"t", "rt-1"));
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(b"ab", b"ac"));
    }
}
