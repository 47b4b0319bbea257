//! CPU exceptions: every vector 0-31 goes to a stub that reports the vector,
//! error code and faulting RIP on the serial port and exits QEMU with the
//! failure status. Without this, an exception would triple-fault, and QEMU
//! would exit with status 0.

use core::fmt::Write;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

core::arch::global_asm!(
    r#"
    .section .text.exceptions, "ax"
    .code64
    .macro EXC_NOERR n
    exc_stub_\n:
        pushq $0
        pushq $\n
        jmp exc_common
    .endm
    .macro EXC_ERR n
    exc_stub_\n:
        pushq $\n
        jmp exc_common
    .endm

    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21

    exc_common:
        movq (%rsp), %rdi       /* vector */
        movq 8(%rsp), %rsi      /* error code (0 when the CPU pushes none) */
        movq 16(%rsp), %rdx     /* RIP of the faulting instruction */
        andq $-16, %rsp
        call kernel_exception
    1:  cli
        hlt
        jmp 1b

    .section .rodata.exceptions, "a"
    .p2align 3
    .global EXCEPTION_STUBS
    EXCEPTION_STUBS:
    .quad exc_stub_0, exc_stub_1, exc_stub_2, exc_stub_3, exc_stub_4, exc_stub_5
    .quad exc_stub_6, exc_stub_7, exc_stub_8, exc_stub_9, exc_stub_10, exc_stub_11
    .quad exc_stub_12, exc_stub_13, exc_stub_14, exc_stub_15, exc_stub_16, exc_stub_17
    .quad exc_stub_18, exc_stub_19, exc_stub_20, exc_stub_21
"#,
    options(att_syntax)
);

extern "C" {
    /// The stubs' addresses, by vector.
    static EXCEPTION_STUBS: [u64; 22];
}

static IDT: spin::Once<InterruptDescriptorTable> = spin::Once::new();

/// Builds the IDT for vectors 0 to 21 and loads it.
pub fn install() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: EXCEPTION_STUBS is an immutable table defined above.
        let stubs = unsafe { EXCEPTION_STUBS };
        let addr = |v: usize| VirtAddr::new(stubs[v]);
        // SAFETY: each address is a stub above, which never returns: it
        // reports the exception and exits QEMU. The code selector is the boot
        // GDT's 64-bit code segment, loaded in CS.
        unsafe {
            idt.divide_error.set_handler_addr(addr(0));
            idt.debug.set_handler_addr(addr(1));
            idt.non_maskable_interrupt.set_handler_addr(addr(2));
            idt.breakpoint.set_handler_addr(addr(3));
            idt.overflow.set_handler_addr(addr(4));
            idt.bound_range_exceeded.set_handler_addr(addr(5));
            idt.invalid_opcode.set_handler_addr(addr(6));
            idt.device_not_available.set_handler_addr(addr(7));
            idt.double_fault.set_handler_addr(addr(8));
            idt.invalid_tss.set_handler_addr(addr(10));
            idt.segment_not_present.set_handler_addr(addr(11));
            idt.stack_segment_fault.set_handler_addr(addr(12));
            idt.general_protection_fault.set_handler_addr(addr(13));
            idt.page_fault.set_handler_addr(addr(14));
            idt.x87_floating_point.set_handler_addr(addr(16));
            idt.alignment_check.set_handler_addr(addr(17));
            idt.machine_check.set_handler_addr(addr(18));
            idt.simd_floating_point.set_handler_addr(addr(19));
            idt.virtualization.set_handler_addr(addr(20));
            idt.cp_protection_exception.set_handler_addr(addr(21));
        }
        idt
    });
    idt.load();
}

fn name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating point",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating point",
        20 => "virtualization",
        21 => "control protection",
        _ => "reserved",
    }
}

#[no_mangle]
extern "C" fn kernel_exception(vector: u64, error: u64, rip: u64) -> ! {
    let mut out = crate::Console::emergency();
    let _ =
        write!(out, "CPU EXCEPTION: {} (vector {vector}), error code {error:#x}, RIP {rip:#x}", name(vector));
    if vector == 14 {
        let _ = write!(out, ", CR2 {:#x}", x86_64::registers::control::Cr2::read_raw());
    }
    let _ = writeln!(out);
    hal_baremetal::exit::exit_qemu(false)
}
