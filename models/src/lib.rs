//! Exhaustive [loom](https://docs.rs/loom) models of the concurrency protocols
//! of `nvme-nostd`. This crate has no code: the models are its tests, run by
//! `cargo test -p nvme-models` (and by `cargo test --workspace`).
//!
//! # `tests/epoch.rs`: the reset epoch
//!
//! The controller keeps a reset epoch, an `AtomicU32` that a reset moves on
//! (`fetch_add`, AcqRel) while it holds the admin lock, after it disabled the
//! controller and before it enables it again. Queue pairs, each owned by one
//! thread and taking no lock on their fast paths, compare it (Acquire loads)
//! with the epoch their queues were created in:
//!
//! * `Controller::admin_exec_epoch` reads the epoch under the admin lock, so
//!   whatever an admin command created lives until the epoch moves on from
//!   the one it returns;
//! * `Controller::reset_from(seen)` resets only if the epoch is still `seen`
//!   (two threads that find the same failure reset once); `Controller::reset`
//!   always resets;
//! * `catch_up` (in `qpair/recovery.rs`) ends every request in flight with
//!   `Reset` once the epoch moved, since the device, disabled in between, can
//!   no longer complete them, and marks the queues as gone;
//! * `recreate` (in `qpair/setup.rs`) creates the queues again and succeeds
//!   only when Create CQ and Create SQ ran in the same epoch, which the queue
//!   pair records (on failure it judges what may be left by the epoch of the
//!   last Create it sent); `Drop` frees queue memory only once the queues are
//!   known gone, and otherwise leaves it to the quarantine.
//!
//! The model runs two queue pairs, a user calling `reset()` and the device
//! itself as loom threads over a model device that checks every access to
//! host memory, and asserts in every execution that each request ends exactly
//! once, that timeouts seen in one epoch disable the controller once, that a
//! queue pair never believes in queues a reset destroyed, and that no queue
//! memory or request buffer is given up while the device can still use it.
//! Mutated versions of the protocol (a `reset_from` that ignores `seen`, a
//! `recreate` that records a later epoch, a `catch_up` without an epoch move,
//! an epoch moved before the disable) must fail: each is a `should_panic`
//! test naming the invariant it breaks. One mutation, the epoch read outside
//! the admin lock, was caught until `recreate` learned to judge by the epoch
//! of the last Create it sent; it is now explored as a plain test that says
//! so.
//!
//! Loom explores every interleaving of the threads' lock and atomic operations
//! (with the C11 memory model for the atomics: an Acquire load may read a
//! stale value) up to a bound on preemptions, set per test to keep the suite
//! within about a minute; `LOOM_MAX_PREEMPTIONS` overrides it.
#![no_std]
#![forbid(unsafe_code)]
