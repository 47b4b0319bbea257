//! Wire formats of the NVMe specification: plain `#[repr(C)]` data and bit
//! layouts with size assertions, no logic.
pub mod command;
pub mod identify;
pub mod registers;
pub mod status;
