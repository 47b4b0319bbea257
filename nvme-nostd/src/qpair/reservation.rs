//! The reservation commands on a queue pair (NVMe 1.4 sections 6.10 to
//! 6.13): Register, Acquire and Release write their keys into the caller's
//! buffer, which carries them to the device; Report reads the Reservation
//! Status into it ([`ReservationStatus::parse`](crate::ReservationStatus::parse)
//! decodes it). Each is refused unsent where the controller lacks
//! reservations (ONCS bit 5) or the namespace's RESCAP lacks what is asked.

use super::{IoQueuePair, Path, SubmitError};
use crate::buffer::IoBuffer;
use crate::error::{Argument, Error, Feature, Result};
use crate::namespace::Namespace;
use crate::reservation::{
    AcquireAction, PtplChange, RegisterAction, ReleaseAction, ReservationRegister, ReservationStatus,
    ReservationType,
};
use crate::slots::Cid;
use crate::spec::command::{IoOpcode, SubmissionEntry};
use crate::spec::reservation::{ReservationActionCdw10, ReservationRegisterCdw10, RESCAP_PTPL};
use core::ops::DerefMut;
use hal_traits::{Direction, Hal};

impl<H: Hal, B: IoBuffer, C, const N: usize> IoQueuePair<'_, H, B, C, N> {
    /// Reservation Register (section 6.12): registers, unregisters or
    /// replaces this host's key on `ns`, as `request` says. The driver
    /// writes CRKEY and NRKEY into the first 16 bytes of `buffer`. Refused
    /// unsent: no reservations (ONCS bit 5;
    /// [`Feature::NvmCommand`](crate::Feature::NvmCommand)), a PTPL change
    /// on a namespace whose RESCAP lacks it ([`Argument::Reservation`]), a
    /// buffer under 16 bytes.
    pub fn reservation_register(
        &mut self,
        ns: &Namespace,
        request: ReservationRegister,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>>
    where
        B: DerefMut<Target = [u8]>,
    {
        let ptpl_ok =
            request.ptpl == PtplChange::NoChange || ns.reservation_capabilities() & RESCAP_PTPL != 0;
        let checked = if ptpl_ok { Ok(()) } else { Err(Error::InvalidArgument(Argument::Reservation)) };
        let cdw10 = ReservationRegisterCdw10::new()
            .with_rrega(match request.action {
                RegisterAction::Register => 0,
                RegisterAction::Unregister => 1,
                RegisterAction::Replace => 2,
            })
            .with_iekey(request.ignore_existing_key)
            .with_cptpl(match request.ptpl {
                PtplChange::NoChange => 0,
                PtplChange::Clear => 2,
                PtplChange::Set => 3,
            });
        let keys = [request.current_key, request.new_key];
        self.reservation(
            IoOpcode::RESERVATION_REGISTER,
            ns,
            checked,
            cdw10.into_bits(),
            &keys,
            buffer,
            context,
        )
    }

    /// Reservation Acquire (section 6.10): acquires a reservation of
    /// `rtype` on `ns`, or preempts the hosts registered with
    /// `preempt_key`, as `action` says; `current_key` is this host's
    /// registered key. The driver writes CRKEY and PRKEY into the first 16
    /// bytes of `buffer`. Refused unsent: no reservations, a type the
    /// namespace's RESCAP does not offer ([`Argument::Reservation`]), a
    /// buffer under 16 bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn reservation_acquire(
        &mut self,
        ns: &Namespace,
        action: AcquireAction,
        rtype: ReservationType,
        current_key: u64,
        preempt_key: u64,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>>
    where
        B: DerefMut<Target = [u8]>,
    {
        let checked = offered(ns, rtype);
        let racqa = match action {
            AcquireAction::Acquire => 0,
            AcquireAction::Preempt => 1,
            AcquireAction::PreemptAndAbort => 2,
        };
        let cdw10 = ReservationActionCdw10::new().with_action(racqa).with_rtype(rtype.0);
        let keys = [current_key, preempt_key];
        self.reservation(
            IoOpcode::RESERVATION_ACQUIRE,
            ns,
            checked,
            cdw10.into_bits(),
            &keys,
            buffer,
            context,
        )
    }

    /// Reservation Release (section 6.11): releases the reservation of
    /// `rtype` this host holds on `ns`, or clears every reservation and
    /// registration, as `action` says; `current_key` is this host's
    /// registered key. The driver writes CRKEY into the first 8 bytes of
    /// `buffer`. Refused unsent: no reservations, a release of a type the
    /// namespace's RESCAP does not offer ([`Argument::Reservation`]), a
    /// buffer under 8 bytes.
    pub fn reservation_release(
        &mut self,
        ns: &Namespace,
        action: ReleaseAction,
        rtype: ReservationType,
        current_key: u64,
        buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>>
    where
        B: DerefMut<Target = [u8]>,
    {
        let (rrela, checked) = match action {
            ReleaseAction::Release => (0, offered(ns, rtype)),
            ReleaseAction::Clear => (1, Ok(())),
        };
        let cdw10 = ReservationActionCdw10::new().with_action(rrela).with_rtype(rtype.0);
        self.reservation(
            IoOpcode::RESERVATION_RELEASE,
            ns,
            checked,
            cdw10.into_bits(),
            &[current_key],
            buffer,
            context,
        )
    }

    /// Reservation Report (section 6.13): reads the Reservation Status of
    /// `ns` into `buffer` (as much of it as fits, in whole dwords up to the
    /// queue pair's transfer limit); `extended` asks for the extended
    /// structure with 128-bit Host Identifiers (what a host that set a
    /// [`host_identifier`](crate::ControllerOptions::host_identifier) gets).
    /// Decode the completed buffer with
    /// [`ReservationStatus::parse`](crate::ReservationStatus::parse).
    /// Refused unsent: no reservations, a buffer smaller than the header
    /// (24 bytes, or 64 extended).
    pub fn reservation_report(
        &mut self,
        ns: &Namespace,
        extended: bool,
        mut buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>> {
        let align = H::DMA_ALIGNMENT.max(4);
        let available = buffer.as_dma_slice().len().min(self.max_transfer);
        let len = available - available % align;
        let header = ReservationStatus::header_size(extended);
        let checked = if !self.ctrlr.identify_oncs().reservations() {
            Err(Error::Unsupported(Feature::NvmCommand))
        } else if len < header || u32::try_from(len / 4).is_err() {
            Err(Error::BufferTooSmall { needed: header.max(align), actual: available })
        } else {
            self.ctrlr.check_binding(ns.binding())
        };
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        let mut cmd = SubmissionEntry::new(IoOpcode::RESERVATION_REPORT.0, ns.id());
        // NUMD: dwords, 0-based; EDS in CDW11 bit 0.
        cmd.cdw10 = (len / 4 - 1) as u32;
        cmd.cdw11 = u32::from(extended);
        self.submit_data(cmd, buffer, len, Direction::FromDevice, context, Path::Direct)
    }

    /// The common part of Register, Acquire and Release: the checks
    /// (`checked` holds the command's own), the keys written little-endian
    /// into `buffer`, and the submission.
    #[allow(clippy::too_many_arguments)]
    fn reservation(
        &mut self,
        opcode: IoOpcode,
        ns: &Namespace,
        checked: Result,
        cdw10: u32,
        keys: &[u64],
        mut buffer: B,
        context: C,
    ) -> Result<Cid, SubmitError<B, C>>
    where
        B: DerefMut<Target = [u8]>,
    {
        let len = keys.len() * 8;
        let checked = if !self.ctrlr.identify_oncs().reservations() {
            Err(Error::Unsupported(Feature::NvmCommand))
        } else if buffer.len() < len {
            Err(Error::BufferTooSmall { needed: len, actual: buffer.len() })
        } else {
            checked.and_then(|()| self.ctrlr.check_binding(ns.binding()))
        };
        if let Err(error) = checked {
            return Err(SubmitError { error, buffer, context });
        }
        for (i, key) in keys.iter().enumerate() {
            buffer[i * 8..i * 8 + 8].copy_from_slice(&key.to_le_bytes());
        }
        let mut cmd = SubmissionEntry::new(opcode.0, ns.id());
        cmd.cdw10 = cdw10;
        self.submit_data(cmd, buffer, len, Direction::ToDevice, context, Path::Direct)
    }
}

/// Whether the namespace's RESCAP offers `rtype`.
fn offered(ns: &Namespace, rtype: ReservationType) -> Result {
    if rtype.offered_by(ns.reservation_capabilities()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(Argument::Reservation))
    }
}
