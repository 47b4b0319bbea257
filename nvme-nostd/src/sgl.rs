//! Scatter Gather Lists (NVMe Base Specification 1.4, section 4.4): what
//! describes a transfer that PRPs cannot, a scatter list whose pieces do not
//! start and end on page boundaries, where the controller supports SGLs
//! (Identify Controller SGLS).
//!
//! The first descriptor lies in the command's DPTR. A transfer of one
//! contiguous run is a single Data Block descriptor there; otherwise DPTR
//! holds a Segment or Last Segment descriptor naming a list of Data Block
//! descriptors in the request slot's list pages: 255 per page, the 256th a
//! Segment (or, for the last page, Last Segment) descriptor naming the next.

use crate::error::{Error, PrpShape, Result};
use crate::prp::{Prp, PrpListSink};
use crate::spec::command::SglDescriptor;
use hal_traits::{DeviceSegment, SegmentSink, PAGE_SIZE};

/// Descriptors in one list page.
const PER_PAGE: usize = PAGE_SIZE / SglDescriptor::SIZE;
/// Data Block descriptors in one list page (the last slot chains).
const DATA_PER_PAGE: usize = PER_PAGE - 1;

/// Builds the SGL of one transfer from the device segments a HAL reports,
/// merging runs that are contiguous in device space, writing Data Block
/// descriptors into `list`; checks as they arrive that the segments cover
/// the transfer exactly and (with `dword_granular`, SGLS 10b) that every
/// run starts and ends on a dword.
pub struct SglBuilder<'a, S: PrpListSink> {
    list: &'a mut S,
    len: usize,
    seen: usize,
    dword_granular: bool,
    /// The run being extended: address and length.
    current: Option<(u64, u64)>,
    /// Data Block descriptors written to the list so far.
    written: usize,
    /// The first run, for a transfer that turns out to be one.
    first: Option<(u64, u64)>,
    error: Option<PrpShape>,
}

impl<'a, S: PrpListSink> SglBuilder<'a, S> {
    /// A builder for `len` bytes, descriptors in `list`.
    pub fn new(list: &'a mut S, len: usize, dword_granular: bool) -> Self {
        SglBuilder { list, len, seen: 0, dword_granular, current: None, written: 0, first: None, error: None }
    }

    fn fail(&mut self, why: PrpShape) {
        self.error.get_or_insert(why);
    }

    /// Writes the run `(address, length)` as the next Data Block descriptor.
    fn flush(&mut self, (address, length): (u64, u64)) {
        if self.first.is_none() {
            self.first = Some((address, length));
        }
        let (page, slot) = (self.written / DATA_PER_PAGE, self.written % DATA_PER_PAGE);
        if page >= self.list.pages() {
            // Counted all the same: one run needs no list at all.
            self.written += 1;
            return;
        }
        let d = SglDescriptor::new(SglDescriptor::DATA_BLOCK, address, length as u32).to_qwords();
        self.list.write(page, slot * 2, d[0]);
        self.list.write(page, slot * 2 + 1, d[1]);
        self.written += 1;
    }

    /// DPTR, or why the segments cannot be described.
    pub fn finish(self) -> Result<Prp> {
        self.finish_counted().0
    }

    /// As [`finish`](Self::finish), and how many Data Block descriptors the
    /// transfer took (written into the list when more than one: 255 a
    /// page, the last slot of every page but the last chaining on).
    pub(crate) fn finish_counted(mut self) -> (Result<Prp>, usize) {
        if let Some(run) = self.current.take() {
            self.flush(run);
        }
        let written = self.written;
        (self.describe(), written)
    }

    fn describe(self) -> Result<Prp> {
        if let Some(why) = self.error {
            return Err(Error::NotPrpShaped(why));
        }
        if self.seen != self.len || self.written == 0 {
            return Err(Error::NotPrpShaped(PrpShape::LengthMismatch));
        }
        if self.written == 1 {
            let (address, length) = self.first.unwrap_or_default();
            let d = SglDescriptor::new(SglDescriptor::DATA_BLOCK, address, length as u32).to_qwords();
            return Ok(Prp { prp1: d[0], prp2: d[1] });
        }
        let pages = self.written.div_ceil(DATA_PER_PAGE);
        if pages > self.list.pages() {
            return Err(Error::NotPrpShaped(PrpShape::TooManyDescriptors));
        }
        // Descriptors (data and chain) in page `p`.
        let in_page = |p: usize| {
            if p + 1 < pages {
                PER_PAGE
            } else {
                self.written - p * DATA_PER_PAGE
            }
        };
        let kind =
            |p: usize| if p + 1 < pages { SglDescriptor::SEGMENT } else { SglDescriptor::LAST_SEGMENT };
        for p in 0..pages - 1 {
            let length = (in_page(p + 1) * SglDescriptor::SIZE) as u32;
            let chain = SglDescriptor::new(kind(p + 1), self.list.page_addr(p + 1), length).to_qwords();
            self.list.write(p, DATA_PER_PAGE * 2, chain[0]);
            self.list.write(p, DATA_PER_PAGE * 2 + 1, chain[1]);
        }
        let length = (in_page(0) * SglDescriptor::SIZE) as u32;
        let d = SglDescriptor::new(kind(0), self.list.page_addr(0), length).to_qwords();
        Ok(Prp { prp1: d[0], prp2: d[1] })
    }
}

/// The longest run one Data Block descriptor names: its length is 32
/// bits (whole pages, so a longer segment is cut on a page boundary).
const MAX_RUN: u64 = (u32::MAX as u64) & !(PAGE_SIZE as u64 - 1);

impl<S: PrpListSink> SegmentSink for SglBuilder<'_, S> {
    fn push(&mut self, segment: DeviceSegment) {
        // A segment longer than one descriptor names goes as several.
        let mut segment = segment;
        while segment.len as u64 > MAX_RUN {
            self.push_run(DeviceSegment { addr: segment.addr, len: MAX_RUN as usize });
            segment =
                DeviceSegment { addr: segment.addr.offset(MAX_RUN), len: segment.len - MAX_RUN as usize };
        }
        self.push_run(segment);
    }
}

impl<S: PrpListSink> SglBuilder<'_, S> {
    /// One segment of at most [`MAX_RUN`] bytes.
    fn push_run(&mut self, segment: DeviceSegment) {
        if self.error.is_some() || segment.len == 0 {
            return;
        }
        let (addr, len) = (segment.addr.0, segment.len as u64);
        let fits = self.seen.checked_add(segment.len).is_some_and(|seen| seen <= self.len);
        if !fits || addr.checked_add(len).is_none() {
            return self.fail(PrpShape::LengthMismatch);
        }
        if self.dword_granular && !(addr.is_multiple_of(4) && len.is_multiple_of(4)) {
            return self.fail(PrpShape::SglNotDwordGranular);
        }
        self.seen += segment.len;
        match self.current {
            // Contiguous in device space, and still within a descriptor's
            // 32-bit length: one run.
            Some((start, n)) if start + n == addr && n + len <= MAX_RUN => {
                self.current = Some((start, n + len));
            }
            previous => {
                if let Some(run) = previous {
                    self.flush(run);
                }
                self.current = Some((addr, len));
            }
        }
    }
}
