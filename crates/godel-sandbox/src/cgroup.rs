//! cgroup limits and usage for one sandbox: v2 when a unified hierarchy with
//! the `cpu`, `memory` and `pids` controllers is mounted, v1 otherwise (one
//! hierarchy per controller, as on Debian hosts still booted with v1). The
//! layout is detected from `/proc/self/mountinfo`, never assumed.
//!
//! Every sandbox gets `godel/<id>` in each hierarchy it needs. All file
//! access goes through [`HostOps`], so the sequence of writes is unit-tested
//! against a recording fake.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hostops::HostOps;
use crate::launcher::JailLimits;

/// The CFS period used for CPU quotas.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy layout the host has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum CgroupLayout {
    /// Unified hierarchy mounted at `root`.
    V2 { root: PathBuf },
    /// One mount per controller (`cpu`, `cpuacct`, `memory`, `pids`, `freezer`).
    V1 { mounts: BTreeMap<String, PathBuf> },
}

const V1_NEEDED: [&str; 3] = ["cpu", "memory", "pids"];
const V1_USED: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];
const V2_NEEDED: [&str; 3] = ["cpu", "memory", "pids"];

impl CgroupLayout {
    /// Detect the layout from mountinfo text; `ops` reads `cgroup.controllers`.
    /// Returns why not when neither version has the controllers godel needs.
    pub fn detect(mountinfo: &str, ops: &dyn HostOps) -> Result<CgroupLayout, String> {
        let mut v1 = BTreeMap::new();
        let mut v2_roots = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let mount_point = PathBuf::from(pre[4]);
            match post[0] {
                "cgroup2" => v2_roots.push(mount_point),
                "cgroup" => {
                    for opt in post[2].split(',') {
                        if V1_USED.contains(&opt) {
                            v1.entry(opt.to_string())
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        for root in &v2_roots {
            let ctrls = ops
                .read(&root.join("cgroup.controllers"))
                .unwrap_or_default();
            let have: Vec<&str> = ctrls.split_whitespace().collect();
            if V2_NEEDED.iter().all(|c| have.contains(c)) {
                return Ok(CgroupLayout::V2 { root: root.clone() });
            }
        }
        if V1_NEEDED.iter().all(|c| v1.contains_key(*c)) {
            return Ok(CgroupLayout::V1 { mounts: v1 });
        }
        Err(format!(
            "no usable cgroups: v2 mounts {v2_roots:?} lack one of {V2_NEEDED:?} and v1 has only {:?}",
            v1.keys().collect::<Vec<_>>()
        ))
    }

    /// Detect on this host.
    pub fn detect_host(ops: &dyn HostOps) -> Result<CgroupLayout, String> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        Self::detect(&mi, ops)
    }

    /// The `godel` directories under which jails' groups live (one for v2,
    /// one per controller mount for v1).
    pub fn godel_dirs(&self) -> Vec<PathBuf> {
        match self {
            CgroupLayout::V2 { root } => vec![root.join("godel")],
            CgroupLayout::V1 { mounts } => mounts
                .values()
                .map(|m| m.join("godel"))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            CgroupLayout::V2 { .. } => 2,
            CgroupLayout::V1 { .. } => 1,
        }
    }
}

/// Usage read from a sandbox's cgroups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupUsage {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids: u64,
    pub oom_kills: u64,
}

/// The cgroups of one sandbox.
#[derive(Debug, Clone)]
pub struct JailCgroups {
    layout: CgroupLayout,
    id: String,
    ops: Arc<dyn HostOps>,
}

impl JailCgroups {
    pub fn new(layout: CgroupLayout, id: &str, ops: Arc<dyn HostOps>) -> Self {
        JailCgroups {
            layout,
            id: id.to_string(),
            ops,
        }
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The sandbox's directory in the hierarchy of `controller` (v2: the one directory).
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        match &self.layout {
            CgroupLayout::V2 { root } => Some(root.join("godel").join(&self.id)),
            CgroupLayout::V1 { mounts } => mounts
                .get(controller)
                .map(|m| m.join("godel").join(&self.id)),
        }
    }

    /// Every directory of this sandbox (one for v2, one per controller for v1).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .godel_dirs()
            .into_iter()
            .map(|d| d.join(&self.id))
            .collect()
    }

    /// The `cgroup.procs` files a process writes its pid into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Create the groups and write the limits.
    pub fn create(&self, limits: &JailLimits) -> std::io::Result<()> {
        let ops = &*self.ops;
        if let CgroupLayout::V2 { root } = &self.layout {
            let parent = root.join("godel");
            ops.mkdir_all(&parent)?;
            // Controllers must be enabled on every level down to the leaf's parent.
            let want = "+cpu +memory +pids";
            let root_ctl = root.join("cgroup.subtree_control");
            let enabled = ops.read(&root_ctl).unwrap_or_default();
            if !V2_NEEDED
                .iter()
                .all(|c| enabled.split_whitespace().any(|e| e == *c))
            {
                ops.write(&root_ctl, want)?;
            }
            ops.write(&parent.join("cgroup.subtree_control"), want)?;
        }
        for d in self.dirs() {
            ops.mkdir_all(&d)?;
        }
        self.set_limits(limits)
    }

    /// Write the limits of existing groups (a warm-pool jail gets its
    /// sandbox's limits when it is claimed).
    pub fn set_limits(&self, limits: &JailLimits) -> std::io::Result<()> {
        let ops = &*self.ops;
        match &self.layout {
            CgroupLayout::V2 { .. } => {
                let d = self.dir("memory").unwrap_or_default();
                if let Some(m) = limits.cpu_millis {
                    let quota = m * CPU_PERIOD_US / 1000;
                    ops.write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                if let Some(b) = limits.memory_bytes {
                    ops.write(&d.join("memory.max"), &b.to_string())?;
                    let swap = d.join("memory.swap.max");
                    if ops.exists(&swap) {
                        ops.write(&swap, "0")?;
                    }
                }
                if let Some(p) = limits.pids {
                    ops.write(&d.join("pids.max"), &p.to_string())?;
                }
            }
            CgroupLayout::V1 { .. } => {
                if let (Some(m), Some(d)) = (limits.cpu_millis, self.dir("cpu")) {
                    let quota = m * CPU_PERIOD_US / 1000;
                    ops.write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    ops.write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                if let (Some(b), Some(d)) = (limits.memory_bytes, self.dir("memory")) {
                    ops.write(&d.join("memory.limit_in_bytes"), &b.to_string())?;
                    // Without a swap cap the limit only moves pages to swap.
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    if ops.exists(&memsw) {
                        ops.write(&memsw, &b.to_string())?;
                    }
                }
                if let (Some(p), Some(d)) = (limits.pids, self.dir("pids")) {
                    ops.write(&d.join("pids.max"), &p.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Move a process into every group.
    pub fn add_pid(&self, pid: u32) -> std::io::Result<()> {
        for f in self.procs_files() {
            self.ops.write(&f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids currently in the sandbox (from the pids or unified group).
    pub fn pids(&self) -> Vec<u32> {
        let Some(d) = self.dir("pids") else {
            return Vec::new();
        };
        self.ops
            .read(&d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn read_u64(&self, controller: &str, file: &str) -> u64 {
        self.dir(controller)
            .and_then(|d| self.ops.read(&d.join(file)).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn read_key(&self, controller: &str, file: &str, key: &str) -> u64 {
        self.dir(controller)
            .and_then(|d| self.ops.read(&d.join(file)).ok())
            .and_then(|s| {
                s.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }

    /// Read usage. Missing files read as zero (e.g. `memory.peak` before 5.19).
    pub fn usage(&self) -> CgroupUsage {
        match &self.layout {
            CgroupLayout::V2 { .. } => CgroupUsage {
                cpu_seconds: self.read_key("cpu", "cpu.stat", "usage_usec") as f64 / 1e6,
                memory_bytes: self.read_u64("memory", "memory.current"),
                memory_peak_bytes: self.read_u64("memory", "memory.peak"),
                pids: self.read_u64("pids", "pids.current"),
                oom_kills: self.read_key("memory", "memory.events", "oom_kill"),
            },
            CgroupLayout::V1 { .. } => CgroupUsage {
                cpu_seconds: self.read_u64("cpuacct", "cpuacct.usage") as f64 / 1e9,
                memory_bytes: self.read_u64("memory", "memory.usage_in_bytes"),
                memory_peak_bytes: self.read_u64("memory", "memory.max_usage_in_bytes"),
                pids: self.read_u64("pids", "pids.current"),
                oom_kills: self.read_key("memory", "memory.oom_control", "oom_kill"),
            },
        }
    }

    /// Freeze or thaw every process.
    pub fn freeze(&self, frozen: bool) -> std::io::Result<()> {
        match &self.layout {
            CgroupLayout::V2 { .. } => {
                let d = self.dir("memory").unwrap_or_default();
                self.ops
                    .write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })
            }
            CgroupLayout::V1 { .. } => {
                let d = self
                    .dir("freezer")
                    .ok_or_else(|| std::io::Error::other("no v1 freezer hierarchy mounted"))?;
                self.ops.write(
                    &d.join("freezer.state"),
                    if frozen { "FROZEN" } else { "THAWED" },
                )
            }
        }
    }

    /// Whether the freezer reports frozen.
    pub fn frozen(&self) -> bool {
        match &self.layout {
            CgroupLayout::V2 { .. } => self.read_key("memory", "cgroup.events", "frozen") == 1,
            CgroupLayout::V1 { .. } => self
                .dir("freezer")
                .and_then(|d| self.ops.read(&d.join("freezer.state")).ok())
                .is_some_and(|s| s.trim() == "FROZEN"),
        }
    }

    /// Remove the groups (they must be empty). Missing groups are fine.
    pub fn remove(&self) -> std::io::Result<()> {
        let mut first_err = None;
        for d in self.dirs() {
            if !self.ops.exists(&d) {
                continue;
            }
            if let Err(e) = self.ops.remove_dir(&d)
                && e.kind() != std::io::ErrorKind::NotFound
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostops::{HostOp, RecordingHostOps};

    const V1_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V2_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn detects_v1_when_unified_lacks_controllers() {
        let ops = RecordingHostOps::new()
            .with_file("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
        let layout = CgroupLayout::detect(V1_MOUNTINFO, &ops).unwrap();
        let CgroupLayout::V1 { mounts } = &layout else {
            panic!("expected v1, got {layout:?}")
        };
        assert_eq!(mounts["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpuacct"));
        assert_eq!(layout.version(), 1);
    }

    #[test]
    fn prefers_v2_with_controllers() {
        let ops = RecordingHostOps::new().with_file(
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        let layout = CgroupLayout::detect(V2_MOUNTINFO, &ops).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        let none = RecordingHostOps::new();
        let err = CgroupLayout::detect(V2_MOUNTINFO, &none).unwrap_err();
        assert!(err.contains("no usable cgroups"), "{err}");
    }

    fn limits() -> JailLimits {
        JailLimits {
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            pids: Some(32),
            disk_bytes: None,
        }
    }

    #[test]
    fn v1_create_writes_limits_in_order() {
        let ops = Arc::new(
            RecordingHostOps::new()
                .with_file("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb")
                .with_file(
                    "/sys/fs/cgroup/memory/godel/a1/memory.memsw.limit_in_bytes",
                    "max",
                ),
        );
        let layout = CgroupLayout::detect(V1_MOUNTINFO, &*ops).unwrap();
        let cg = JailCgroups::new(layout, "a1", ops.clone());
        cg.create(&limits()).unwrap();
        let rec = ops.recorded();
        let w = |p: &str, v: &str| HostOp::Write(p.into(), v.into());
        assert!(rec.contains(&HostOp::MkdirAll("/sys/fs/cgroup/freezer/godel/a1".into())));
        let pos = |op: &HostOp| rec.iter().position(|o| o == op).unwrap();
        assert!(
            pos(&w(
                "/sys/fs/cgroup/cpu/godel/a1/cpu.cfs_period_us",
                "100000"
            )) < pos(&w("/sys/fs/cgroup/cpu/godel/a1/cpu.cfs_quota_us", "50000"))
        );
        // memsw may only be set after the memory limit.
        assert!(
            pos(&w(
                "/sys/fs/cgroup/memory/godel/a1/memory.limit_in_bytes",
                "67108864"
            )) < pos(&w(
                "/sys/fs/cgroup/memory/godel/a1/memory.memsw.limit_in_bytes",
                "67108864"
            ))
        );
        assert!(rec.contains(&w("/sys/fs/cgroup/pids/godel/a1/pids.max", "32")));
        cg.add_pid(42).unwrap();
        assert_eq!(cg.procs_files().len(), 5);
        assert!(
            ops.recorded()
                .contains(&w("/sys/fs/cgroup/memory/godel/a1/cgroup.procs", "42"))
        );
        cg.freeze(true).unwrap();
        assert!(ops.recorded().contains(&w(
            "/sys/fs/cgroup/freezer/godel/a1/freezer.state",
            "FROZEN"
        )));
    }

    #[test]
    fn v2_create_enables_controllers_and_reads_usage() {
        let ops = Arc::new(
            RecordingHostOps::new()
                .with_file("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids")
                .with_file("/sys/fs/cgroup/cgroup.subtree_control", "memory")
                .with_file(
                    "/sys/fs/cgroup/godel/b2/memory.events",
                    "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
                )
                .with_file(
                    "/sys/fs/cgroup/godel/b2/cpu.stat",
                    "usage_usec 2500000\nuser_usec 1\n",
                )
                .with_file("/sys/fs/cgroup/godel/b2/memory.current", "1048576\n")
                .with_file("/sys/fs/cgroup/godel/b2/pids.current", "3\n"),
        );
        let layout = CgroupLayout::detect(V2_MOUNTINFO, &*ops).unwrap();
        let cg = JailCgroups::new(layout, "b2", ops.clone());
        cg.create(&limits()).unwrap();
        let rec = ops.recorded();
        let w = |p: &str, v: &str| HostOp::Write(p.into(), v.into());
        assert!(rec.contains(&w(
            "/sys/fs/cgroup/cgroup.subtree_control",
            "+cpu +memory +pids"
        )));
        assert!(rec.contains(&w("/sys/fs/cgroup/godel/b2/cpu.max", "50000 100000")));
        assert!(rec.contains(&w("/sys/fs/cgroup/godel/b2/memory.max", "67108864")));
        let u = cg.usage();
        assert_eq!(u.oom_kills, 1);
        assert_eq!(u.pids, 3);
        assert_eq!(u.memory_bytes, 1 << 20);
        assert!((u.cpu_seconds - 2.5).abs() < 1e-9);
        cg.remove().unwrap();
        assert!(
            ops.recorded()
                .contains(&HostOp::RemoveDir("/sys/fs/cgroup/godel/b2".into()))
        );
    }
}
