//! Get Features and Set Features (NVMe Base Specification 1.4, sections 5.15
//! and 5.21): any feature identifier by its dwords, `is_feature_supported`,
//! and typed helpers for the features of the base specification that carry
//! no data buffer.

use crate::controller::Controller;
use crate::error::{Argument, Error, Feature, Result};
use crate::spec::command::{AdminOpcode, SubmissionEntry};
use crate::spec::dwords::HostMemoryBuffer;
use crate::spec::dwords::{
    Arbitration, AsyncEventConfig, ErrorRecovery, FeatureCapabilities, FeaturesCdw10, InterruptCoalescing,
    NumberOfQueues, PowerManagement, Select, TemperatureThreshold, VolatileWriteCache,
};
use crate::spec::features::{HostMemoryAttributes, LbaRangeType};
use crate::spec::ids::Fid;
use hal_traits::Hal;

/// Get Features (section 5.15, figure 270): `fid` of namespace `nsid` (0
/// for a feature of the controller) with SEL `select`; CDW11 carries the
/// feature's own selector where it has one (the temperature threshold's
/// sensor, say).
pub(crate) fn get_features_command(fid: Fid, nsid: u32, select: Select, cdw11: u32) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::GET_FEATURES.0, nsid);
    cmd.cdw10 = FeaturesCdw10::new().with_fid(fid).with_sel(select as u8).into_bits();
    cmd.cdw11 = cdw11;
    cmd
}

/// Set Features (section 5.21, figure 227): `fid` of namespace `nsid` to the
/// value in CDW11, saved across resets when `save` (SV).
pub(crate) fn set_features_command(fid: Fid, nsid: u32, cdw11: u32, save: bool) -> SubmissionEntry {
    let mut cmd = SubmissionEntry::new(AdminOpcode::SET_FEATURES.0, nsid);
    cmd.cdw10 = FeaturesCdw10::new().with_fid(fid).with_sv(save).into_bits();
    cmd.cdw11 = cdw11;
    cmd
}

/// Features whose Get Features (and Set Features, but for the Host Memory
/// Buffer, whose Set carries addresses in CDW12 to CDW15) moves a data
/// structure through PRP1 (section 5.21.1, figure 271). Without a buffer the
/// controller would move it to or from address 0.
const WITH_DATA: [Fid; 6] = [
    Fid::LBA_RANGE_TYPE,
    Fid::AUTONOMOUS_POWER_STATE_TRANSITION,
    Fid::HOST_MEMORY_BUFFER,
    Fid::TIMESTAMP,
    Fid::HOST_BEHAVIOR_SUPPORT,
    Fid::HOST_IDENTIFIER,
];

/// Features the driver sets itself: a caller changing them would break it.
/// The Host Memory Buffer is one of them: it names memory to the device.
const DRIVER_OWNED: [Fid; 4] =
    [Fid::NUMBER_OF_QUEUES, Fid::HOST_BEHAVIOR_SUPPORT, Fid::KEEP_ALIVE_TIMER, Fid::HOST_MEMORY_BUFFER];

impl<H: Hal> Controller<H> {
    /// Whether the controller supports feature `fid`: the mandatory ones
    /// (arbitration, power management, temperature threshold, error
    /// recovery, number of queues, interrupt coalescing and vector
    /// configuration, write atomicity, asynchronous event configuration),
    /// and the others as Identify Controller advertises them (VWC, APSTA,
    /// HMPRE, ONCS, KAS, HCTMA). Identifiers the driver does not know are
    /// reported unsupported.
    pub fn is_feature_supported(&self, fid: Fid) -> bool {
        let id = self.identify();
        match fid {
            Fid::ARBITRATION
            | Fid::POWER_MANAGEMENT
            | Fid::TEMPERATURE_THRESHOLD
            | Fid::ERROR_RECOVERY
            | Fid::NUMBER_OF_QUEUES
            | Fid::INTERRUPT_COALESCING
            | Fid::INTERRUPT_VECTOR_CONFIG
            | Fid::WRITE_ATOMICITY
            | Fid::ASYNC_EVENT_CONFIG => true,
            Fid::VOLATILE_WRITE_CACHE => id.vwc.present(),
            Fid::AUTONOMOUS_POWER_STATE_TRANSITION => id.apsta & 1 != 0,
            Fid::HOST_MEMORY_BUFFER => id.hmpre != 0,
            Fid::TIMESTAMP => id.oncs.timestamp(),
            Fid::KEEP_ALIVE_TIMER => id.kas != 0,
            Fid::HOST_CONTROLLED_THERMAL_MANAGEMENT => id.hctma & 1 != 0,
            Fid::HOST_BEHAVIOR_SUPPORT => id.crdt1 != 0 || id.crdt2 != 0 || id.crdt3 != 0,
            // The Host Identifier is part of reservations (ONCS bit 5).
            Fid::HOST_IDENTIFIER => id.oncs.reservations(),
            _ => false,
        }
    }

    /// Get Features (section 5.15) of `fid` with no data buffer: returns
    /// DW0 of the completion. `nsid` names the namespace of a namespace
    /// specific feature (Error Recovery, for one), 0 otherwise; `cdw11`
    /// carries the feature's selector where it has one. A `select` other than [`Select::Current`] needs a
    /// controller that supports it (ONCS bit 4; else
    /// [`Feature::SaveSelect`]); nothing is sent for a feature the controller
    /// does not advertise ([`Feature::FeatureId`]), nor for one that moves a
    /// data structure ([`Argument::FeatureWithData`]; but its supported
    /// capabilities come in DW0): their typed helpers carry the data.
    pub fn get_features(&self, fid: Fid, nsid: u32, select: Select, cdw11: u32) -> Result<u32> {
        self.check_get_features(fid, select)?;
        Ok(self.admin_exec(get_features_command(fid, nsid, select, cdw11), None)?.dw0)
    }

    /// Set Features (section 5.21) of `fid` (of namespace `nsid`, or 0) to
    /// `cdw11`, with no data buffer,
    /// saved across resets when `save` (which needs ONCS bit 4); returns DW0
    /// of the completion. The features the driver sets itself (Number of
    /// Queues, Host Behavior Support) are refused
    /// ([`Argument::DriverOwnedFeature`]), as are a feature that moves a
    /// data structure ([`Argument::FeatureWithData`]) and one the controller
    /// does not advertise; nothing is sent then.
    pub fn set_features(&self, fid: Fid, nsid: u32, cdw11: u32, save: bool) -> Result<u32> {
        if DRIVER_OWNED.contains(&fid) {
            return Err(Error::InvalidArgument(Argument::DriverOwnedFeature));
        }
        if WITH_DATA.contains(&fid) {
            return Err(Error::InvalidArgument(Argument::FeatureWithData));
        }
        self.check_feature(fid, save)?;
        Ok(self.admin_exec(set_features_command(fid, nsid, cdw11, save), None)?.dw0)
    }

    /// What the controller says of `fid` (SEL = supported capabilities):
    /// saveable, namespace specific, changeable.
    pub fn feature_capabilities(&self, fid: Fid) -> Result<FeatureCapabilities> {
        self.get_features(fid, 0, Select::Supported, 0).map(FeatureCapabilities::from_bits)
    }

    /// What a Get Features without data must pass (see
    /// [`get_features`](Self::get_features)).
    pub(crate) fn check_get_features(&self, fid: Fid, select: Select) -> Result {
        // Supported capabilities come back in DW0 only.
        if select != Select::Supported && WITH_DATA.contains(&fid) {
            return Err(Error::InvalidArgument(Argument::FeatureWithData));
        }
        self.check_feature(fid, select != Select::Current)
    }

    fn check_feature(&self, fid: Fid, needs_save_select: bool) -> Result {
        if !self.is_feature_supported(fid) {
            return Err(Error::Unsupported(Feature::FeatureId));
        }
        if needs_save_select && !self.identify().oncs.save_select() {
            return Err(Error::Unsupported(Feature::SaveSelect));
        }
        Ok(())
    }

    /// Arbitration (FID 01h).
    pub fn arbitration(&self, select: Select) -> Result<Arbitration> {
        self.get_features(Fid::ARBITRATION, 0, select, 0).map(Arbitration::from_bits)
    }

    /// Sets Arbitration (FID 01h).
    pub fn set_arbitration(&self, value: Arbitration, save: bool) -> Result {
        self.set_features(Fid::ARBITRATION, 0, value.into_bits(), save).map(|_| ())
    }

    /// Power Management (FID 02h): the power state and workload hint.
    pub fn power_management(&self, select: Select) -> Result<PowerManagement> {
        self.get_features(Fid::POWER_MANAGEMENT, 0, select, 0).map(PowerManagement::from_bits)
    }

    /// Sets Power Management (FID 02h); a power state above NPSS is refused
    /// ([`Argument::PowerState`]).
    pub fn set_power_management(&self, value: PowerManagement, save: bool) -> Result {
        if value.power_state() > self.identify().npss {
            return Err(Error::InvalidArgument(Argument::PowerState));
        }
        self.set_features(Fid::POWER_MANAGEMENT, 0, value.into_bits(), save).map(|_| ())
    }

    /// The over-temperature (or, `under`, under-temperature) threshold of
    /// `sensor` (0 the composite temperature, 1 to 8 a sensor), in kelvins
    /// (FID 04h).
    pub fn temperature_threshold(&self, sensor: u8, under: bool, select: Select) -> Result<u16> {
        let which = threshold(0, sensor, under)?;
        let dw0 = self.get_features(Fid::TEMPERATURE_THRESHOLD, 0, select, which.into_bits())?;
        Ok(TemperatureThreshold::from_bits(dw0).kelvin())
    }

    /// Sets a temperature threshold (FID 04h); a sensor above 8 is refused
    /// ([`Argument::TemperatureSensor`]).
    pub fn set_temperature_threshold(&self, kelvin: u16, sensor: u8, under: bool, save: bool) -> Result {
        let value = threshold(kelvin, sensor, under)?;
        self.set_features(Fid::TEMPERATURE_THRESHOLD, 0, value.into_bits(), save).map(|_| ())
    }

    /// Error Recovery (FID 05h) of namespace `nsid` (it is namespace
    /// specific).
    pub fn error_recovery(&self, nsid: u32, select: Select) -> Result<ErrorRecovery> {
        self.get_features(Fid::ERROR_RECOVERY, nsid, select, 0).map(ErrorRecovery::from_bits)
    }

    /// Sets Error Recovery (FID 05h) of namespace `nsid`.
    pub fn set_error_recovery(&self, nsid: u32, value: ErrorRecovery, save: bool) -> Result {
        self.set_features(Fid::ERROR_RECOVERY, nsid, value.into_bits(), save).map(|_| ())
    }

    /// Whether the volatile write cache is enabled (FID 06h); a controller
    /// without one gives [`Feature::FeatureId`].
    pub fn volatile_write_cache(&self, select: Select) -> Result<bool> {
        let dw0 = self.get_features(Fid::VOLATILE_WRITE_CACHE, 0, select, 0)?;
        Ok(VolatileWriteCache::from_bits(dw0).enabled())
    }

    /// Enables or disables the volatile write cache (FID 06h).
    pub fn set_volatile_write_cache(&self, enabled: bool, save: bool) -> Result {
        let value = VolatileWriteCache::new().with_enabled(enabled);
        self.set_features(Fid::VOLATILE_WRITE_CACHE, 0, value.into_bits(), save).map(|_| ())
    }

    /// The queues the controller allocated (FID 07h): NSQA and NCQA,
    /// 0-based. (Setting it is the driver's, at attach and after resets.)
    pub fn number_of_queues(&self) -> Result<NumberOfQueues> {
        self.get_features(Fid::NUMBER_OF_QUEUES, 0, Select::Current, 0).map(NumberOfQueues::from_bits)
    }

    /// Interrupt Coalescing (FID 08h).
    pub fn interrupt_coalescing(&self, select: Select) -> Result<InterruptCoalescing> {
        self.get_features(Fid::INTERRUPT_COALESCING, 0, select, 0).map(InterruptCoalescing::from_bits)
    }

    /// Sets Interrupt Coalescing (FID 08h).
    pub fn set_interrupt_coalescing(&self, value: InterruptCoalescing, save: bool) -> Result {
        self.set_features(Fid::INTERRUPT_COALESCING, 0, value.into_bits(), save).map(|_| ())
    }

    /// Asynchronous Event Configuration (FID 0Bh): which events the
    /// controller reports.
    pub fn async_event_config(&self, select: Select) -> Result<AsyncEventConfig> {
        self.get_features(Fid::ASYNC_EVENT_CONFIG, 0, select, 0).map(AsyncEventConfig::from_bits)
    }

    /// Sets Asynchronous Event Configuration (FID 0Bh).
    pub fn set_async_event_config(&self, value: AsyncEventConfig, save: bool) -> Result {
        self.set_features(Fid::ASYNC_EVENT_CONFIG, 0, value.into_bits(), save).map(|_| ())
    }

    /// The controller's timestamp (FID 0Eh, section 5.21.1.14): milliseconds
    /// since the Unix epoch as the host last set them and the controller has
    /// counted since, where the controller keeps one (ONCS bit 6; else
    /// [`Feature::FeatureId`]). The second value is the attributes byte
    /// (bit 0, Synch: the controller may have stopped counting at times;
    /// bits 3:1, Timestamp Origin: 0 reset, 1 set by the host).
    pub fn timestamp(&self) -> Result<(u64, u8)> {
        self.check_feature(Fid::TIMESTAMP, false)?;
        let mut data = [0u8; 8];
        self.admin_read(get_features_command(Fid::TIMESTAMP, 0, Select::Current, 0), &mut data)?;
        let mut ms = [0u8; 8];
        ms[..6].copy_from_slice(&data[..6]);
        Ok((u64::from_le_bytes(ms), data[6]))
    }

    /// Host Memory Buffer (FID 0Dh): whether the controller uses a buffer
    /// now (EHM, DW0) and what it holds (the first 16 bytes of the
    /// attributes: size, descriptor list address and entries). Where the
    /// controller asks for one (HMPRE; else [`Feature::FeatureId`], unsent).
    /// The driver hands the buffer over itself
    /// ([`ControllerOptions::host_memory_buffer`](crate::ControllerOptions::host_memory_buffer)).
    pub fn host_memory_buffer_attributes(&self) -> Result<(HostMemoryBuffer, HostMemoryAttributes)> {
        self.check_feature(Fid::HOST_MEMORY_BUFFER, false)?;
        let mut data = [0u8; 16];
        let cmd = get_features_command(Fid::HOST_MEMORY_BUFFER, 0, Select::Current, 0);
        let done = self.admin_read(cmd, &mut data)?;
        Ok((HostMemoryBuffer::from_bits(done.dw0), HostMemoryAttributes::from_bytes(&data)))
    }

    /// Sets the controller's timestamp (FID 0Eh) to `ms` milliseconds since
    /// the Unix epoch (48 bits; more is refused with
    /// [`Argument::Timestamp`]).
    pub fn set_timestamp(&self, ms: u64) -> Result {
        if ms >> 48 != 0 {
            return Err(Error::InvalidArgument(Argument::Timestamp));
        }
        self.check_feature(Fid::TIMESTAMP, false)?;
        let mut data = [0u8; 8];
        data[..6].copy_from_slice(&ms.to_le_bytes()[..6]);
        self.admin_write(set_features_command(Fid::TIMESTAMP, 0, 0, false), &data).map(|_| ())
    }

    /// The Host Identifier (FID 81h): 16 bytes where the controller keeps
    /// the extended (128-bit) one, else 8 bytes and 8 zeros. Where the
    /// controller supports it (reservations, ONCS bit 5; else
    /// [`Feature::FeatureId`], unsent).
    pub fn host_identifier(&self, extended: bool) -> Result<[u8; 16]> {
        self.check_feature(Fid::HOST_IDENTIFIER, false)?;
        let mut id = [0u8; 16];
        let len = if extended { 16 } else { 8 };
        let cmd = get_features_command(Fid::HOST_IDENTIFIER, 0, Select::Current, u32::from(extended));
        self.admin_read(cmd, &mut id[..len])?;
        Ok(id)
    }

    /// Sets the Host Identifier (FID 81h): `id` as the extended 128-bit
    /// identifier (EXHID set), or its first 8 bytes when `extended` is
    /// false. Refused as [`host_identifier`](Self::host_identifier) is.
    pub fn set_host_identifier(&self, id: [u8; 16], extended: bool) -> Result {
        self.check_feature(Fid::HOST_IDENTIFIER, false)?;
        let len = if extended { 16 } else { 8 };
        let cmd = set_features_command(Fid::HOST_IDENTIFIER, 0, u32::from(extended), false);
        self.admin_write(cmd, &id[..len]).map(|_| ())
    }

    /// The LBA Range Type entries of namespace `nsid` (FID 03h): as many
    /// as the completion's DW0 says are valid, at most 64. The feature is
    /// optional and no capability bit says who has it: a controller without
    /// it answers with its status (QEMU 7.2: Invalid Field).
    pub fn lba_range_types(&self, nsid: u32) -> Result<heapless::Vec<LbaRangeType, 64>> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument(Argument::NamespaceId));
        }
        let mut page = [0u8; 4096];
        let done =
            self.admin_read(get_features_command(Fid::LBA_RANGE_TYPE, nsid, Select::Current, 0), &mut page)?;
        let count = (done.dw0 & 0x3f) as usize + 1;
        Ok(page
            .chunks_exact(LbaRangeType::SIZE)
            .take(count)
            .filter_map(|c| c.try_into().ok().map(LbaRangeType::from_bytes))
            .collect())
    }

    /// The Keep Alive Timeout (FID 0Fh), in milliseconds, where the
    /// controller supports Keep Alive (KAS; else [`Feature::FeatureId`]).
    pub fn keep_alive_timer(&self, select: Select) -> Result<u32> {
        self.get_features(Fid::KEEP_ALIVE_TIMER, 0, select, 0)
    }
}

/// CDW11 of the temperature threshold feature; a sensor above 8 is refused.
fn threshold(kelvin: u16, sensor: u8, under: bool) -> Result<TemperatureThreshold> {
    if sensor > 8 {
        return Err(Error::InvalidArgument(Argument::TemperatureSensor));
    }
    Ok(TemperatureThreshold::new().with_kelvin(kelvin).with_sensor(sensor).with_under(u8::from(under)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte against figures 227, 270 and 279.
    #[test]
    fn features_encoding() {
        let get = get_features_command(Fid::TEMPERATURE_THRESHOLD, 0, Select::Supported, 0x0012_0000);
        assert_eq!(get.cdw0.opc(), 0x0a);
        // FID 04h in bits 7:0, SEL 3 in bits 10:8.
        assert_eq!(get.cdw10, 0x0000_0304);
        assert_eq!(get.cdw11, 0x0012_0000);
        let set = set_features_command(Fid::VOLATILE_WRITE_CACHE, 7, 1, true);
        assert_eq!(set.nsid, 7);
        assert_eq!(set.cdw0.opc(), 0x09);
        // FID 06h, SV in bit 31.
        assert_eq!(set.cdw10, 0x8000_0006);
        assert_eq!(set.cdw11, 1);
        assert_eq!((set.prp1, set.prp2), (0, 0));
        // TMPTH 350 K, TMPSEL 2, THSEL 1 (under).
        assert_eq!(threshold(350, 2, true).unwrap().into_bits(), 0x0012_015e);
        assert_eq!(threshold(0, 9, false), Err(Error::InvalidArgument(Argument::TemperatureSensor)));
    }
}
