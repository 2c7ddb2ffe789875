//! Choosing the accelerator: KVM only when it demonstrably works, else TCG.
//!
//! `/dev/kvm` existing is not enough: some hosts expose a nested or
//! paravirtual KVM (e.g. PVM) on which a standard guest hangs early in boot.
//! So the verdict comes from a probe: cold-boot the real guest image under
//! KVM and wait (bounded) for its agent to answer. The verdict is cached in
//! `$GODEL_HOME/microvm/accel.json`, keyed by the QEMU version and the
//! kernel's SHA256, so the probe runs once per host/kernel/QEMU combination.
//! `godel doctor` shows [`AccelVerdict`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use godel_core::null_sink;
use godel_image::ImageInfo;
use serde::{Deserialize, Serialize};

use crate::launch::{self, Accel, QemuLauncher};
use crate::machine::{self, Host, VmParams};

/// How long the KVM probe waits for the guest agent.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which accelerator VMs will use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelVerdict {
    /// `kvm` or `tcg`.
    pub accel: String,
    pub reason: String,
    /// Whether this verdict came from the cache.
    #[serde(default)]
    pub cached: bool,
}

impl AccelVerdict {
    fn tcg(reason: impl Into<String>) -> Self {
        AccelVerdict {
            accel: "tcg".into(),
            reason: reason.into(),
            cached: false,
        }
    }
    /// The verdict as an [`Accel`].
    pub fn to_accel(&self) -> Accel {
        if self.accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    verdict: AccelVerdict,
    probed_at: chrono::DateTime<chrono::Utc>,
}

fn cache_file(home: &Path) -> PathBuf {
    home.join("microvm").join("accel.json")
}

fn kvm_usable() -> Result<(), String> {
    let p = Path::new("/dev/kvm");
    if !p.exists() {
        return Err("/dev/kvm does not exist".into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .map(drop)
        .map_err(|e| format!("/dev/kvm cannot be opened: {e}"))
}

/// Decide between KVM and TCG for `image` (see the module docs).
/// `home` is `$GODEL_HOME`; `qemu` the `qemu-system-x86_64` binary.
pub async fn detect_accel(home: &Path, qemu: &Path, image: &ImageInfo) -> AccelVerdict {
    if let Err(why) = kvm_usable() {
        return AccelVerdict::tcg(format!("{why}; using TCG (software emulation)"));
    }
    let version = launch::qemu_version(qemu).await.unwrap_or_default();
    let key = format!("qemu {version}; kernel {}", image.kernel.sha256);
    let cache = cache_file(home);
    if let Ok(text) = tokio::fs::read(&cache).await
        && let Ok(entry) = serde_json::from_slice::<CacheEntry>(&text)
        && entry.key == key
    {
        let mut v = entry.verdict;
        v.cached = true;
        return v;
    }
    let verdict = probe(home, qemu, image).await;
    let entry = CacheEntry {
        key,
        verdict: verdict.clone(),
        probed_at: chrono::Utc::now(),
    };
    if let Some(dir) = cache.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    if let Ok(json) = serde_json::to_vec_pretty(&entry) {
        let tmp = cache.with_extension("json.tmp");
        if tokio::fs::write(&tmp, json).await.is_ok() {
            let _ = tokio::fs::rename(&tmp, &cache).await;
        }
    }
    verdict
}

async fn probe(home: &Path, qemu: &Path, image: &ImageInfo) -> AccelVerdict {
    let root = home.join("microvm");
    let host = Host {
        root: root.clone(),
        qemu: qemu.to_path_buf(),
        launcher: Arc::new(QemuLauncher),
        events: null_sink(),
        ram_dir: root.join("vms"),
        boot_timeout: PROBE_TIMEOUT,
        tsc_khz: None,
    };
    let params = VmParams {
        runtime_id: "kvm-probe".into(),
        hostname: "kvm-probe".into(),
        accel: Accel::Kvm,
        vcpus: 1,
        mem_mib: 128,
        disk_mib: None,
        env: Default::default(),
    };
    let started = std::time::Instant::now();
    match machine::cold_boot(&host, image, &params).await {
        Ok(vm) => {
            let ms = started.elapsed().as_millis();
            vm.terminate(Duration::ZERO).await;
            AccelVerdict {
                accel: "kvm".into(),
                reason: format!("a probe boot under KVM reached the guest agent in {ms} ms"),
                cached: false,
            }
        }
        Err(e) => {
            let first = e.message.lines().next().unwrap_or_default().to_string();
            AccelVerdict::tcg(format!(
                "/dev/kvm exists but a probe boot of the guest under KVM failed \
                 (limit {} s): {first}; nested or paravirtual KVM? using TCG (software emulation)",
                PROBE_TIMEOUT.as_secs()
            ))
        }
    }
}
