//! The microvisor core's pure logic, host-testable with `cargo test`.
//!
//! Everything in this library is free of hardware access: the physical-frame
//! allocator, the page-table builder and its W^X checker, the ELF load
//! planner, the boot-information parsers and the system-call argument
//! checks. The ring-0 binary (`src/main.rs` and its `arch` module) supplies
//! the hardware: it hands these modules memory through small traits
//! ([`paging::TableMemory`], [`boot_info::PhysicalMemory`]) and acts on their
//! answers. The virtualization layer's data halves live here too: nested
//! page tables ([`npt`]) and the SVM control block ([`vmcb`]) with exit decoding and
//! the dirty-mask write-back. Every function here treats its input as hostile and returns a
//! typed error rather than panicking.
#![cfg_attr(not(test), no_std)]

pub mod address;
pub mod boot_info;
pub mod capability;
pub mod console_input;
pub mod device_memory;
pub mod elf;
pub mod frame;
pub mod interrupt_lines;
pub mod npt;
pub mod paging;
pub mod pci;
pub mod sched;
pub mod start_page;
pub mod time;
pub mod user;
pub mod verdict;
pub mod vmcb;
