//! Namespaces of the NVM command set: what the driver needs to know to address
//! blocks, checked before it is believed.

use crate::error::{Argument, Error, Feature, Malformed, Result};
use crate::spec::identify::IdentifyNamespace;
use crate::spec::ids::{Csi, Nidt};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Finds the Command Set Identifier in a Namespace Identification Descriptor
/// list (NVMe 1.4 section 5.15.2.3, figure 249). Walks untrusted data with
/// bounds checks; `None` when there is no CSI descriptor.
pub fn csi_from_descriptors(list: &[u8]) -> Option<Csi> {
    let mut at = 0;
    while at + 4 <= list.len() {
        let (kind, len) = (Nidt(list[at]), list[at + 1] as usize);
        if kind.0 == 0 || len == 0 {
            return None;
        }
        let value = list.get(at + 4..at + 4 + len)?;
        if kind == Nidt::CSI {
            return value.first().copied().map(Csi);
        }
        at += 4 + len;
    }
    None
}

/// An active namespace as the driver uses it: validated geometry from Identify
/// Namespace (NVMe Base Specification 1.4, section 5.15.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    nsid: u32,
    block_size: u32,
    blocks: u64,
    metadata_size: u16,
    extended_lba: bool,
    pi_type: u8,
    pi_first: bool,
    pi_format: Option<PiFormat>,
    zones: Option<ZoneGeometry>,
    csi: Csi,
    max_transfer: Option<usize>,
    copy: CopyLimits,
    rescap: u8,
    noiob: u16,
    /// The controller it was identified on, and the controller's format
    /// generation then: a handle is refused by the queue pairs of any other
    /// controller (whose namespace of the same NSID may have another block
    /// size), and after a Format NVM through this driver.
    binding: Binding,
}

/// The protection information format of a namespace (Identify Namespace
/// for the NVM command set, ELBAF PIF and STS; NVM Command Set 1.0 section
/// 5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PiFormat {
    /// A 16-bit guard (CRC-16 T10-DIF), 32-bit reference tag: 8 bytes.
    Guard16,
    /// A 64-bit guard (CRC-64/NVME), 48-bit reference tag, no storage
    /// tag: 16 bytes.
    Guard64,
}

impl PiFormat {
    /// The tuple's size in bytes.
    pub const fn tuple_size(self) -> usize {
        match self {
            PiFormat::Guard16 => crate::spec::pi::PiTuple::SIZE,
            PiFormat::Guard64 => crate::spec::pi::PiTuple64::SIZE,
        }
    }
}

/// The zones of a zoned namespace (Zoned Namespace Command Set 1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZoneGeometry {
    /// ZSZE: blocks in each zone (zone `k` starts at block `k` times this).
    pub zone_blocks: u64,
    /// MAR + 1: zones that may be active at once (`None`: no limit).
    pub max_active: Option<u32>,
    /// MOR + 1: zones that may be open at once (`None`: no limit).
    pub max_open: Option<u32>,
    /// ZASL in bytes: the largest Zone Append (`None`: the transfer limit).
    pub append_limit_bytes: Option<usize>,
    /// ZDES × 64: the bytes of each zone's descriptor extension (0: the
    /// namespace has none).
    pub descriptor_extension_bytes: usize,
}

/// What one Copy command may carry on a namespace (Identify Namespace,
/// NVM Command Set 1.0 figure 97: MSRC, MSSRL, MCL). All zero on a
/// namespace whose controller has no Copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyLimits {
    /// Source ranges per command (MSRC + 1).
    pub max_ranges: u16,
    /// Blocks in one source range (MSSRL).
    pub max_range_blocks: u16,
    /// Blocks in all the source ranges of one command together (MCL).
    pub max_blocks: u32,
}

/// Where a transfer's bytes lie in its buffer: `data` bytes through the
/// data pointer (with metadata interleaved on an extended-LBA namespace),
/// then `metadata` bytes through MPTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) data: usize,
    pub(crate) metadata: usize,
}

/// Which controller, at which generations, identified a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    /// `Controller::id`.
    pub(crate) controller: u32,
    /// The controller's generation: changes that make every handle stale
    /// (a Format NVM of all namespaces, a changed Identify Controller).
    pub(crate) generation: u32,
    /// The namespace's slot in the controller's [`Tracker`], or
    /// [`Tracker::UNTRACKED`].
    pub(crate) slot: u8,
    /// The slot's generation (or the untracked one) then.
    pub(crate) slot_generation: u32,
}

impl Binding {
    /// A binding to no controller (for handles built outside one: the fuzz
    /// targets).
    #[cfg(feature = "fuzzing")]
    pub(crate) const fn detached() -> Binding {
        Binding { controller: 0, generation: 0, slot: Tracker::UNTRACKED, slot_generation: 0 }
    }
}

/// The namespaces a controller follows one by one.
pub const TRACKED_NAMESPACES: usize = 32;

/// What must stay as it was for a `Namespace` handle to stay right: size,
/// LBA format (block and metadata size), metadata placement, protection.
/// An inactive namespace has the default (NSZE 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Geometry {
    nsze: u64,
    flbas: u8,
    lbaf: u32,
    dps: u8,
}

impl Geometry {
    /// A geometry no namespace has: the slot's namespace was not identified
    /// yet, or two observations disagreed.
    pub(crate) const UNKNOWN: Geometry =
        Geometry { nsze: u64::MAX, flbas: u8::MAX, lbaf: u32::MAX, dps: u8::MAX };

    pub(crate) fn of(id: &IdentifyNamespace) -> Geometry {
        Geometry {
            nsze: id.nsze,
            flbas: id.flbas.into_bits(),
            lbaf: id.current_lba_format().map_or(u32::MAX, |f| f.into_bits()),
            dps: id.dps.into_bits(),
        }
    }
}

/// Per-namespace generations: the first [`TRACKED_NAMESPACES`] namespaces
/// a controller hands out handles for each get a slot, whose generation
/// moves on when the namespace's geometry is seen to change (a reset's
/// revalidation, a Namespace Attribute Changed event, a Format NVM or
/// namespace management through this driver). Handles of further
/// namespaces share one generation, which every revalidation moves on (it
/// cannot tell whether they changed).
///
/// A geometry is stored only if the slot's generation did not move between
/// the read before the Identify and the store: a newer observation (of
/// another thread, or of a revalidation) wins, and the handle built from
/// the older one is stale rather than wrong.
pub(crate) struct Tracker {
    /// NSID (0: a free slot), the geometry last seen, and whether a
    /// handle was ever bound to the slot.
    table: spin::Mutex<heapless::Vec<(u32, Geometry, bool), TRACKED_NAMESPACES>>,
    generations: [AtomicU32; TRACKED_NAMESPACES],
    untracked: AtomicU32,
    /// A handle without a slot was handed out.
    any_untracked: AtomicBool,
}

impl Tracker {
    /// The slot of handles beyond the table.
    pub(crate) const UNTRACKED: u8 = u8::MAX;

    pub(crate) const fn new() -> Tracker {
        Tracker {
            table: spin::Mutex::new(heapless::Vec::new()),
            generations: [const { AtomicU32::new(0) }; TRACKED_NAMESPACES],
            untracked: AtomicU32::new(0),
            any_untracked: AtomicBool::new(false),
        }
    }

    /// The slot and generation of `nsid` now (read before its Identify).
    /// A namespace not followed yet gets its slot here, with an unknown
    /// geometry, so that a revalidation between this and
    /// [`bind`](Self::bind) moves its generation on; one beyond the table
    /// marks that untracked handles exist, for the same reason.
    pub(crate) fn before(&self, nsid: u32) -> (u8, u32) {
        let mut table = self.table.lock();
        let free = table.iter().position(|e| e.0 == 0);
        let i = match table.iter().position(|e| e.0 == nsid) {
            Some(i) => i,
            None if free.is_some() => {
                let i = free.unwrap_or_default();
                table[i] = (nsid, Geometry::UNKNOWN, false);
                i
            }
            None if table.push((nsid, Geometry::UNKNOWN, false)).is_ok() => table.len() - 1,
            None => {
                self.any_untracked.store(true, Ordering::Release);
                return (Self::UNTRACKED, self.untracked.load(Ordering::Acquire));
            }
        };
        (i as u8, self.generations[i].load(Ordering::Acquire))
    }

    /// Records `geometry` of `nsid`, seen after [`before`](Self::before)
    /// returned `before`; returns the slot and generation for its handle.
    pub(crate) fn bind(&self, nsid: u32, geometry: Geometry, before: (u8, u32)) -> (u8, u32) {
        let mut table = self.table.lock();
        if before.0 == Self::UNTRACKED {
            return before;
        }
        let Some(i) = table.iter().position(|e| e.0 == nsid) else {
            // Its slot was given up meanwhile (a failed look at the same
            // namespace): born stale.
            return (before.0, before.1.wrapping_sub(1));
        };
        let now = self.generations[i].load(Ordering::Acquire);
        if before != (i as u8, now) {
            // Another observation came in since the read before the
            // Identify: the order of the two is not known. The handle is
            // born stale, and if the two differ, neither is believed.
            if table[i].1 != geometry {
                table[i].1 = Geometry::UNKNOWN;
                self.generations[i].fetch_add(1, Ordering::AcqRel);
            }
            return (i as u8, before.1);
        }
        table[i].2 = true;
        if table[i].1 != geometry {
            table[i].1 = geometry;
            return (i as u8, self.generations[i].fetch_add(1, Ordering::AcqRel).wrapping_add(1));
        }
        (i as u8, now)
    }

    /// The look at `nsid` that [`before`](Self::before) began found no
    /// namespace (inactive, or its Identify failed): a slot it took, that no
    /// handle was ever bound to, is given up (so that probing many
    /// identifiers does not fill the table).
    pub(crate) fn release(&self, nsid: u32, before: (u8, u32)) {
        let mut table = self.table.lock();
        let i = before.0 as usize;
        if let Some(e) = table.get_mut(i) {
            if e.0 == nsid && !e.2 && self.generations[i].load(Ordering::Acquire) == before.1 {
                *e = (0, Geometry::UNKNOWN, false);
                self.generations[i].fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Whether a handle's slot generation is current.
    #[inline]
    pub(crate) fn is_current(&self, slot: u8, generation: u32) -> bool {
        let now = match self.generations.get(slot as usize) {
            Some(g) => g.load(Ordering::Acquire),
            None => self.untracked.load(Ordering::Acquire),
        };
        now == generation
    }

    /// The tracked namespaces, each with its slot generation now.
    pub(crate) fn snapshot(&self) -> heapless::Vec<(u32, u32), TRACKED_NAMESPACES> {
        let table = self.table.lock();
        table
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0 != 0)
            .map(|(i, e)| (e.0, self.generations[i].load(Ordering::Acquire)))
            .collect()
    }

    /// A revalidation saw `geometry` (default: inactive or unreadable) for
    /// `nsid`, after its slot generation read `before`: where it differs
    /// from what the slot holds, the slot moves on and holds it (or, if
    /// the slot moved since `before`, an unknown geometry).
    pub(crate) fn revalidated(&self, nsid: u32, before: u32, geometry: Geometry) {
        let mut table = self.table.lock();
        if let Some(i) = table.iter().position(|e| e.0 == nsid).filter(|&i| table[i].1 != geometry) {
            // Moved on since `before`: another observation came in, and
            // which is newer is not known, so neither is believed.
            let fresh = self.generations[i].load(Ordering::Acquire) == before;
            table[i].1 = if fresh { geometry } else { Geometry::UNKNOWN };
            self.generations[i].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Handles without a slot go stale (nothing tells whether they changed).
    pub(crate) fn untracked_changed(&self) {
        if self.any_untracked.load(Ordering::Acquire) {
            self.untracked.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Namespace `nsid` changed (through this driver): its handles go stale.
    pub(crate) fn changed(&self, nsid: u32) {
        let table = self.table.lock();
        match table.iter().position(|e| e.0 == nsid) {
            Some(i) => {
                self.generations[i].fetch_add(1, Ordering::AcqRel);
            }
            None => self.untracked_changed(),
        }
    }
}

impl Namespace {
    /// Builds the handle from identify data, refusing data that cannot be right.
    pub(crate) fn from_identify(
        nsid: u32,
        id: &IdentifyNamespace,
        nvm: Option<&crate::spec::identify::IdentifyNamespaceNvm>,
        csi: Csi,
        max_transfer: Option<usize>,
        binding: Binding,
    ) -> Result<Self> {
        if id.nsze == 0 {
            return Err(Error::InvalidArgument(Argument::InactiveNamespace));
        }
        let format = id.current_lba_format().ok_or(Error::MalformedDevice(Malformed::LbaFormatIndex))?;
        let block_size = format.data_size().ok_or(Error::MalformedDevice(Malformed::LbaDataSize))?;
        // The format's protection information: a 16-bit guard unless the
        // NVM command set's Identify Namespace says otherwise (PIF 1, a
        // 32-bit guard, and storage tags are formats the driver does not
        // handle: `None`).
        let index = usize::from(id.format_index());
        let pi_format = match nvm.map(|n| (n.pif(index), n.sts(index))) {
            None | Some((Some(0), Some(0))) => Some(PiFormat::Guard16),
            Some((Some(2), Some(0))) => Some(PiFormat::Guard64),
            Some(_) => None,
        };
        let tuple = pi_format.map_or(0, PiFormat::tuple_size);
        if id.dps.pit() > 3 || (id.dps.pit() != 0 && usize::from(format.ms()) < tuple) {
            return Err(Error::MalformedDevice(Malformed::ProtectionInformation));
        }
        Ok(Namespace {
            nsid,
            block_size,
            blocks: id.nsze,
            metadata_size: format.ms(),
            extended_lba: id.flbas.extended(),
            pi_type: id.dps.pit(),
            pi_first: id.dps.first(),
            pi_format: if id.dps.pit() == 0 { None } else { pi_format },
            zones: None,
            csi,
            max_transfer,
            copy: CopyLimits {
                max_ranges: u16::from(id.msrc) + 1,
                max_range_blocks: id.mssrl,
                max_blocks: id.mcl,
            },
            rescap: id.rescap,
            noiob: id.noiob,
            binding,
        })
    }

    /// NSID: the namespace identifier.
    pub fn id(&self) -> u32 {
        self.nsid
    }

    /// Bytes of data per logical block (without metadata).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// NSZE: the size in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size as u64)
    }

    /// Metadata bytes per logical block (0 for none).
    pub fn metadata_size(&self) -> u16 {
        self.metadata_size
    }

    /// True when metadata is transferred inline with the data (FLBAS bit 4).
    pub fn extended_lba(&self) -> bool {
        self.extended_lba
    }

    /// The protection information type (DPS bits 2:0; 0 = none).
    pub fn pi_type(&self) -> u8 {
        self.pi_type
    }

    /// The I/O Command Set the namespace belongs to (CSI: 0 NVM, 2 zoned).
    pub fn csi(&self) -> Csi {
        self.csi
    }

    /// The controller's transfer limit (MDTS) in bytes; `None` when unlimited.
    pub fn max_transfer_bytes(&self) -> Option<usize> {
        self.max_transfer
    }

    /// log2 of the block size, for a namespace whose reads and writes are
    /// plain: data only (no metadata, so no protection information), the NVM
    /// command set, no optimal I/O boundary to cut at. The submission path
    /// takes a shortcut for those; `None` sends a request the long way.
    #[inline]
    pub(crate) fn plain_shift(&self) -> Option<u32> {
        let plain = self.metadata_size == 0 && self.csi == Csi::NVM && self.noiob == 0;
        plain.then_some(self.block_size.trailing_zeros())
    }

    /// NOIOB: the Namespace Optimal I/O Boundary in blocks (0: none). Reads
    /// and writes that would cross a multiple of it are split there.
    pub fn optimal_io_boundary(&self) -> u16 {
        self.noiob
    }

    /// RESCAP (Identify Namespace byte 31): the reservation types offered
    /// (bits 1 to 6, see
    /// [`ReservationType::offered_by`](crate::ReservationType::offered_by)),
    /// Persist Through Power Loss (bit 0), and IEKEY's meaning (bit 7).
    pub fn reservation_capabilities(&self) -> u8 {
        self.rescap
    }

    /// What one Copy command may carry here.
    pub fn copy_limits(&self) -> CopyLimits {
        self.copy
    }

    /// The protection information format, where the namespace has
    /// protection information in one the driver handles (`None` without
    /// protection information, or with a 32-bit guard or storage tags).
    pub fn pi_format(&self) -> Option<PiFormat> {
        self.pi_format
    }

    /// PIP (DPS bit 3): the protection information is the first bytes of
    /// each block's metadata; otherwise the last.
    pub fn pi_first(&self) -> bool {
        self.pi_first
    }

    /// The bytes a read, write or compare of `blocks` blocks needs in its
    /// buffer: the data; on an extended-LBA namespace with the metadata of
    /// each block after its data; on one with separate metadata, all the
    /// metadata after all the data (the driver points MPTR there). With
    /// `pract` (the controller inserts or strips protection information)
    /// on a namespace whose metadata is that information alone (8 bytes),
    /// no metadata moves.
    pub fn buffer_bytes(&self, blocks: u32, pract: bool) -> usize {
        let layout = self.layout(blocks, pract);
        layout.data + layout.metadata
    }

    /// Where a transfer of `blocks` blocks lies in its buffer.
    pub(crate) fn layout(&self, blocks: u32, pract: bool) -> Layout {
        // Saturating: a 32-bit target cannot hold 65536 blocks of 64 KiB,
        // and a buffer of usize::MAX bytes is refused as too small.
        let blocks = blocks as usize;
        let data = blocks.saturating_mul(self.block_size as usize);
        let ms = usize::from(self.metadata_size);
        let tuple = self.pi_format.map_or(crate::spec::pi::PiTuple::SIZE, PiFormat::tuple_size);
        let pi_only = pract && self.pi_type != 0 && ms == tuple;
        let metadata = if pi_only { 0 } else { blocks.saturating_mul(ms) };
        if self.extended_lba {
            Layout { data: data.saturating_add(metadata), metadata: 0 }
        } else {
            Layout { data, metadata }
        }
    }

    /// The handle with the zone geometry `zones`.
    pub(crate) fn with_zones(mut self, zones: Option<ZoneGeometry>) -> Self {
        self.zones = zones;
        self
    }

    /// A zoned namespace's zones (`None` for a namespace of the NVM command
    /// set).
    pub fn zones(&self) -> Option<ZoneGeometry> {
        self.zones
    }

    /// Why read and write cannot be used on this namespace, if they
    /// cannot: a namespace of another command set (unknown, or zoned on a
    /// controller that does not give it the zoned command set).
    pub fn unsupported_reason(&self) -> Option<Feature> {
        if self.csi == Csi::ZONED {
            self.zones.is_none().then_some(Feature::ZonedNamespace)
        } else if self.csi != Csi::NVM {
            Some(Feature::OtherCommandSet)
        } else {
            None
        }
    }

    /// The controller (and format generation) the handle belongs to.
    pub(crate) fn binding(&self) -> Binding {
        self.binding
    }

    /// Checks a block range of any length (reads and writes split what one
    /// command cannot carry).
    pub(crate) fn check_span(&self, lba: u64, blocks: u32) -> Result {
        if blocks == 0 {
            return Err(Error::InvalidArgument(Argument::ZeroLength));
        }
        match lba.checked_add(u64::from(blocks)) {
            Some(end) if end <= self.blocks => Ok(()),
            _ => Err(Error::LbaOutOfRange),
        }
    }

    /// Checks a block range and returns its length in bytes.
    pub(crate) fn check_range(&self, lba: u64, blocks: u32) -> Result<usize> {
        if blocks == 0 {
            return Err(Error::InvalidArgument(Argument::ZeroLength));
        }
        if blocks > 0x1_0000 {
            return Err(Error::InvalidArgument(Argument::TooManyBlocks));
        }
        let end = lba.checked_add(blocks as u64).ok_or(Error::LbaOutOfRange)?;
        if end > self.blocks {
            return Err(Error::LbaOutOfRange);
        }
        Ok(blocks as usize * self.block_size as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(nsze: u64) -> Geometry {
        Geometry { nsze, ..Geometry::default() }
    }

    #[test]
    fn the_newer_observation_wins() {
        let t = Tracker::new();
        let before = t.before(5);
        assert_eq!(before, (0, 0), "a slot, with an unknown geometry");
        let (slot, g) = t.bind(5, geometry(10), before);
        assert_eq!((slot, g), (0, 1));
        assert!(t.is_current(0, 1));
        // A handle's Identify saw 10 blocks; meanwhile a revalidation saw 20
        // and stored it: the handle is born stale, and since the two
        // disagree, neither is believed.
        let before = t.before(5);
        t.revalidated(5, before.1, geometry(20));
        assert!(!t.is_current(0, 1), "the 10-block handles are retired");
        let (slot, g) = t.bind(5, geometry(10), before);
        assert!(!t.is_current(slot, g));
        // The next look believes what it sees.
        let (slot, g) = t.bind(5, geometry(20), t.before(5));
        assert!(t.is_current(slot, g));
        // A revalidation that saw the same stores nothing.
        t.revalidated(5, g, geometry(20));
        assert!(t.is_current(slot, g));
        // One whose Identify started before a later change moved the slot
        // on, and disagrees: retires everything again.
        t.revalidated(5, g.wrapping_sub(1), geometry(30));
        assert!(!t.is_current(slot, g));
        // A fresh handle seeing a new geometry retires the older ones.
        let (_, old) = t.bind(5, geometry(30), t.before(5));
        let (_, fresh) = t.bind(5, geometry(40), t.before(5));
        assert!(!t.is_current(0, old) && t.is_current(0, fresh));
        t.changed(5);
        assert!(!t.is_current(0, fresh));
    }

    #[test]
    fn a_look_that_finds_nothing_gives_its_slot_back() {
        let t = Tracker::new();
        for nsid in 100..200 {
            let before = t.before(nsid);
            t.release(nsid, before);
        }
        assert_eq!(t.snapshot().len(), 0, "probing leaves nothing followed");
        let before = t.before(1);
        let (slot, g) = t.bind(1, geometry(8), before);
        assert_eq!(slot, 0, "the first slot, reused");
        assert!(t.is_current(slot, g));
        // A bound slot is not given up by a later failed look.
        t.release(1, t.before(1));
        assert!(t.is_current(slot, g));
        // A look whose slot was given up meanwhile (by a concurrent failed
        // look at the same namespace) is born stale.
        let before = t.before(2);
        t.release(2, before);
        let (slot, g) = t.bind(2, geometry(8), before);
        assert!(!t.is_current(slot, g));
    }

    #[test]
    fn a_revalidation_between_the_first_look_and_the_bind_counts() {
        let t = Tracker::new();
        // The namespace is not followed yet when its Identify starts; a
        // revalidation runs before the handle is bound.
        let before = t.before(7);
        t.revalidated(7, t.generations[0].load(Ordering::Acquire), geometry(2));
        let (slot, g) = t.bind(7, geometry(1), before);
        assert!(!t.is_current(slot, g), "born stale");
    }

    #[test]
    fn beyond_the_table_one_generation_is_shared() {
        let t = Tracker::new();
        for nsid in 1..=TRACKED_NAMESPACES as u32 {
            assert_ne!(t.bind(nsid, geometry(1), t.before(nsid)).0, Tracker::UNTRACKED);
        }
        t.untracked_changed();
        assert!(t.is_current(Tracker::UNTRACKED, 0), "no untracked handle yet: nothing moves");
        let nsid = TRACKED_NAMESPACES as u32 + 1;
        let before = t.before(nsid);
        let late = t.bind(nsid, geometry(1), before);
        assert_eq!(late, (Tracker::UNTRACKED, 0));
        t.changed(1);
        assert!(t.is_current(late.0, late.1), "another namespace's change");
        t.untracked_changed();
        assert!(!t.is_current(late.0, late.1));
    }

    #[test]
    fn csi_descriptor_is_found_among_others() {
        let mut list = [0u8; 64];
        // EUI64 descriptor, then a CSI descriptor saying "zoned".
        list[0] = Nidt::EUI64.0;
        list[1] = 8;
        list[12] = Nidt::CSI.0;
        list[13] = 1;
        list[16] = Csi::ZONED.0;
        assert_eq!(csi_from_descriptors(&list), Some(Csi::ZONED));
        assert_eq!(csi_from_descriptors(&[0u8; 64]), None);
    }

    #[test]
    fn malformed_descriptors_do_not_panic() {
        // A length running past the end, at the end of the page.
        let mut list = [0u8; 16];
        list[0] = Nidt::NGUID.0;
        list[1] = 200;
        assert_eq!(csi_from_descriptors(&list), None);
        for len in 0..8 {
            let mut l = [0xffu8; 8];
            l[1] = len;
            let _ = csi_from_descriptors(&l);
        }
    }
}
