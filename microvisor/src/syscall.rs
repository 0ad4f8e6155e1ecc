//! The system-call dispatcher.
//!
//! Decodes the number and arguments from the caller's saved frame, checks
//! them, and either answers in the frame (`rax` status, `rdx` value) or
//! ends the caller with a fault: an unknown number, a buffer that is not
//! readable memory of the caller, a length out of range. User memory is
//! never dereferenced directly: each page of a buffer is looked up in the
//! caller's own page tables and read through the direct map, so a hostile
//! pointer can at worst fault its owner.

use microvisor::address::{PAGE_SIZE, PhysicalAddress, VirtualAddress};
use microvisor::user::{BufferError, UserBuffer};
use microvisor_abi::fault::FaultKind;
use microvisor_abi::syscall::{LOG_WRITE_MAX, Status, Syscall};
use microvisor_abi::{USER_END, USER_MIN};

use crate::arch::entry::Frame;
use crate::arch::memory::{Tables, direct};
use crate::component::{self, ComponentState};
use crate::state::{self, Kernel};
use crate::trap::{self, Fault};

/// Answers the calls that need no kernel state directly in the caller's
/// frame; returns `false` when [`dispatch`] must handle the call.
#[inline(always)]
pub fn fast_path(frame: &mut Frame) -> bool {
    if frame.rax == Syscall::Null as u64 {
        frame.rax = Status::Ok as u64;
        return true;
    }
    false
}

/// Handles the system call of the running component and returns the frame
/// to resume.
#[inline(never)]
pub fn dispatch() -> *const Frame {
    // SAFETY: one call per entry from ring 3 (see `state`).
    let kernel = unsafe { state::kernel() };
    let index = kernel.current_index();
    let frame = &mut kernel.components[index].frame;
    let (number, arg0, arg1) = (frame.rax, frame.rdi, frame.rsi);
    match Syscall::from_number(number) {
        Some(Syscall::Null) => {
            frame.rax = Status::Ok as u64;
            frame
        }
        Some(Syscall::LogWrite) => {
            let mut buffer = [0u8; LOG_WRITE_MAX as usize];
            match copy_from_user(kernel, index, arg0, arg1, &mut buffer) {
                Ok(length) => {
                    let component = &mut kernel.components[index];
                    crate::console::component_line(component.name(), &buffer[..length]);
                    component.frame.rax = Status::Ok as u64;
                    &component.frame
                }
                Err(fault) => {
                    trap::fault_component(kernel, index, fault, &[]);
                    kernel.schedule()
                }
            }
        }
        Some(Syscall::Yield) => {
            frame.rax = Status::Ok as u64;
            kernel.schedule()
        }
        Some(Syscall::Exit) => {
            let code = arg0 as u32 as i32;
            let name = kernel.components[index].name();
            if code == 0 {
                log::info!("component '{name}' exited");
            } else {
                log::warn!("component '{name}' exited with code {code}");
            }
            component::stop(kernel, index, ComponentState::Exited(code));
            kernel.schedule()
        }
        Some(Syscall::Panic) => {
            let mut buffer = [0u8; LOG_WRITE_MAX as usize];
            let fault = match copy_from_user(kernel, index, arg0, arg1, &mut buffer) {
                Ok(length) => {
                    let panic = Fault {
                        kind: FaultKind::Panic,
                        address: 0,
                        detail: 0,
                    };
                    trap::fault_component(kernel, index, panic, &buffer[..length]);
                    None
                }
                Err(fault) => Some(fault),
            };
            if let Some(fault) = fault {
                trap::fault_component(kernel, index, fault, &[]);
            }
            kernel.schedule()
        }
        None => {
            let fault = Fault {
                kind: FaultKind::BadSyscall,
                address: 0,
                detail: number,
            };
            trap::fault_component(kernel, index, fault, &[]);
            kernel.schedule()
        }
    }
}

/// Copies `length` bytes at user address `address` of component `index`
/// into `buffer`, checking every page in the component's page tables.
fn copy_from_user(
    kernel: &mut Kernel,
    index: usize,
    address: u64,
    length: u64,
    buffer: &mut [u8],
) -> Result<usize, Fault> {
    let user = UserBuffer::new(address, length, buffer.len() as u64, USER_MIN, USER_END).map_err(
        |error| match error {
            BufferError::TooLong { length, .. } => Fault {
                kind: FaultKind::BadArgument,
                address,
                detail: length,
            },
            BufferError::OutsideUserSpace { address, length } => Fault {
                kind: FaultKind::BadPointer,
                address,
                detail: length,
            },
        },
    )?;
    let tables = Tables {
        frames: &mut kernel.frames,
    };
    let space = kernel.components[index].space;
    let mut copied = 0usize;
    for page in user.pages(PAGE_SIZE) {
        let translation = space
            .translate(&tables, VirtualAddress(page.0))
            .filter(|t| t.user)
            .ok_or(Fault {
                kind: FaultKind::BadPointer,
                address,
                detail: length,
            })?;
        let start = address.max(page.0);
        let end = (address + length).min(page.0 + PAGE_SIZE);
        let count = (end - start) as usize;
        // `page` is page-aligned, so the translation is the frame's base.
        let from = direct(PhysicalAddress(translation.physical.0 + (start - page.0)));
        // SAFETY: the page is mapped user-readable in the component's space,
        // so `physical` is one of its frames (RAM in the direct map), and
        // `count` bytes from `start` stay inside that page.
        unsafe { core::ptr::copy_nonoverlapping(from, buffer[copied..].as_mut_ptr(), count) };
        copied += count;
    }
    Ok(copied)
}
