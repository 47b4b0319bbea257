//! A zone report, decoded ([`ZoneReport`]): what Zone Management Receive
//! wrote into the caller's buffer (Zoned Namespace Command Set 1.1 figures
//! 36 and 37). Device data: the count is not trusted beyond the bytes
//! present.

use crate::error::{Error, Result};
use crate::spec::zns::ZoneReportHeader;
pub use crate::spec::zns::{ZoneDescriptor, ZoneSendAction, ZoneState};
use zerocopy::FromBytes;

/// A zone report.
#[derive(Clone, Copy, Debug)]
pub struct ZoneReport<'a> {
    zones: u64,
    descriptors: &'a [u8],
    /// Bytes of descriptor extension after each descriptor (an extended
    /// report), 0 in a plain one.
    extension: usize,
}

impl<'a> ZoneReport<'a> {
    /// Decodes `data`, a report of Report Zones; [`Error::BufferTooSmall`]
    /// under the 64-byte header.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        Self::parse_extended(data, 0)
    }

    /// Decodes `data`, a report of Extended Report Zones (figure 40), in
    /// which each descriptor is followed by `extension_bytes` of its
    /// descriptor extension (the namespace's
    /// [`descriptor_extension_bytes`](crate::ZoneGeometry::descriptor_extension_bytes)).
    pub fn parse_extended(data: &'a [u8], extension_bytes: usize) -> Result<Self> {
        let (header, rest) = ZoneReportHeader::read_from_prefix(data)
            .map_err(|_| Error::BufferTooSmall { needed: 64, actual: data.len() })?;
        Ok(ZoneReport { zones: header.zones, descriptors: rest, extension: extension_bytes })
    }

    /// The number of zones the header reports.
    pub fn zone_count(&self) -> u64 {
        self.zones
    }

    /// The zone descriptors the buffer holds, at most the header's count.
    pub fn zones(&self) -> impl Iterator<Item = ZoneDescriptor> + 'a {
        self.zones_with_extensions().map(|(d, _)| d)
    }

    /// The zone descriptors the buffer holds whole, at most the header's
    /// count, each with its descriptor extension (empty in a plain report).
    pub fn zones_with_extensions(&self) -> impl Iterator<Item = (ZoneDescriptor, &'a [u8])> + 'a {
        let count = usize::try_from(self.zones).unwrap_or(usize::MAX);
        let stride = ZoneDescriptor::SIZE.saturating_add(self.extension);
        self.descriptors.chunks_exact(stride).take(count).filter_map(|b| {
            let (d, extension) = b.split_at(ZoneDescriptor::SIZE);
            ZoneDescriptor::read_from_bytes(d).ok().map(|d| (d, extension))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_decode_and_never_read_past_the_buffer() {
        let mut data = vec![0u8; 64 + 2 * 64];
        data[0] = 5; // the header claims five zones
        data[64] = 2;
        data[65] = 0x10;
        data[64 + 16..64 + 24].copy_from_slice(&0u64.to_le_bytes());
        data[128 + 1] = 0xe0;
        data[128 + 16..128 + 24].copy_from_slice(&64u64.to_le_bytes());
        let r = ZoneReport::parse(&data).unwrap();
        assert_eq!(r.zone_count(), 5);
        let zones: Vec<ZoneDescriptor> = r.zones().collect();
        assert_eq!(zones.len(), 2, "only what the buffer holds");
        assert_eq!(
            (zones[0].state(), zones[1].state(), zones[1].zslba),
            (ZoneState::EMPTY, ZoneState::FULL, 64)
        );
        assert!(ZoneReport::parse(&data[..40]).is_err());
        data[0] = 1;
        assert_eq!(ZoneReport::parse(&data).unwrap().zones().count(), 1, "at most the count");
    }

    #[test]
    fn extended_reports_pair_each_descriptor_with_its_extension() {
        // Two zones with 64-byte extensions, the second cut short.
        let mut data = vec![0u8; 64 + 128 + 100];
        data[0] = 2;
        data[64 + 1] = 0x40; // closed
        data[64 + 2] = 0x80; // ZDEV
        data[64 + 64..64 + 128].fill(0xab);
        data[192 + 16..192 + 24].copy_from_slice(&32u64.to_le_bytes());
        let r = ZoneReport::parse_extended(&data, 64).unwrap();
        let zones: Vec<_> = r.zones_with_extensions().collect();
        assert_eq!(zones.len(), 1, "a descriptor without its whole extension is not read");
        let (d, ext) = zones[0];
        assert!(d.extension_valid() && d.state() == ZoneState::CLOSED);
        assert!(ext.len() == 64 && ext.iter().all(|&b| b == 0xab));
        data.resize(64 + 256, 0);
        let r = ZoneReport::parse_extended(&data, 64).unwrap();
        assert_eq!(r.zones().map(|d| d.zslba).collect::<Vec<_>>(), vec![0, 32]);
        // Read as a plain report, the same bytes are four descriptors' worth.
        assert_eq!(ZoneReport::parse(&data).unwrap().zones().count(), 2, "at most the count");
    }
}
