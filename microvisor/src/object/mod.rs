//! The core's kernel objects, one module each, below the operations that
//! combine them.
//!
//! Each object keeps its fields private and changes state only through its
//! own methods, so every transition is in one place: a [`Component`] (its
//! address space, thread, [`CapabilityTable`], [`Notification`] word and
//! scheduling context), a [`Queue`]'s shared memory and header, a [`Vm`]
//! with its vCPU. The scheduling context itself is the host-tested
//! `microvisor::sched::SchedulingContext`. Objects know nothing of the
//! kernel table (`crate::kernel`) or of the operations above it
//! (`crate::system`, `crate::loader`, `crate::lifecycle`, `crate::vcpu`,
//! `crate::syscall`, `crate::trap`); they use only the architecture layer
//! and the host-tested library.

pub mod capability;
pub mod component;
pub mod notification;
pub mod queue;
pub mod vm;

pub use capability::Capability;
pub use component::{Component, ComponentState, Declaration};
pub use queue::Queue;
pub use vm::Vm;
