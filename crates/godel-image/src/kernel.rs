//! The guest kernel: Debian's `linux-image-cloud-amd64`, resolved to its
//! concrete `linux-image-<abi>-cloud-amd64` package through apt's metadata,
//! fetched with `apt-get download`, checked against apt's SHA256, unpacked
//! with `dpkg-deb -x`, and reduced to what a VM needs: the bzImage, an
//! uncompressed PVH-bootable `vmlinux` (decompressed from the bzImage
//! payload, as `extract-vmlinux` does) and the `.ko` files of the wanted
//! modules with their dependencies, in load order.
//!
//! Results are cached per package version under `<cache>/kernels/`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::{Progress, elf, io_err, sha256_file};

/// The meta package that follows Debian's current cloud kernel.
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Modules the guest needs (virtio-mmio transport, the agent's serial port,
/// the disk, the RNG, and the PCI transport for `q35`/`pcie=on` machines).
pub const WANTED_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "virtio_rng",
    "virtio_pci",
];

/// A concrete kernel package as apt describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPackage {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
}

/// The cached, extracted kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFiles {
    pub package: KernelPackage,
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Uncompressed ELF with the PVH note, when extraction worked.
    pub vmlinux: Option<PathBuf>,
    /// How the payload was compressed (`lz4`, `gzip`, ...).
    pub payload_format: String,
    /// Module file paths in load order (dependencies first).
    pub modules: Vec<PathBuf>,
    /// Wanted modules that are built into the kernel.
    pub builtin: Vec<String>,
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| {
        Error::unavailable(format!("{what}: cannot run {:?}: {e}", cmd.get_program()))
    })?;
    if !out.status.success() {
        return Err(Error::unavailable(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The fields of the first paragraph of `apt-cache show`.
fn apt_show(pkg: &str) -> Result<BTreeMap<String, String>> {
    let text = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", pkg]),
        &format!("apt-cache show {pkg}"),
    )
    .map_err(|e| {
        Error::unavailable(format!(
            "{}; run `apt-get update` (or scripts/setup.sh) so apt knows the kernel packages",
            e.message
        ))
    })?;
    let para = text.split("\n\n").next().unwrap_or_default();
    let mut fields = BTreeMap::new();
    for line in para.lines() {
        if let Some((k, v)) = line.split_once(':')
            && !line.starts_with(' ')
        {
            fields.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    if fields.is_empty() {
        return Err(Error::not_found(format!("apt knows no package {pkg}")));
    }
    Ok(fields)
}

/// Resolve `META_PACKAGE` (or a concrete name) to a concrete package.
pub fn resolve(name: &str) -> Result<KernelPackage> {
    let mut fields = apt_show(name)?;
    let concrete = |n: &str| {
        n.strip_prefix("linux-image-")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    if !concrete(
        fields
            .get("Package")
            .map(String::as_str)
            .unwrap_or_default(),
    ) {
        let deps = fields.get("Depends").cloned().unwrap_or_default();
        let dep = deps
            .split([',', '|'])
            .map(|d| d.split_whitespace().next().unwrap_or_default())
            .find(|d| concrete(d))
            .ok_or_else(|| {
                Error::not_found(format!("{name} depends on no concrete kernel: {deps}"))
            })?
            .to_owned();
        fields = apt_show(&dep)?;
    }
    let get = |k: &str| {
        fields
            .get(k)
            .cloned()
            .ok_or_else(|| Error::internal(format!("apt metadata of {name} has no {k}")))
    };
    Ok(KernelPackage {
        name: get("Package")?,
        version: get("Version")?,
        sha256: get("SHA256")?.to_ascii_lowercase(),
        size: get("Size")?.parse().unwrap_or(0),
    })
}

/// Fetch, verify, extract and cache the kernel package.
pub fn fetch(
    pkg: &KernelPackage,
    cache: &Path,
    progress: &dyn Fn(Progress),
) -> Result<KernelFiles> {
    let dir =
        cache
            .join("kernels")
            .join(format!("{}_{}", pkg.name, pkg.version.replace(':', "%3a")));
    let manifest = dir.join("kernel.json");
    if let Ok(text) = fs::read_to_string(&manifest)
        && let Ok(k) = serde_json::from_str::<KernelFiles>(&text)
        && k.vmlinuz.exists()
    {
        progress(Progress::new(
            "kernel",
            format!("cached {} {}", pkg.name, pkg.version),
        ));
        return Ok(k);
    }
    let tmp = cache
        .join("kernels")
        .join(format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| io_err("create kernel cache", &e))?;
    let r = fetch_into(pkg, &tmp, &dir, progress);
    let _ = fs::remove_dir_all(&tmp);
    r
}

fn fetch_into(
    pkg: &KernelPackage,
    tmp: &Path,
    dir: &Path,
    progress: &dyn Fn(Progress),
) -> Result<KernelFiles> {
    progress(Progress::bytes(
        "download-kernel",
        format!("apt-get download {}={}", pkg.name, pkg.version),
        0,
        pkg.size,
    ));
    run(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{}={}", pkg.name, pkg.version)])
            .current_dir(tmp),
        "apt-get download",
    )?;
    let deb = fs::read_dir(tmp)
        .map_err(|e| io_err("list download dir", &e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| Error::unavailable("apt-get download produced no .deb"))?;
    let size = fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
    progress(Progress::bytes(
        "download-kernel",
        "downloaded",
        size,
        pkg.size,
    ));
    progress(Progress::new(
        "verify-kernel",
        "checking SHA256 against apt metadata",
    ));
    let sum = sha256_file(&deb)?;
    if sum != pkg.sha256 {
        return Err(Error::internal(format!(
            "{} has SHA256 {sum}, apt metadata says {}",
            deb.display(),
            pkg.sha256
        )));
    }
    progress(Progress::new("extract-kernel", "dpkg-deb -x"));
    let x = tmp.join("x");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x),
        "dpkg-deb -x",
    )?;
    let out = tmp.join("out");
    fs::create_dir_all(out.join("modules")).map_err(|e| io_err("create kernel dir", &e))?;
    let boot = x.join("boot");
    let vmlinuz_src = fs::read_dir(&boot)
        .map_err(|e| io_err("read boot/", &e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| Error::internal("the kernel package has no boot/vmlinuz-*"))?;
    let release = vmlinuz_src
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_owned()
        })
        .unwrap_or_default();
    fs::copy(&vmlinuz_src, out.join("vmlinuz")).map_err(|e| io_err("copy vmlinuz", &e))?;
    let _ = fs::copy(boot.join(format!("config-{release}")), out.join("config"));

    progress(Progress::new("modules", "resolving module dependencies"));
    let mroot = x.join("lib/modules").join(&release);
    let (order, builtin) = module_order(&mroot, WANTED_MODULES)?;
    let mut modules = Vec::new();
    for src in &order {
        let name = src.file_name().unwrap_or_default();
        fs::copy(src, out.join("modules").join(name)).map_err(|e| io_err("copy module", &e))?;
        modules.push(dir.join("modules").join(name));
    }

    progress(Progress::new(
        "vmlinux",
        "decompressing the bzImage payload for PVH boot",
    ));
    let bz = fs::read(out.join("vmlinuz")).map_err(|e| io_err("read vmlinuz", &e))?;
    let (format, vmlinux) = match extract_vmlinux(&bz) {
        Ok((fmt, elf)) => {
            fs::write(out.join("vmlinux"), &elf).map_err(|e| io_err("write vmlinux", &e))?;
            (fmt, Some(dir.join("vmlinux")))
        }
        Err(e) => {
            progress(Progress::new(
                "vmlinux",
                format!("keeping the bzImage: {}", e.message),
            ));
            ("unknown".to_owned(), None)
        }
    };
    let files = KernelFiles {
        package: pkg.clone(),
        release,
        vmlinuz: dir.join("vmlinuz"),
        vmlinux,
        payload_format: format,
        modules,
        builtin,
    };
    let json = serde_json::to_vec_pretty(&files).map_err(|e| Error::internal(e.to_string()))?;
    fs::write(out.join("kernel.json"), json).map_err(|e| io_err("write kernel.json", &e))?;
    let _ = fs::remove_dir_all(dir);
    if let Some(p) = dir.parent() {
        fs::create_dir_all(p).map_err(|e| io_err("create kernel cache", &e))?;
    }
    fs::rename(&out, dir).map_err(|e| io_err("publish kernel cache", &e))?;
    Ok(files)
}

/// `depends=` of a module, from its `.modinfo` strings.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let pat = b"\0depends=";
    let Some(i) = ko.windows(pat.len()).position(|w| w == pat) else {
        return Vec::new();
    };
    let rest = &ko[i + pat.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// The `.ko` files for `wanted` and their dependencies, dependencies first,
/// and the wanted names that are built in instead.
pub fn module_order(mroot: &Path, wanted: &[&str]) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut files = Vec::new();
    walk(&mroot.join("kernel"), &mut files);
    let by_name: HashMap<String, PathBuf> = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .filter_map(|p| {
            let n = p.file_stem()?.to_string_lossy().replace('-', "_");
            Some((n, p))
        })
        .collect();
    let builtin_list = fs::read_to_string(mroot.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |n: &str| {
        builtin_list.lines().any(|l| {
            Path::new(l)
                .file_stem()
                .is_some_and(|s| s.to_string_lossy().replace('-', "_") == n)
        })
    };
    let mut order = Vec::new();
    let mut seen = Vec::<String>::new();
    let mut builtin = Vec::new();
    fn visit(
        n: &str,
        by_name: &HashMap<String, PathBuf>,
        seen: &mut Vec<String>,
        order: &mut Vec<PathBuf>,
        depth: usize,
    ) -> Result<bool> {
        if seen.iter().any(|s| s == n) {
            return Ok(true);
        }
        let Some(p) = by_name.get(n) else {
            return Ok(false);
        };
        if depth > 32 {
            return Err(Error::internal(format!("module dependency loop at {n}")));
        }
        seen.push(n.to_owned());
        let ko = fs::read(p).map_err(|e| io_err("read module", &e))?;
        for d in module_depends(&ko) {
            visit(&d, by_name, seen, order, depth + 1)?;
        }
        order.push(p.clone());
        Ok(true)
    }
    for w in wanted {
        let n = w.replace('-', "_");
        if !visit(&n, &by_name, &mut seen, &mut order, 0)? {
            if is_builtin(&n) {
                builtin.push(n);
            } else {
                return Err(Error::not_found(format!(
                    "kernel module {n} is neither a .ko nor built in"
                )));
            }
        }
    }
    Ok((order, builtin))
}

/// Decompress the payload of a bzImage into the ELF `vmlinux` (must carry
/// the PVH note). Returns the compression format and the ELF bytes.
pub fn extract_vmlinux(bz: &[u8]) -> Result<(String, Vec<u8>)> {
    let bad = |m: &str| Error::invalid(format!("not a usable bzImage: {m}"));
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad("no HdrS signature"));
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let u32_at = |o: usize| {
        bz.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let (off, len) = match (u32_at(0x248), u32_at(0x24c)) {
        (Some(o), Some(l)) => (o, l),
        _ => return Err(bad("header too short")),
    };
    let start = (setup_sects + 1) * 512 + off;
    let payload = bz
        .get(start..start + len)
        .ok_or_else(|| bad("payload outside the file"))?;
    let (format, tool): (&str, Option<&[&str]>) = match payload {
        [0x1f, 0x8b, ..] => ("gzip", None),
        [0x02, 0x21, 0x4c, 0x18, ..] => ("lz4", Some(&["lz4", "-dc"])),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", Some(&["zstd", "-dcq"])),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", Some(&["xz", "-dcq"])),
        [0x5d, 0, 0, ..] => ("lzma", Some(&["xz", "--format=lzma", "-dcq"])),
        _ => return Err(bad("unknown payload compression")),
    };
    let elf_bytes = match tool {
        None => {
            let mut out = Vec::new();
            // The payload ends with the 4-byte uncompressed size; a gzip
            // decoder stops at the end of its stream anyway.
            flate2::read::GzDecoder::new(payload)
                .read_to_end(&mut out)
                .map_err(|e| bad(&format!("gzip: {e}")))?;
            out
        }
        Some(argv) => decompress_with(argv, payload)?,
    };
    if !elf::is_elf64(&elf_bytes) {
        return Err(bad(&format!("{format} payload is not an ELF")));
    }
    if !elf::has_pvh_note(&elf_bytes) {
        return Err(bad("the vmlinux has no PVH entry note"));
    }
    Ok((format.to_owned(), elf_bytes))
}

/// Pipe `input` through an external decompressor. Trailing bytes after the
/// stream (the size the kernel appends) can make it exit non-zero; the output
/// is judged by its ELF header instead.
fn decompress_with(argv: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot run {}: {e} (install it; see scripts/setup.d/30-microvm.sh)",
                argv[0]
            ))
        })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::internal("no stdin pipe"))?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut out = Vec::new();
    if let Some(mut so) = child.stdout.take() {
        so.read_to_end(&mut out)
            .map_err(|e| io_err("read decompressor output", &e))?;
    }
    let _ = writer.join();
    let _ = child.wait();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_are_parsed_from_modinfo() {
        let ko = b"junk\0license=GPL\0depends=virtio,virtio_ring\0name=virtio_blk\0";
        assert_eq!(module_depends(ko), ["virtio", "virtio_ring"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn module_order_puts_dependencies_first() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel/drivers");
        fs::create_dir_all(&k).unwrap();
        fs::write(k.join("virtio_ring.ko"), b"\0depends=\0").unwrap();
        fs::write(k.join("virtio.ko"), b"\0depends=virtio_ring\0").unwrap();
        fs::write(k.join("virtio_blk.ko"), b"\0depends=virtio,virtio_ring\0").unwrap();
        fs::write(k.join("virtio-rng.ko"), b"\0depends=virtio\0").unwrap();
        fs::write(d.path().join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let (order, builtin) =
            module_order(d.path(), &["virtio_blk", "virtio_rng", "ext4"]).unwrap();
        let names: Vec<String> = order
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_blk", "virtio-rng"]);
        assert_eq!(builtin, ["ext4"]);
        assert!(module_order(d.path(), &["nope"]).is_err());
    }

    #[test]
    fn non_bzimages_are_refused() {
        assert!(extract_vmlinux(b"short").is_err());
        assert!(extract_vmlinux(&vec![0u8; 4096]).is_err());
    }
}
