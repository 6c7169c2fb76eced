//! The parts of fledge-init that read what it does not control - its options (the baked file
//! and the kernel command line), the kernel's `ip=` value, the kernel's ACPI event messages and input events -
//! as a library, so they are built, tested and fuzzed on the host as well. `core` and `alloc`
//! only: no system calls here.
#![deny(unsafe_code)]
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi;
pub mod cmdline;
pub mod input;
pub mod ip;
