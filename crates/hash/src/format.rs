//! Executable format detection from a file's first bytes.

use privtel_model::{Arch, ExecutableFormat};

/// How many leading bytes [`detect_format`] looks at. A PE header may sit
/// anywhere `e_lfanew` points; real linkers put it in the first few hundred
/// bytes, and 4 KiB is one page, so reading it costs no more than reading one
/// byte.
pub const FORMAT_PROBE_LEN: usize = 4096;

/// The longest `#!` line kept (Linux itself reads 256 bytes).
const MAX_SHEBANG: usize = 256;

/// More slices than this in a `0xcafebabe` file means a Java class file (whose
/// minor/major version sits where a fat Mach-O header keeps its count), as
/// `file(1)` decides it.
const MAX_FAT_ARCHES: u32 = 30;

/// Recognises ELF, PE, Mach-O (32/64-bit, both byte orders, universal) and
/// `#!` scripts from the first bytes of a file (pass at least
/// [`FORMAT_PROBE_LEN`] bytes where the file has them).
///
/// Returns `None` for anything else, and for headers too short to hold what
/// their magic promises.
///
/// ```
/// use privtel_hash::detect_format;
/// use privtel_model::{Arch, ExecutableFormat};
///
/// let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
/// elf.resize(18, 0);
/// elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
/// assert_eq!(detect_format(&elf), Some(ExecutableFormat::Elf { arch: Arch::X86_64 }));
/// assert_eq!(detect_format(b"#!/bin/sh\necho hi\n"),
///            Some(ExecutableFormat::Script { interpreter: "/bin/sh".into() }));
/// assert_eq!(detect_format(b"plain text"), None);
/// ```
pub fn detect_format(head: &[u8]) -> Option<ExecutableFormat> {
    match head {
        [0x7f, b'E', b'L', b'F', ..] => elf(head),
        [b'M', b'Z', ..] => pe(head),
        [b'#', b'!', rest @ ..] => Some(script(rest)),
        _ => macho(head),
    }
}

fn u16_at(b: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let bytes: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big_endian { u16::from_be_bytes(bytes) } else { u16::from_le_bytes(bytes) })
}

fn u32_at(b: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
}

fn elf(b: &[u8]) -> Option<ExecutableFormat> {
    // e_ident[EI_DATA]: 1 little-endian, 2 big-endian.
    let big_endian = match b.get(5)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let machine = u16_at(b, 18, big_endian)?;
    let arch = match machine {
        3 => Arch::X86,
        62 => Arch::X86_64,
        40 => Arch::Arm,
        183 => Arch::Aarch64,
        243 if b.get(4) == Some(&2) => Arch::RiscV64,
        21 => Arch::PowerPc64,
        22 => Arch::S390x,
        258 => Arch::LoongArch64,
        other => Arch::Other(u32::from(other)),
    };
    Some(ExecutableFormat::Elf { arch })
}

fn pe(b: &[u8]) -> Option<ExecutableFormat> {
    // A DOS stub alone (no PE header) is not a Windows executable we report.
    let offset = usize::try_from(u32_at(b, 0x3c, false)?).ok()?;
    if b.get(offset..offset.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let machine = u16_at(b, offset + 4, false)?;
    let arch = match machine {
        0x014c => Arch::X86,
        0x8664 => Arch::X86_64,
        0x01c0 | 0x01c2 | 0x01c4 => Arch::Arm,
        0xaa64 => Arch::Aarch64,
        0x5064 => Arch::RiscV64,
        0x6264 => Arch::LoongArch64,
        other => Arch::Other(u32::from(other)),
    };
    Some(ExecutableFormat::Pe { arch })
}

fn macho_arch(cputype: u32) -> Arch {
    match cputype {
        7 => Arch::X86,
        0x0100_0007 => Arch::X86_64,
        12 => Arch::Arm,
        0x0100_000c => Arch::Aarch64,
        0x0100_0012 => Arch::PowerPc64,
        other => Arch::Other(other),
    }
}

fn macho(b: &[u8]) -> Option<ExecutableFormat> {
    let magic = u32_at(b, 0, true)?;
    match magic {
        // Thin: MH_MAGIC / MH_MAGIC_64 as stored big- or little-endian.
        0xfeed_face | 0xfeed_facf => Some(ExecutableFormat::MachO { arch: macho_arch(u32_at(b, 4, true)?) }),
        0xcefa_edfe | 0xcffa_edfe => Some(ExecutableFormat::MachO { arch: macho_arch(u32_at(b, 4, false)?) }),
        // Universal: FAT_MAGIC (20-byte entries) / FAT_MAGIC_64 (32-byte),
        // always big-endian.
        0xcafe_babe | 0xcafe_babf => {
            let count = u32_at(b, 4, true)?;
            if count == 0 || count > MAX_FAT_ARCHES {
                return None;
            }
            let entry = if magic == 0xcafe_babe { 20 } else { 32 };
            let arches = (0..count as usize)
                .map(|i| u32_at(b, 8 + i * entry, true).map(macho_arch))
                .collect::<Option<Vec<_>>>()?;
            Some(ExecutableFormat::MachOUniversal { arches })
        }
        _ => None,
    }
}

fn script(after_bang: &[u8]) -> ExecutableFormat {
    let line = after_bang.split(|&c| c == b'\n').next().unwrap_or_default();
    let line = &line[..line.len().min(MAX_SHEBANG)];
    let interpreter = String::from_utf8_lossy(line).trim().to_owned();
    ExecutableFormat::Script { interpreter }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', class, data, 1, 0];
        h.resize(18, 0);
        if data == 2 {
            h.extend_from_slice(&machine.to_be_bytes());
        } else {
            h.extend_from_slice(&machine.to_le_bytes());
        }
        h.resize(64, 0);
        h
    }

    fn pe_header(lfanew: u32, machine: u16) -> Vec<u8> {
        let mut h = b"MZ".to_vec();
        h.resize(0x3c, 0);
        h.extend_from_slice(&lfanew.to_le_bytes());
        h.resize(lfanew as usize, 0);
        h.extend_from_slice(b"PE\0\0");
        h.extend_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn elf_machines_and_byte_orders() {
        let cases = [
            (2, 1, 62, Arch::X86_64),
            (1, 1, 3, Arch::X86),
            (2, 1, 183, Arch::Aarch64),
            (1, 1, 40, Arch::Arm),
            (2, 1, 243, Arch::RiscV64),
            (2, 2, 21, Arch::PowerPc64),
            (2, 2, 22, Arch::S390x),
            (2, 1, 258, Arch::LoongArch64),
            (2, 1, 9999, Arch::Other(9999)),
        ];
        for (class, data, machine, arch) in cases {
            assert_eq!(
                detect_format(&elf_header(class, data, machine)),
                Some(ExecutableFormat::Elf { arch })
            );
        }
        // Bad EI_DATA, and a header cut before e_machine.
        assert_eq!(detect_format(&elf_header(2, 3, 62)), None);
        assert_eq!(detect_format(&elf_header(2, 1, 62)[..19]), None);
    }

    #[test]
    fn pe_needs_the_pe_signature() {
        assert_eq!(
            detect_format(&pe_header(0x80, 0x8664)),
            Some(ExecutableFormat::Pe { arch: Arch::X86_64 })
        );
        assert_eq!(
            detect_format(&pe_header(0x100, 0xaa64)),
            Some(ExecutableFormat::Pe { arch: Arch::Aarch64 })
        );
        assert_eq!(detect_format(&pe_header(0x80, 0x014c)), Some(ExecutableFormat::Pe { arch: Arch::X86 }));
        let mut dos_only = pe_header(0x80, 0x8664);
        dos_only[0x80] = b'X';
        assert_eq!(detect_format(&dos_only), None);
        // e_lfanew pointing far beyond the probe, or at u32::MAX: no panic.
        assert_eq!(detect_format(&pe_header(0x40, 0x8664)[..0x40]), None);
        let mut huge = b"MZ".to_vec();
        huge.resize(0x3c, 0);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(detect_format(&huge), None);
    }

    #[test]
    fn macho_thin_fat_and_java() {
        let mut thin64_le = 0xfeed_facfu32.to_le_bytes().to_vec();
        thin64_le.extend_from_slice(&0x0100_000cu32.to_le_bytes());
        assert_eq!(detect_format(&thin64_le), Some(ExecutableFormat::MachO { arch: Arch::Aarch64 }));
        let mut thin32_be = 0xfeed_faceu32.to_be_bytes().to_vec();
        thin32_be.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(detect_format(&thin32_be), Some(ExecutableFormat::MachO { arch: Arch::X86 }));

        let mut fat = 0xcafe_babeu32.to_be_bytes().to_vec();
        fat.extend_from_slice(&2u32.to_be_bytes());
        for cpu in [0x0100_0007u32, 0x0100_000c] {
            fat.extend_from_slice(&cpu.to_be_bytes());
            fat.extend_from_slice(&[0; 16]);
        }
        assert_eq!(
            detect_format(&fat),
            Some(ExecutableFormat::MachOUniversal { arches: vec![Arch::X86_64, Arch::Aarch64] })
        );
        // Truncated inside the arch table.
        assert_eq!(detect_format(&fat[..30]), None);
        // A Java class file: minor 0, major 65.
        let mut class = 0xcafe_babeu32.to_be_bytes().to_vec();
        class.extend_from_slice(&[0, 0, 0, 65]);
        assert_eq!(detect_format(&class), None);
    }

    #[test]
    fn scripts_and_non_executables() {
        assert_eq!(
            detect_format(b"#!/usr/bin/env python3 \nprint()\n"),
            Some(ExecutableFormat::Script { interpreter: "/usr/bin/env python3".into() })
        );
        let long = [b"#!".as_slice(), &[b'a'; 1000]].concat();
        let Some(ExecutableFormat::Script { interpreter }) = detect_format(&long) else { panic!("script") };
        assert_eq!(interpreter.len(), MAX_SHEBANG);
        for other in [&b""[..], b"M", b"MZ", b"\x7fELF", b"PK\x03\x04", b"%PDF-1.7", b"#"] {
            assert_eq!(detect_format(other), None, "{other:?}");
        }
    }
}
