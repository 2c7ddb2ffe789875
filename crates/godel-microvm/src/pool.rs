//! The warm pool: VMs restored from a template snapshot and kept ready, so a
//! `spawn` of the pool's shape claims one in milliseconds instead of cold
//! booting (seconds under TCG).
//!
//! 1. The first fill cold-boots one VM of the pool's shape and snapshots it
//!    into `$GODEL_HOME/microvm/templates/<image>-<build>-<accel>-<vcpus>c-<mem>m/`
//!    (published by an atomic rename, reused by later daemons).
//! 2. Pool VMs are restores of that template (~60 ms each under TCG, and
//!    cheap in memory: their RAM maps the template's file copy-on-write).
//!    They wait running, idle, under the runtime id `pool-<key>`.
//! 3. A claim pops one, tells the guest `restored(entropy, time, hostname)`
//!    so it takes the new runtime's identity and fresh randomness, and wakes
//!    the background refill.
//! 4. Pool VMs are not known to the control plane: they are stopped when the
//!    provider shuts down, and reaped at start-up if a daemon died with some.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::Notify;

use crate::vm::Vm;

/// The VM shape a pool serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PoolShape {
    pub image: String,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: Option<u64>,
}

/// Counters of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub size: usize,
    pub ready: usize,
    pub claims: u64,
    /// Spawns of the pool's shape that found the pool empty.
    pub misses: u64,
    pub refills: u64,
    pub refill_errors: u64,
}

/// K ready VMs of one shape.
pub struct WarmPool {
    size: usize,
    shape: PoolShape,
    ready: Mutex<VecDeque<Arc<Vm>>>,
    template: Mutex<Option<PathBuf>>,
    /// Wakes the refill task.
    pub(crate) wake: Arc<Notify>,
    /// Wakes waiters of `fill`.
    pub(crate) filled: Notify,
    claims: AtomicU64,
    misses: AtomicU64,
    refills: AtomicU64,
    refill_errors: AtomicU64,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("shape", &self.shape)
            .field("stats", &self.stats())
            .finish()
    }
}

impl WarmPool {
    /// A pool keeping `size` VMs of `shape` (0 = off).
    pub fn new(size: usize, shape: PoolShape) -> Self {
        WarmPool {
            size,
            shape,
            ready: Mutex::new(VecDeque::new()),
            template: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            filled: Notify::new(),
            claims: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refills: AtomicU64::new(0),
            refill_errors: AtomicU64::new(0),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn shape(&self) -> &PoolShape {
        &self.shape
    }

    /// How many VMs wait ready now.
    pub fn ready(&self) -> usize {
        self.lock().len()
    }

    /// Whether the pool is full.
    pub fn is_full(&self) -> bool {
        self.ready() >= self.size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Vm>>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take a ready VM (dead ones are dropped on the way) and wake the refill.
    pub fn take(&self) -> Option<Arc<Vm>> {
        let vm = loop {
            let next = self.lock().pop_front();
            match next {
                Some(vm) if vm.ensure_live().is_ok() => break Some(vm),
                Some(_) => continue,
                None => break None,
            }
        };
        match vm {
            Some(_) => self.claims.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        self.wake.notify_one();
        vm
    }

    pub(crate) fn push(&self, vm: Arc<Vm>) {
        self.lock().push_back(vm);
        self.refills.fetch_add(1, Ordering::Relaxed);
        self.filled.notify_waiters();
    }

    pub(crate) fn refill_failed(&self) {
        self.refill_errors.fetch_add(1, Ordering::Relaxed);
        self.filled.notify_waiters();
    }

    /// Remove every ready VM (to stop them).
    pub(crate) fn drain(&self) -> Vec<Arc<Vm>> {
        self.lock().drain(..).collect()
    }

    pub(crate) fn template(&self) -> Option<PathBuf> {
        self.template
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_template(&self, dir: PathBuf) {
        *self.template.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir);
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            ready: self.ready(),
            claims: self.claims.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            refills: self.refills.load(Ordering::Relaxed),
            refill_errors: self.refill_errors.load(Ordering::Relaxed),
        }
    }
}
