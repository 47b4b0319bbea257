//! What the simulated controller looks like: capabilities, namespaces, memory,
//! timing, and identify data that lies.

use core::time::Duration;

/// The shape and behaviour of a simulated controller, fixed at [`Sim::new`](crate::Sim::new)
/// (a few fields can be changed later through [`Sim`](crate::Sim) setters).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// CAP.MQES: maximum queue entries supported, 0-based. Default 1023.
    /// (A queue of 65536 entries, QSIZE 0xFFFF, is refused with Invalid Queue
    /// Size even when MQES allows it.)
    pub mqes: u16,
    /// CAP.DSTRD: doorbell stride, `4 << dstrd` bytes. Default 0. At most 15.
    pub dstrd: u8,
    /// CAP.TO: worst-case time for CSTS.RDY to follow CC.EN, in 500 ms units.
    /// Default 20.
    pub timeout_500ms: u8,
    /// Identify Controller MDTS: largest transfer as a power of two of 4 KiB
    /// pages; 0 = no limit. Default 6 (256 KiB). The device enforces it.
    pub mdts: u8,
    /// I/O queue pairs the controller grants (Set Features / Number of
    /// Queues) and the highest I/O queue identifier it accepts. Default 8.
    pub max_io_queues: u16,
    /// The namespaces; default one: NSID 1, 512-byte blocks, 8192 blocks
    /// (4 MiB).
    pub namespaces: Vec<SimNamespace>,
    /// Size of the DMA arena (all `dma_alloc` and bounce memory), in bytes;
    /// rounded up to whole pages. Default 40 MiB: 32 requests of 256 KiB in
    /// `DmaBuffer`s, as many bounce pages for `Vec<u8>` buffers, and queues.
    pub memory_bytes: usize,
    /// Time from fetching a command to completing it. Default 10 µs.
    pub latency: Duration,
    /// Time for CSTS.RDY to follow CC.EN, and for CSTS.SHST to report a
    /// finished shutdown. Default 100 µs.
    pub ready_delay: Duration,
    /// How far each call of `Hal::now` moves virtual time, so that a host
    /// busy-polling against a `now()` deadline sees the device make progress.
    /// Default 1 µs. Zero makes `now` a pure read.
    pub now_tick: Duration,
    /// CSTS.RDY never becomes 1 after CC.EN is set.
    pub rdy_never: bool,
    /// CSTS.RDY never becomes 0 after CC.EN is cleared: a controller that
    /// cannot be disabled (a hung device), so the host can never prove it
    /// stopped. It still processes nothing once disabled.
    pub disable_never: bool,
    /// CSTS.SHST never reports the shutdown complete after CC.SHN is set.
    pub shutdown_never: bool,
    /// Abort really aborts a pending command (default true). QEMU's controller
    /// never does: it always answers "not aborted".
    pub abort_works: bool,
    /// Abort answers "aborted" (DW0 bit 0 clear) but leaves the command as it
    /// is: a device whose abort lies. Overrides `abort_works`.
    pub abort_lies: bool,
    /// Identify data that lies (all `None` by default).
    pub lies: IdentifyLies,
    /// `Hal::share` reports a buffer page by page with the bounce pages in
    /// reverse order, so no two device segments are contiguous (the shape
    /// behind an IOMMU or in a kernel without physically contiguous
    /// buffers). Default true; false gives one contiguous bounce run.
    pub scatter_shares: bool,
    /// Every register access moves virtual time on by `latency`, so that a
    /// driver that never reads the clock (I/O timeouts off) still sees its
    /// commands complete. Default true.
    pub auto_advance: bool,
    /// CRDT1 to CRDT3 of Identify Controller: Command Retry Delay Times in
    /// units of 100 ms (NVMe 1.4 figure 247). Default all 0 (as QEMU).
    pub crdt: [u16; 3],
    /// The CRD field (1 to 3, naming a CRDT) that injected error statuses
    /// without DNR carry once the host enabled ACRE through Set Features /
    /// Host Behavior Support. Default 0 (none).
    pub status_crd: u8,
    /// KAS of Identify Controller: Keep Alive Support, the granularity of
    /// the Keep Alive Timer in 100 ms units; 0 (the default, as QEMU) means
    /// no keep alive. Otherwise a Keep Alive Timeout set through Set
    /// Features (rounded up to the granularity) that passes without a Keep
    /// Alive command makes the controller fatal (CSTS.CFS).
    pub kas: u16,
    /// Identify Controller NN: the most namespaces (and the highest NSID),
    /// at least the highest configured NSID. Default 16.
    pub max_namespaces: u32,
    /// Bytes of NVM capacity for all namespaces, configured and created
    /// (Namespace Management refuses a namespace beyond it). Default 64 MiB.
    pub capacity_bytes: usize,
    /// Identify Controller FWUG: firmware update granularity in 4 KiB
    /// units (0: none stated, FFh: no restriction). Default 1.
    pub fwug: u8,
    /// CAP.AMS bit 0: weighted round robin with urgent priority class is
    /// offered (see the `arbitration` module). Default false, as QEMU.
    pub wrr: bool,
    /// ONCS bit 5: reservations. Only the Host Identifier feature (FID 81h)
    /// comes with it so far; the reservation commands do not. Default false.
    pub reservations: bool,
    /// A controller memory buffer of this many bytes in BAR2 (rounded up to
    /// 4 KiB), for submission queues only (CMBSZ.SQS), with CAP.CMBS and
    /// CMBMSC as NVMe 1.4 and QEMU have them; the `SimHal` maps it
    /// ([`Hal::memory_bar`](hal_traits::Hal::memory_bar)). 0 (the default):
    /// none.
    pub cmb_bytes: usize,
    /// Refuse every controller base address the host writes to CMBMSC
    /// (CMBSTS.CBAI), so the memory space never turns on. Default false.
    pub cmb_refuse_cba: bool,
    /// Identify Controller HMPRE: the host memory buffer the controller
    /// would like, in 4 KiB units (0, the default: it asks for none, as
    /// QEMU's). HMMIN, HMMINDS and HMMAXD follow.
    pub hmpre: u32,
    /// HMMIN: the least buffer it can use, in 4 KiB units.
    pub hmmin: u32,
    /// HMMINDS: the least size of one piece, in 4 KiB units.
    pub hmminds: u32,
    /// HMMAXD: the most pieces (0: no limit).
    pub hmmaxd: u16,
    /// Identify Controller SANICAP: the sanitize actions offered (bit 0
    /// crypto erase, bit 1 block erase, bit 2 overwrite; 0, the default: no
    /// Sanitize, as QEMU 7.2).
    pub sanicap: u32,
    /// OACS bit 0: Security Send and Receive (see the `maintenance`
    /// module). Default false, as QEMU 7.2.
    pub security: bool,
    /// OACS bit 8: Doorbell Buffer Config (shadow doorbells, NVMe 1.4
    /// section 5.8). Default [`DoorbellBuffer::Off`], which QEMU 7.2 is not
    /// (it offers them): most tests keep MMIO doorbells.
    pub doorbell_buffer: DoorbellBuffer,
    /// ONCS bit 8 and OCFS bit 0: Copy with source range descriptors of
    /// format 0h. Default true (QEMU 7.2 has it).
    pub copy: bool,
    /// The Copy limits every namespace reports (Identify Namespace MSSRL,
    /// MCL, MSRC), and enforces with Command Size Limit Exceeded. Default
    /// QEMU's: 128 blocks per range, 128 in all, 128 ranges (MSRC 127).
    pub copy_limits: CopyLimits,
    /// The metadata formats of namespaces (by NSID); namespaces not named
    /// here have none.
    pub metadata: Vec<SimMetadata>,
    /// NOIOB (Identify Namespace bytes 47:46) of every namespace: the
    /// optimal I/O boundary in blocks (0, the default: none).
    pub noiob: u16,
    /// Identify Controller SGLS: bits 1:0 01b SGLs for I/O data with any
    /// alignment (the default), 10b with dword alignment and granularity,
    /// 00b none (PSDT 01b is then Invalid Field).
    pub sgls: u32,
    /// Zoned namespaces (by NSID) and their zone size in blocks: the
    /// controller then offers every I/O command set (CAP.CSS bit 6) and
    /// runs the zoned one for them (see the `zoned` module).
    pub zoned: Vec<SimZoned>,
}

/// A zoned namespace of the simulated controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimZoned {
    /// The namespace.
    pub nsid: u32,
    /// Blocks in each zone (the namespace's size is cut to whole zones).
    pub zone_blocks: u64,
    /// ZDES: each zone's descriptor extension, in 64-byte units (0: none).
    pub extension_units: u8,
}

/// The metadata and protection information of one namespace (Identify
/// Namespace LBAF MS, FLBAS bit 4, DPS), as QEMU's `nvme-ns` properties
/// `ms`, `mset`, `pi` and `pil` set them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimMetadata {
    /// The namespace.
    pub nsid: u32,
    /// MS: metadata bytes per block (at least 8 with protection
    /// information).
    pub ms: u16,
    /// FLBAS bit 4: metadata interleaved with the data (an extended LBA);
    /// otherwise a separate buffer through MPTR.
    pub extended: bool,
    /// DPS bits 2:0: protection information type, 0 (none) to 3.
    pub pi: u8,
    /// DPS bit 3: the protection information is the first bytes of the
    /// metadata; otherwise the last.
    pub pi_first: bool,
    /// PIF (the NVM command set's Identify Namespace, ELBAF bits 8:7): 0 a
    /// 16-bit guard (8-byte tuples), 2 a 64-bit guard (16-byte tuples,
    /// 48-bit reference tags; MS at least 16), as QEMU's `pif`.
    pub pif: u8,
}

/// Identify Namespace's Copy limits (NVM Command Set 1.0 figure 97).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyLimits {
    /// MSSRL: blocks in one source range.
    pub mssrl: u16,
    /// MCL: blocks in all the ranges of one command.
    pub mcl: u32,
    /// MSRC: ranges per command, 0-based.
    pub msrc: u8,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            mqes: 1023,
            dstrd: 0,
            timeout_500ms: 20,
            mdts: 6,
            max_io_queues: 8,
            namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 8192 }],
            memory_bytes: 40 << 20,
            latency: Duration::from_micros(10),
            ready_delay: Duration::from_micros(100),
            now_tick: Duration::from_micros(1),
            rdy_never: false,
            disable_never: false,
            shutdown_never: false,
            abort_works: true,
            abort_lies: false,
            lies: IdentifyLies::default(),
            scatter_shares: true,
            auto_advance: true,
            crdt: [0; 3],
            status_crd: 0,
            kas: 0,
            max_namespaces: 16,
            capacity_bytes: 64 << 20,
            fwug: 1,
            wrr: false,
            reservations: false,
            cmb_bytes: 0,
            cmb_refuse_cba: false,
            hmpre: 0,
            hmmin: 0,
            hmminds: 0,
            hmmaxd: 0,
            sanicap: 0,
            security: false,
            doorbell_buffer: DoorbellBuffer::Off,
            copy: true,
            copy_limits: CopyLimits { mssrl: 128, mcl: 128, msrc: 127 },
            metadata: Vec::new(),
            noiob: 0,
            sgls: 1,
            zoned: Vec::new(),
        }
    }
}

/// One namespace of the simulated controller, backed by host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimNamespace {
    /// NSID: 1 to 0xFFFF_FFFE, unique.
    pub nsid: u32,
    /// Bytes per logical block: a power of two from 512 to 65536.
    pub block_size: u32,
    /// Number of logical blocks (NSZE), at least 1.
    pub blocks: u64,
}

/// Identify data fields the controller misreports. The device itself keeps
/// behaving by its real configuration (a lying MDTS does not lift the real
/// limit, a lying NN does not create namespaces).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentifyLies {
    /// Identify Controller NN (number of namespaces).
    pub nn: Option<u32>,
    /// Identify Controller MDTS.
    pub mdts: Option<u8>,
    /// LBADS of LBA format 0 of every namespace.
    pub lbads: Option<u8>,
    /// Identify Namespace NLBAF (0-based number of LBA formats).
    pub nlbaf: Option<u8>,
    /// Identify Namespace FLBAS (formatted LBA size, format index in bits 3:0).
    pub flbas: Option<u8>,
    /// Identify Controller OAES (optional asynchronous events).
    pub oaes: Option<u32>,
    /// Identify Controller OACS (optional admin commands).
    pub oacs: Option<u16>,
    /// Identify Controller ONCS (optional NVM commands; the device runs
    /// the commands all the same).
    pub oncs: Option<u16>,
    /// FNA (byte 524): format and erase attributes (the device formats
    /// only the namespace named all the same).
    pub fna: Option<u8>,
    /// RESCAP (Identify Namespace byte 31) of every namespace, where
    /// reservations are configured.
    pub rescap: Option<u8>,
}

/// How the simulated controller treats shadow doorbells (Doorbell Buffer
/// Config, NVMe 1.4 section 5.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DoorbellBuffer {
    /// Not offered (OACS bit 8 clear): the command is refused.
    #[default]
    Off,
    /// Offered, as QEMU 7.2 does it: the command writes the current tail
    /// and head of the queues that exist into their shadow slots and nothing
    /// into the EventIdx page (the host seeds that); after an MMIO doorbell on an I/O SQ the
    /// controller also takes the SQ's shadow tail and sets its EventIdx to
    /// the tail it then has; before posting completions it takes the CQ's
    /// shadow head (a CQ's EventIdx it never writes); an MMIO doorbell on
    /// the admin queue is copied into its shadow slot. A host that skips an
    /// MMIO doorbell it needed stalls here as on QEMU.
    On,
    /// Offered, but the controller never reads the shadow doorbells of I/O
    /// queues nor writes their EventIdx: only MMIO doorbells move it, and a
    /// host that trusts a stale EventIdx waits for ever. For the host's
    /// watchdog.
    Deaf,
}
