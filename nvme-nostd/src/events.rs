//! Asynchronous events (NVMe Base Specification 1.4, section 5.2
//! "Asynchronous Event Request" and 5.21.1.11 "Asynchronous Event
//! Configuration"): the driver keeps Asynchronous Event Requests outstanding,
//! queues what they bring, re-arms them, and hands the events out from
//! [`Controller::process_admin_completions`].
//!
//! A controller reports no further event of a type until the host reads the
//! log page the event names with RAE clear. The driver reads it for the pages
//! whose content it does not hand out (Error Information, SMART / Health,
//! Firmware Slot: each can be read again at any time); the Changed Namespace
//! List is the event's news, so the caller reads it
//! ([`Controller::changed_namespaces`]), and events of that type stay masked
//! until it does.

use crate::admin::MAX_AERS;
use crate::controller::Controller;
use crate::error::{Error, Feature, Result};
use crate::features::set_features_command;
use crate::log::ALL_NAMESPACES;
use crate::spec::dwords::{AsyncEventCompletion, AsyncEventConfig};
use crate::spec::ids::{AsyncEventInfo, AsyncEventType, Fid, Lid};
use hal_traits::{Hal, PAGE_SIZE};

/// An asynchronous event the controller reported (an Asynchronous Event
/// Request's completion, section 5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AsyncEvent {
    /// What kind of event: error, SMART / health, notice, ...
    pub event_type: AsyncEventType,
    /// What happened, within its type (see [`AsyncEventInfo`]'s constants).
    pub info: AsyncEventInfo,
    /// The log page that tells more, and whose reading (RAE clear) lets the
    /// controller report this type of event again.
    pub log_page: Lid,
    /// The driver read that log page: further events of this type come
    /// through. False when the caller has to read it (the Changed Namespace
    /// List, a page the driver does not know), or when the read failed.
    pub cleared: bool,
    /// The completion's DW0 as the controller posted it.
    pub raw: u32,
}

impl AsyncEvent {
    /// Decodes an Asynchronous Event Request's completion DW0 (figure 146).
    /// Every value decodes; what the driver does not know stays in the open
    /// newtypes and in [`raw`](Self::raw).
    pub fn from_completion(dw0: u32) -> Self {
        let c = AsyncEventCompletion::from_bits(dw0);
        AsyncEvent {
            event_type: c.event_type(),
            info: c.info(),
            log_page: c.log_page(),
            cleared: false,
            raw: dw0,
        }
    }

    /// A Namespace Attribute Changed notice: some namespace's identify data
    /// changed (its format or size, say), or namespaces were attached or
    /// detached. The driver has made every [`Namespace`](crate::Namespace)
    /// handle stale by then; read [`Controller::changed_namespaces`] for
    /// which, and get new handles.
    pub fn is_namespace_changed(&self) -> bool {
        self.event_type == AsyncEventType::NOTICE
            && self.info == AsyncEventInfo::NOTICE_NAMESPACE_ATTRIBUTE_CHANGED
    }

    /// How many bytes of its log page the driver reads to clear the event,
    /// or `None` when it leaves the page to the caller: the pages the
    /// specification pairs with error, SMART / health and firmware
    /// activation events. Their content stays readable afterwards.
    pub fn clearing_read(&self) -> Option<usize> {
        match (self.event_type, self.log_page) {
            // One entry: reading any part of the page clears the event.
            (AsyncEventType::ERROR, Lid::ERROR_INFORMATION) => Some(64),
            (AsyncEventType::SMART_HEALTH, Lid::SMART_HEALTH) => Some(512),
            (AsyncEventType::NOTICE, Lid::FIRMWARE_SLOT)
                if self.info == AsyncEventInfo::NOTICE_FIRMWARE_ACTIVATION_STARTING =>
            {
                Some(512)
            }
            _ => None,
        }
    }
}

/// The notice bits of Asynchronous Event Configuration (bits 15:8) that a
/// controller advertises in OAES (bit 10, telemetry, in LPA bit 3).
fn advertised_notices(oaes: u32, telemetry: bool) -> u32 {
    (oaes & 0x7b00) | if telemetry { 1 << 10 } else { 0 }
}

impl<H: Hal> Controller<H> {
    /// Turns asynchronous events on: Set Features / Asynchronous Event
    /// Configuration (FID 0Bh) to `config`, then as many Asynchronous Event
    /// Requests as the controller takes (AERL + 1), at most 4, kept
    /// outstanding from now on (re-armed after each event and after every
    /// reset, which also sets `config` again). Error events are always
    /// reported; `config` chooses the SMART / health warnings and the
    /// notices. Events are handed out by
    /// [`process_admin_completions`](Self::process_admin_completions).
    /// Returns how many requests are outstanding.
    ///
    /// Refused before anything is sent: a notice the controller does not
    /// advertise (OAES; [`Feature::AsyncEvent`]).
    pub fn enable_async_events(&self, config: AsyncEventConfig) -> Result<usize> {
        let id = self.identify();
        let notices = config.into_bits() & 0xff00;
        if notices & !advertised_notices(id.oaes.into_bits(), id.lpa.telemetry()) != 0
            || config.into_bits() & 0xffff_0000 != 0
        {
            return Err(Error::Unsupported(Feature::AsyncEvent));
        }
        self.admin_exec(set_features_command(Fid::ASYNC_EVENT_CONFIG, 0, config.into_bits(), false), None)?;
        let mut admin = self.admin.lock();
        admin.aec = Some(config.into_bits());
        admin.aer_limit = (usize::from(id.aerl) + 1).min(MAX_AERS) as u8;
        admin.aers_wanted = admin.aer_limit;
        if admin.failed {
            // A reset is due; it arms them.
            return Err(Error::ControllerFailed);
        }
        Ok(admin.arm_aers(&self.hal))
    }

    /// Asynchronous Event Requests outstanding now.
    pub fn async_events_outstanding(&self) -> usize {
        self.admin.lock().aers_outstanding()
    }

    /// The admin queue's periodic work, as SPDK's
    /// `spdk_nvme_ctrlr_process_admin_completions`: consumes up to `max`
    /// admin completions, sends Keep Alive when it is due
    /// ([`ControllerOptions::keep_alive_timeout`](crate::ControllerOptions::keep_alive_timeout)),
    /// tops up the Asynchronous Event Requests, and hands
    /// each event received (here or during other admin commands) to
    /// `on_event`, at most 16 per call, after reading the log page that
    /// clears it ([`AsyncEvent::clearing_read`]). A Namespace Attribute
    /// Changed notice makes every `Namespace` handle stale first. Returns how
    /// many completions it consumed.
    ///
    /// `on_event` runs without any driver lock, so it may use the driver. If
    /// it panics, the event it was given counts as handed out and the rest
    /// wait for the next call.
    ///
    /// A controller whose reset failed is reset again here once its backoff
    /// has passed, as on every admin call; [`Error::ControllerFailed`] while
    /// it stays down. A command nobody waits for (a Keep Alive) that timed
    /// out resets the controller, and is reported as
    /// [`Error::Timeout`](crate::Error::Timeout).
    pub fn process_admin_completions(
        &self,
        max: usize,
        mut on_event: impl FnMut(AsyncEvent),
    ) -> Result<usize> {
        if self.is_removed() {
            self.report_removal();
            return Err(Error::DeviceRemoved);
        }
        self.heal()?;
        // The controller's health: a fatal status (a Keep Alive Timer that
        // expired, say) is answered with a reset here, not at the next
        // command.
        match self.csts() {
            Ok(csts) if csts.cfs() => {
                let _ = self.reset_from(self.epoch());
                return Err(Error::ControllerFatal);
            }
            Err(Error::DeviceRemoved) if self.check_removal() => return Err(Error::DeviceRemoved),
            _ => {}
        }
        let (reaped, expired, epoch) = {
            let mut admin = self.admin.lock();
            let n = if admin.failed { 0 } else { admin.reap(&self.hal, max) };
            admin.arm_aers(&self.hal);
            // A command nobody waited for (a Keep Alive, an Abort whose
            // queue pair stopped polling) that timed out; else the next
            // Keep Alive, when due.
            let expired = admin.expire_async(&self.hal).and_then(|()| {
                if admin.failed {
                    Ok(())
                } else {
                    admin.keep_alive(&self.hal, self.options().admin_timeout)
                }
            });
            (n, expired, self.epoch())
        };
        if let Err(e) = expired {
            let _ = self.reset_from(epoch);
            return Err(e);
        }
        // Bounded: the log reads below run admin commands, during which a
        // controller may complete more AERs.
        for _ in 0..crate::admin::EVENT_QUEUE {
            let Some(dw0) = self.admin.lock().events.pop_front() else { break };
            let mut event = AsyncEvent::from_completion(dw0);
            if event.is_namespace_changed() && self.revalidate_namespaces().is_err() {
                // Not told which changed: all of them may have.
                self.namespaces_changed();
            }
            if let Some(len) = event.clearing_read() {
                let mut page = [0u8; PAGE_SIZE];
                let nsid = if event.log_page == Lid::SMART_HEALTH { ALL_NAMESPACES } else { 0 };
                event.cleared = self.get_log_page(event.log_page, nsid, 0, &mut page[..len]).is_ok();
            }
            // Its place in the event queue is free again.
            self.admin.lock().arm_aers(&self.hal);
            on_event(event);
        }
        Ok(reaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        let e = AsyncEvent::from_completion(0x0002_0101);
        assert_eq!(e.event_type, AsyncEventType::SMART_HEALTH);
        assert_eq!(e.info, AsyncEventInfo::SMART_TEMPERATURE_THRESHOLD);
        assert_eq!(
            (e.log_page, e.clearing_read(), e.is_namespace_changed()),
            (Lid::SMART_HEALTH, Some(512), false)
        );
        let e = AsyncEvent::from_completion(0x0004_0002);
        assert!(e.is_namespace_changed());
        assert_eq!(e.clearing_read(), None, "the caller reads the changed namespace list");
        let e = AsyncEvent::from_completion(0x0001_0300);
        assert_eq!(
            (e.event_type, e.info, e.clearing_read()),
            (AsyncEventType::ERROR, AsyncEventInfo(3), Some(64))
        );
        // A log page that does not go with the type is left to the caller.
        assert_eq!(AsyncEvent::from_completion(0x0081_0001).clearing_read(), None);
        assert_eq!(AsyncEvent::from_completion(0x0003_0102).clearing_read(), Some(512));
        assert_eq!(AsyncEvent::from_completion(0x0003_0202).clearing_read(), None);
    }

    #[test]
    fn notices_follow_oaes() {
        assert_eq!(advertised_notices(0x100, false), 0x100);
        assert_eq!(advertised_notices(0xffff_ffff, true), 0x7f00);
        assert_eq!(advertised_notices(0x200, false) & 0x100, 0);
    }
}
