//! Running a vCPU: `VcpuRun` on the world switcher's thread.
//!
//! The guest runs on the switcher's thread and scheduling context, so its
//! time is charged, and its budget enforced, like any component's. A run's
//! time limit is armed on the core's alarm. A host interrupt that ends
//! guest mode does not reach the world switcher: the call is rewound so the
//! thread re-issues it after the interrupt was handled (possibly after
//! other threads ran), with an empty dirty mask because the state page did
//! not change. The VM object (`crate::object::vm`) does the entry itself.
//!
//! The x87/SSE registers belong to the guests alone (the core and the
//! components are soft-float): they are switched lazily, saved into the
//! previous VM and loaded from this one only when another VM than the last
//! one runs.

use microvisor_abi::syscall::Syscall;
use microvisor_abi::vcpu::ExitReason;

use crate::arch::{cpu, timer};
use crate::kernel::Kernel;
use crate::object::vm::Start;

/// `VcpuRun` by component `caller` on VM `vm` with `mask` and a time
/// limit of `limit_us` (`None`: none). Returns the exit reason, or `None`
/// when a host interrupt ended guest mode and the call was rewound to be
/// issued again.
#[inline(always)]
pub fn run(
    kernel: &mut Kernel,
    caller: usize,
    vm: usize,
    mask: u64,
    limit_us: Option<u64>,
) -> Option<ExitReason> {
    // The common run (no limit, nothing pending) needs no clock.
    if limit_us.is_some() || !kernel.vms[vm].begin_unlimited_run() {
        let now = timer::now();
        let clock = kernel.clock;
        match kernel.vms[vm].begin_run(now, mask, || clock.deadline(now, limit_us)) {
            Start::Exit(reason) => return Some(reason),
            Start::Enter(Some(deadline)) => kernel.alarm_by(deadline, now),
            Start::Enter(None) => {}
        }
    }
    let Some(svm) = kernel.svm.as_ref() else {
        return Some(ExitReason::InvalidState);
    };
    if kernel.fpu_owner != Some(vm) {
        if let Some(previous) = kernel.fpu_owner {
            cpu::fxsave(kernel.vms[previous].fpu());
        }
        cpu::fxrstor(kernel.vms[vm].fpu());
        kernel.fpu_owner = Some(vm);
    }
    let exit = kernel.vms[vm].enter(svm, mask);
    if exit.is_none() {
        kernel.components[caller].reissue(Syscall::VcpuRun as u64, 0);
    }
    exit
}

/// `VmcsReset`: VM `vm` back to its power-on state (its x87/SSE state
/// too: if its registers are in the CPU, they are reloaded from the reset
/// state at the next run).
pub fn reset(kernel: &mut Kernel, vm: usize) {
    if let Some(svm) = kernel.svm.as_mut() {
        kernel.vms[vm].reset(svm);
    }
    if kernel.fpu_owner == Some(vm) {
        kernel.fpu_owner = None;
    }
}
