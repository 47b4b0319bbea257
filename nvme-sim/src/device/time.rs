//! Virtual time and the event loop: time moves only when the host waits or
//! reads the clock, when the test advances it, or (with `auto_advance`) after
//! a register access. The controller then does everything due up to the new
//! time in a deterministic order: controller state changes (CSTS.RDY after
//! enable or reset, CSTS.SHST after a shutdown request; NVMe 1.4 sections
//! 7.6.1 and 7.6.2) before commands at the same instant, commands in fetch
//! order.

use super::State;
use core::time::Duration;

impl State {
    pub(crate) fn now(&self) -> Duration {
        self.now
    }

    /// `Hal::now`: moves time on by the configured tick, then reads it.
    pub(crate) fn tick(&mut self) -> Duration {
        let t = self.now.saturating_add(self.cfg.now_tick);
        self.run_until(t);
        self.now
    }

    pub(crate) fn advance(&mut self, d: Duration) {
        let t = self.now.saturating_add(d);
        self.run_until(t);
    }

    pub(super) fn commands_run(&self) -> bool {
        self.enabled && !self.cfs && !self.removed
    }

    /// Processes every event due up to `t` in time order (controller state
    /// changes before commands at the same instant, commands in fetch order),
    /// then sets the clock to `t`.
    pub(super) fn run_until(&mut self, t: Duration) {
        // The arbiter fetches what I/O doorbells announced once time moves.
        if self.wrr && t > self.now {
            self.arbitrate();
        }
        if self.back_at.is_some_and(|at| t >= at) {
            // Back from a brief disappearance; what fell due meanwhile runs
            // now.
            self.back_at = None;
            self.removed = false;
        }
        while !self.removed {
            let keep_alive = if self.commands_run() { self.keep_alive_at } else { None };
            let ctrl =
                [self.rdy_event.map(|(a, _)| a), self.shst_event, keep_alive].into_iter().flatten().min();
            let cmd = if self.commands_run() { self.pending.keys().next().map(|k| k.0) } else { None };
            let (when, is_ctrl) = match (ctrl, cmd) {
                (Some(a), Some(b)) if a <= b => (a, true),
                (_, Some(b)) => (b, false),
                (Some(a), None) => (a, true),
                (None, None) => break,
            };
            if when > t {
                break;
            }
            self.now = self.now.max(when);
            if is_ctrl {
                self.fire_controller_event();
            } else if let Some((_, p)) = self.pending.pop_first() {
                self.complete(p);
            }
        }
        self.now = self.now.max(t);
    }

    fn fire_controller_event(&mut self) {
        let rdy_due = self.rdy_event.map(|(at, _)| at);
        let first = [rdy_due, self.shst_event].into_iter().flatten().min();
        if let Some(at) = self.keep_alive_at.filter(|&k| first.is_none_or(|f| k < f)) {
            // The Keep Alive Timer expired (section 7.12): fatal.
            if at <= self.now {
                self.keep_alive_at = None;
                self.cfs = true;
                self.stats.keep_alive_expired += 1;
                return;
            }
        }
        match (rdy_due, self.shst_event) {
            (Some(a), Some(b)) if b < a => {
                self.shst_event = None;
                self.shst = 2;
            }
            (Some(_), _) => {
                if let Some((_, value)) = self.rdy_event.take() {
                    self.rdy = value;
                }
            }
            (None, Some(_)) => {
                self.shst_event = None;
                self.shst = 2;
            }
            (None, None) => {}
        }
    }
}
