//! The initramfs: a gzip-compressed cpio (`newc`) archive written in Rust,
//! holding the static guest agent as `/init`, the kernel modules under
//! `/lib/modules/` with their load order in `/lib/modules/godel.order`, the
//! mount points the agent uses, and a `/dev/console` node so PID 1 has a
//! console before devtmpfs is mounted.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use godel_core::Result;

use crate::io_err;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// A cpio `newc` archive being written.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08X}"));
        }
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    pub fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, S_IFREG | perm, (0, 0), data)
    }

    pub fn char_dev(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> std::io::Result<()> {
        self.entry(name, S_IFCHR | perm, (major, minor), &[])
    }

    /// Write the trailer and return the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.out)
    }
}

/// Build the gzip'ed initramfs at `dest` from the agent binary and modules
/// (already in load order).
pub fn build(dest: &Path, agent: &[u8], modules: &[std::path::PathBuf]) -> Result<()> {
    let w = || -> std::io::Result<()> {
        let f = std::fs::File::create(dest)?;
        let gz = GzEncoder::new(std::io::BufWriter::new(f), Compression::new(6));
        let mut c = CpioWriter::new(gz);
        for d in [
            ".",
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "newroot",
            "home",
            "lib",
            "lib/modules",
        ] {
            c.dir(d)?;
        }
        c.char_dev("dev/console", 0o600, 5, 1)?;
        c.char_dev("dev/null", 0o666, 1, 3)?;
        c.file("init", 0o755, agent)?;
        let mut order = String::new();
        for m in modules {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let data = std::fs::read(m)?;
            c.file(&format!("lib/modules/{name}"), 0o644, &data)?;
            order.push_str(&name);
            order.push('\n');
        }
        c.file("lib/modules/godel.order", 0o644, order.as_bytes())?;
        let gz = c.finish()?;
        let mut bw = gz.finish()?;
        bw.flush()?;
        bw.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    w().map_err(|e| io_err(format!("write initramfs {}", dest.display()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_readable_by_gnu_cpio() {
        let mut c = CpioWriter::new(Vec::new());
        c.dir(".").unwrap();
        c.dir("lib").unwrap();
        c.file("lib/x.txt", 0o644, b"hello").unwrap();
        c.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        c.char_dev("console", 0o600, 5, 1).unwrap();
        let bytes = c.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // Check against the reference implementation when it is installed.
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let list = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            [".", "lib", "lib/x.txt", "init", "console"]
        );
    }
}
