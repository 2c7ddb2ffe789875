//! What the provider's calls share about the host and the machine: the
//! VM table (`get`, `live`), the QEMU binary and image, the accelerator
//! verdict (a probe boot, cached), the host's facts, the warm-pool shape
//! and the QEMU parameters of a spawn, and registering a started VM. Split
//! from `provider` to keep each file small.

use super::*;

impl Inner {
    pub(crate) fn get(&self, id: &str) -> Result<Arc<Vm>> {
        self.vms
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found in microvm")))
    }

    pub(crate) fn live(&self, id: &str) -> Result<Arc<Vm>> {
        let vm = self.get(id)?;
        vm.ensure_live().map_err(|e| e.with_runtime(id))?;
        Ok(vm)
    }

    pub(crate) fn qemu(&self) -> Result<PathBuf> {
        match &self.cfg.qemu {
            Some(q) => Ok(q.clone()),
            None => launch::which("qemu-system-x86_64").ok_or_else(|| {
                Error::unavailable(
                    "qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86 qemu-utils)",
                )
            }),
        }
    }

    pub(crate) fn image(&self, name: Option<&str>) -> Result<ImageInfo> {
        let name = name.unwrap_or(&self.cfg.image);
        godel_image::load_image(&self.cfg.home, name).map_err(|mut e| {
            if e.code == godel_core::ErrorCode::NotFound {
                e = Error::unavailable(e.message).retryable(false);
            }
            e
        })
    }

    pub(crate) async fn verdict(&self, image: &ImageInfo) -> Result<&AccelVerdict> {
        let qemu = self.qemu()?;
        let forced = std::env::var("GODEL_MICROVM_ACCEL")
            .ok()
            .and_then(|v| match v.as_str() {
                "kvm" => Some(Accel::Kvm),
                "tcg" => Some(Accel::Tcg),
                _ => None,
            })
            .or(self.cfg.accel);
        Ok(self
            .verdict
            .get_or_init(|| async move {
                match forced {
                    Some(a) => AccelVerdict {
                        accel: a.as_str().into(),
                        reason: "forced by configuration".into(),
                        cached: false,
                    },
                    None => detect_accel(&self.cfg.home, &qemu, image).await,
                }
            })
            .await)
    }

    pub(crate) async fn host(&self) -> Result<Host> {
        let root = root(&self.cfg.home);
        let ram_dir = self
            .cfg
            .ram_dir
            .clone()
            .unwrap_or_else(|| default_ram_dir(&root));
        tokio::fs::create_dir_all(&ram_dir)
            .await
            .map_err(|e| Error::io(format!("create {}", ram_dir.display()), &e))?;
        Ok(Host {
            root,
            qemu: self.qemu()?,
            launcher: self.launcher.clone(),
            events: self.cfg.events.clone(),
            ram_dir,
            boot_timeout: self.cfg.boot_timeout,
            tsc_khz: self.tsc_khz,
        })
    }

    /// The VM shape a spec asks for.
    pub(crate) fn shape(&self, spec: &SpawnSpec) -> Result<PoolShape> {
        let vcpus = match spec.resources.cpu {
            Some(c) => (c.millis().div_ceil(1000)).max(1) as u32,
            None => self.cfg.default_vcpus.max(1),
        };
        if vcpus > MAX_VCPUS {
            return Err(Error::invalid(format!(
                "microvm supports at most {MAX_VCPUS} vCPUs, asked for {vcpus}"
            )));
        }
        let mem_mib = match spec.resources.memory {
            Some(m) => m.mib(),
            None => self.cfg.default_memory_mib,
        };
        if mem_mib < MIN_MEMORY_MIB {
            return Err(Error::invalid(format!(
                "microvm needs at least {MIN_MEMORY_MIB} MiB of memory, asked for {mem_mib} MiB"
            )));
        }
        Ok(PoolShape {
            image: spec.image.clone().unwrap_or_else(|| self.cfg.image.clone()),
            vcpus,
            mem_mib,
            disk_mib: spec.resources.disk.map(|d| d.mib()),
        })
    }

    pub(crate) async fn params(
        &self,
        id: &str,
        shape: &PoolShape,
        spec: &SpawnSpec,
    ) -> Result<VmParams> {
        let image = self.image(Some(&shape.image))?;
        let accel = self.verdict(&image).await?.to_accel();
        Ok(VmParams {
            runtime_id: id.to_string(),
            hostname: hostname_for(id),
            accel,
            vcpus: shape.vcpus,
            mem_mib: shape.mem_mib,
            disk_mib: shape.disk_mib,
            env: spec.env.clone(),
        })
    }

    pub(crate) fn register(&self, id: &str, vm: Arc<Vm>) -> Spawned {
        let meta = vm.meta();
        let mut handle = BTreeMap::new();
        handle.insert("vm_dir".into(), json!(vm.run_dir));
        handle.insert("key".into(), json!(meta.key));
        handle.insert("pid".into(), json!(vm.pid));
        let pid = Some(vm.pid);
        self.vms.lock().insert(id.to_string(), vm);
        Spawned { handle, pid }
    }
}
