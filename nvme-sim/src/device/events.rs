//! Asynchronous events (section 5.2): events wait in a queue until an
//! Asynchronous Event Request is held to carry them; a delivered event masks
//! its type until the host reads the event's log page with RAE clear (as
//! QEMU's controller does). A reset drops the queue and the masks.

use super::queues::PostKind;
use super::status::SUCCESS;
use super::State;
use nvme_spec::command::AdminOpcode;
use nvme_spec::dwords::{AsyncEventCompletion, AsyncEventConfig};
use nvme_spec::ids::{AsyncEventInfo, AsyncEventType, Lid};

/// The sim's composite temperature, in kelvins (SMART / Health log).
pub(super) const TEMPERATURE: u16 = 313;

/// Event state: the queue, and the log page that unmasks each event type.
#[derive(Default)]
pub(super) struct Events {
    queue: std::collections::VecDeque<u32>,
    /// Per event type (0 to 7): masked until this log page is read.
    masked: [Option<Lid>; 8],
    /// Namespaces changed since the host last read log page 04h.
    pub(super) changed: Vec<u32>,
    /// Misbehave: deliver events without masking their type.
    pub(super) no_masking: bool,
}

impl State {
    /// Queues an event (every value of the three fields goes) and delivers
    /// what it can.
    pub(crate) fn raise_event(&mut self, event_type: AsyncEventType, info: AsyncEventInfo, lid: Lid) {
        let dw0 = AsyncEventCompletion::new().with_event_type(event_type).with_info(info).with_log_page(lid);
        self.events.queue.push_back(dw0.into_bits());
        self.stats.events_raised += 1;
        self.deliver_events();
    }

    /// The Asynchronous Event Configuration the host set (0 after a reset).
    fn aec(&self) -> AsyncEventConfig {
        AsyncEventConfig::from_bits(self.features.get(&0x0b).copied().unwrap_or(0))
    }

    /// A SMART / health warning (bit `bit` of Critical Warning) raises an
    /// event if the host asked for that warning's events.
    pub(super) fn smart_warning(&mut self, bit: u8, info: AsyncEventInfo) {
        if self.aec().smart_warnings() & (1 << bit) != 0 {
            self.raise_event(AsyncEventType::SMART_HEALTH, info, Lid::SMART_HEALTH);
        }
    }

    /// Namespace `nsid` changed: it joins the Changed Namespace List, and a
    /// Namespace Attribute Changed notice goes out if the host asked for it.
    pub(super) fn namespace_changed(&mut self, nsid: u32) {
        if !self.events.changed.contains(&nsid) {
            self.events.changed.push(nsid);
        }
        if self.aec().namespace_attribute() {
            self.raise_event(
                AsyncEventType::NOTICE,
                AsyncEventInfo::NOTICE_NAMESPACE_ATTRIBUTE_CHANGED,
                Lid::CHANGED_NAMESPACE_LIST,
            );
        }
    }

    /// Completes held AERs with queued events whose type is not masked.
    pub(super) fn deliver_events(&mut self) {
        while self.commands_run() {
            let Some(i) = self.events.queue.iter().position(|&dw0| {
                let t = AsyncEventCompletion::from_bits(dw0).event_type().0;
                self.events.masked[usize::from(t & 7)].is_none()
            }) else {
                return;
            };
            let held = self.stuck.iter().find(|(_, p)| {
                p.sqid == 0 && p.cmd.cdw0.opc() == AdminOpcode::ASYNC_EVENT_REQUEST.0 && p.fault.is_none()
            });
            let Some((&key, p)) = held else { return };
            let cid = p.cmd.cdw0.cid();
            self.stuck.remove(&key);
            let Some(dw0) = self.events.queue.remove(i) else { return };
            let event = AsyncEventCompletion::from_bits(dw0);
            if !self.events.no_masking {
                self.events.masked[usize::from(event.event_type().0 & 7)] = Some(event.log_page());
            }
            self.stats.events_delivered += 1;
            self.post(0, cid, SUCCESS, dw0, PostKind::Real);
        }
    }

    /// Get Log Page of `lid` with RAE clear: the event types it masked are
    /// reported again.
    pub(super) fn log_page_read(&mut self, lid: Lid, rae: bool) {
        if rae {
            return;
        }
        if lid == Lid::CHANGED_NAMESPACE_LIST {
            self.events.changed.clear();
        }
        for m in self.events.masked.iter_mut().filter(|m| **m == Some(lid)) {
            *m = None;
        }
        self.deliver_events();
    }

    pub(crate) fn set_event_masking(&mut self, masking: bool) {
        self.events.no_masking = !masking;
        self.deliver_events();
    }

    /// A reset: queued events and masks are dropped.
    pub(super) fn reset_events(&mut self) {
        self.events.queue.clear();
        self.events.masked = [None; 8];
    }
}
