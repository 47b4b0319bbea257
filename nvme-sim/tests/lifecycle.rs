//! Detaching from a controller: an orderly shutdown (CC.SHN, a wait for
//! CSTS.SHST bounded by CAP.TO), the disable, and the admin memory given
//! back, with the outcome reported; a controller that cannot be disabled
//! keeps its memory (leaked, never freed under it).

mod common;

use common::{assert_clean, assert_no_bad_frees, setup};
use core::time::Duration;
use nvme_nostd::{Error, Wait};
use nvme_sim::SimConfig;

#[test]
fn detach_shuts_down_and_gives_everything_back() {
    let (sim, ctrlr, _ns) = setup(SimConfig::default());
    let resets = sim.stats().resets;
    assert_eq!(ctrlr.detach(), Ok(()));
    assert_eq!(sim.stats().resets, resets + 1, "disabled after the shutdown");
    assert_clean(&sim);
}

/// CSTS.SHST never says complete: the wait ends at CAP.TO (here 1 s), the
/// controller is disabled all the same, and the memory comes back.
#[test]
fn a_shutdown_that_never_completes_is_bounded_and_reported() {
    let (sim, ctrlr, _ns) =
        setup(SimConfig { shutdown_never: true, timeout_500ms: 2, ..SimConfig::default() });
    let start = sim.now();
    assert_eq!(ctrlr.detach(), Err(Error::Timeout(Wait::Shutdown)));
    let waited = sim.now() - start;
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100), "{waited:?}");
    assert_clean(&sim);
}

/// A controller that cannot be disabled either: its admin memory is leaked,
/// never freed while it may still use it.
#[test]
fn a_controller_that_cannot_be_disabled_keeps_its_memory() {
    let (sim, ctrlr, _ns) = setup(SimConfig { timeout_500ms: 1, ..SimConfig::default() });
    sim.set_disable_never(true);
    assert_eq!(ctrlr.detach(), Err(Error::Timeout(Wait::Disable)));
    assert_no_bad_frees(&sim);
    assert!(sim.stats().live_dma_pages > 0, "leaked, not freed");
}
