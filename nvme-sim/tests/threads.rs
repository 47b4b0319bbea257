//! The simulator shared between threads: one `Controller<SimHal>` used by
//! several threads at once, each with its own queue pairs.

use nvme_nostd::{Controller, IoQueuePair};
use nvme_sim::{Sim, SimHal};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}
fn assert_clone<T: Clone>() {}

/// Compile-time: the simulator, its HAL and a controller on it can be
/// shared between threads, and a queue pair can move to its own thread.
#[test]
fn sim_hal_and_controller_are_send_and_sync() {
    assert_send_sync::<Sim>();
    assert_clone::<Sim>();
    assert_send_sync::<SimHal>();
    assert_send_sync::<Controller<SimHal>>();
    assert_send::<IoQueuePair<'static, SimHal, Vec<u8>, u32, 16>>();
}
