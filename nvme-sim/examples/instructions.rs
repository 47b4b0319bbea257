//! The workload behind the instructions-per-I/O count of `cargo xtask bench`
//! (run under `valgrind --tool=callgrind`, which counts; this program only
//! does the I/O): reads through the driver's public API against the
//! simulated controller with zero command latency, each completed buffer
//! resubmitted from the poll callback, as an application would.
//!
//! `instructions <bytes> <depth> <ios> [registered | handle] [lean]`: `ios`
//! reads of `bytes` (4096: PRP1 only; 131072: a PRP list) at queue depth
//! `depth`, into the driver's own DMA memory (`DmaBuffer`, translated per
//! request, never shared; with `registered`, translated once by
//! `Controller::register`; with `handle`, the same memory named by a
//! 16-byte handle, which is what the driver moves in and out instead of the
//! `DmaBuffer`). `lean`: no I/O timeout and no retries (default options
//! otherwise). xtask runs it twice
//! with different `ios` and divides the difference, so that setup cancels
//! out; the simulator's share is what callgrind counts inside its `Hal`
//! methods.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use hal_traits::{Direction, DmaRegion, Hal, HalError, MemoryBar, SegmentSink};
use nvme_nostd::{Controller, ControllerOptions, DmaBuffer, IoBuffer, IoQueuePair, PollLimit, QpairOptions};
use nvme_sim::{Mapping, Sim, SimConfig, SimHal, SimNamespace};

/// The simulator's HAL behind one door: every call into the simulator goes
/// through a method of this impl that is never inlined, so that callgrind's
/// inclusive cost of these methods is the simulator's share, and the rest is
/// the driver's (and this program's few instructions per I/O). The barriers
/// stay inline: on hardware they are the driver's cost.
struct SimEntry(SimHal, AtomicUsize);

// SAFETY: every call is forwarded unchanged to the simulator's HAL.
unsafe impl Hal for SimEntry {
    type Mapping = Mapping;
    const DMA_ALIGNMENT: usize = SimHal::DMA_ALIGNMENT;

    #[inline(never)]
    fn read32(&self, offset: usize) -> u32 {
        self.0.read32(offset)
    }
    #[inline(never)]
    unsafe fn write32(&self, offset: usize, value: u32) {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.write32(offset, value) }
    }
    #[inline(never)]
    fn read64(&self, offset: usize) -> u64 {
        self.0.read64(offset)
    }
    #[inline(never)]
    unsafe fn write64(&self, offset: usize, value: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.write64(offset, value) }
    }
    #[inline(never)]
    fn memory_bar(&self, index: u8) -> Option<MemoryBar> {
        self.0.memory_bar(index)
    }
    #[inline(never)]
    fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, HalError> {
        let region = self.0.dma_alloc(pages)?;
        self.1.fetch_add(region.pages, Ordering::Relaxed);
        Ok(region)
    }
    #[inline(never)]
    unsafe fn dma_free(&self, region: DmaRegion) {
        self.1.fetch_sub(region.pages, Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        unsafe { self.0.dma_free(region) }
    }
    #[inline(never)]
    fn translate(&self, buffer: NonNull<[u8]>, sink: &mut dyn SegmentSink) -> bool {
        self.0.translate(buffer, sink)
    }
    #[inline(never)]
    unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        direction: Direction,
        sink: &mut dyn SegmentSink,
    ) -> Result<Mapping, HalError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.share(buffer, direction, sink) }
    }
    #[inline(never)]
    unsafe fn unshare(&self, buffer: NonNull<[u8]>, direction: Direction, mapping: Mapping) {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.unshare(buffer, direction, mapping) }
    }
    #[inline(never)]
    unsafe fn sync_for_device(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.sync_for_device(buffer, direction) }
    }
    #[inline(never)]
    unsafe fn sync_for_cpu(&self, buffer: NonNull<[u8]>, direction: Direction) {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.sync_for_cpu(buffer, direction) }
    }
    fn barrier_before_doorbell(&self) {
        hal_traits::barrier::before_doorbell()
    }
    fn barrier_after_phase(&self) {
        hal_traits::barrier::after_phase()
    }
    #[inline(never)]
    fn ticks(&self) -> u64 {
        self.0.ticks()
    }
    #[inline(never)]
    fn ticks_per_second(&self) -> u64 {
        self.0.ticks_per_second()
    }
    #[inline(never)]
    fn now(&self) -> Duration {
        self.0.now()
    }
    #[inline(never)]
    fn delay(&self, duration: Duration) {
        self.0.delay(duration)
    }
}

/// A buffer named by 16 bytes: the bytes of a `DmaBuffer` that `main` keeps
/// and does not touch while the handle lives (one handle per buffer).
struct Handle(NonNull<[u8]>);

// SAFETY: the pointer and length never change; the bytes are a `DmaBuffer`'s
// pages, which do not move and are reached by nothing but this handle until
// it is dropped (the `DmaBuffer` is only kept alive meanwhile); moving a raw
// pointer asserts no uniqueness.
unsafe impl IoBuffer for Handle {
    fn as_dma_slice(&mut self) -> NonNull<[u8]> {
        self.0
    }
}

/// Request slots of the queue pair (the largest depth this program takes).
const SLOTS: usize = 128;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("memory") {
        memory::<256>();
        memory::<1024>();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "arguments: <bytes> <depth> <ios> [registered | handle] [lean]";
    let (counts, words) = args.split_at(args.len().min(3));
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (buffers, lean) = match words[..] {
        [] => ("plain", false),
        ["lean"] => ("plain", true),
        [b @ ("registered" | "handle")] => (b, false),
        [b @ ("registered" | "handle"), "lean"] => (b, true),
        _ => panic!("{usage}"),
    };
    let [bytes, depth, ios]: [usize; 3] = match counts {
        [b, d, i] => [b, d, i].map(|a| a.parse().expect(usage)),
        _ => panic!("{usage}"),
    };
    assert!((1..=SLOTS).contains(&depth), "depth 1 to {SLOTS}");
    let sim = Sim::new(SimConfig {
        latency: Duration::ZERO,
        now_tick: Duration::ZERO,
        namespaces: vec![SimNamespace { nsid: 1, block_size: 512, blocks: 1 << 16 }],
        memory_bytes: 64 << 20,
        ..SimConfig::default()
    });
    let mut options = ControllerOptions::default();
    if lean {
        options.io_timeout = None;
        options.retry_count = 0;
    }
    let ctrlr = Controller::new(SimEntry(sim.hal(), AtomicUsize::new(0)), options).expect("attach");
    let new_buffer = || DmaBuffer::new(ctrlr.hal(), bytes).expect("buffer");
    match buffers {
        // Translated once, here: the submissions take the kept address.
        "registered" => reads(&ctrlr, bytes, depth, ios, || {
            ctrlr.register(new_buffer()).map_err(|(e, _)| e).expect("register")
        }),
        "handle" => {
            // The buffers stay here, untouched, until every handle is gone
            // (the queue pair is dropped inside `reads`).
            let keep = std::cell::RefCell::new(Vec::new());
            reads(&ctrlr, bytes, depth, ios, || {
                let mut buffer = new_buffer();
                let handle = Handle(buffer.as_dma_slice());
                keep.borrow_mut().push(buffer);
                handle
            });
        }
        _ => reads(&ctrlr, bytes, depth, ios, new_buffer),
    }
    println!(
        "{ios} reads of {bytes} bytes at depth {depth}, {buffers} buffers{}",
        if lean { ", lean" } else { "" }
    );
}

/// `ios` reads of `bytes` at queue depth `depth` into buffers `new_buffer`
/// makes, each completed buffer resubmitted from the poll callback.
fn reads<B: IoBuffer>(
    ctrlr: &Controller<SimEntry>,
    bytes: usize,
    depth: usize,
    ios: usize,
    new_buffer: impl Fn() -> B,
) {
    let ns = ctrlr.namespace(1).expect("namespace 1");
    let blocks = (bytes / ns.block_size() as usize) as u32;
    let span = ns.blocks() / u64::from(blocks);
    let mut qp = ctrlr.create_io_qpair::<B, u64, SLOTS>(QpairOptions::default()).expect("create_io_qpair");
    // A fixed walk over the namespace (a multiplicative step, so the LBAs
    // are neither sequential nor random: the same on every run).
    let mut next = 0u64;
    let mut lba = move || {
        next = (next + 7919) % span;
        next * u64::from(blocks)
    };
    let mut submitted = 0usize;
    for _ in 0..depth.min(ios) {
        qp.read(&ns, lba(), blocks, new_buffer(), 0).map_err(|e| e.error).expect("read");
        submitted += 1;
    }
    let mut completed = 0usize;
    while completed < ios {
        qp.poll(PollLimit::All, |resubmit, done| {
            completed += 1;
            assert!(done.status.is_success(), "read failed: {:?}", done.status);
            let buf = done.buffer.expect("the read's buffer");
            if submitted < ios {
                submitted += 1;
                resubmit.read(&ns, lba(), blocks, buf, 0).map_err(|e| e.error).expect("read");
            }
        });
    }
    assert_eq!(qp.in_flight(), 0);
}

/// Prints a queue pair's memory with `N` slots and as many entries: its
/// driver state per request slot, the whole pair (`size_of`, the caller's
/// `DmaBuffer` and `u64` context in every slot included), and the DMA memory
/// it allocates (rings and PRP list pages, with QEMU's and this simulator's
/// transfer limit of 256 KiB).
fn memory<const N: usize>() {
    let sim = Sim::new(SimConfig { memory_bytes: 64 << 20, ..SimConfig::default() });
    let ctrlr = Controller::new(SimEntry(sim.hal(), AtomicUsize::new(0)), ControllerOptions::default())
        .expect("attach");
    let before = ctrlr.hal().1.load(Ordering::Relaxed);
    let entries = u16::try_from(N).expect("at most 65535 entries");
    let options = QpairOptions::default().with_entries(entries);
    let qp = ctrlr.create_io_qpair::<DmaBuffer<SimEntry>, u64, N>(options).expect("create_io_qpair");
    let pages = ctrlr.hal().1.load(Ordering::Relaxed) - before;
    println!(
        "memory entries={} request_state={} pair={} dma={} max_transfer={}",
        qp.entries(),
        IoQueuePair::<SimEntry, DmaBuffer<'_, SimEntry>, u64, N>::REQUEST_STATE_BYTES,
        core::mem::size_of::<IoQueuePair<'_, SimEntry, DmaBuffer<'_, SimEntry>, u64, N>>(),
        pages * hal_traits::PAGE_SIZE,
        qp.max_transfer_bytes(),
    );
}
