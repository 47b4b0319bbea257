//! Controller bring-up, the admin commands, and orderly shutdown (NVMe Base
//! Specification 1.4, section 7.6.1 "Initialization" and 7.6.2 "Shutdown").

use crate::admin::{retry_wait, AdminQueue, AsyncKind, AsyncResult, Ticket, ADMIN_QUEUE_ENTRIES, MAX_ABORTS};
use crate::buffer::{IoBuffer, Registered};
use crate::cmb::{Cmb, CmbInfo, DeviceRing};
use crate::dma::{DmaAlloc, DmaMemory};
use crate::error::{Argument, Error, Feature, Malformed, Result, Wait};
use crate::hmb::{Hmb, HmbInfo};
use crate::namespace::{csi_from_descriptors, Binding, Geometry, Namespace, Tracker};
use crate::qpair::AbortOutcome;
use crate::quarantine::Quarantine;
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::registers::Registers;
use crate::slots::Cid;
use crate::spec::command::{AdminOpcode, CompletionEntry, SubmissionEntry};
use crate::spec::dwords::{AbortCdw10, AbortResult, FeaturesCdw10, IdentifyCdw10, NumberOfQueues};
use crate::spec::identify::{ActiveNamespaceList, IdentifyController, IdentifyNamespace, Oncs};
use crate::spec::ids::{Cns, Csi, Fid};
use crate::spec::registers::{shst, Cap, Cc, Csts, Vs};
use crate::spec::status::Status;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;
use hal_traits::{Hal, PAGE_SIZE};

/// Told about every command that times out, before the driver acts on it.
///
/// It runs on the thread that found the timeout (inside `poll`, or inside an
/// admin call), without the driver's admin lock, so it may use the driver. It
/// must not panic: a panic unwinds through the driver call that found the
/// timeout (the driver stays sound, but that call's work is cut short).
pub type TimeoutCallback = &'static (dyn Fn(TimeoutEvent) + Sync);

/// Told once that the controller is gone (its registers read all ones, again
/// and again), with its Identify Controller data (serial number, CNTLID) to
/// tell which. It runs without any driver lock, on the thread that noticed
/// (inside `poll`, an admin call,
/// [`process_admin_completions`](Controller::process_admin_completions) or
/// [`check_removal`](Controller::check_removal)).
pub type RemoveCallback = &'static (dyn Fn(&IdentifyController) + Sync);

/// The arbitration mechanism between submission queues (CC.AMS, section
/// 4.13 of NVMe 1.4 "Command Arbitration").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArbitrationMechanism {
    /// Round robin: every submission queue alike (every controller has it).
    #[default]
    RoundRobin,
    /// Weighted round robin with urgent priority class: urgent queues first,
    /// then high, medium and low in the proportions of the Arbitration
    /// feature's weights ([`Controller::set_arbitration`]); a queue pair's
    /// class is [`QpairOptions::priority`](crate::QpairOptions::priority).
    /// Needs CAP.AMS bit 0.
    WeightedRoundRobin,
}

impl ArbitrationMechanism {
    /// The CC.AMS value.
    const fn ams(self) -> u8 {
        match self {
            ArbitrationMechanism::RoundRobin => 0,
            ArbitrationMechanism::WeightedRoundRobin => 1,
        }
    }
}

/// What the caller asks of a controller at attach time. What the controller
/// grants is reported by [`Controller`]'s accessors.
///
/// ```
/// # use core::time::Duration;
/// use nvme_nostd::ControllerOptions;
/// let options = ControllerOptions::default().with_io_queues(4).with_io_timeout(Some(Duration::from_secs(5)));
/// assert_eq!(options.io_queues, 4);
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct ControllerOptions {
    /// I/O queue pairs to ask for with Set Features / Number of Queues (1 to 64;
    /// the driver numbers queues 1..=64). Default 8.
    pub io_queues: u16,
    /// How long an admin command may take. An admin command that times out
    /// resets the controller. Default 30 s.
    pub admin_timeout: Duration,
    /// How long an I/O command may be outstanding before the driver aborts it
    /// (and resets the controller if the abort does not work); `None` turns
    /// I/O timeouts off and spares the clock read in `poll`. Default 30 s.
    pub io_timeout: Option<Duration>,
    /// How many times a command that fails with the Do Not Retry bit clear is
    /// submitted again before its error reaches its owner. Default 4.
    pub retry_count: u8,
    /// Told about every command that times out, before the driver acts on it.
    pub timeout_callback: Option<TimeoutCallback>,
    /// How many times a failed step of recovery (re-creating a queue pair's
    /// queues, resetting the controller) is tried before the driver gives
    /// up and reports a terminal error. Default 8.
    pub recovery_attempts: u8,
    /// The wait before the second attempt of a failed recovery step; it
    /// doubles with each further attempt, up to 64 times this. Default 10 ms.
    pub recovery_backoff: Duration,
    /// The Keep Alive Timeout to give a controller that supports Keep Alive
    /// (Identify Controller KAS non-zero), rounded up to its granularity;
    /// the driver then sends Keep Alive from
    /// [`Controller::process_admin_completions`] at half of it, so that must
    /// be called at least that often. A controller without KAS ignores it
    /// ([`Controller::keep_alive_timeout`] says what was granted). Default
    /// `None`: off.
    pub keep_alive_timeout: Option<Duration>,
    /// Told once when the controller is found removed. Default `None`.
    pub remove_callback: Option<RemoveCallback>,
    /// The Host Identifier to give the controller at attach and after each
    /// reset (extended, 128 bits), where it keeps one (reservations, ONCS
    /// bit 5); [`Controller::host_identifier_granted`] says whether it
    /// did. SPDK's host NQN plays this part on fabrics. Default `None`.
    pub host_identifier: Option<[u8; 16]>,
    /// How the controller arbitrates between submission queues. Asking for
    /// weighted round robin from a controller without it (CAP.AMS bit 0) is
    /// an error at attach ([`Feature::WeightedRoundRobin`]), before the
    /// controller is touched. Default round robin.
    pub arbitration: ArbitrationMechanism,
    /// Put I/O submission queues in the controller memory buffer (SPDK's
    /// `use_cmb_sqes`), where the controller has one that holds them
    /// (CMBSZ.SQS) and the HAL maps its BAR ([`Hal::memory_bar`]). The CMB
    /// is cut into one slot per granted I/O queue; a queue too large for
    /// its slot, and every queue where there is no usable CMB, stays in
    /// host memory ([`Controller::cmb`] and
    /// [`IoQueuePair::sq_in_cmb`](crate::IoQueuePair::sq_in_cmb) say what
    /// happened). Default false.
    pub sq_in_cmb: bool,
    /// The most bytes of DMA memory to hand a controller that asks for a
    /// host memory buffer (Identify Controller HMPRE; one below HMMIN gets
    /// none). The driver gives the controller HMPRE or this, whichever is
    /// less, at attach, gives it back after each reset and frees it once
    /// the controller is disabled; [`Controller::host_memory_buffer`] says
    /// what it holds. 0 (the default): none.
    pub host_memory_buffer: usize,
    /// Shadow doorbells (Doorbell Buffer Config, NVMe 1.4 section 7.13),
    /// where the controller offers them (OACS bit 8): queue pairs write each
    /// new SQ tail and CQ head into a page the controller reads and ring the
    /// MMIO doorbell only when the controller's EventIdx asks for it. Worth
    /// it where an MMIO write is expensive (an emulated controller, where it
    /// traps to the hypervisor); `BENCHMARKS.md` has the measurements. A
    /// queue pair also rings its doorbells by MMIO after
    /// [`SHADOW_WATCHDOG_PASSES`](crate::SHADOW_WATCHDOG_PASSES) poll passes
    /// in a row that found nothing while requests were in flight, in case a
    /// controller missed an update. Default false.
    pub shadow_doorbells: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            io_queues: 8,
            admin_timeout: Duration::from_secs(30),
            io_timeout: Some(Duration::from_secs(30)),
            retry_count: 4,
            timeout_callback: None,
            recovery_attempts: 8,
            recovery_backoff: Duration::from_millis(10),
            keep_alive_timeout: None,
            remove_callback: None,
            arbitration: ArbitrationMechanism::RoundRobin,
            host_identifier: None,
            sq_in_cmb: false,
            host_memory_buffer: 0,
            shadow_doorbells: false,
        }
    }
}

impl ControllerOptions {
    /// Sets [`io_queues`](Self::io_queues).
    pub const fn with_io_queues(mut self, io_queues: u16) -> Self {
        self.io_queues = io_queues;
        self
    }

    /// Sets [`host_memory_buffer`](Self::host_memory_buffer).
    pub const fn with_host_memory_buffer(mut self, bytes: usize) -> Self {
        self.host_memory_buffer = bytes;
        self
    }

    /// Sets [`shadow_doorbells`](Self::shadow_doorbells).
    pub const fn with_shadow_doorbells(mut self, shadow_doorbells: bool) -> Self {
        self.shadow_doorbells = shadow_doorbells;
        self
    }

    /// Sets [`sq_in_cmb`](Self::sq_in_cmb).
    pub const fn with_sq_in_cmb(mut self, sq_in_cmb: bool) -> Self {
        self.sq_in_cmb = sq_in_cmb;
        self
    }

    /// Sets [`admin_timeout`](Self::admin_timeout).
    pub const fn with_admin_timeout(mut self, timeout: Duration) -> Self {
        self.admin_timeout = timeout;
        self
    }

    /// Sets [`io_timeout`](Self::io_timeout).
    pub const fn with_io_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// Sets [`retry_count`](Self::retry_count).
    pub const fn with_retry_count(mut self, retries: u8) -> Self {
        self.retry_count = retries;
        self
    }

    /// Sets [`recovery_attempts`](Self::recovery_attempts) and
    /// [`recovery_backoff`](Self::recovery_backoff).
    pub const fn with_recovery(mut self, attempts: u8, backoff: Duration) -> Self {
        self.recovery_attempts = attempts;
        self.recovery_backoff = backoff;
        self
    }

    /// The wait before the next attempt after `failures` failed ones:
    /// `recovery_backoff`, doubled with each further failure, at most 64
    /// times it.
    pub(crate) fn backoff_after(&self, failures: u8) -> Duration {
        let doublings = u32::from(failures.clamp(1, 7) - 1);
        self.recovery_backoff.saturating_mul(1 << doublings)
    }

    /// Sets [`host_identifier`](Self::host_identifier).
    pub const fn with_host_identifier(mut self, id: Option<[u8; 16]>) -> Self {
        self.host_identifier = id;
        self
    }

    /// Sets [`arbitration`](Self::arbitration).
    pub const fn with_arbitration(mut self, arbitration: ArbitrationMechanism) -> Self {
        self.arbitration = arbitration;
        self
    }

    /// Sets [`remove_callback`](Self::remove_callback).
    pub const fn with_remove_callback(mut self, callback: Option<RemoveCallback>) -> Self {
        self.remove_callback = callback;
        self
    }

    /// Sets [`keep_alive_timeout`](Self::keep_alive_timeout).
    pub const fn with_keep_alive(mut self, timeout: Option<Duration>) -> Self {
        self.keep_alive_timeout = timeout;
        self
    }

    /// Sets [`timeout_callback`](Self::timeout_callback).
    pub const fn with_timeout_callback(mut self, callback: Option<TimeoutCallback>) -> Self {
        self.timeout_callback = callback;
        self
    }
}

impl fmt::Debug for ControllerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerOptions")
            .field("io_queues", &self.io_queues)
            .field("admin_timeout", &self.admin_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("retry_count", &self.retry_count)
            .field("timeout_callback", &self.timeout_callback.is_some())
            .field("recovery_attempts", &self.recovery_attempts)
            .field("recovery_backoff", &self.recovery_backoff)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("remove_callback", &self.remove_callback.is_some())
            .field("arbitration", &self.arbitration)
            .field("host_identifier", &self.host_identifier)
            .field("sq_in_cmb", &self.sq_in_cmb)
            .field("host_memory_buffer", &self.host_memory_buffer)
            .field("shadow_doorbells", &self.shadow_doorbells)
            .finish()
    }
}

/// A command that did not complete in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutEvent {
    /// The queue it was submitted to (0 for the admin queue).
    pub qid: u16,
    /// The command identifier its submission returned (for the admin queue,
    /// the CID it carries). A request the driver split into several
    /// commands reports the CID its submission returned, once for each of
    /// its commands that timed out.
    pub cid: Cid,
    /// Its opcode.
    pub opcode: u8,
}

/// Refuses a raw admin command that carries data pointers (PRP1, PRP2,
/// MPTR), SGLs (PSDT) or fused bits: the driver sets PRP1 itself.
pub(crate) fn check_raw_admin(cmd: &SubmissionEntry) -> Result {
    if cmd.prp1 != 0 || cmd.prp2 != 0 || cmd.mptr != 0 || cmd.cdw0.psdt() != 0 || cmd.cdw0.fuse() != 0 {
        return Err(Error::InvalidArgument(Argument::RawCommandPointers));
    }
    Ok(())
}

/// Data an admin command moves through the admin data page (PRP1; at most
/// 4 KiB).
pub(crate) enum AdminData<'a> {
    /// None.
    None,
    /// From the device into this buffer, copied out after the command.
    FromDevice(&'a mut [u8]),
    /// These bytes to the device, copied in before the command.
    ToDevice(&'a [u8]),
}

/// Fails the admin queue if a waited command's caller unwinds (a panicking
/// HAL) before its result came: the command and the data page are the
/// device's until a reset.
struct WaitGuard<'c, H: Hal> {
    ctrlr: &'c Controller<H>,
    ticket: Ticket,
    epoch: u32,
    /// The command's own data page, if it has one.
    own: Option<DmaMemory>,
    armed: bool,
}

impl<H: Hal> WaitGuard<'_, H> {
    /// The wait ended normally; hands back the page and the epoch.
    fn disarm(mut self) -> (Option<DmaMemory>, u32) {
        self.armed = false;
        (self.own.take(), self.epoch)
    }
}

impl<H: Hal> Drop for WaitGuard<'_, H> {
    fn drop(&mut self) {
        if self.armed {
            {
                let mut admin = self.ctrlr.admin.lock();
                if self.ctrlr.epoch() == self.epoch {
                    admin.failed = true;
                }
                admin.cancel_async(self.ticket);
            }
            self.ctrlr.release_page(self.own.take(), false, self.epoch);
        }
    }
}

/// Identities for `Controller::id`: never handed out twice (namespace
/// handles and registered buffers rely on it), so they run out after
/// `u32::MAX - 1` controllers in one program, rather than wrap.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A new controller identity, or `None` once they ran out.
fn next_id() -> Option<u32> {
    NEXT_ID.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1)).ok()
}

/// The highest I/O queue identifier the driver hands out.
pub const MAX_IO_QUEUES: u16 = 64;

/// An NVMe controller, enabled and identified, with its admin queue.
///
/// It owns its [`Hal`], which stands for exclusive use of the device (see the
/// trait's "Exclusive ownership"), so no second `Controller` can drive the
/// same device while this one lives. I/O queue pairs borrow it
/// ([`Controller::create_io_qpair`](crate::Controller::create_io_qpair)), so
/// it outlives them. Dropping it shuts the controller down (CC.SHN) and
/// disables it before its queue memory is freed.
pub struct Controller<H: Hal> {
    pub(crate) hal: H,
    cap: Cap,
    vs: Vs,
    /// Identify Controller, read at attach and by every reset (a leaf lock:
    /// nothing else is taken while it is held).
    identify: spin::RwLock<IdentifyController>,
    pub(crate) admin: spin::Mutex<AdminQueue>,
    options: ControllerOptions,
    io_queues: u16,
    /// Moves on each time a reset has quiesced the controller; queue pairs that
    /// see it move fail their outstanding requests and re-create their queues.
    epoch: AtomicU32,
    /// Resets by hand ([`Controller::reset`]) that worked: they give queue
    /// pairs whose recovery gave up a new round of attempts.
    resets_by_hand: AtomicU32,
    /// Set once the registers read all ones.
    removed: AtomicBool,
    /// The controller took the Host Identifier of the options.
    host_id_granted: AtomicBool,
    /// The remove callback ran (or there is none to run).
    removal_reported: AtomicBool,
    /// ACRE is enabled (Host Behavior Support): error statuses may carry a
    /// Command Retry Delay, which the driver honours.
    acre: AtomicBool,
    /// Unique among the controllers of this program: ties `Namespace`
    /// handles to the controller that identified them.
    id: u32,
    /// Bit `q` set: I/O queue identifier `q` is in use.
    qids: spin::Mutex<u128>,
    /// `detach` has shut the controller down already.
    detached: bool,
    /// Formats through this driver and Namespace Attribute Changed events
    /// so far: `Namespace` handles from before the last one are refused
    /// (their geometry may have changed).
    generation: AtomicU32,
    /// Memory and queue identifiers the device may still use, kept until a
    /// reset proves it stopped (lock order: admin, then this, then `qids`).
    pub(crate) quarantine: spin::Mutex<Quarantine<H::Mapping>>,
    /// The controller memory buffer, where options asked for submission
    /// queues there and the controller has a usable one.
    cmb: Option<Cmb>,
    /// Per-namespace generations (a leaf lock inside).
    tracker: Tracker,
    /// Identify Controller ONCS (bits 15:0) and OCFS (bits 31:16), for the
    /// I/O path (which must not copy the whole structure).
    nvm_caps: AtomicU32,
    /// Identify Controller SGLS, likewise.
    sgls: AtomicU32,
    /// The shadow doorbell page and the EventIdx page after it
    /// ([`ControllerOptions::shadow_doorbells`]), allocated at attach where
    /// the controller offers them; freed with the admin queue.
    dbbuf: Option<DmaMemory>,
    /// The controller took `dbbuf` in epoch `dbbuf_epoch` (at attach, or
    /// again after a reset; cleared when a reset disables it): a queue pair
    /// whose queues were created in that epoch uses it.
    dbbuf_on: AtomicBool,
    /// See `dbbuf_on` (both written under the admin lock).
    dbbuf_epoch: AtomicU32,
}

/// ONCS and OCFS in one word, as `Controller::nvm_caps` keeps them.
fn nvm_caps(id: &IdentifyController) -> u32 {
    u32::from(id.oncs.into_bits()) | u32::from(id.ocfs) << 16
}

/// How a controller takes SGLs for I/O data (Identify Controller SGLS bits
/// 1:0), as the submission path needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SglSupport {
    /// No SGLs.
    None,
    /// Any alignment.
    Unaligned,
    /// Dword alignment and granularity.
    Dword,
}

/// CAP.TO in 500 ms units, at least one unit.
fn ready_timeout(cap: Cap) -> Duration {
    Duration::from_millis(500 * (cap.to().max(1) as u64))
}

/// The CC the driver runs with: every I/O command set the controller
/// supports where CAP.CSS bit 6 says it can (CSS 110b: zoned namespaces take
/// their own commands), else the NVM command set; 4 KiB pages, arbitration
/// mechanism `ams`, 64-byte submission and 16-byte completion entries
/// (section 3.1.5; Base 2.0 figure 41).
fn cc_base(cap: Cap, ams: u8) -> Cc {
    let css = if cap.css() & 0x40 != 0 { 0b110 } else { 0 };
    Cc::new().with_css(css).with_mps(0).with_ams(ams).with_iosqes(6).with_iocqes(4)
}

/// The entry sizes the driver uses (64-byte submission, 16-byte completion)
/// must be within SQES and CQES.
fn check_entry_sizes(id: &IdentifyController) -> Result {
    if id.sqes.required() > 6 || id.sqes.maximum() < 6 || id.cqes.required() > 4 || id.cqes.maximum() < 4 {
        return Err(Error::MalformedDevice(Malformed::EntrySizes));
    }
    Ok(())
}

/// Waits until CSTS.RDY equals `ready`, bounded by `timeout`.
fn wait_ready<H: Hal>(hal: &H, ready: bool, timeout: Duration) -> Result {
    let regs = Registers::new(hal);
    let deadline = hal.now().saturating_add(timeout);
    loop {
        let csts = regs.csts()?;
        if csts.rdy() == ready {
            return Ok(());
        }
        // A fatal controller may never become ready; while disabling, CFS is
        // expected to clear with the reset, so keep waiting for RDY=0.
        if ready && csts.cfs() {
            return Err(Error::ControllerFatal);
        }
        if hal.now() >= deadline {
            return Err(Error::Timeout(if ready { Wait::Enable } else { Wait::Disable }));
        }
        hal.delay(Duration::from_micros(100));
    }
}

/// Programs the admin queue and enables the controller (section 7.6.1 steps
/// 3 to 6); the caller waits for CSTS.RDY.
fn start_admin<H: Hal>(hal: &H, admin: &AdminQueue, ams: u8) {
    // SAFETY: the admin queues are DMA memory owned by the driver and lent to
    // the device for as long as the controller may use them (they are freed
    // only after a disable), the CQ zeroed by `restart` or allocation.
    let regs = Registers::new(hal);
    let cc = cc_base(regs.cap().unwrap_or_default(), ams);
    // SAFETY: as above.
    unsafe { regs.enable(admin.sq.size(), admin.sq.daddr(), admin.cq.daddr(), cc) }
}

/// Clears CC.EN and waits for CSTS.RDY=0 (section 7.6.1 step 1, 3.1.5).
fn disable<H: Hal>(hal: &H, cap: Cap) -> Result {
    let regs = Registers::new(hal);
    let timeout = ready_timeout(cap);
    let cc = regs.cc()?;
    let csts = regs.csts()?;
    if cc.en() && !csts.rdy() && !csts.cfs() {
        // Enabling is in progress: the specification asks hosts to wait for it
        // to finish before clearing EN.
        let _ = wait_ready(hal, true, timeout);
    }
    if cc.en() {
        regs.disable(cc);
    }
    wait_ready(hal, false, timeout)
}

impl<H: Hal> Controller<H> {
    /// Brings up the controller behind `hal`: disable, admin queue, enable,
    /// Identify Controller, Set Features / Number of Queues.
    pub fn new(hal: H, options: ControllerOptions) -> Result<Self> {
        let regs = Registers::new(&hal);
        let cap = regs.cap()?;
        let vs = regs.vs()?;
        if cap.mqes() == 0 {
            return Err(Error::MalformedDevice(Malformed::MqesZero));
        }
        if cap.css() & 1 == 0 {
            return Err(Error::Unsupported(Feature::NvmCommandSet));
        }
        if cap.mpsmin() != 0 {
            return Err(Error::Unsupported(Feature::PageSize));
        }
        if options.io_queues == 0 || options.io_queues > MAX_IO_QUEUES {
            return Err(Error::InvalidArgument(Argument::IoQueues));
        }
        if options.arbitration == ArbitrationMechanism::WeightedRoundRobin && cap.ams() & 1 == 0 {
            return Err(Error::Unsupported(Feature::WeightedRoundRobin));
        }
        let id = next_id().ok_or(Error::Hal(hal_traits::HalError::new(
            hal_traits::HalErrorKind::Unsupported,
            "controller identities ran out (u32::MAX - 1 attaches in one program)",
        )))?;

        disable(&hal, cap)?;
        let cmb = if options.sq_in_cmb { Cmb::find(&hal, cap) } else { None };

        let entries = ADMIN_QUEUE_ENTRIES.min(cap.mqes().saturating_add(1));
        // Until `lend`, each of these frees itself if a later step fails.
        let sq = DmaAlloc::new(&hal, 1)?;
        let cq = DmaAlloc::new(&hal, 1)?;
        let data = DmaAlloc::new(&hal, 1)?;
        let admin = AdminQueue::new(
            SubmissionQueue::new(sq.lend(), entries, 0, cap.dstrd()),
            CompletionQueue::new(cq.lend(), entries, 0, cap.dstrd()),
            data.lend(),
        );
        start_admin(&hal, &admin, options.arbitration.ams());

        let mut ctrlr = Controller {
            hal,
            cap,
            vs,
            identify: spin::RwLock::new(IdentifyController::default()),
            admin: spin::Mutex::new(admin),
            options,
            io_queues: 0,
            epoch: AtomicU32::new(0),
            resets_by_hand: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            removal_reported: AtomicBool::new(false),
            host_id_granted: AtomicBool::new(false),
            acre: AtomicBool::new(false),
            id,
            qids: spin::Mutex::new(0),
            quarantine: spin::Mutex::new(Quarantine::new()),
            detached: false,
            generation: AtomicU32::new(0),
            cmb,
            tracker: Tracker::new(),
            nvm_caps: AtomicU32::new(0),
            sgls: AtomicU32::new(0),
            dbbuf: None,
            dbbuf_on: AtomicBool::new(false),
            dbbuf_epoch: AtomicU32::new(0),
        };
        // From here on, Drop disables the controller before freeing memory.
        wait_ready(&ctrlr.hal, true, ready_timeout(cap))?;

        let mut page = [0u8; PAGE_SIZE];
        ctrlr.identify_raw(Cns::CONTROLLER, 0, &mut page)?;
        let id = IdentifyController::from_bytes(&page);
        check_entry_sizes(&id)?;
        ctrlr.nvm_caps.store(nvm_caps(&id), Ordering::Release);
        ctrlr.sgls.store(id.sgls.into_bits(), Ordering::Release);
        *ctrlr.identify.get_mut() = id;

        ctrlr.io_queues = ctrlr.set_number_of_queues(options.io_queues)?;
        {
            let mut admin = ctrlr.admin.lock();
            ctrlr.enable_acre(&mut admin)?;
            ctrlr.give_host_identifier(&mut admin)?;
            ctrlr.give_host_memory(&mut admin)?;
            ctrlr.dbbuf = ctrlr.allocate_dbbuf();
            ctrlr.configure_dbbuf(&mut admin)?;
            let kas = ctrlr.identify.read().kas;
            if let (Some(timeout), kas @ 1..) = (options.keep_alive_timeout, kas) {
                // KATO in ms, rounded up to KAS (100 ms units), at least one.
                let unit = 100 * u128::from(kas);
                let ms = timeout.as_millis().max(1).div_ceil(unit) * unit;
                admin.kato_ms = u32::try_from(ms).unwrap_or(u32::MAX / 2);
                match ctrlr.set_keep_alive(&mut admin) {
                    Ok(()) => {}
                    // Refused: no keep alive.
                    Err(Error::Command(_)) => admin.kato_ms = 0,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(ctrlr)
    }

    /// Registers `buffer` with this controller: its HAL translates the
    /// bytes once, here, and this controller's queue pairs build the PRPs
    /// of every request on it from that address instead of asking the HAL
    /// each time ([`Registered`]). For memory the HAL
    /// reaches ahead of time as one run in device space (a
    /// [`DmaBuffer`](crate::DmaBuffer), a VFIO back-end's hugepages); any
    /// other buffer comes back with
    /// [`Argument::NotRegistrable`](crate::Argument::NotRegistrable) and is
    /// best used unregistered (shared per request).
    pub fn register<B: IoBuffer>(&self, buffer: B) -> core::result::Result<Registered<B>, (Error, B)> {
        Registered::new(&self.hal, self.id, buffer)
    }

    /// This controller's identity, which namespace handles and registered
    /// buffers carry.
    #[inline]
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The HAL this controller was attached with.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// CAP: Controller Capabilities, as read at attach.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// VS: the NVMe version the controller implements.
    pub fn version(&self) -> Vs {
        self.vs
    }

    /// CSTS as it reads now ([`Error::DeviceRemoved`] when it reads all ones).
    pub fn csts(&self) -> Result<Csts> {
        Registers::new(&self.hal).csts()
    }

    /// The Identify Controller data: read at attach, and again by every
    /// reset (a firmware activated by it may change the revision, MDTS,
    /// ...). A copy, so that a reset on another thread never waits for the
    /// caller.
    pub fn identify(&self) -> IdentifyController {
        self.identify.read().clone()
    }

    /// The number of I/O queue pairs granted by the controller (and available to
    /// [`create_io_qpair`](crate::Controller::create_io_qpair)).
    pub fn io_queues(&self) -> u16 {
        self.io_queues
    }

    /// The largest transfer the controller accepts, in bytes (MDTS, in units of
    /// CAP.MPSMIN), or `None` when it states no limit.
    pub fn max_transfer_bytes(&self) -> Option<usize> {
        let mdts = self.identify.read().mdts;
        if mdts == 0 {
            return None;
        }
        let shift = 12 + self.cap.mpsmin() as u32 + mdts as u32;
        // A huge MDTS is as good as no limit.
        Some(if shift >= usize::BITS { usize::MAX } else { 1usize << shift })
    }

    /// Identify Controller ONCS (the optional NVM commands), without copying
    /// the identify data.
    pub(crate) fn identify_oncs(&self) -> Oncs {
        Oncs::from_bits(self.nvm_caps.load(Ordering::Acquire) as u16)
    }

    /// Whether and how the controller takes SGLs for I/O data (SGLS bits
    /// 1:0).
    pub(crate) fn sgl_support(&self) -> SglSupport {
        match self.sgls.load(Ordering::Acquire) & 3 {
            1 => SglSupport::Unaligned,
            2 => SglSupport::Dword,
            _ => SglSupport::None,
        }
    }

    /// Whether the controller takes an SGL for metadata (PSDT 10b: SGLs
    /// for the data, and MPTR naming one SGL descriptor; SGLS bit 19), and
    /// if so whether its SGLs want dword granularity.
    pub(crate) fn metadata_sgl(&self) -> Option<bool> {
        let sgls = crate::spec::identify::Sgls::from_bits(self.sgls.load(Ordering::Acquire));
        (sgls.supported() && sgls.metadata_sgl()).then(|| sgls.dword_aligned())
    }

    /// Identify Controller OCFS (the Copy descriptor formats), likewise.
    pub(crate) fn identify_ocfs(&self) -> u16 {
        (self.nvm_caps.load(Ordering::Acquire) >> 16) as u16
    }

    /// Every `Namespace` handle identified so far goes stale (after a
    /// Format NVM of all namespaces, or a changed Identify Controller).
    pub(crate) fn namespaces_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The handles of namespace `nsid` go stale (all of them for
    /// [`ALL_NAMESPACES`](crate::ALL_NAMESPACES)): it was formatted,
    /// deleted, attached or detached through this driver.
    pub(crate) fn namespace_changed(&self, nsid: u32) {
        if nsid == u32::MAX {
            self.namespaces_changed();
        } else {
            self.tracker.changed(nsid);
        }
    }

    /// Whether a namespace handle is this controller's, and its geometry
    /// is still the namespace's as far as the driver has seen.
    pub(crate) fn check_binding(&self, binding: Binding) -> Result {
        if binding.controller != self.id {
            Err(Error::InvalidArgument(Argument::ForeignNamespace))
        } else if binding.generation != self.generation.load(Ordering::Acquire)
            || !self.tracker.is_current(binding.slot, binding.slot_generation)
        {
            Err(Error::InvalidArgument(Argument::StaleNamespace))
        } else {
            Ok(())
        }
    }

    /// Identifies every namespace the driver follows again (its handles go
    /// stale where the geometry changed or the namespace went inactive),
    /// with the admin queue held (a reset). Handles beyond the followed
    /// ones go stale. A controller that does not answer fails the caller.
    fn revalidate_locked(&self, admin: &mut AdminQueue) -> Result {
        for (nsid, before) in self.tracker.snapshot() {
            admin.data.zero();
            let mut cmd = identify_command(Cns::NAMESPACE, nsid);
            cmd.prp1 = admin.data.daddr(0).0;
            let geometry = match admin.execute(&self.hal, cmd, self.options.admin_timeout) {
                Ok(_) => {
                    let mut page = [0u8; PAGE_SIZE];
                    admin.data.read_bytes(0, &mut page);
                    Geometry::of(&IdentifyNamespace::from_bytes(&page))
                }
                Err(Error::Command(_)) => Geometry::default(),
                Err(e) => return Err(e),
            };
            self.tracker.revalidated(nsid, before, geometry);
        }
        self.tracker.untracked_changed();
        Ok(())
    }

    /// [`revalidate_locked`](Self::revalidate_locked) through the admin
    /// path (a Namespace Attribute Changed event).
    pub(crate) fn revalidate_namespaces(&self) -> Result {
        for (nsid, before) in self.tracker.snapshot() {
            let geometry = match self.identify_namespace(nsid) {
                Ok(id) => Geometry::of(&id),
                Err(Error::Command(_)) => Geometry::default(),
                Err(e) => return Err(e),
            };
            self.tracker.revalidated(nsid, before, geometry);
        }
        self.tracker.untracked_changed();
        Ok(())
    }

    /// The options the controller was attached with.
    pub fn options(&self) -> &ControllerOptions {
        &self.options
    }

    /// The arbitration mechanism the controller runs with (CC.AMS).
    pub fn arbitration_mechanism(&self) -> ArbitrationMechanism {
        self.options.arbitration
    }

    /// The Keep Alive Timeout the controller was given (the option rounded
    /// up to its granularity), or `None` when keep alive is off: not asked
    /// for, or the controller lacks it (KAS 0, as QEMU's) or refused it.
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        let ms = self.admin.lock().kato_ms;
        (ms != 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// After a reset: Identify Controller again (a firmware the reset
    /// activated may report a new revision, MDTS, capabilities). Entry sizes
    /// the driver cannot use fail the reset. If what namespaces depend on
    /// changed (firmware revision, NN, MDTS, OACS, ONCS), every `Namespace`
    /// handle goes stale.
    fn reidentify(&self, admin: &mut AdminQueue) -> Result {
        admin.data.zero();
        let mut cmd = identify_command(Cns::CONTROLLER, 0);
        cmd.prp1 = admin.data.daddr(0).0;
        admin.execute(&self.hal, cmd, self.options.admin_timeout)?;
        let mut page = [0u8; PAGE_SIZE];
        admin.data.read_bytes(0, &mut page);
        let fresh = IdentifyController::from_bytes(&page);
        check_entry_sizes(&fresh)?;
        let changed = {
            let old = self.identify.read();
            (old.fr, old.nn, old.mdts, old.oacs, old.oncs, old.ocfs, old.sgls)
                != (fresh.fr, fresh.nn, fresh.mdts, fresh.oacs, fresh.oncs, fresh.ocfs, fresh.sgls)
        };
        self.nvm_caps.store(nvm_caps(&fresh), Ordering::Release);
        self.sgls.store(fresh.sgls.into_bits(), Ordering::Release);
        *self.identify.write() = fresh;
        if changed {
            self.namespaces_changed();
        }
        Ok(())
    }

    /// Whether the controller took the Host Identifier of
    /// [`ControllerOptions::host_identifier`] (at attach, and after each
    /// reset).
    pub fn host_identifier_granted(&self) -> bool {
        self.host_id_granted.load(Ordering::Acquire)
    }

    /// Set Features / Host Identifier (FID 81h, extended) from the options,
    /// where the controller has reservations. A controller that refuses it
    /// is used without (not granted); one that does not answer is an error.
    fn give_host_identifier(&self, admin: &mut AdminQueue) -> Result {
        let Some(id) = self.options.host_identifier else { return Ok(()) };
        if !self.identify.read().oncs.reservations() {
            return Ok(());
        }
        admin.data.zero();
        admin.data.write_bytes(0, &id);
        let mut cmd = crate::features::set_features_command(Fid::HOST_IDENTIFIER, 0, 1, false);
        cmd.prp1 = admin.data.daddr(0).0;
        let granted = match admin.execute(&self.hal, cmd, self.options.admin_timeout) {
            Ok(_) => true,
            Err(Error::Command(_)) => false,
            Err(e) => return Err(e),
        };
        self.host_id_granted.store(granted, Ordering::Release);
        Ok(())
    }

    /// Hands a host memory buffer to a controller that asks for one, as
    /// much as the options allow. A controller that refuses it gets none
    /// (and the memory is freed); one that does not answer fails the
    /// attach (and the memory goes with the admin queue's, once the
    /// controller is disabled).
    fn give_host_memory(&self, admin: &mut AdminQueue) -> Result {
        let limit = self.options.host_memory_buffer;
        if limit == 0 {
            return Ok(());
        }
        let Some(mut hmb) = Hmb::allocate(&self.hal, &self.identify.read(), limit) else { return Ok(()) };
        match admin.execute(&self.hal, hmb.enable_command(false), self.options.admin_timeout) {
            Ok(_) => admin.hmb = Some(hmb),
            // SAFETY: the controller refused the buffer: it does not use it.
            Err(Error::Command(_)) => unsafe { hmb.free(&self.hal) },
            Err(e) => {
                // It may hold the buffer: kept until the controller is
                // disabled.
                admin.hmb = Some(hmb);
                return Err(e);
            }
        }
        Ok(())
    }

    /// After a reset (which disabled the buffer): the same buffer given
    /// back with Memory Return. A controller that refuses it loses it (the
    /// memory is freed: the reset disabled the controller, and it did not
    /// take the buffer again); one that does not answer fails the reset.
    fn return_host_memory(&self, admin: &mut AdminQueue) -> Result {
        let Some(hmb) = admin.hmb.take() else { return Ok(()) };
        match admin.execute(&self.hal, hmb.enable_command(true), self.options.admin_timeout) {
            Ok(_) => admin.hmb = Some(hmb),
            Err(Error::Command(_)) => {
                let mut hmb = hmb;
                // SAFETY: the controller was disabled by the reset and
                // refused the buffer since: it does not use it.
                unsafe { hmb.free(&self.hal) }
            }
            Err(e) => {
                admin.hmb = Some(hmb);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The shadow doorbell pages, where the options ask for them, the
    /// controller offers Doorbell Buffer Config, the DMA memory is there,
    /// and every I/O queue's doorbell fits one page.
    fn allocate_dbbuf(&self) -> Option<DmaMemory> {
        let offered = self.identify.read().oacs.doorbell_buffer_config();
        let last = crate::spec::registers::doorbell_offset(MAX_IO_QUEUES, true, self.cap.dstrd());
        let fits = last + 4 - crate::spec::registers::offset::DOORBELLS <= PAGE_SIZE;
        if !(self.options.shadow_doorbells && offered && fits) {
            return None;
        }
        let mem = DmaAlloc::new(&self.hal, 2).ok().map(DmaAlloc::lend)?;
        mem.zero();
        Some(mem)
    }

    /// Hands the shadow doorbell pages to the controller (Doorbell Buffer
    /// Config: PRP1 the shadow doorbells, PRP2 the EventIdx page), at attach
    /// and after each reset, with no I/O queue on the controller. The admin
    /// queue's slots get its tail and head (a controller may not write the
    /// EventIdx page before it uses it); each I/O queue's slots are zeroed
    /// by its queue pair before it creates the queue (the only writer of
    /// those slots, so no two threads write one). The admin queue keeps
    /// ringing MMIO doorbells. A controller that refuses the pages gets none
    /// (queue pairs then ring MMIO doorbells); one that does not answer
    /// fails the attach or the reset.
    fn configure_dbbuf(&self, admin: &mut AdminQueue) -> Result {
        self.dbbuf_on.store(false, Ordering::Release);
        let Some(mem) = &self.dbbuf else { return Ok(()) };
        // The Doorbell Buffer Config command itself is the next entry.
        let tail = admin.sq.tail().wrapping_add(1) % admin.sq.size();
        admin.sq.doorbell().seed_shadow(tail, mem);
        admin.cq.doorbell().seed_shadow(admin.cq.head(), mem);
        let mut cmd = SubmissionEntry::new(AdminOpcode::DOORBELL_BUFFER_CONFIG.0, 0);
        cmd.prp1 = mem.daddr(0).0;
        cmd.prp2 = mem.daddr(PAGE_SIZE).0;
        match admin.execute(&self.hal, cmd, self.options.admin_timeout) {
            Ok(_) => {
                self.dbbuf_epoch.store(self.epoch(), Ordering::Release);
                self.dbbuf_on.store(true, Ordering::Release);
            }
            Err(Error::Command(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Whether the controller took the shadow pages in `epoch` (queues
    /// created in that epoch then use them).
    pub(crate) fn shadow_in(&self, epoch: u32) -> bool {
        self.dbbuf_on.load(Ordering::Acquire) && self.dbbuf_epoch.load(Ordering::Acquire) == epoch
    }

    /// The shadow doorbell pages, while the controller has them.
    pub(crate) fn shadow(&self) -> Option<&DmaMemory> {
        self.dbbuf.as_ref().filter(|_| self.dbbuf_on.load(Ordering::Acquire))
    }

    /// The shadow doorbell pages, whether or not the controller has them
    /// now (a queue pair that used them keeps writing there until it sees
    /// the reset that took them away).
    pub(crate) fn shadow_memory(&self) -> Option<&DmaMemory> {
        self.dbbuf.as_ref()
    }

    /// Zeroes the shadow doorbells and EventIdx slots of I/O queue `qid`,
    /// about to be created (by its queue pair, their only writer), where
    /// there are shadow pages. Whether the queues then use them depends on
    /// the epoch they were created in ([`shadow_in`](Self::shadow_in)).
    pub(crate) fn clear_queue_shadow(&self, qid: u16) {
        let Some(mem) = &self.dbbuf else { return };
        for completion in [false, true] {
            crate::queue::Doorbell::new(qid, completion, self.cap.dstrd()).seed_shadow(0, mem);
        }
    }

    /// Whether queue pairs created now use shadow doorbells
    /// ([`ControllerOptions::shadow_doorbells`], and the controller took
    /// them).
    pub fn shadow_doorbells(&self) -> bool {
        self.shadow().is_some()
    }

    /// The host memory buffer the controller holds, if
    /// [`ControllerOptions::host_memory_buffer`] allowed one and the
    /// controller asked for and took it.
    pub fn host_memory_buffer(&self) -> Option<HmbInfo> {
        self.admin.lock().hmb.as_ref().map(Hmb::info)
    }

    /// Set Features / Keep Alive Timer (FID 0Fh) to `admin.kato_ms`; the
    /// controller's timer starts, so the next Keep Alive is due at half of
    /// it.
    fn set_keep_alive(&self, admin: &mut AdminQueue) -> Result {
        let cmd = crate::features::set_features_command(Fid::KEEP_ALIVE_TIMER, 0, admin.kato_ms, false);
        admin.execute(&self.hal, cmd, self.options.admin_timeout)?;
        let half = Duration::from_millis(u64::from(admin.kato_ms) / 2);
        admin.next_keep_alive = self.hal.now().saturating_add(half);
        Ok(())
    }

    /// True once the controller's registers have read all ones: it is gone, and
    /// every operation fails with [`Error::DeviceRemoved`].
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Reads CSTS: if it reads all ones, again and again, the controller is
    /// marked removed (every call then fails with [`Error::DeviceRemoved`])
    /// and the remove callback runs, once. Returns whether it is removed.
    /// Poll it where the platform gives no hot-plug notice (SPDK's
    /// `spdk_nvme_probe_poll_async` plays this part for PCIe).
    pub fn check_removal(&self) -> bool {
        if !self.is_removed() && self.csts() == Err(Error::DeviceRemoved) {
            self.confirm_removed();
        }
        self.report_removal();
        self.is_removed()
    }

    /// Runs the remove callback once the controller is marked removed (the
    /// first caller to see it does). Never called with a driver lock held.
    pub(crate) fn report_removal(&self) {
        if self.is_removed() && !self.removal_reported.swap(true, Ordering::AcqRel) {
            if let Some(cb) = self.options.remove_callback {
                cb(&self.identify());
            }
        }
    }

    /// Called when a register read all ones: reads CSTS a few more times,
    /// 1 ms apart, and marks the controller removed only if every read is all
    /// ones (one bad read is not proof that the device is gone). Returns
    /// whether it is.
    pub(crate) fn confirm_removed(&self) -> bool {
        let regs = Registers::new(&self.hal);
        for _ in 0..3 {
            if regs.csts() != Err(Error::DeviceRemoved) {
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
    /// Commands with data pointers (PRP1, PRP2, MPTR), SGLs (PSDT) or fused
    /// bits are refused.
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
        check_raw_admin(&cmd)?;
        self.admin_exec(cmd, None)
    }

    /// Runs an admin command that moves up to 4 KiB from the device into
    /// `out` (through the controller's admin data page, named by PRP1):
    /// Identify, Get Log Page or Get Features variants the driver has no
    /// helper for, Security Receive, vendor commands. `out` is zeroed where
    /// the device writes less. The same pointers and fused bits are refused
    /// as for [`admin_command`](Self::admin_command), and a buffer above
    /// 4 KiB ([`Argument::AdminDataTooLarge`]).
    ///
    /// # Safety
    ///
    /// As for [`admin_command`](Self::admin_command), except that the command
    /// moves data from the device, at most `out.len()` bytes, through PRP1
    /// alone (so within one 4 KiB page), and nothing to the device.
    pub unsafe fn admin_command_read(&self, cmd: SubmissionEntry, out: &mut [u8]) -> Result<CompletionEntry> {
        check_raw_admin(&cmd)?;
        if out.len() > PAGE_SIZE {
            return Err(Error::InvalidArgument(Argument::AdminDataTooLarge));
        }
        self.admin_exec_epoch(cmd, AdminData::FromDevice(out)).0
    }

    /// Runs an admin command that moves up to 4 KiB from `data` to the device
    /// (through the admin data page, named by PRP1): Set Features with a data
    /// structure, Security Send, vendor commands. Refused as for
    /// [`admin_command_read`](Self::admin_command_read).
    ///
    /// # Safety
    ///
    /// As for [`admin_command`](Self::admin_command), except that the command
    /// moves data to the device, at most `data.len()` bytes, through PRP1
    /// alone, and nothing from the device.
    pub unsafe fn admin_command_write(&self, cmd: SubmissionEntry, data: &[u8]) -> Result<CompletionEntry> {
        check_raw_admin(&cmd)?;
        if data.len() > PAGE_SIZE {
            return Err(Error::InvalidArgument(Argument::AdminDataTooLarge));
        }
        self.admin_exec_epoch(cmd, AdminData::ToDevice(data)).0
    }

    /// Get Features with a data structure the device writes (up to 4 KiB,
    /// `out`), for the features that have one (Timestamp, Host Identifier,
    /// LBA Range Type, ...). Internal: the driver knows each one's size.
    pub(crate) fn admin_read(&self, cmd: SubmissionEntry, out: &mut [u8]) -> Result<CompletionEntry> {
        self.admin_exec_epoch(cmd, AdminData::FromDevice(out)).0
    }

    /// Set Features with a data structure (up to 4 KiB) for the device.
    pub(crate) fn admin_write(&self, cmd: SubmissionEntry, data: &[u8]) -> Result<CompletionEntry> {
        self.admin_exec_epoch(cmd, AdminData::ToDevice(data)).0
    }

    /// The one admin path of blocking calls: runs `cmd` as a waited command
    /// (with a data page when `out` is given, copied out afterwards; see
    /// `exec_waited`) and answers failures of the device: a timeout or fatal
    /// status resets the controller, all-ones registers mark it removed. The
    /// command's own error goes to the caller, and `Reset` when another
    /// thread's reset dropped it.
    pub(crate) fn admin_exec(
        &self,
        cmd: SubmissionEntry,
        out: Option<&mut [u8; PAGE_SIZE]>,
    ) -> Result<CompletionEntry> {
        let data = match out {
            Some(out) => AdminData::FromDevice(out),
            None => AdminData::None,
        };
        self.admin_exec_epoch(cmd, data).0
    }

    /// The admin path itself: the command's result, and the reset epoch it
    /// was submitted in (read under the admin lock, so whatever the command
    /// did on the controller is undone once the epoch moves on from it).
    pub(crate) fn admin_exec_epoch(
        &self,
        cmd: SubmissionEntry,
        data: AdminData<'_>,
    ) -> (Result<CompletionEntry>, u32) {
        let done = self.admin_exec_unreported(cmd, data);
        // A removal it found is reported here, with no lock held.
        self.report_removal();
        done
    }

    fn admin_exec_unreported(
        &self,
        mut cmd: SubmissionEntry,
        mut data: AdminData<'_>,
    ) -> (Result<CompletionEntry>, u32) {
        let mut tries = 0;
        let mut healed = false;
        loop {
            if self.is_removed() {
                return (Err(Error::DeviceRemoved), self.epoch());
            }
            // `ControllerFailed` from here on means: nothing was sent.
            if let Err(e) = self.heal() {
                return (Err(e), self.epoch());
            }
            let (result, cid, epoch) = self.exec_waited(&mut cmd, &mut data);
            if result == Err(Error::ControllerFailed) && !healed {
                // Nothing was sent: another command ran past its deadline
                // (the queue is failed now). Heal it, then go once more.
                healed = true;
                continue;
            }
            // Retried without the admin lock held across the Command Retry
            // Delay, so other threads' admin commands go on.
            if let Some(delay) =
                retry_wait(&result, &mut tries, self.options.retry_count, self.retry_delays())
            {
                if !delay.is_zero() {
                    self.hal.delay(delay);
                }
                continue;
            }
            match result {
                Err(Error::Timeout(_))
                | Err(Error::ControllerFatal)
                | Err(Error::MalformedDevice(Malformed::CompletionFlood)) => {
                    // The callback runs without the admin lock, so it may
                    // use the driver.
                    if let (Err(Error::Timeout(_)), Some(cb)) = (&result, self.options.timeout_callback) {
                        cb(TimeoutEvent { qid: 0, cid, opcode: cmd.cdw0.opc() });
                    }
                    let _ = self.reset_from(epoch);
                }
                // A transient all-ones read while waiting: the command was
                // sent and its fate is unknown, as after a timeout (never
                // `ControllerFailed`, which says nothing was sent); the admin
                // queue is in an unknown state, so reset. The device is not
                // gone.
                Err(Error::DeviceRemoved) if !self.confirm_removed() => {
                    let _ = self.reset_from(epoch);
                    return (Err(Error::Timeout(Wait::AdminCommand)), epoch);
                }
                _ => {}
            }
            return (result, epoch);
        }
    }

    /// Submits `cmd` as a waited command and polls for its result, taking
    /// the admin lock only for each look: other threads' admin commands,
    /// their results and events go on meanwhile, and Keep Alive goes out
    /// when due. Data goes through the admin data page, or, while another
    /// waited command holds that, through a page of its own (given back
    /// once the device is done with it: at once after the completion, after
    /// a reset otherwise). Returns the result, the CID and the reset epoch
    /// the command was sent in (`Reset` when a reset since dropped it).
    /// `ControllerFailed`: nothing was sent.
    fn exec_waited(
        &self,
        cmd: &mut SubmissionEntry,
        data: &mut AdminData<'_>,
    ) -> (Result<CompletionEntry>, Cid, u32) {
        let timeout = self.options.admin_timeout;
        let uses_page = !matches!(data, AdminData::None);
        // A slot frees up as other commands end, or run past their
        // deadlines, which fails the queue; twice the timeout bounds the
        // wait all the same.
        let give_up = self.hal.now().saturating_add(timeout.saturating_mul(2));
        // A page of this call's own, while another waited command holds
        // the admin data page. Until sent, it was never named to the device.
        let mut own: Option<DmaMemory> = None;
        let (ticket, epoch, shared) = loop {
            let unsent = {
                let mut admin = self.admin.lock();
                let epoch = self.epoch();
                if admin.failed {
                    Some((Error::ControllerFailed, epoch))
                } else {
                    let shared = uses_page && admin.data_owner.is_none();
                    if shared {
                        // An own page from an earlier pass is not needed.
                        self.release_page(own.take(), true, epoch);
                    } else if uses_page && own.is_none() {
                        match DmaAlloc::new(&self.hal, 1) {
                            Ok(page) => own = Some(page.lend()),
                            Err(e) => return (Err(e.into()), Cid(0), epoch),
                        }
                    }
                    if uses_page {
                        let page = own.as_ref().unwrap_or(&admin.data);
                        page.zero();
                        if let AdminData::ToDevice(bytes) = data {
                            page.write_bytes(0, bytes);
                        }
                        cmd.prp1 = page.daddr(0).0;
                    }
                    match admin.submit_waited(&self.hal, *cmd, timeout, shared) {
                        Ok(Some(ticket)) => break (ticket, epoch, shared),
                        Ok(None) => None,
                        Err(e) => Some((e, epoch)),
                    }
                }
            };
            let unsent = unsent.or_else(|| {
                if self.is_removed() {
                    Some((Error::DeviceRemoved, self.epoch()))
                } else if self.hal.now() >= give_up {
                    Some((Error::ControllerFailed, self.epoch()))
                } else {
                    None
                }
            });
            if let Some((e, epoch)) = unsent {
                self.release_page(own.take(), true, epoch);
                return (Err(e), Cid(0), epoch);
            }
            self.hal.delay(Duration::from_micros(10));
        };
        let cid = Cid(ticket.cid);
        // Should the HAL panic while this waits, the queue's state is not
        // known: failed until a reset, and the page goes to the quarantine.
        let guard = WaitGuard { ctrlr: self, ticket, epoch, own, armed: true };
        let bogus_before = self.admin.lock().bogus_completions;
        let mut looks: u32 = 0;
        loop {
            let ended = {
                let mut admin = self.admin.lock();
                if let AsyncResult::Done(r) = admin.async_result(&self.hal, ticket) {
                    let reset_since = self.epoch() != epoch;
                    let r = match (&r, &mut *data) {
                        // A reset since used the shared page for its own
                        // commands: what the device put there is gone.
                        (Ok(_), AdminData::FromDevice(_)) if shared && reset_since => Err(Error::Reset),
                        (Ok(_), AdminData::FromDevice(out)) => {
                            guard.own.as_ref().unwrap_or(&admin.data).read_bytes(0, out);
                            r
                        }
                        _ => r,
                    };
                    // A timeout leaves the command, and its page, with the
                    // device (the queue is failed: the next reset frees
                    // the shared page).
                    let done = !matches!(r, Err(Error::Timeout(_)));
                    if done && shared && !reset_since && admin.data_owner == Some(ticket.cid) {
                        admin.data_owner = None;
                    }
                    Some((r, done))
                } else if admin.bogus_completions.wrapping_sub(bogus_before)
                    > 2 * u64::from(ADMIN_QUEUE_ENTRIES)
                {
                    // Only this command's worth of stale entries, and a
                    // ring's, can be real: more is a device gone mad. The
                    // entry goes (its result would hold a slot for good).
                    admin.failed = true;
                    admin.cancel_async(ticket);
                    Some((Err(Error::MalformedDevice(Malformed::CompletionFlood)), false))
                } else {
                    if !admin.failed {
                        let _ = admin.keep_alive(&self.hal, timeout);
                    }
                    None
                }
            };
            if ended.is_none() {
                looks = looks.wrapping_add(1);
            }
            let ended = ended.or_else(|| {
                if !looks.is_multiple_of(64) {
                    return None;
                }
                let failure = match Registers::new(&self.hal).csts() {
                    Err(e) => Some(e),
                    Ok(csts) if csts.cfs() => Some(Error::ControllerFatal),
                    Ok(_) => None,
                }?;
                let mut admin = self.admin.lock();
                admin.failed = true;
                admin.cancel_async(ticket);
                Some((Err(failure), false))
            });
            if let Some((result, device_done)) = ended {
                let (own, epoch) = guard.disarm();
                self.release_page(own, device_done, epoch);
                return (result, cid, epoch);
            }
            self.hal.delay(Duration::from_micros(10));
        }
    }

    /// Gives back a waited command's own data page: freed when the device
    /// is done with it (`device_done`), else kept in the quarantine until a
    /// reset after `epoch` (leaked if the device is removed).
    fn release_page(&self, page: Option<DmaMemory>, device_done: bool, epoch: u32) {
        let Some(mut page) = page else { return };
        if device_done || self.epoch() != epoch {
            // SAFETY: the command completed (or was never sent), or a reset
            // since it was sent disabled the controller: the device no
            // longer uses the page.
            unsafe { page.free(&self.hal) };
        } else if !self.is_removed() {
            self.quarantine.lock().memory(page, epoch);
        }
    }

    /// True when resets failed `recovery_attempts` times in a row: the driver
    /// no longer resets by itself, and only [`reset`](Self::reset) helps.
    /// (False while another thread holds the admin queue: a queue pair's
    /// `poll` never waits for it here.)
    pub(crate) fn gave_up(&self) -> bool {
        self.admin
            .try_lock()
            .is_some_and(|admin| admin.failed && admin.reset_failures >= self.options.recovery_attempts)
    }

    /// Heals a controller whose reset failed: when the admin queue is
    /// unusable, tries the reset again, once the backoff since the last
    /// failed one has passed and fewer than `recovery_attempts` failed in a
    /// row. `ControllerFailed` when it is not tried, or does not work.
    pub(crate) fn heal(&self) -> Result {
        let (due, seen) = {
            let admin = self.admin.lock();
            if !admin.failed {
                return Ok(());
            }
            let due =
                admin.reset_failures < self.options.recovery_attempts && self.hal.now() >= admin.next_reset;
            (due, self.epoch())
        };
        if !due {
            return Err(Error::ControllerFailed);
        }
        self.reset_from(seen).map_err(|e| if e == Error::DeviceRemoved { e } else { Error::ControllerFailed })
    }

    /// Abort (section 5.1) of the command that carries `cid` on the wire on
    /// submission queue `sqid`. Returns true when the controller says it
    /// aborted the command (which then completes with an abort status),
    /// false for "not aborted". Queue pairs translate the CID their callers
    /// were given ([`IoQueuePair::abort`](crate::IoQueuePair::abort)).
    pub(crate) fn abort_wire(&self, sqid: u16, cid: u16) -> Result<bool> {
        let mut cmd = SubmissionEntry::new(AdminOpcode::ABORT.0, 0);
        cmd.cdw10 = AbortCdw10::new().with_sqid(sqid).with_cid(cid).into_bits();
        let done = self.admin_exec(cmd, None)?;
        Ok(!AbortResult::from_bits(done.dw0).not_aborted())
    }

    /// Sends Abort (section 5.1) for the command that carries `cid` on the
    /// wire on submission queue `sqid`, without waiting for its result: the
    /// ticket (the Abort's own CID) is for [`abort_result`](Self::abort_result).
    /// `None` when the abort command limit (ACL + 1, at most
    /// [`MAX_ABORTS`]) is reached or another thread holds the admin queue:
    /// try again later.
    pub(crate) fn abort_async(&self, sqid: u16, cid: u16) -> Result<Option<Ticket>> {
        if self.is_removed() {
            return Err(Error::DeviceRemoved);
        }
        let Some(mut admin) = self.admin.try_lock() else {
            return Ok(None);
        };
        let mut cmd = SubmissionEntry::new(AdminOpcode::ABORT.0, 0);
        cmd.cdw10 = AbortCdw10::new().with_sqid(sqid).with_cid(cid).into_bits();
        admin.expire_async(&self.hal)?;
        let limit = (usize::from(self.identify.read().acl) + 1).min(MAX_ABORTS);
        if admin.aborts_in_flight() >= limit {
            return Ok(None);
        }
        admin.submit_async(&self.hal, cmd, self.options.admin_timeout, AsyncKind::Abort)
    }

    /// The result of the Abort with `ticket`, once it came back: whether the
    /// controller aborted the command, or why the Abort failed (its status,
    /// `Timeout`, `Reset` when a reset dropped it). `None` while it is out,
    /// or while another thread holds the admin queue.
    pub(crate) fn abort_result(&self, ticket: Ticket) -> Option<Result<AbortOutcome>> {
        let mut admin = self.admin.try_lock()?;
        match admin.async_result(&self.hal, ticket) {
            AsyncResult::Pending => None,
            AsyncResult::Done(r) => Some(r.map(|done| {
                if AbortResult::from_bits(done.dw0).not_aborted() {
                    AbortOutcome::NotAborted
                } else {
                    AbortOutcome::Aborted
                }
            })),
        }
    }

    /// Forgets the Abort with `ticket` (its queue pair goes away).
    pub(crate) fn cancel_abort(&self, ticket: Ticket) {
        self.admin.lock().cancel_async(ticket);
    }

    /// Resets the controller (section 7.3.2): disables it, which ends every
    /// command in flight on every queue, then brings it up again with the same
    /// admin queue memory and number of queues. Queue pairs notice on their
    /// next `poll` or submission: their outstanding requests complete with
    /// [`Error::Reset`], and their next `poll` creates their queues again.
    ///
    /// If the reset fails (the controller does not come back, or refuses Set
    /// Features), admin calls fail with [`Error::ControllerFailed`] and the
    /// driver tries the reset again on the next admin call (a queue pair's
    /// `poll` makes one) after a backoff, up to
    /// [`ControllerOptions::recovery_attempts`] times in a row; this call
    /// always tries.
    pub fn reset(&self) -> Result {
        self.reset_unless_moved(None)
    }

    /// Asks the controller to say how long to wait before a retry (ACRE, in
    /// Set Features / Host Behavior Support, NVMe 1.4 section 5.21.1.22),
    /// when it has Command Retry Delay Times (CRDT1 to 3 in Identify
    /// Controller) to say it with. A controller that refuses is used without;
    /// one that does not answer (a timeout, a fatal status) is an error. The
    /// feature is cleared by every reset, which calls this again.
    fn enable_acre(&self, admin: &mut AdminQueue) -> Result {
        let wanted = {
            let id = self.identify.read();
            id.crdt1 != 0 || id.crdt2 != 0 || id.crdt3 != 0
        };
        let mut enabled = false;
        if wanted {
            // The 512-byte Host Behavior Support structure: byte 0 is ACRE.
            admin.data.zero();
            admin.data.write(0, 1u8);
            let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
            cmd.cdw10 = FeaturesCdw10::new().with_fid(Fid::HOST_BEHAVIOR_SUPPORT).into_bits();
            cmd.prp1 = admin.data.daddr(0).0;
            match admin.execute(&self.hal, cmd, self.options.admin_timeout) {
                Ok(_) => enabled = true,
                // Refused: retries go out at once.
                Err(Error::Command(_)) => {}
                // No answer (the admin queue is failed now).
                Err(e) => {
                    self.acre.store(false, Ordering::Release);
                    return Err(e);
                }
            }
        }
        self.acre.store(enabled, Ordering::Release);
        Ok(())
    }

    /// How long a retry of a command that failed with `status` waits: the
    /// Command Retry Delay Time its CRD field names, once ACRE is on.
    pub(crate) fn retry_delay(&self, status: Status) -> Duration {
        self.retry_delays().get(usize::from(status.crd()).wrapping_sub(1)).copied().unwrap_or(Duration::ZERO)
    }

    /// The delays CRD 1 to 3 stand for (zero while ACRE is off).
    fn retry_delays(&self) -> [Duration; 3] {
        if !self.acre.load(Ordering::Acquire) {
            return [Duration::ZERO; 3];
        }
        let id = self.identify.read();
        [id.crdt1, id.crdt2, id.crdt3].map(|units| Duration::from_millis(100 * u64::from(units)))
    }

    /// How many resets by hand have worked.
    pub(crate) fn resets_by_hand(&self) -> u32 {
        self.resets_by_hand.load(Ordering::Acquire)
    }

    /// Resets the controller unless the epoch moved on from `seen`: then
    /// another thread reset it since the caller saw trouble, and that reset's
    /// outcome stands (two threads that find the same failure reset once).
    /// After a failed reset, it waits out the backoff (`ControllerFailed`
    /// meanwhile), and gives up at `recovery_attempts` failures in a row.
    pub(crate) fn reset_from(&self, seen: u32) -> Result {
        self.reset_unless_moved(Some(seen))
    }

    fn reset_unless_moved(&self, seen: Option<u32>) -> Result {
        if self.is_removed() {
            return Err(Error::DeviceRemoved);
        }
        let mut admin = self.admin.lock();
        if seen.is_some_and(|seen| seen != self.epoch()) {
            return if admin.failed { Err(Error::ControllerFailed) } else { Ok(()) };
        }
        // The driver's own resets wait out the backoff after a failed one,
        // and stop at the bound; only a reset by hand always tries.
        let backing_off = admin.failed
            && admin.reset_failures > 0
            && (admin.reset_failures >= self.options.recovery_attempts || self.hal.now() < admin.next_reset);
        if seen.is_some() && backing_off {
            return Err(Error::ControllerFailed);
        }
        let mut result = self.reset_locked(&mut admin, seen.is_none());
        if result == Err(Error::DeviceRemoved) && !self.confirm_removed() {
            // All ones, but not for long: the device is not gone, and the
            // reset did not work.
            result = Err(Error::ControllerFailed);
        }
        if result.is_ok() {
            admin.reset_failures = 0;
            // SAFETY: the reset disabled the controller (CSTS.RDY read 0)
            // before the epoch moved to its present value, so after
            // everything put away in an earlier epoch.
            let freed = unsafe { self.quarantine.lock().release(&self.hal, self.epoch()) };
            *self.qids.lock() &= !freed;
        } else {
            // Until a reset works, the admin queue takes no command. The
            // driver's own failed resets count toward its bound; a failed
            // reset by hand leaves the driver's budget alone.
            admin.failed = true;
            if seen.is_some() {
                admin.reset_failures = admin.reset_failures.saturating_add(1);
            }
            let backoff = self.options.backoff_after(admin.reset_failures);
            admin.next_reset = self.hal.now().saturating_add(backoff);
        }
        result
    }

    /// The reset itself, with the admin queue held.
    fn reset_locked(&self, admin: &mut AdminQueue, by_hand: bool) -> Result {
        admin.failed = true;
        // Results already posted are kept for their owners (the restart
        // below keeps the ones that came).
        admin.reap(&self.hal, usize::MAX);
        disable(&self.hal, self.cap)?;
        // Quiesced: no command of any queue can complete or touch memory any
        // more, so queue pairs may hand their requests back. A reset by hand
        // is counted first: a queue pair that sees the new epoch sees it too
        // (and gets another round if its recovery had given up).
        if by_hand {
            self.resets_by_hand.fetch_add(1, Ordering::Release);
        }
        // The disabled controller forgot the shadow pages.
        self.dbbuf_on.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // The memory space may have been turned off with the controller;
        // the queues re-created in their CMB slots need it.
        if self.cmb.is_some_and(|cmb| !cmb.enable(&self.hal)) {
            return Err(Error::MalformedDevice(Malformed::CmbAddress));
        }
        admin.restart();
        start_admin(&self.hal, admin, self.options.arbitration.ams());
        // Until the controller is ready again, the admin queue stays failed:
        // no command goes to a controller with CSTS.RDY = 0.
        admin.failed = true;
        wait_ready(&self.hal, true, ready_timeout(self.cap))?;
        admin.failed = false;
        admin.execute_retrying(
            &self.hal,
            number_of_queues(self.io_queues),
            self.options.admin_timeout,
            self.options.retry_count,
            self.retry_delays(),
        )?;
        self.reidentify(admin)?;
        self.revalidate_locked(admin)?;
        // A reset cleared Host Behavior Support. A controller that refuses
        // it is used without; one that does not answer failed the reset.
        self.enable_acre(admin)?;
        // Before any I/O queue is created again.
        self.configure_dbbuf(admin)?;
        self.rearm_events(admin)
    }

    /// After a reset: the Host Identifier and the Keep Alive Timer set
    /// again, Asynchronous Event
    /// Configuration as the host enabled it, and the AERs outstanding again. A controller that refuses the
    /// configuration keeps its default (the AERs still go out); one that
    /// does not answer failed the reset.
    fn rearm_events(&self, admin: &mut AdminQueue) -> Result {
        self.give_host_identifier(admin)?;
        self.return_host_memory(admin)?;
        if admin.kato_ms != 0 {
            match self.set_keep_alive(admin) {
                Ok(()) | Err(Error::Command(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let Some(aec) = admin.aec else { return Ok(()) };
        let cmd = crate::features::set_features_command(Fid::ASYNC_EVENT_CONFIG, 0, aec, false);
        match admin.execute(&self.hal, cmd, self.options.admin_timeout) {
            Ok(_) | Err(Error::Command(_)) => {}
            Err(e) => return Err(e),
        }
        admin.aers_wanted = admin.aer_limit;
        admin.arm_aers(&self.hal);
        Ok(())
    }

    /// Identify with any CNS value (section 5.15), copying the 4096-byte data
    /// structure into `out` unparsed.
    pub fn identify_raw(&self, cns: Cns, nsid: u32, out: &mut [u8; PAGE_SIZE]) -> Result {
        self.admin_exec(identify_command(cns, nsid), Some(out)).map(|_| ())
    }

    /// Identify Namespace (CNS 00h) for `nsid`.
    pub fn identify_namespace(&self, nsid: u32) -> Result<IdentifyNamespace> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        let mut page = [0u8; PAGE_SIZE];
        self.identify_raw(Cns::NAMESPACE, nsid, &mut page)?;
        Ok(IdentifyNamespace::from_bytes(&page))
    }

    /// One page of the active namespace identifiers above `after` (CNS 02h),
    /// up to 1024. [`namespace_ids`](Self::namespace_ids) pages through all
    /// of them.
    pub fn active_namespaces(&self, after: u32) -> Result<ActiveNamespaceList> {
        let mut page = [0u8; PAGE_SIZE];
        self.identify_raw(Cns::ACTIVE_NAMESPACES, after, &mut page)?;
        Ok(ActiveNamespaceList::from_bytes(&page))
    }

    /// Every active namespace identifier, in increasing order, fetched a page
    /// of 1024 at a time. A failed fetch, or a list that does not increase,
    /// is yielded as an error and ends the iteration.
    pub fn namespace_ids(&self) -> NamespaceIds<'_, H> {
        NamespaceIds {
            ctrlr: self,
            page: ActiveNamespaceList::zeroed(),
            index: 0,
            after: 0,
            state: Paging::Fetch,
        }
    }

    /// A handle to every active namespace ([`namespace_ids`](Self::namespace_ids)
    /// and [`namespace`](Self::namespace)). A namespace whose identify data
    /// the driver refuses is yielded as an error and the iteration goes on.
    pub fn namespaces(&self) -> impl Iterator<Item = Result<Namespace>> + '_ {
        self.namespace_ids().map(|id| id.and_then(|nsid| self.namespace(nsid)))
    }

    /// A handle to active namespace `nsid`, built from its Identify Namespace
    /// data, which is checked before the driver relies on it.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace> {
        // Read before the identify data, so a change that lands in between
        // leaves this handle stale rather than wrong.
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let before = self.tracker.before(nsid);
        let id = match self.identify_namespace(nsid) {
            Ok(id) if id.nsze != 0 => id,
            found => {
                // No namespace there: the slot taken for it is given up.
                self.tracker.release(nsid, before);
                return Err(found.err().unwrap_or(Error::InvalidArgument(Argument::InactiveNamespace)));
            }
        };
        // A zoned namespace: its zone size and limits, from the zoned
        // command set's Identify structures (none where the controller runs
        // the NVM command set alone: then it stays unsupported).
        let csi = match self.namespace_csi(nsid) {
            Ok(csi) => csi,
            Err(e) => {
                self.tracker.release(nsid, before);
                return Err(e);
            }
        };
        let zones = if csi == Csi::ZONED {
            match self.zone_geometry(nsid, &id) {
                Ok(z) => z,
                Err(e) => {
                    self.tracker.release(nsid, before);
                    return Err(e);
                }
            }
        } else {
            None
        };
        // With protection information: its format, from the NVM command
        // set's Identify Namespace (controllers without it have the 16-bit
        // guard only).
        let mut nvm_page = [0u8; PAGE_SIZE];
        let nvm = if id.dps.pit() == 0 {
            None
        } else {
            match self.identify_raw(Cns::IO_COMMAND_SET_NAMESPACE, nsid, &mut nvm_page) {
                Ok(()) => Some(crate::spec::identify::IdentifyNamespaceNvm::from_bytes(&nvm_page)),
                Err(Error::Command(_)) => None,
                Err(e) => {
                    self.tracker.release(nsid, before);
                    return Err(e);
                }
            }
        };
        let (slot, slot_generation) = self.tracker.bind(nsid, Geometry::of(&id), before);
        let binding = Binding { controller: self.id, generation, slot, slot_generation };
        Namespace::from_identify(nsid, &id, nvm.as_ref(), csi, self.max_transfer_bytes(), binding)
            .map(|ns| ns.with_zones(zones))
    }

    /// The zone geometry of zoned namespace `nsid` (Zoned Namespace Command
    /// Set 1.1: Identify Namespace CNS 05h and Identify Controller CNS 06h,
    /// CSI 02h), or `None` where the controller does not answer them (it
    /// runs the NVM command set alone).
    fn zone_geometry(
        &self,
        nsid: u32,
        id: &IdentifyNamespace,
    ) -> Result<Option<crate::namespace::ZoneGeometry>> {
        let csi = crate::spec::dwords::IdentifyCdw11::new().with_csi(Csi::ZONED).into_bits();
        let mut page = [0u8; PAGE_SIZE];
        let mut cmd = identify_command(Cns::IO_COMMAND_SET_NAMESPACE, nsid);
        cmd.cdw11 = csi;
        match self.admin_exec(cmd, Some(&mut page)) {
            Ok(_) => {}
            Err(Error::Command(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let zoned = crate::spec::zns::IdentifyNamespaceZoned::from_bytes(&page);
        let mut cmd = identify_command(Cns::IO_COMMAND_SET_CONTROLLER, 0);
        cmd.cdw11 = csi;
        let zasl = match self.admin_exec(cmd, Some(&mut page)) {
            Ok(_) => page[0],
            Err(Error::Command(_)) => 0,
            Err(e) => return Err(e),
        };
        let index = usize::from(id.format_index());
        let zone_blocks = zoned.lbafe.get(index).map_or(0, |f| f.zsze);
        let extension = zoned.lbafe.get(index).map_or(0, |f| usize::from(f.zdes) * 64);
        if zone_blocks == 0 {
            return Err(Error::MalformedDevice(Malformed::ZoneSize));
        }
        let limit = |v: u32| (v != u32::MAX).then(|| v.saturating_add(1));
        let shift = 12 + self.cap.mpsmin() as u32 + u32::from(zasl);
        let append = (zasl != 0).then(|| if shift >= usize::BITS { usize::MAX } else { 1usize << shift });
        Ok(Some(crate::namespace::ZoneGeometry {
            zone_blocks,
            max_active: limit(zoned.mar),
            max_open: limit(zoned.mor),
            append_limit_bytes: append,
            descriptor_extension_bytes: extension,
        }))
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
        let done = self.admin_exec(number_of_queues(wanted), None)?;
        // DW0: NSQA and NCQA, both 0-based.
        let granted = NumberOfQueues::from_bits(done.dw0);
        Ok(granted.nsq().min(granted.ncq()).saturating_add(1).min(wanted))
    }

    /// The controller memory buffer that holds submission queues, if
    /// [`ControllerOptions::sq_in_cmb`] asked for it and the controller has
    /// a usable one.
    pub fn cmb(&self) -> Option<CmbInfo> {
        self.cmb.map(|cmb| cmb.info(self.io_queues))
    }

    /// The CMB slot of queue `qid` for a submission queue of `entries`
    /// entries, if there is a CMB and the slot holds them.
    pub(crate) fn cmb_ring(&self, qid: u16, entries: u16) -> Option<DeviceRing> {
        self.cmb?.ring(qid, entries as usize * 64, self.io_queues)
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
    /// CSTS.SHST = complete (bounded by CAP.TO), then disable. A shutdown
    /// that does not complete in time is [`Wait::Shutdown`], reported after
    /// the disable; a fatal controller (CSTS.CFS) is disabled at once.
    fn shutdown(&self) -> Result {
        let regs = Registers::new(&self.hal);
        let cc = regs.cc()?;
        let mut completed = true;
        if cc.en() {
            regs.notify_shutdown(cc);
            let deadline = self.hal.now().saturating_add(ready_timeout(self.cap));
            loop {
                let csts = regs.csts()?;
                if csts.shst() == shst::COMPLETE || csts.cfs() {
                    break;
                }
                if self.hal.now() >= deadline {
                    completed = false;
                    break;
                }
                self.hal.delay(Duration::from_micros(100));
            }
        }
        self.disable()?;
        if completed {
            Ok(())
        } else {
            Err(Error::Timeout(Wait::Shutdown))
        }
    }

    /// Detaches from the controller: orderly shutdown (CC.SHN, a bounded
    /// wait for CSTS.SHST), disable, and the admin queue's memory given back
    /// (what `Drop` does, with the outcome reported). Queue pairs borrow the
    /// controller, so none is alive. `Err(Timeout(Wait::Shutdown))`: the
    /// controller did not finish its shutdown within CAP.TO but was disabled
    /// all the same, so the memory was freed; any other error: it could not
    /// be disabled, and the memory is leaked.
    ///
    /// A controller marked removed reports [`Error::DeviceRemoved`], as every
    /// call on it does, after the same teardown (if its registers answer
    /// again and it can be disabled, its memory comes back).
    pub fn detach(mut self) -> Result {
        let result = self.teardown();
        self.detached = true;
        if self.is_removed() {
            return Err(Error::DeviceRemoved);
        }
        result
    }

    /// Shutdown, then free the admin queue and the quarantine once the
    /// controller is disabled; otherwise leak them.
    fn teardown(&mut self) -> Result {
        // The host memory buffer is taken back before the shutdown, as a
        // courtesy to the controller; it is freed only after the disable.
        let admin = self.admin.get_mut();
        if admin.hmb.is_some() && !admin.failed && !self.removed.load(Ordering::Acquire) {
            let _ = admin.execute(&self.hal, Hmb::disable_command(), self.options.admin_timeout);
        }
        let result = self.shutdown();
        if matches!(result, Ok(()) | Err(Error::Timeout(Wait::Shutdown))) {
            // SAFETY: the controller is disabled (CSTS.RDY = 0), so it no
            // longer reads or writes the admin queues, the data page, or
            // anything in the quarantine.
            unsafe {
                let _ = self.quarantine.get_mut().release(&self.hal, u32::MAX);
                self.admin.get_mut().free(&self.hal);
                if let Some(mem) = &mut self.dbbuf {
                    mem.free(&self.hal);
                }
            }
        }
        // Otherwise the controller may still write the admin memory and what
        // the quarantine holds: it is leaked.
        result
    }
}

/// Identify (section 5.15) of the structure `cns` names, for `nsid`.
pub(crate) fn identify_command(cns: Cns, nsid: u32) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::IDENTIFY.0, nsid);
    cmd.cdw10 = IdentifyCdw10::new().with_cns(cns).into_bits();
    cmd
}

/// Set Features / Number of Queues (section 5.21.1.7) asking for `wanted`
/// submission and completion queues.
fn number_of_queues(wanted: u16) -> SubmissionEntry {
    let n = wanted.max(1) - 1;
    let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, 0);
    cmd.cdw10 = FeaturesCdw10::new().with_fid(Fid::NUMBER_OF_QUEUES).into_bits();
    cmd.cdw11 = NumberOfQueues::new().with_nsq(n).with_ncq(n).into_bits();
    cmd
}

/// Where [`NamespaceIds`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paging {
    /// The next identifier needs a new page.
    Fetch,
    /// Identifiers come from the page held.
    Page,
    /// Nothing more.
    Done,
}

/// The active namespace identifiers of a controller, fetched a page at a
/// time ([`Controller::namespace_ids`]).
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct NamespaceIds<'c, H: Hal> {
    ctrlr: &'c Controller<H>,
    page: ActiveNamespaceList,
    index: usize,
    after: u32,
    state: Paging,
}

impl<H: Hal> Iterator for NamespaceIds<'_, H> {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Result<u32>> {
        loop {
            match self.state {
                Paging::Done => return None,
                Paging::Fetch => match self.ctrlr.active_namespaces(self.after) {
                    Ok(page) => {
                        self.page = page;
                        self.index = 0;
                        self.state = Paging::Page;
                    }
                    Err(e) => {
                        self.state = Paging::Done;
                        return Some(Err(e));
                    }
                },
                Paging::Page => {
                    let nsid = self.page.0.get(self.index).copied().unwrap_or(0);
                    if nsid == 0 {
                        // A full page may have a next one; a list that ends
                        // inside its page is the last.
                        let full = self.index == self.page.0.len();
                        self.state = if full { Paging::Fetch } else { Paging::Done };
                        continue;
                    }
                    if nsid <= self.after || nsid == u32::MAX {
                        self.state = Paging::Done;
                        return Some(Err(Error::MalformedDevice(Malformed::NamespaceList)));
                    }
                    self.index += 1;
                    self.after = nsid;
                    return Some(Ok(nsid));
                }
            }
        }
    }
}

impl<H: Hal> Drop for Controller<H> {
    fn drop(&mut self) {
        // Queue pairs borrow the controller, so none is alive here (one that was
        // leaked with mem::forget keeps its memory forever, which is safe).
        if !self.detached {
            let _ = self.teardown();
        }
    }
}
