//! The microvisor core: the only code that runs in ring 0.
//!
//! `kernel_main` is entered from the 32-bit boot trampoline (see
//! `arch::boot`) on the core's stack, with paging on under temporary boot
//! tables. It brings the machine up in a fixed order — console, CPU
//! features, boot information, frame allocator, the core's own page tables
//! (then the W^X self-check), descriptor tables and system-call entry — then
//! builds the system the boot image describes (`system`) and runs it. From
//! then on the core only runs on entries from ring 3 (`entry`) and halts
//! with a verdict when no component is left.
//!
//! The modules, bottom to top (each uses only those before it):
//! `arch` (the CPU), `console` and `shutdown` (the log and the verdict),
//! `object` (one module per kernel object), `kernel` (the table of objects
//! and the scheduler), then the operations that combine objects: `loader`
//! (a component's address space), `lifecycle` (faults, stops, restarts),
//! `vcpu` (running a guest), `system` (building everything at boot),
//! `syscall` and `trap` (the handlers), `entry` (what the arch stubs call).
//! Pure logic lives in the host-tested library (`src/lib.rs`).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
mod console;
mod entry;
mod inject;
mod kernel;
mod lifecycle;
mod loader;
mod object;
mod shutdown;
mod syscall;
mod system;
mod trap;
mod vcpu;

use core::cell::UnsafeCell;

use microvisor::address::PAGE_SIZE;
use microvisor::boot_info::{BootInfo, PhysicalMemory};
use microvisor::device_memory::NotDevices;
use microvisor::frame::FrameAllocator;
use microvisor::paging;
use microvisor_abi::image::{EntryKind, Image};
use microvisor_abi::spec::Spec;

use arch::boot::{self, KERNEL_BASE};
use arch::cpu::{self, Features, cr0, cr4};
use arch::memory::{self, DIRECT_MAP_BASE};
use kernel::{Entry, with_kernel};

/// The most physical memory the frame allocator tracks (16 GiB).
const TRACKED_MEMORY: u64 = 16 << 30;

struct Bitmap(UnsafeCell<[u64; (TRACKED_MEMORY / PAGE_SIZE / 64) as usize]>);

// SAFETY: handed out once, at boot, as the frame allocator's storage.
unsafe impl Sync for Bitmap {}

static FRAME_BITMAP: Bitmap = Bitmap(UnsafeCell::new(
    [0; (TRACKED_MEMORY / PAGE_SIZE / 64) as usize],
));

/// Reads boot structures through the boot tables' alias of the first 4 GiB
/// at the direct-map base.
struct BootMemory;

impl PhysicalMemory for BootMemory {
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
        let Some(end) = address.checked_add(buffer.len() as u64) else {
            return false;
        };
        if end > 1 << 32 {
            return false;
        }
        // SAFETY: the boot tables map physical [0, 4 GiB) at DIRECT_MAP_BASE
        // and the range was checked to lie inside; the loader's structures
        // are not modified while read.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (DIRECT_MAP_BASE + address) as *const u8,
                buffer.as_mut_ptr(),
                buffer.len(),
            );
        }
        true
    }
}

fn fatal(message: core::fmt::Arguments<'_>) -> ! {
    log::error!("FATAL: {message}");
    shutdown::halt(false, "the core could not boot")
}

#[unsafe(no_mangle)]
extern "C" fn kernel_main(eax: u32, ebx: u32) -> ! {
    console::init();
    print!(
        "microvisor {} (x86_64) booting\n",
        env!("CARGO_PKG_VERSION")
    );
    let features = Features::detect();
    log::info!(
        "cpu: {}, NX {}, SMEP {}, SMAP {}, SVM {}, VMX {}, TSC-deadline timer {}",
        features.vendor(),
        yes(features.no_execute),
        yes(features.smep),
        yes(features.smap),
        yes(features.svm),
        yes(features.vmx),
        yes(features.tsc_deadline)
    );
    if !features.no_execute {
        fatal(format_args!(
            "this CPU has no NX (no-execute) bit; W^X cannot be enforced"
        ));
    }
    let info = BootInfo::read(&BootMemory, eax, ebx)
        .unwrap_or_else(|error| fatal(format_args!("{error}")));
    let layout = boot::image_layout();
    let usable: u64 = info
        .regions()
        .iter()
        .filter(|r| r.usable)
        .map(|r| r.length)
        .sum();
    log::info!(
        "boot: {}, {} MiB usable RAM in {} regions, {} module(s)",
        info.protocol.name(),
        usable >> 20,
        info.regions().len(),
        info.modules().len()
    );
    if let Some(cut) = info.command_line_cut() {
        log::warn!("{cut}");
    }

    // SAFETY: the bitmap is handed out exactly once, here.
    let bitmap = unsafe { &mut *FRAME_BITMAP.0.get() };
    let mut frames = FrameAllocator::new(bitmap);
    for region in info.regions().iter().filter(|r| r.usable) {
        frames.add_free_range(region.start, region.start.saturating_add(region.length));
    }
    for region in info.regions().iter().filter(|r| !r.usable) {
        frames.reserve_range(region.start, region.start.saturating_add(region.length));
    }
    frames.reserve_range(0, 1 << 20);
    frames.reserve_range(layout.boot.start, layout.end - KERNEL_BASE);
    for module in info.modules() {
        frames.reserve_range(module.start, module.end);
    }
    let mut not_devices = NotDevices::new();
    for region in info.regions().iter().filter(|r| r.usable) {
        not_devices.add(region.start, region.start.saturating_add(region.length));
    }
    not_devices.add(layout.boot.start, layout.end - KERNEL_BASE);
    for module in info.modules() {
        not_devices.add(module.start, module.end);
    }
    if info.top_of_ram() > frames.tracked_end() {
        log::warn!(
            "memory above {} GiB is not used",
            frames.tracked_end() >> 30
        );
    }

    let kernel_space =
        memory::build_kernel_space(&mut frames, &layout, &info, arch::timer::apic_physical())
            .unwrap_or_else(|error| {
                fatal(format_args!(
                    "cannot build the core's page tables: {error:?}"
                ))
            });
    let mut extra = cr4::OSFXSR;
    if features.smep {
        extra |= cr4::SMEP;
    }
    if features.smap {
        extra |= cr4::SMAP;
    }
    if features.global_pages {
        extra |= cr4::GLOBAL_PAGES;
    }
    // SAFETY: the new tables map the core's text, data and stacks at the
    // addresses it runs at now, and the direct map; SMEP/SMAP/PGE are only
    // set when CPUID reports them, and the core never touches user pages
    // through user addresses. OSFXSR (every x86-64 CPU has FXSR) and
    // clearing CR0.EM/TS only let FXSAVE/FXRSTOR move the guests' SSE
    // state; the core and components are soft-float and use none.
    unsafe {
        cpu::write_cr3(kernel_space.space.root.0);
        cpu::write_cr4(cpu::read_cr4() | extra);
        cpu::write_cr0(cpu::read_cr0() & !(cr0::EMULATION | cr0::TASK_SWITCHED));
    }
    let tables = memory::Tables {
        frames: &mut frames,
    };
    match paging::check_wx(&tables, &kernel_space.space) {
        Ok(summary) if summary.user == 0 => log::info!(
            "W^X check passed: {} mappings ({} text pages RX, {} rodata pages R, {} data pages RW, direct map RW), none writable and executable, none user; NX on, SMEP {}, SMAP {}",
            summary.leaves,
            kernel_space.text_pages,
            kernel_space.rodata_pages,
            kernel_space.data_pages,
            on(features.smep),
            on(features.smap)
        ),
        Ok(summary) => fatal(format_args!(
            "W^X check failed: {} user pages in the core's tables",
            summary.user
        )),
        Err(violation) => fatal(format_args!("W^X check failed: {violation:?}")),
    }
    log::info!(
        "memory: {} MiB free for components",
        (frames.free_frames() * PAGE_SIZE) >> 20
    );

    // SAFETY: once, at boot, interrupts disabled; both stacks are mapped
    // and used for nothing else.
    unsafe { arch::entry::init(layout.stack.end, layout.fault_stack.end) };
    arch::interrupts::disable_legacy_pic();
    // SAFETY: the core's tables map the APIC page at APIC_VIRTUAL; boot,
    // interrupts disabled.
    let clock = unsafe { arch::timer::init(features.tsc_deadline) };
    log::info!(
        "clock: TSC {} MHz, APIC timer {} kHz (calibrated against the PIT), alarms in {} mode",
        clock.tsc_per_ms / 1000,
        clock.apic_per_ms,
        if clock.tsc_deadline {
            "TSC-deadline"
        } else {
            "one-shot"
        }
    );

    let Some(module) = info.modules().first().copied() else {
        log::warn!("no boot image: nothing to run");
        shutdown::halt(false, "no boot image")
    };
    // SAFETY: the module's frames are reserved (never allocated) and in the
    // direct map; nothing writes to them for the life of the system.
    let image_bytes: &'static [u8] = unsafe {
        core::slice::from_raw_parts(
            memory::direct(microvisor::address::PhysicalAddress(module.start)),
            (module.end - module.start) as usize,
        )
    };
    let image = Image::parse(image_bytes)
        .unwrap_or_else(|error| fatal(format_args!("boot image refused: {error}")));
    log::info!("boot image: {} entries", image.len());
    let Some(spec) = image.entries().find(|entry| entry.kind == EntryKind::Spec) else {
        fatal(format_args!(
            "boot image refused: it has no boot spec (the build tool writes one for every system)"
        ))
    };
    let spec = Spec::parse(spec.contents)
        .unwrap_or_else(|error| fatal(format_args!("boot spec refused: {error}")));
    // SAFETY: boot is the first entry into the core; no token exists.
    let entry = unsafe { Entry::new() };
    kernel::install(
        &entry,
        frames,
        kernel_space.space,
        clock,
        arch::entry::Frame::idle(arch::entry::idle_entry(), layout.stack.end),
        spec,
        not_devices,
    );
    let frame = with_kernel(entry, |kernel| {
        system::instantiate(kernel, &image).unwrap_or_else(|error| fatal(format_args!("{error}")));
        if let Some(test) = info.option("selftest") {
            self_test(test);
        }
        log::info!("starting {} component(s)", kernel.component_count);
        kernel.schedule()
    });
    // SAFETY: `schedule` made the frame current and loaded its address
    // space (or chose the idle loop); frames of new threads hold user
    // segments and a user entry point checked by the ELF planner.
    unsafe { arch::entry::enter_user(frame) }
}

/// Faults on purpose inside the core (`selftest=` on the boot command
/// line), so that tests can show every ring-0 exception is reported and
/// ends the system with a failure verdict. An unknown name is reported and
/// ignored (and nothing claims a fault is coming).
fn self_test(test: &str) {
    let fault: fn() = match test {
        // A read from an unmapped core address: #PF in ring 0.
        "core-fault" => || {
            // SAFETY: deliberately invalid; the page-fault handler reports
            // it and halts the machine, so the read never returns.
            let _ = unsafe { core::ptr::read_volatile(0xffff_ffff_0000_0000 as *const u64) };
        },
        // Unbounded recursion into the stack's guard page: the #PF cannot be
        // delivered on the exhausted stack, so the CPU raises #DF on its own
        // stack (IST 1).
        "stack-overflow" => || {
            #[allow(unconditional_recursion, reason = "the point is to overflow the stack")]
            fn recurse(depth: u64) -> u64 {
                let frame = [depth; 64];
                core::hint::black_box(&frame);
                recurse(depth + 1) + core::hint::black_box(frame[depth as usize % 64])
            }
            core::hint::black_box(recurse(0));
        },
        other => {
            log::warn!("unknown self-test '{other}' (core-fault, stack-overflow); ignored");
            return;
        }
    };
    log::warn!("self-test '{test}': faulting inside the core on purpose");
    fault();
}

fn yes(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn on(value: bool) -> &'static str {
    if value {
        "on"
    } else {
        "off (not supported by this CPU)"
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    log::error!("FATAL: core panic: {info}");
    shutdown::halt(false, "core panic")
}
