//! The PVH `hvm_start_info` structure (Xen's `arch/x86/hvm/start_info.h`): the
//! kernel command line is all the demo reads from it.

/// `hvm_start_info.magic`.
const MAGIC: u32 = 0x336e_c578;

/// The command line, or "" when there is none or it is not valid UTF-8.
///
/// # Safety
///
/// `paddr` is the start-info address QEMU passed in `%ebx`, identity mapped.
pub unsafe fn command_line(paddr: u32) -> &'static str {
    if paddr == 0 {
        return "";
    }
    let base = paddr as usize as *const u8;
    // SAFETY: the structure is at least 56 bytes; magic at 0 and the command
    // line address at 24 (caller's promise). Unaligned reads cost nothing here.
    let (magic, cmdline) =
        unsafe { ((base as *const u32).read_unaligned(), (base.add(24) as *const u64).read_unaligned()) };
    if magic != MAGIC || cmdline == 0 || cmdline >= 1 << 32 {
        return "";
    }
    let p = cmdline as usize as *const u8;
    let mut len = 0;
    // SAFETY: a NUL-terminated string in identity-mapped low memory; bounded.
    while len < 4096 && unsafe { p.add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: `len` bytes at `p` were just read, and QEMU leaves them alone.
    let bytes = unsafe { core::slice::from_raw_parts(p, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}
