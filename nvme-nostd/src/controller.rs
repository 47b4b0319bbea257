//! Controller bring-up, the admin commands, and orderly shutdown (NVMe Base
//! Specification 1.4, section 7.6.1 "Initialization" and 7.6.2 "Shutdown").

use crate::admin::{AdminQueue, ADMIN_QUEUE_ENTRIES};
use crate::dma::DmaMemory;
use crate::error::{Error, Result};
use crate::namespace::{csi_from_descriptors, Namespace};
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::slots::Cid;
use crate::spec::command::{AdminOpcode, CompletionEntry, SubmissionEntry};
use crate::spec::dwords::{AbortCdw10, AbortResult, FeaturesCdw10, IdentifyCdw10, NumberOfQueues};
use crate::spec::identify::{ActiveNamespaceList, IdentifyController, IdentifyNamespace};
use crate::spec::ids::{Cns, Csi, Fid};
use crate::spec::registers::{offset, shn, shst, Aqa, Cap, Cc, Csts, Vs};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;
use hal_traits::{Hal, PAGE_SIZE};

/// What the caller asks of a controller at attach time. What the controller
/// grants is reported by [`Controller`]'s accessors.
#[derive(Clone, Copy, Debug)]
pub struct ControllerOptions {
    /// I/O queue pairs to ask for with Set Features / Number of Queues (1 to 64;
    /// the driver numbers queues 1..=64).
    pub io_queues: u16,
    /// How long an admin command may take. An admin command that times out
    /// resets the controller.
    pub admin_timeout: Duration,
    /// How long an I/O command may be outstanding before the driver aborts it
    /// (and resets the controller if the abort does not work); `None` turns
    /// I/O timeouts off and spares the clock read per submission.
    pub io_timeout: Option<Duration>,
    /// How many times a command that fails with the Do Not Retry bit clear is
    /// submitted again before its error reaches its owner.
    pub retry_count: u8,
    /// Told about every command that times out, before the driver acts on it.
    pub timeout_callback: Option<fn(TimeoutEvent)>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            io_queues: 8,
            admin_timeout: Duration::from_secs(30),
            io_timeout: Some(Duration::from_secs(30)),
            retry_count: 4,
            timeout_callback: None,
        }
    }
}

/// A command that did not complete in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutEvent {
    /// The queue it was submitted to (0 for the admin queue).
    pub qid: u16,
    /// Its command identifier.
    pub cid: Cid,
    /// Its opcode.
    pub opcode: u8,
}

/// Identities for `Controller::id`.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// The highest I/O queue identifier the driver hands out.
pub const MAX_IO_QUEUES: u16 = 64;

/// An NVMe controller, enabled and identified, with its admin queue.
///
/// I/O queue pairs borrow it ([`Controller::create_io_qpair`](crate::Controller::create_io_qpair)),
/// so it outlives them. Dropping it shuts the controller down (CC.SHN) and
/// disables it before its queue memory is freed.
pub struct Controller<H: Hal> {
    pub(crate) hal: H,
    cap: Cap,
    vs: Vs,
    identify: IdentifyController,
    pub(crate) admin: spin::Mutex<AdminQueue>,
    options: ControllerOptions,
    io_queues: u16,
    /// Moves on each time a reset has quiesced the controller; queue pairs that
    /// see it move fail their outstanding requests and re-create their queues.
    epoch: AtomicU32,
    /// Set once the registers read all ones.
    removed: AtomicBool,
    /// Unique among the controllers of this program: ties `Namespace`
    /// handles to the controller that identified them.
    id: u32,
    /// Bit `q` set: I/O queue identifier `q` is in use.
    qids: spin::Mutex<u128>,
}

/// CAP.TO in 500 ms units, at least one unit.
fn ready_timeout(cap: Cap) -> Duration {
    Duration::from_millis(500 * (cap.to().max(1) as u64))
}

fn read_csts<H: Hal>(hal: &H) -> Result<Csts> {
    let raw = hal.read32(offset::CSTS);
    if raw == u32::MAX {
        return Err(Error::DeviceRemoved);
    }
    Ok(Csts::from_bits(raw))
}

/// Waits until CSTS.RDY equals `ready`, bounded by `timeout`.
fn wait_ready<H: Hal>(hal: &H, ready: bool, timeout: Duration) -> Result {
    let deadline = hal.now().saturating_add(timeout);
    loop {
        let csts = read_csts(hal)?;
        if csts.rdy() == ready {
            return Ok(());
        }
        // A fatal controller may never become ready; while disabling, CFS is
        // expected to clear with the reset, so keep waiting for RDY=0.
        if ready && csts.cfs() {
            return Err(Error::ControllerFatal);
        }
        if hal.now() >= deadline {
            return Err(Error::Timeout(if ready {
                "CSTS.RDY=1 after enable"
            } else {
                "CSTS.RDY=0 after disable"
            }));
        }
        hal.delay(Duration::from_micros(100));
    }
}

/// Programs AQA, ASQ and ACQ for `admin` and sets CC.EN (section 7.6.1 steps
/// 3 to 6); the caller waits for CSTS.RDY.
fn start_admin<H: Hal>(hal: &H, admin: &AdminQueue) {
    let entries = admin.sq.size();
    // SAFETY: the admin queues are DMA memory owned by the driver for as long
    // as the controller may use them (freed only after a disable).
    unsafe {
        hal.write32(offset::AQA, Aqa::new().with_asqs(entries - 1).with_acqs(entries - 1).into_bits());
        hal.write64(offset::ASQ, admin.sq.daddr().0);
        hal.write64(offset::ACQ, admin.cq.daddr().0);
    }
    let cc = Cc::new()
        .with_css(0)
        .with_mps(0)
        .with_ams(0)
        .with_shn(shn::NONE)
        .with_iosqes(6)
        .with_iocqes(4)
        .with_en(true);
    // SAFETY: enabling makes the controller use the admin queues just set.
    unsafe { hal.write32(offset::CC, cc.into_bits()) };
}

/// Clears CC.EN and waits for CSTS.RDY=0 (section 7.6.1 step 1, 3.1.5).
fn disable<H: Hal>(hal: &H, cap: Cap) -> Result {
    let timeout = ready_timeout(cap);
    let raw = hal.read32(offset::CC);
    if raw == u32::MAX {
        return Err(Error::DeviceRemoved);
    }
    let cc = Cc::from_bits(raw);
    let csts = read_csts(hal)?;
    if cc.en() && !csts.rdy() && !csts.cfs() {
        // Enabling is in progress: the specification asks hosts to wait for it
        // to finish before clearing EN.
        let _ = wait_ready(hal, true, timeout);
    }
    if cc.en() {
        // SAFETY: disabling stops all DMA; it starts none.
        unsafe { hal.write32(offset::CC, cc.with_en(false).into_bits()) };
    }
    wait_ready(hal, false, timeout)
}

impl<H: Hal> Controller<H> {
    /// Brings up the controller behind `hal`: disable, admin queue, enable,
    /// Identify Controller, Set Features / Number of Queues.
    pub fn new(hal: H, options: ControllerOptions) -> Result<Self> {
        let raw_cap = hal.read64(offset::CAP);
        if raw_cap == u64::MAX {
            return Err(Error::DeviceRemoved);
        }
        let cap = Cap::from_bits(raw_cap);
        let vs = Vs::from_bits(hal.read32(offset::VS));
        if cap.mqes() == 0 {
            return Err(Error::MalformedDevice("CAP.MQES is 0"));
        }
        if cap.css() & 1 == 0 {
            return Err(Error::Unsupported("controller lacks the NVM command set (CAP.CSS)"));
        }
        if cap.mpsmin() != 0 {
            return Err(Error::Unsupported("controller's minimum page size is above 4 KiB (CAP.MPSMIN)"));
        }
        if options.io_queues == 0 || options.io_queues > MAX_IO_QUEUES {
            return Err(Error::InvalidArgument("io_queues must be 1 to 64"));
        }

        disable(&hal, cap)?;

        let entries = ADMIN_QUEUE_ENTRIES.min(cap.mqes().saturating_add(1));
        let sq_mem = DmaMemory::alloc(&hal, 1)?;
        let mut sq_mem = sq_mem;
        let cq_mem = match DmaMemory::alloc(&hal, 1) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: the controller is disabled and never saw this memory.
                unsafe { sq_mem.free(&hal) };
                return Err(e.into());
            }
        };
        let mut cq_mem = cq_mem;
        let data = match DmaMemory::alloc(&hal, 1) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: as above.
                unsafe {
                    sq_mem.free(&hal);
                    cq_mem.free(&hal);
                }
                return Err(e.into());
            }
        };
        let sq = SubmissionQueue::new(sq_mem, entries, 0, cap.dstrd());
        let cq = CompletionQueue::new(cq_mem, entries, 0, cap.dstrd());
        let admin = AdminQueue::new(sq, cq, data);
        start_admin(&hal, &admin);

        let mut ctrlr = Controller {
            hal,
            cap,
            vs,
            identify: IdentifyController::default(),
            admin: spin::Mutex::new(admin),
            options,
            io_queues: 0,
            epoch: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            qids: spin::Mutex::new(0),
        };
        // From here on, Drop disables the controller before freeing memory.
        wait_ready(&ctrlr.hal, true, ready_timeout(cap))?;

        let mut page = [0u8; 4096];
        ctrlr.identify_raw(Cns::CONTROLLER, 0, &mut page)?;
        ctrlr.identify = IdentifyController::from_bytes(&page);
        let id = &ctrlr.identify;
        if id.sqes.required() > 6 || id.sqes.maximum() < 6 || id.cqes.required() > 4 || id.cqes.maximum() < 4
        {
            return Err(Error::MalformedDevice("SQES/CQES do not allow 64/16-byte entries"));
        }

        ctrlr.io_queues = ctrlr.set_number_of_queues(options.io_queues)?;
        Ok(ctrlr)
    }

    /// The HAL this controller was attached with.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// CAP: Controller Capabilities.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// VS: the NVMe version the controller implements.
    pub fn version(&self) -> Vs {
        self.vs
    }

    /// CSTS as it reads now.
    pub fn csts(&self) -> Result<Csts> {
        read_csts(&self.hal)
    }

    /// The Identify Controller data read at attach.
    pub fn identify(&self) -> &IdentifyController {
        &self.identify
    }

    /// The number of I/O queue pairs granted by the controller (and available to
    /// [`create_io_qpair`](crate::Controller::create_io_qpair)).
    pub fn io_queues(&self) -> u16 {
        self.io_queues
    }

    /// The largest transfer the controller accepts, in bytes (MDTS, in units of
    /// CAP.MPSMIN), or `None` when it states no limit.
    pub fn max_transfer_bytes(&self) -> Option<usize> {
        let mdts = self.identify.mdts;
        if mdts == 0 {
            return None;
        }
        let shift = 12 + self.cap.mpsmin() as u32 + mdts as u32;
        // A huge MDTS is as good as no limit.
        Some(if shift >= usize::BITS { usize::MAX } else { 1usize << shift })
    }

    /// This controller's identity (unique within the program).
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The options the controller was attached with.
    pub fn options(&self) -> &ControllerOptions {
        &self.options
    }

    /// True once the controller's registers have read all ones: it is gone, and
    /// every operation fails with [`Error::DeviceRemoved`].
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Called when a register read all ones: reads CSTS a few more times,
    /// 1 ms apart, and marks the controller removed only if every read is all
    /// ones (one bad read is not proof that the device is gone). Returns
    /// whether it is.
    pub(crate) fn confirm_removed(&self) -> bool {
        for _ in 0..3 {
            if self.hal.read32(offset::CSTS) != u32::MAX {
                return false;
            }
            self.hal.delay(Duration::from_millis(1));
        }
        self.removed.store(true, Ordering::Release);
        true
    }

    /// The reset epoch: it moves on each time a reset quiesced the controller.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Runs an admin command that moves no data and returns its completion.
    ///
    /// Commands with data pointers (PRP1, PRP2, MPTR, PSDT, FUSE) are refused.
    ///
    /// # Safety
    ///
    /// The command must make the device access no memory: some opcodes carry
    /// addresses outside the data pointer (Create I/O SQ/CQ, Doorbell Buffer
    /// Config, Set Features / Host Memory Buffer), and an opcode that moves
    /// data would use the address 0. It must not change what the driver relies
    /// on either: deleting the driver's queues, or a Format NVM that changes a
    /// namespace's block size under existing [`Namespace`] handles (get new
    /// ones afterwards).
    pub unsafe fn admin_command(&self, cmd: SubmissionEntry) -> Result<CompletionEntry> {
        if cmd.prp1 != 0 || cmd.prp2 != 0 || cmd.mptr != 0 || cmd.cdw0.psdt() != 0 || cmd.cdw0.fuse() != 0 {
            return Err(Error::InvalidArgument("raw admin commands may not carry data pointers"));
        }
        self.admin_exec(cmd, None)
    }

    /// The one admin path: runs `cmd` (with the admin data page as its data
    /// when `out` is given, copied out afterwards) and answers failures of the
    /// device: a timeout or fatal status resets the controller, all-ones
    /// registers mark it removed. The command's own error goes to the caller.
    pub(crate) fn admin_exec(
        &self,
        mut cmd: SubmissionEntry,
        out: Option<&mut [u8; PAGE_SIZE]>,
    ) -> Result<CompletionEntry> {
        if self.is_removed() {
            return Err(Error::DeviceRemoved);
        }
        let (result, cid) = {
            let mut admin = self.admin.lock();
            if out.is_some() {
                admin.data.zero();
                cmd.prp1 = admin.data.daddr(0).0;
            }
            let r = admin.execute(&self.hal, cmd, self.options.admin_timeout);
            if let (Ok(_), Some(out)) = (&r, out) {
                admin.data.read_bytes(0, out);
            }
            (r, Cid(admin.last_cid()))
        };
        // The callback runs without the admin lock, so it may use the driver.
        if let (Err(Error::Timeout(_)), Some(cb)) = (&result, self.options.timeout_callback) {
            cb(TimeoutEvent { qid: 0, cid, opcode: cmd.cdw0.opc() });
        }
        match result {
            Err(Error::Timeout(_)) | Err(Error::ControllerFatal) => {
                let _ = self.reset();
            }
            // A transient all-ones read: the admin queue is in an unknown
            // state, so reset.
            Err(Error::DeviceRemoved) if !self.confirm_removed() => {
                let _ = self.reset();
            }
            _ => {}
        }
        result
    }

    /// Abort (section 5.1) of command `cid` on submission queue `sqid`. Returns
    /// true when the controller says it aborted the command (which then
    /// completes with an abort status), false for "not aborted".
    pub fn abort(&self, sqid: u16, cid: Cid) -> Result<bool> {
        let mut cmd = SubmissionEntry::new(AdminOpcode::ABORT.0, 0);
        cmd.cdw10 = AbortCdw10::new().with_sqid(sqid).with_cid(cid.0).into_bits();
        let done = self.admin_exec(cmd, None)?;
        // DW0 bit 0: 0 = aborted, 1 = not aborted.
        Ok(!AbortResult::from_bits(done.dw0).not_aborted())
    }

    /// Resets the controller (section 7.3.2): disables it, which ends every
    /// command in flight on every queue, then brings it up again with the same
    /// admin queue memory and number of queues. Queue pairs notice on their
    /// next `poll` or submission: their outstanding requests complete with
    /// [`Error::Reset`] and their queues are created again.
    pub fn reset(&self) -> Result {
        if self.is_removed() {
            return Err(Error::DeviceRemoved);
        }
        let mut admin = self.admin.lock();
        admin.failed = true;
        if let Err(e) = disable(&self.hal, self.cap) {
            if e == Error::DeviceRemoved {
                self.confirm_removed();
            }
            return Err(e);
        }
        // Quiesced: no command of any queue can complete or touch memory any
        // more, so queue pairs may hand their requests back.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        admin.restart();
        start_admin(&self.hal, &admin);
        // Until the controller is ready again, the admin queue stays failed:
        // no command goes to a controller with CSTS.RDY = 0.
        admin.failed = true;
        wait_ready(&self.hal, true, ready_timeout(self.cap))?;
        admin.failed = false;
        let n = self.io_queues.max(1) - 1;
        let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = FeaturesCdw10::new().with_fid(Fid::NUMBER_OF_QUEUES).into_bits();
        cmd.cdw11 = NumberOfQueues::new().with_nsq(n).with_ncq(n).into_bits();
        admin.execute(&self.hal, cmd, self.options.admin_timeout)?;
        Ok(())
    }

    /// Identify with any CNS value (section 5.15), copying the 4096-byte data
    /// structure into `out` unparsed.
    pub fn identify_raw(&self, cns: Cns, nsid: u32, out: &mut [u8; PAGE_SIZE]) -> Result {
        let mut cmd = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, nsid);
        cmd.cdw10 = IdentifyCdw10::new().with_cns(cns).into_bits();
        self.admin_exec(cmd, Some(out)).map(|_| ())
    }

    /// Identify Namespace (CNS 00h) for `nsid`.
    pub fn identify_namespace(&self, nsid: u32) -> Result<IdentifyNamespace> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument("namespace id"));
        }
        let mut page = [0u8; PAGE_SIZE];
        self.identify_raw(Cns::NAMESPACE, nsid, &mut page)?;
        Ok(IdentifyNamespace::from_bytes(&page))
    }

    /// The active namespace identifiers above `after` (CNS 02h), up to 1024.
    /// Use 0 for the first page; pass the last identifier to get the next one.
    pub fn active_namespaces(&self, after: u32) -> Result<ActiveNamespaceList> {
        let mut page = [0u8; PAGE_SIZE];
        self.identify_raw(Cns::ACTIVE_NAMESPACES, after, &mut page)?;
        Ok(ActiveNamespaceList::from_bytes(&page))
    }

    /// A handle to active namespace `nsid`, built from its Identify Namespace
    /// data, which is checked before the driver relies on it.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace> {
        let id = self.identify_namespace(nsid)?;
        Namespace::from_identify(nsid, &id, self.namespace_csi(nsid)?, self.max_transfer_bytes(), self.id)
    }

    /// The namespace's Command Set Identifier from its identification
    /// descriptors (CNS 03h). Controllers before NVMe 1.3 lack the list: their
    /// namespaces are NVM.
    fn namespace_csi(&self, nsid: u32) -> Result<Csi> {
        let (major, minor) = (self.vs.mjr(), self.vs.mnr());
        if (major, minor) < (1, 3) {
            return Ok(Csi::NVM);
        }
        let mut page = [0u8; PAGE_SIZE];
        match self.identify_raw(Cns::NAMESPACE_ID_DESCRIPTORS, nsid, &mut page) {
            Ok(()) => Ok(csi_from_descriptors(&page).unwrap_or(Csi::NVM)),
            Err(Error::Command(_)) => Ok(Csi::NVM),
            Err(e) => Err(e),
        }
    }

    fn set_number_of_queues(&self, wanted: u16) -> Result<u16> {
        let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = FeaturesCdw10::new().with_fid(Fid::NUMBER_OF_QUEUES).into_bits();
        let n = wanted - 1;
        cmd.cdw11 = NumberOfQueues::new().with_nsq(n).with_ncq(n).into_bits();
        let done = self.admin_exec(cmd, None)?;
        // DW0: NSQA and NCQA, both 0-based.
        let granted = NumberOfQueues::from_bits(done.dw0);
        Ok(granted.nsq().min(granted.ncq()).saturating_add(1).min(wanted))
    }

    /// Reserves an I/O queue identifier.
    pub(crate) fn alloc_qid(&self) -> Result<u16> {
        let mut qids = self.qids.lock();
        for q in 1..=self.io_queues {
            if *qids & (1u128 << q) == 0 {
                *qids |= 1u128 << q;
                return Ok(q);
            }
        }
        Err(Error::NoQueueAvailable)
    }

    /// Returns an I/O queue identifier whose queues are deleted.
    pub(crate) fn free_qid(&self, qid: u16) {
        *self.qids.lock() &= !(1u128 << qid);
    }

    /// Disables the controller (CC.EN = 0): the controller stops all DMA and
    /// forgets every queue. Used when queues cannot be deleted cleanly.
    pub(crate) fn disable(&self) -> Result {
        // The admin queue dies with the controller's state: no more commands
        // until a reset brings it back.
        self.admin.lock().failed = true;
        disable(&self.hal, self.cap)
    }

    /// Orderly shutdown (section 7.6.2): CC.SHN = normal, wait for
    /// CSTS.SHST = complete, then disable.
    fn shutdown(&self) -> Result {
        let raw = self.hal.read32(offset::CC);
        if raw == u32::MAX {
            return Err(Error::DeviceRemoved);
        }
        let cc = Cc::from_bits(raw);
        if cc.en() {
            // SAFETY: a shutdown notification starts no DMA to new memory.
            unsafe { self.hal.write32(offset::CC, cc.with_shn(shn::NORMAL).into_bits()) };
            let deadline = self.hal.now().saturating_add(ready_timeout(self.cap));
            loop {
                let csts = read_csts(&self.hal)?;
                if csts.shst() == shst::COMPLETE || csts.cfs() {
                    break;
                }
                if self.hal.now() >= deadline {
                    break;
                }
                self.hal.delay(Duration::from_micros(100));
            }
        }
        self.disable()
    }
}

impl<H: Hal> Drop for Controller<H> {
    fn drop(&mut self) {
        // Queue pairs borrow the controller, so none is alive here (one that was
        // leaked with mem::forget keeps its memory forever, which is safe).
        if self.shutdown().is_ok() {
            let admin = self.admin.get_mut();
            // SAFETY: the controller is disabled (CSTS.RDY = 0), so it no longer
            // reads or writes the admin queues or the data page.
            unsafe { admin.free(&self.hal) };
        }
        // Otherwise the controller may still write the admin memory: leak it.
    }
}
