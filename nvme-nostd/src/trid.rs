//! Transport identifiers in SPDK's shape (`struct spdk_nvme_transport_id`),
//! for the one transport this driver has: PCIe. Parsed from and printed as
//! `trtype:PCIe traddr:0000:04:00.0` (with SPDK's other keys, `adrfam`,
//! `trsvcid` and `subnqn`, where given), and totally ordered as SPDK orders
//! them (transport, address family, address, service identifier, subsystem
//! NQN), so a program can name, sort and compare the controllers it drives.

use core::fmt;
use core::str::FromStr;
pub use pci_types::PciAddress;

/// The transport a controller is reached through (`trtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TransportType {
    /// PCI Express: a controller that is a PCI function of this machine.
    Pcie,
}

impl TransportType {
    /// The name SPDK gives it (`PCIe`).
    pub const fn name(self) -> &'static str {
        match self {
            TransportType::Pcie => "PCIe",
        }
    }

    /// The transport named `name` (in any case) if this driver has it:
    /// SPDK's "is this transport available" (`PCIe` yes; `RDMA`, `TCP`,
    /// `FC` and the rest no).
    pub fn from_name(name: &str) -> Option<TransportType> {
        name.eq_ignore_ascii_case("pcie").then_some(TransportType::Pcie)
    }
}

/// The address family (`adrfam`): a fabrics notion, kept for PCIe as SPDK
/// keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// InfiniBand.
    Ib,
    /// Fibre Channel.
    Fc,
    /// Within the host.
    IntraHost,
}

impl AddressFamily {
    const ALL: [AddressFamily; 5] = [
        AddressFamily::Ipv4,
        AddressFamily::Ipv6,
        AddressFamily::Ib,
        AddressFamily::Fc,
        AddressFamily::IntraHost,
    ];

    /// The name SPDK gives it (`IPv4`, `IPv6`, `IB`, `FC`, `INTRA_HOST`).
    pub const fn name(self) -> &'static str {
        match self {
            AddressFamily::Ipv4 => "IPv4",
            AddressFamily::Ipv6 => "IPv6",
            AddressFamily::Ib => "IB",
            AddressFamily::Fc => "FC",
            AddressFamily::IntraHost => "INTRA_HOST",
        }
    }

    /// The family named `name`, in any case.
    pub fn from_name(name: &str) -> Option<AddressFamily> {
        Self::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

/// A text value of a transport identifier (`trsvcid`, `subnqn`): 1 to `N`
/// printable ASCII bytes, kept as given. `FOLD` makes equality and order
/// ignore ASCII case (service identifiers, as SPDK compares them); NQNs
/// are compared exactly.
#[derive(Clone, Copy)]
pub struct TridText<const N: usize, const FOLD: bool> {
    bytes: [u8; N],
    len: u8,
}

/// `trsvcid`: up to 32 bytes, compared ignoring case.
pub type ServiceId = TridText<32, true>;
/// `subnqn`: up to 223 bytes (NVMe's NQN limit), compared exactly.
pub type SubsystemNqn = TridText<223, false>;

impl<const N: usize, const FOLD: bool> TridText<N, FOLD> {
    /// `text` if it is 1 to `N` printable ASCII bytes without whitespace.
    pub fn new(text: &str) -> Option<Self> {
        let ok = !text.is_empty() && text.len() <= N.min(255) && text.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return None;
        }
        let mut bytes = [0u8; N];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(TridText { bytes, len: text.len() as u8 })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Checked ASCII at construction.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    fn key(&self) -> impl Iterator<Item = u8> + '_ {
        self.as_str().bytes().map(|b| if FOLD { b.to_ascii_lowercase() } else { b })
    }
}

impl<const N: usize, const FOLD: bool> PartialEq for TridText<N, FOLD> {
    fn eq(&self, other: &Self) -> bool {
        self.key().eq(other.key())
    }
}

impl<const N: usize, const FOLD: bool> Eq for TridText<N, FOLD> {}

impl<const N: usize, const FOLD: bool> PartialOrd for TridText<N, FOLD> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize, const FOLD: bool> Ord for TridText<N, FOLD> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl<const N: usize, const FOLD: bool> fmt::Debug for TridText<N, FOLD> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize, const FOLD: bool> fmt::Display for TridText<N, FOLD> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a controller is: its transport and its address on that transport.
///
/// ```
/// use nvme_nostd::TransportId;
/// let trid: TransportId = "TrType:pcie   traddr:0000:04:00.0".parse().unwrap();
/// assert_eq!(trid.to_string(), "trtype:PCIe traddr:0000:04:00.0");
/// // The domain may be left out; hex digits in either case.
/// assert_eq!("trtype:PCIe traddr:04:00.0".parse(), Ok(trid));
/// // Ordered by transport, then segment, bus, device and function.
/// let later: TransportId = "trtype:PCIe traddr:0000:0A:00.0".parse().unwrap();
/// assert!(trid < later);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TransportId {
    /// The transport (`trtype`).
    pub trtype: TransportType,
    /// The address family (`adrfam`), if given.
    pub adrfam: Option<AddressFamily>,
    /// The PCI address (`traddr`): segment (domain), bus, device, function.
    pub traddr: PciAddress,
    /// The transport service identifier (`trsvcid`), if given.
    pub trsvcid: Option<ServiceId>,
    /// The subsystem NQN (`subnqn`), if given.
    pub subnqn: Option<SubsystemNqn>,
}

impl TransportId {
    /// The PCIe controller at `address`.
    pub const fn pcie(address: PciAddress) -> Self {
        TransportId {
            trtype: TransportType::Pcie,
            adrfam: None,
            traddr: address,
            trsvcid: None,
            subnqn: None,
        }
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trtype:{}", self.trtype.name())?;
        if let Some(adrfam) = self.adrfam {
            write!(f, " adrfam:{}", adrfam.name())?;
        }
        write!(f, " traddr:{}", self.traddr)?;
        if let Some(trsvcid) = &self.trsvcid {
            write!(f, " trsvcid:{trsvcid}")?;
        }
        if let Some(subnqn) = &self.subnqn {
            write!(f, " subnqn:{subnqn}")?;
        }
        Ok(())
    }
}

/// What is wrong with a transport identifier, naming the key at fault (up to
/// its first 16 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TridError {
    /// What is wrong.
    pub kind: TridErrorKind,
    /// The key it concerns (empty when the text has no key at all).
    pub key: heapless::String<16>,
}

/// The kinds of [`TridError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TridErrorKind {
    /// An entry without `:` (or `=`) between key and value.
    NoSeparator,
    /// A key this transport does not know.
    UnknownKey,
    /// A key given twice.
    Repeated,
    /// A value that is empty or malformed for its key.
    BadValue,
    /// A transport other than PCIe.
    UnsupportedTransport,
    /// `trtype` or `traddr` is missing.
    Missing,
}

impl TridErrorKind {
    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            TridErrorKind::NoSeparator => "entry is not key:value",
            TridErrorKind::UnknownKey => "unknown key",
            TridErrorKind::Repeated => "key given twice",
            TridErrorKind::BadValue => "malformed value",
            TridErrorKind::UnsupportedTransport => "transport other than PCIe",
            TridErrorKind::Missing => "missing key",
        }
    }
}

impl fmt::Display for TridError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transport identifier: {}: `{}`", self.kind.describe(), self.key)
    }
}

impl core::error::Error for TridError {}

fn error(kind: TridErrorKind, key: &str) -> TridError {
    let mut name = heapless::String::new();
    for c in key.chars() {
        if name.push(c).is_err() {
            break;
        }
    }
    TridError { kind, key: name }
}

impl FromStr for TransportId {
    type Err = TridError;

    /// Parses whitespace-separated `key:value` (or `key=value`) entries with
    /// case-insensitive keys, as SPDK does: `trtype` (`PCIe`, in any case)
    /// and `traddr` (`DDDD:BB:DD.F`, or `BB:DD.F` in domain 0, hex digits).
    fn from_str(text: &str) -> Result<Self, TridError> {
        let (mut trtype, mut traddr) = (None, None);
        let (mut adrfam, mut trsvcid, mut subnqn) = (None, None, None);
        /// Sets `slot` once, from `value` as `parse` reads it.
        fn once<T>(slot: &mut Option<T>, key: &str, parsed: Option<T>) -> Result<(), TridError> {
            if slot.is_some() {
                return Err(error(TridErrorKind::Repeated, key));
            }
            *slot = Some(parsed.ok_or_else(|| error(TridErrorKind::BadValue, key))?);
            Ok(())
        }
        for entry in text.split_ascii_whitespace() {
            let Some((key, value)) = entry.split_once([':', '=']) else {
                return Err(error(TridErrorKind::NoSeparator, entry));
            };
            if key.eq_ignore_ascii_case("trtype") {
                if trtype.is_some() {
                    return Err(error(TridErrorKind::Repeated, key));
                }
                if TransportType::from_name(value).is_none() {
                    let kind = if value.is_empty() {
                        TridErrorKind::BadValue
                    } else {
                        TridErrorKind::UnsupportedTransport
                    };
                    return Err(error(kind, key));
                }
                trtype = Some(TransportType::Pcie);
            } else if key.eq_ignore_ascii_case("traddr") {
                if traddr.is_some() {
                    return Err(error(TridErrorKind::Repeated, key));
                }
                traddr = Some(parse_pci_address(value).ok_or_else(|| error(TridErrorKind::BadValue, key))?);
            } else if key.eq_ignore_ascii_case("adrfam") {
                once(&mut adrfam, key, AddressFamily::from_name(value))?;
            } else if key.eq_ignore_ascii_case("trsvcid") {
                once(&mut trsvcid, key, ServiceId::new(value))?;
            } else if key.eq_ignore_ascii_case("subnqn") {
                once(&mut subnqn, key, SubsystemNqn::new(value))?;
            } else {
                return Err(error(TridErrorKind::UnknownKey, key));
            }
        }
        match (trtype, traddr) {
            (Some(trtype), Some(traddr)) => Ok(TransportId { trtype, adrfam, traddr, trsvcid, subnqn }),
            (None, _) => Err(error(TridErrorKind::Missing, "trtype")),
            (_, None) => Err(error(TridErrorKind::Missing, "traddr")),
        }
    }
}

/// `DDDD:BB:DD.F` or `BB:DD.F`: segment up to 4 hex digits, bus up to 2,
/// device up to 2 (at most 1Fh), function 1 (at most 7).
fn parse_pci_address(text: &str) -> Option<PciAddress> {
    let (rest, function) = text.rsplit_once('.')?;
    let mut parts = rest.rsplit(':');
    let device = hex(parts.next()?, 2)?;
    let bus = hex(parts.next()?, 2)?;
    let segment = match parts.next() {
        Some(s) => hex(s, 4)?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    let function = hex(function, 1)?;
    if device > 0x1f || function > 7 {
        return None;
    }
    Some(PciAddress::new(segment as u16, bus as u8, device as u8, function as u8))
}

/// 1 to `digits` hex digits.
fn hex(text: &str, digits: usize) -> Option<u32> {
    if text.is_empty() || text.len() > digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TransportId, TridError> {
        text.parse()
    }

    #[test]
    fn parse_print_round_trip() {
        let t = parse("trtype:PCIe traddr:0000:04:00.0").unwrap();
        assert_eq!(t.traddr, PciAddress::new(0, 4, 0, 0));
        for text in [
            "trtype:PCIe traddr:0000:04:00.0",
            "TRTYPE:pcie TRADDR:04:00.0",
            "  traddr=0000:04:00.0\ttrtype=PCIE  ",
            "trtype:PCIe traddr:0:4:0.0",
        ] {
            assert_eq!(parse(text), Ok(t), "{text}");
        }
        let far = parse("trtype:PCIe traddr:ABCD:ff:1F.7").unwrap();
        assert_eq!(far.traddr, PciAddress::new(0xabcd, 0xff, 0x1f, 7));
        let mut shown = heapless::String::<64>::new();
        core::fmt::write(&mut shown, format_args!("{far}")).unwrap();
        assert_eq!(shown.as_str(), "trtype:PCIe traddr:abcd:ff:1f.7");
        assert_eq!(parse(&shown), Ok(far));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: [(&str, TridErrorKind, &str); 11] = [
            ("", TridErrorKind::Missing, "trtype"),
            ("trtype:PCIe", TridErrorKind::Missing, "traddr"),
            ("traddr:00:01.0", TridErrorKind::Missing, "trtype"),
            ("trtype:RDMA traddr:00:01.0", TridErrorKind::UnsupportedTransport, "trtype"),
            ("trtype: traddr:00:01.0", TridErrorKind::BadValue, "trtype"),
            ("trtype:PCIe traddr:00:20.0", TridErrorKind::BadValue, "traddr"),
            ("trtype:PCIe traddr:00:01.8", TridErrorKind::BadValue, "traddr"),
            ("trtype:PCIe traddr:1:00:01:0.0", TridErrorKind::BadValue, "traddr"),
            ("trtype:PCIe traddr:00:01.0 hostnqn:x", TridErrorKind::UnknownKey, "hostnqn"),
            ("trtype:PCIe trtype:PCIe traddr:00:01.0", TridErrorKind::Repeated, "trtype"),
            ("trtype:PCIe traddr", TridErrorKind::NoSeparator, "traddr"),
        ];
        for (text, kind, key) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!((e.kind, e.key.as_str()), (kind, key), "{text}");
        }
        for bad in ["00:01.0g", "00:001.0", "00000:00:01.0", "00:01.", ":01.0", "00:01"] {
            let text = heapless::String::<64>::try_from("trtype:PCIe traddr:").unwrap();
            let mut text = text;
            text.push_str(bad).unwrap();
            assert_eq!(parse(&text).unwrap_err().kind, TridErrorKind::BadValue, "{bad}");
        }
        let long = parse("averyveryverylongunknownkeyname:1").unwrap_err();
        assert_eq!(long.key.as_str(), "averyveryverylon", "truncated to 16 bytes");
    }

    #[test]
    fn the_other_keys_of_spdk() {
        let t = parse(
            "subnqn:nqn.2014-08.org.nvmexpress:uuid:AB trsvcid:4420 ADRFAM:ipv4 trtype:PCIe traddr:00:01.0",
        )
        .unwrap();
        assert_eq!(t.adrfam, Some(AddressFamily::Ipv4));
        assert_eq!(t.trsvcid.unwrap().as_str(), "4420");
        assert_eq!(t.subnqn.unwrap().as_str(), "nqn.2014-08.org.nvmexpress:uuid:AB");
        let mut shown = heapless::String::<128>::new();
        core::fmt::write(&mut shown, format_args!("{t}")).unwrap();
        assert_eq!(
            shown.as_str(),
            "trtype:PCIe adrfam:IPv4 traddr:0000:00:01.0 trsvcid:4420 subnqn:nqn.2014-08.org.nvmexpress:uuid:AB"
        );
        assert_eq!(parse(&shown), Ok(t));
        // Service identifiers compare ignoring case, NQNs exactly.
        let a = parse("trtype:PCIe traddr:00:01.0 trsvcid:abc").unwrap();
        assert_eq!(a, parse("trtype:PCIe traddr:00:01.0 trsvcid:ABC").unwrap());
        let lower = parse("trtype:PCIe traddr:00:01.0 subnqn:nqn.x").unwrap();
        let upper = parse("trtype:PCIe traddr:00:01.0 subnqn:NQN.X").unwrap();
        assert_ne!(lower, upper);
        assert!(upper < lower, "exact byte order");
        // Absent sorts before present, address family before address.
        let plain = parse("trtype:PCIe traddr:00:02.0").unwrap();
        let fam = parse("trtype:PCIe adrfam:IB traddr:00:01.0").unwrap();
        assert!(plain < fam);
        for (text, kind, key) in [
            ("trtype:PCIe traddr:00:01.0 adrfam:ipx", TridErrorKind::BadValue, "adrfam"),
            ("trtype:PCIe traddr:00:01.0 trsvcid:", TridErrorKind::BadValue, "trsvcid"),
            ("trtype:PCIe traddr:00:01.0 trsvcid:a trsvcid:b", TridErrorKind::Repeated, "trsvcid"),
            (
                "trtype:PCIe traddr:00:01.0 trsvcid:123456789012345678901234567890123",
                TridErrorKind::BadValue,
                "trsvcid",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.kind, e.key.as_str()), (kind, key), "{text}");
        }
        assert_eq!(TransportType::from_name("pcie"), Some(TransportType::Pcie));
        assert_eq!(TransportType::from_name("RDMA"), None, "not available here");
        assert_eq!(AddressFamily::from_name("intra_host"), Some(AddressFamily::IntraHost));
    }

    #[test]
    fn total_order_by_transport_then_address() {
        let a = parse("trtype:PCIe traddr:0000:00:02.0").unwrap();
        let b = parse("trtype:PCIe traddr:0000:00:02.1").unwrap();
        let c = parse("trtype:PCIe traddr:0000:01:00.0").unwrap();
        let d = parse("trtype:PCIe traddr:0001:00:00.0").unwrap();
        assert!(a < b && b < c && c < d);
        assert_eq!(a.cmp(&a), core::cmp::Ordering::Equal);
    }
}
