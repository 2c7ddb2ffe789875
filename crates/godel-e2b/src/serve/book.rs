//! Per-sandbox bookkeeping of the E2B surface: who owns it, its E2B template
//! and metadata, its deadline and timeout action, its envd access token, and
//! the live process table and watchers.
//!
//! The durable parts live in the runtime's labels (see [`labels`]); the rest
//! (processes, watchers) is in memory and dies with the runtime anyway.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use godel_core::{RuntimeInfo, RuntimeState};
use sha2::{Digest, Sha256};

use super::filesystem::Watchers;
use super::process::ProcessTable;

/// Label keys of the E2B bookkeeping.
pub mod labels {
    /// Prefix of user metadata labels.
    pub const META_PREFIX: &str = "e2b.meta.";
    /// The E2B template id the sandbox was created from.
    pub const TEMPLATE: &str = "e2b.template";
    /// RFC 3339 deadline after which the sandbox is killed or paused.
    pub const END_AT: &str = "e2b.end_at";
    /// `kill` (default) or `pause`.
    pub const ON_TIMEOUT: &str = "e2b.on_timeout";
    /// How many godel E2B servers the create already passed through (the
    /// `X-Godel-E2b-Hops` header); the `e2b` runtime sends it on, plus one,
    /// so a godel whose `e2b` runtime points back at itself stops quickly.
    pub const HOPS: &str = "e2b.hops";
}

/// The mutable, lock-protected part of a sandbox's record.
#[derive(Debug, Clone)]
pub struct Book {
    pub template: String,
    pub metadata: BTreeMap<String, String>,
    /// `None` for runtimes created outside the E2B surface: they never expire here.
    pub end_at: Option<DateTime<Utc>>,
    pub auto_pause: bool,
    pub started_at: DateTime<Utc>,
    pub state: RuntimeState,
    pub cpu: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
}

impl Book {
    /// Rebuild the bookkeeping from a runtime record.
    pub fn from_info(info: &RuntimeInfo) -> Book {
        let l = &info.spec.labels;
        let metadata = l
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(labels::META_PREFIX)
                    .map(|k| (k.to_string(), v.clone()))
            })
            .collect();
        let template = l
            .get(labels::TEMPLATE)
            .cloned()
            .or_else(|| info.spec.template.clone())
            .unwrap_or_else(|| info.runtime.clone());
        let end_at = l
            .get(labels::END_AT)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let res = &info.spec.resources;
        Book {
            template,
            metadata,
            end_at,
            auto_pause: l.get(labels::ON_TIMEOUT).is_some_and(|v| v == "pause"),
            started_at: info.created_at,
            state: info.state,
            cpu: res
                .cpu
                .map(|c| (c.millis() as i64 / 1000).max(1))
                .unwrap_or(2),
            memory_mb: res.memory.map(|m| (m.get() >> 20) as i64).unwrap_or(512),
            disk_mb: res.disk.map(|d| (d.get() >> 20) as i64).unwrap_or(10240),
        }
    }
}

/// One sandbox known to the E2B surface.
pub struct Entry {
    pub id: String,
    pub team: String,
    pub token: String,
    pub book: Mutex<Book>,
    pub procs: ProcessTable,
    pub watchers: Watchers,
}

impl Entry {
    pub fn book(&self) -> Book {
        match self.book.lock() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut Book) -> R) -> R {
        match self.book.lock() {
            Ok(mut b) => f(&mut b),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Drop every process and watcher (the runtime stopped).
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.lock().get(id).cloned()
    }

    /// The entry for a runtime record: existing (with its state refreshed) or new.
    pub fn learn(&self, info: &RuntimeInfo, secret: &[u8]) -> Arc<Entry> {
        let mut map = self.lock();
        if let Some(e) = map.get(&info.id) {
            e.update(|b| b.state = info.state);
            return e.clone();
        }
        let e = Arc::new(Entry {
            id: info.id.clone(),
            team: info.team.clone(),
            token: access_token(secret, &info.id),
            book: Mutex::new(Book::from_info(info)),
            procs: ProcessTable::default(),
            watchers: Watchers::default(),
        });
        map.insert(info.id.clone(), e.clone());
        e
    }

    pub fn forget(&self, id: &str) -> Option<Arc<Entry>> {
        let e = self.lock().remove(id);
        if let Some(e) = &e {
            e.clear_live();
        }
        e
    }

    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.lock().values().cloned().collect()
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
