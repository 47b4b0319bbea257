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
}

impl<'a> ZoneReport<'a> {
    /// Decodes `data`; [`Error::BufferTooSmall`] under the 64-byte header.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        let (header, rest) = ZoneReportHeader::read_from_prefix(data)
            .map_err(|_| Error::BufferTooSmall { needed: 64, actual: data.len() })?;
        Ok(ZoneReport { zones: header.zones, descriptors: rest })
    }

    /// The number of zones the header reports.
    pub fn zone_count(&self) -> u64 {
        self.zones
    }

    /// The zone descriptors the buffer holds, at most the header's count.
    pub fn zones(&self) -> impl Iterator<Item = ZoneDescriptor> + 'a {
        let count = usize::try_from(self.zones).unwrap_or(usize::MAX);
        self.descriptors
            .chunks_exact(ZoneDescriptor::SIZE)
            .take(count)
            .filter_map(|b| ZoneDescriptor::read_from_bytes(b).ok())
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
}
