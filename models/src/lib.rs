//! Loom models of the concurrency protocols of `nvme-nostd`. This crate has
//! no code: the models are its tests, run by `cargo test -p nvme-models`.
#![no_std]
#![forbid(unsafe_code)]
