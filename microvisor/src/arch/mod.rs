//! The architecture layer: everything that touches the CPU directly.
//!
//! One module per architecture, each exporting the same names (`boot`,
//! `cpu`, `serial`, `descriptors`, `entry`, `memory`); the rest of the core
//! uses only those. Today there is one architecture.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the microvisor core supports only x86_64");
