//! Every I/O command the queue pair builds, byte by byte as the controller
//! reads it from the submission queue, against the bit positions of the
//! specification (NVM Command Set 1.0 figures 13-16, 21, 37, 44, 47, 58,
//! 62, 65; Base 1.4 figure 105 for the common layout), written out here as
//! numbers rather than through the driver's own bitfield types.

mod common;

use common::{poll_for, qpair, setup};
use core::time::Duration;
use nvme_nostd::spec::command::{DsmRange, SubmissionEntry};
use nvme_nostd::spec::dwords::DsmAttributes;
use nvme_nostd::{CopyRange, IoFlags};
use nvme_sim::{Sim, SimConfig};

/// The entry's 64 bytes in memory order (figure 105).
fn bytes(e: &SubmissionEntry) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, q) in e.to_qwords().iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&q.to_le_bytes());
    }
    out
}

fn dword(b: &[u8; 64], index: usize) -> u32 {
    u32::from_le_bytes(b[index * 4..index * 4 + 4].try_into().unwrap())
}

/// What one command must look like: opcode, NSID, whether it carries a data
/// pointer, and CDW10 to CDW15.
struct Expected {
    opcode: u8,
    nsid: u32,
    data: bool,
    cdw: [u32; 6],
}

fn check(sim: &Sim, what: &str, expected: Expected) {
    let last = *sim.recent_io_commands().last().expect("a command reached the controller");
    let b = bytes(&last);
    assert_eq!(b[0], expected.opcode, "{what}: OPC (byte 0)");
    assert_eq!(b[1], 0, "{what}: FUSE and PSDT (byte 1): not fused, PRPs");
    assert_eq!(dword(&b, 1), expected.nsid, "{what}: NSID (bytes 4-7)");
    assert_eq!(&b[8..24], &[0; 16], "{what}: CDW2, CDW3 and MPTR (bytes 8-23) unused");
    let prp1 = u64::from_le_bytes(b[24..32].try_into().unwrap());
    assert_eq!(prp1 != 0, expected.data, "{what}: PRP1 (bytes 24-31)");
    if !expected.data {
        assert_eq!(&b[32..40], &[0; 8], "{what}: PRP2 without data");
    }
    for (i, want) in expected.cdw.iter().enumerate() {
        assert_eq!(dword(&b, 10 + i), *want, "{what}: CDW{} (bytes {}-{})", 10 + i, 40 + 4 * i, 43 + 4 * i);
    }
}

#[test]
fn every_io_command_and_flag_byte_by_byte() {
    let (sim, ctrlr, ns) = setup(SimConfig::default());
    let mut qp = qpair(&ctrlr);
    let run = |qp: &mut common::Qp<'_>| {
        let d = poll_for(&sim, qp, Duration::from_millis(10));
        assert_eq!(d.len(), 1);
        d.into_iter().next().unwrap().result().unwrap();
    };
    let lba = 0x1234u64;
    let (lo, hi) = (lba as u32, 0);
    let fua = IoFlags::FUA;
    let lr = IoFlags { fua: false, limited_retry: true };
    const FUA: u32 = 1 << 30;
    const LR: u32 = 1 << 31;
    const DEAC: u32 = 1 << 25;

    // Write 01h, Read 02h (figures 58, 44): SLBA in CDW10 (low) and CDW11
    // (high; the simulator's namespaces are too small for it to be
    // non-zero); NLB 0-based in CDW12 bits 15:0, FUA bit 30, LR bit 31.
    qp.write_with(&ns, lba, 4, fua, vec![0; 2048], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "write FUA", Expected { opcode: 0x01, nsid: 1, data: true, cdw: [lo, hi, 3 | FUA, 0, 0, 0] });
    qp.read_with(&ns, lba, 1, lr, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "read LR", Expected { opcode: 0x02, nsid: 1, data: true, cdw: [lo, hi, LR, 0, 0, 0] });
    qp.read(&ns, 7, 2, vec![0; 1024], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "read", Expected { opcode: 0x02, nsid: 1, data: true, cdw: [7, 0, 1, 0, 0, 0] });
    // Compare 05h (figure 21).
    qp.compare_with(&ns, lba, 4, IoFlags { fua: true, limited_retry: true }, vec![0; 2048], 0)
        .map_err(|e| e.error)
        .unwrap();
    run(&mut qp);
    check(
        &sim,
        "compare",
        Expected { opcode: 0x05, nsid: 1, data: true, cdw: [lo, hi, 3 | FUA | LR, 0, 0, 0] },
    );
    // Write Zeroes 08h (figure 65): DEAC in bit 25.
    qp.write_zeroes_with(&ns, lba, 16, true, fua, 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(
        &sim,
        "write zeroes",
        Expected { opcode: 0x08, nsid: 1, data: false, cdw: [lo, hi, 15 | DEAC | FUA, 0, 0, 0] },
    );
    qp.write_zeroes(&ns, lba, 1, false, 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "write zeroes", Expected { opcode: 0x08, nsid: 1, data: false, cdw: [lo, hi, 0, 0, 0, 0] });
    // Verify 0Ch (figure 62).
    qp.verify_with(&ns, lba, 2, lr, 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "verify", Expected { opcode: 0x0c, nsid: 1, data: false, cdw: [lo, hi, 1 | LR, 0, 0, 0] });
    // Write Uncorrectable 04h (figure 47), then the blocks written again.
    qp.write_uncorrectable(&ns, lba, 3, 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(
        &sim,
        "write uncorrectable",
        Expected { opcode: 0x04, nsid: 1, data: false, cdw: [lo, hi, 2, 0, 0, 0] },
    );
    // Dataset Management 09h (figure 37): NR 0-based in CDW10 bits 7:0,
    // AD bit 2, IDW bit 1, IDR bit 0 of CDW11.
    let ranges = [DsmRange::new(1, 1), DsmRange::new(5, 2), DsmRange::new(9, 3)];
    let attributes = DsmAttributes::new().with_ad(true).with_idr(true);
    qp.dataset_management(&ns, &ranges, attributes, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(
        &sim,
        "dataset management",
        Expected { opcode: 0x09, nsid: 1, data: true, cdw: [2, 0b101, 0, 0, 0, 0] },
    );
    // Copy 19h (figures 15, 16): SDLBA in CDW10-11, NR 0-based in CDW12
    // bits 7:0, descriptor format 0 in bits 11:8.
    let sources = [CopyRange::new(0, 8), CopyRange::new(64, 2)];
    qp.copy(&ns, 200, &sources, IoFlags { fua: true, limited_retry: true }, vec![0; 512], 0)
        .map_err(|e| e.error)
        .unwrap();
    run(&mut qp);
    check(&sim, "copy", Expected { opcode: 0x19, nsid: 1, data: true, cdw: [200, 0, 1 | FUA | LR, 0, 0, 0] });
    // Flush 00h: no data, no CDW.
    qp.flush(&ns, 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "flush", Expected { opcode: 0x00, nsid: 1, data: false, cdw: [0; 6] });
}

/// The reservation commands (figures 379, 383, 386, 389): RREGA, RACQA and
/// RRELA in CDW10 bits 2:0, IEKEY bit 3, RTYPE bits 15:8, CPTPL bits 31:30;
/// Report's NUMD (0-based dwords) in CDW10 and EDS in CDW11 bit 0.
#[test]
fn reservation_commands_byte_by_byte() {
    use nvme_nostd::{AcquireAction, PtplChange, ReleaseAction, ReservationRegister, ReservationType};
    let sim = Sim::new(SimConfig { reservations: true, ..SimConfig::default() });
    let options = common::options().with_host_identifier(Some([7; 16]));
    let ctrlr = nvme_nostd::Controller::new(sim.hal(), options).unwrap();
    let ns = ctrlr.namespace(1).unwrap();
    let mut qp = qpair(&ctrlr);
    let run = |qp: &mut common::Qp<'_>| {
        let d = poll_for(&sim, qp, Duration::from_millis(10));
        assert_eq!(d.len(), 1);
        d.into_iter().next().unwrap().result().unwrap();
    };
    let register = ReservationRegister::register(5).with_ptpl(PtplChange::Set);
    qp.reservation_register(&ns, register, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "register", Expected { opcode: 0x0d, nsid: 1, data: true, cdw: [3 << 30, 0, 0, 0, 0, 0] });
    let replace = ReservationRegister::replace(9, 5).ignoring_existing_key().with_ptpl(PtplChange::Clear);
    qp.reservation_register(&ns, replace, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(
        &sim,
        "replace",
        Expected { opcode: 0x0d, nsid: 1, data: true, cdw: [2 << 30 | 8 | 2, 0, 0, 0, 0, 0] },
    );
    let ea = ReservationType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
    qp.reservation_acquire(&ns, AcquireAction::Acquire, ea, 5, 0, vec![0; 512], 0)
        .map_err(|e| e.error)
        .unwrap();
    run(&mut qp);
    check(&sim, "acquire", Expected { opcode: 0x11, nsid: 1, data: true, cdw: [6 << 8, 0, 0, 0, 0, 0] });
    qp.reservation_acquire(&ns, AcquireAction::PreemptAndAbort, ea, 5, 6, vec![0; 512], 0)
        .map_err(|e| e.error)
        .unwrap();
    run(&mut qp);
    check(
        &sim,
        "preempt and abort",
        Expected { opcode: 0x11, nsid: 1, data: true, cdw: [6 << 8 | 2, 0, 0, 0, 0, 0] },
    );
    qp.reservation_release(&ns, ReleaseAction::Release, ea, 5, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "release", Expected { opcode: 0x15, nsid: 1, data: true, cdw: [6 << 8, 0, 0, 0, 0, 0] });
    qp.reservation_report(&ns, true, vec![0; 4096], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "report", Expected { opcode: 0x0e, nsid: 1, data: true, cdw: [1023, 1, 0, 0, 0, 0] });
    qp.reservation_release(&ns, ReleaseAction::Clear, ea, 5, vec![0; 512], 0).map_err(|e| e.error).unwrap();
    run(&mut qp);
    check(&sim, "clear", Expected { opcode: 0x15, nsid: 1, data: true, cdw: [6 << 8 | 1, 0, 0, 0, 0, 0] });
}
