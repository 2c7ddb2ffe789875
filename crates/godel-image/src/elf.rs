//! Just enough ELF64 reading for the image builder: is a binary static (no
//! `PT_INTERP`), and does a kernel `vmlinux` carry the PVH entry note
//! (`XEN_ELFNOTE_PHYS32_ENTRY`, type 18, owner "Xen") that QEMU needs to
//! boot it directly.

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Whether `b` starts like a little-endian ELF64 file.
pub fn is_elf64(b: &[u8]) -> bool {
    b.len() > 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1
}

/// Program headers as (type, offset, filesz).
fn program_headers(b: &[u8]) -> Option<Vec<(u32, u64, u64)>> {
    if !is_elf64(b) {
        return None;
    }
    let phoff = u64_at(b, 0x20)? as usize;
    let phentsize = u16_at(b, 0x36)? as usize;
    let phnum = u16_at(b, 0x38)? as usize;
    let mut out = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let o = phoff.checked_add(i.checked_mul(phentsize)?)?;
        out.push((u32_at(b, o)?, u64_at(b, o + 8)?, u64_at(b, o + 32)?));
    }
    Some(out)
}

/// `Some(true)` for an ELF without an interpreter (statically linked).
pub fn is_static(b: &[u8]) -> Option<bool> {
    Some(!program_headers(b)?.iter().any(|p| p.0 == PT_INTERP))
}

/// Whether an ELF kernel has the PVH entry note.
pub fn has_pvh_note(b: &[u8]) -> bool {
    let Some(phs) = program_headers(b) else {
        return false;
    };
    for (ty, off, size) in phs {
        if ty != PT_NOTE {
            continue;
        }
        let (start, end) = (off as usize, (off + size) as usize);
        let Some(notes) = b.get(start..end) else {
            continue;
        };
        let mut o = 0;
        while o + 12 <= notes.len() {
            let (Some(namesz), Some(descsz), Some(nty)) =
                (u32_at(notes, o), u32_at(notes, o + 4), u32_at(notes, o + 8))
            else {
                break;
            };
            let name = notes.get(o + 12..o + 12 + namesz as usize).unwrap_or(&[]);
            if nty == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
                return true;
            }
            let align = |n: u32| (n as usize).div_ceil(4) * 4;
            o += 12 + align(namesz) + align(descsz);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_is_elf() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(is_elf64(&exe));
        assert!(is_static(&exe).is_some());
        assert!(!has_pvh_note(&exe));
        assert_eq!(is_static(b"not an elf"), None);
    }
}
