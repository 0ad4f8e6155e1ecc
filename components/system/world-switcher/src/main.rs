//! The world switcher: the user-level VMM of one VM.
//!
//! It loads the guest image into guest memory, sets up the first CPU state
//! (16-bit real mode or 64-bit long mode, as the system declares), and then
//! runs the vCPU, handling every exit the core hands up:
//!
//! - CPUID through the VM's policy ([`vm_platform::cpuid`]): what this
//!   platform really gives, with our hypervisor leaves; the leaves whose
//!   answer depends on neither the subleaf nor the guest's state come from
//!   a table filled once at start ([`vm_platform::cpuid::Answers`]);
//! - port I/O: the 16550 at 0x3f8 (lines go to the system log under the
//!   VM's name), the test-status port 0xf4 (ends the VM with a status), the
//!   8259 pair and the 8254 PIT with port 0x61
//!   ([`vm_platform::interrupts::Platform`]); every other port reads
//!   all-ones and ignores writes, like an empty bus;
//! - RDMSR/WRMSR: the local APIC's (its base, TSC deadline and the x2APIC
//!   range) go to the LAPIC model, the paravirtual clock's to
//!   [`vm_platform::pvclock`] (which is how Linux learns the TSC rate), the
//!   rest through [`vm_platform::msr`], `#GP` for unknown MSRs;
//! - interrupts: before every entry the timers are brought up to date and
//!   the arbiter injects what the guest can take, or asks the core for an
//!   interrupt-window exit (and, while an NMI is being handled, for an exit
//!   at the guest's IRET, after which NMIs open again); timers count in TSC ticks at the rate the core
//!   measured (the start page's `tsc_hz`);
//! - HLT gives the CPU away until the next device deadline (the LAPIC, PIT
//!   and RTC timers; with none, until a notification),
//!   the no-work hypercall for the time asked; VMMCALL hypercalls identify,
//!   log, yield, statistics (exits and injections counted); unknown
//!   numbers `#UD`, and so is any hypercall from outside ring 0 (guest
//!   user code does not reach the hypervisor);
//! - nested page faults, triple faults and invalid state stop the VM with a
//!   report of its state; the world switcher itself and everything else go
//!   on.
//!
//! Arguments: `limit_ms=N` stops the VM after N ms and ends the world
//! switcher (0 = no limit); `restarts=N` how many restart requests it
//! honours (default 3; with 0 the switcher ends when its VM stops);
//! `epoch=N` the Unix time the guest's real-time clock starts at (default
//! 2026-01-01: the system has no wall clock); `on_stop=reboot` reboots
//! the VM whenever it stops (a triple fault, a nested page fault outside
//! its memory, invalid state, an instruction not emulated, a halt it can
//! never leave, an ACPI power-off, a status on the test port), as a PC
//! resets on a triple fault, instead of waiting for a restart request
//! (`on_stop=wait`, the default): each stop is reported as before, then
//! `VM 'NAME' rebooting (boot N)`, and like the guest's own resets these
//! reboots do not count against `restarts=` (a VM that stops at once on
//! every boot only spends its own switcher's time; one whose image is
//! refused is not rebooted). A bad argument ends the switcher with code
//! 2. Any notification the system declares into this component is a
//! restart request: the VM is reset and booted again from its image,
//! running or stopped. The guest's own reset (the ACPI reset
//! register, the 8042's reset pulse, or a jump to the reset vector, where
//! the switcher puts code that writes the register) reboots it the same
//! way without counting against `restarts=`; the RTC keeps its time and
//! CMOS memory across both. When the system gives this VM the console's
//! input (the start-page resource `console`), a notification on its bit
//! makes the switcher take the bytes with `ConsoleRead` and feed them to
//! the guest's UART as its FIFO has room.
//!
//! A notification to a switcher that is not waiting pokes its vCPU (the
//! core does it), so console input, the block store's answers and restart
//! requests end a running guest's run at once, without costing every exit
//! a time limit.
//!
//! Disks: each queue pair `<disk>-requests` / `<disk>-completions` to the
//! block store is a virtio-blk PCI function of the guest ([`disk`]); when
//! the switcher ends, each disk is detached (the store flushes it). NICs:
//! each queue pair `<nic>-tx` / `<nic>-rx` to the network bridge is a
//! virtio-net PCI function ([`net`]); when the switcher ends, each NIC
//! tells the bridge it is gone.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::fmt::Write;

use guest_api::{BAD_ARGUMENT, LOG_MAX, OK, STATUS_PORT, UART_BASE, hypercall};
use microvisor_abi::start::ResourceView;
use microvisor_abi::syscall::CONSOLE_LINE;
use microvisor_abi::vcpu::{
    EntryMode, ExitReason, IoExit, VcpuState, XSETBV_IGNORED, dirty, event, gpr, intercept, npf,
};
use qos_api::control;
use runtime::arguments::OrExit;
use runtime::vm::{GuestMemory, MissingVm, Vm};
use runtime::{LineWriter, println, syscall};
use vm_platform::clock::Clock;
use vm_platform::cpuid::{Answers, PlatformFeatures, Policy};
use vm_platform::fw_cfg::FwCfg;
use vm_platform::interrupts::Platform;
use vm_platform::lapic::Lapic;
use vm_platform::mmio::AccessDecoder;
use vm_platform::msr::Msrs;
use vm_platform::pci::PciHost;
use vm_platform::pic::Pic;
use vm_platform::pit::Pit;
use vm_platform::pm_timer::PmTimer;
use vm_platform::pvclock::Pvclock;
use vm_platform::rtc::Rtc;
use vm_platform::uart::{HostInput, Uart};
use vm_platform::{GuestRam, MmioIgnored, power};

runtime::component!(main);

mod disk;
mod function;
mod net;
mod stats;

use disk::{Disk, MAX_DISKS};
use function::{Registers, Service};
use net::{MAX_NICS, Nic};

/// The local APIC timer's input clock (before its divider).
const APIC_BUS_HZ: u64 = 100_000_000;
/// Guest-physical address bits the LAPIC's base may use.
const PHYSICAL_ADDRESS_BITS: u8 = 39;
/// RFLAGS.IF.
const INTERRUPT_FLAG: u64 = 1 << 9;
/// COM1's ISA interrupt.
const UART_IRQ: u8 = 4;
/// The RTC's ISA interrupt.
const RTC_IRQ: u8 = 8;
/// Where the guest's real-time clock starts (2026-01-01 00:00 UTC) unless
/// the `epoch=` argument gives Unix seconds: the system has no wall clock.
const DEFAULT_EPOCH: u64 = 1_767_225_600;
/// What the platform models, for the CPUID policy: a local APIC with its
/// x2APIC MSRs and the TSC-deadline timer mode (so Linux needs no LAPIC
/// timer calibration), and the paravirtual clock (so it needs no TSC
/// calibration either: its calibration loops time port reads, VM exits
/// that an emulated CPU makes too slow to pass its checks).
const PLATFORM_FEATURES: PlatformFeatures = PlatformFeatures {
    apic: true,
    x2apic: true,
    tsc_deadline: true,
    pvclock: true,
};
/// How soon after an NMI handler's IRET the guest is interrupted when
/// another NMI waits for it (long enough for the entry and the IRET).
const NMI_AFTER_IRET_US: u64 = 20;
/// The longest no-work sleep.
const NO_WORK_MAX_US: u64 = 1_000_000;
/// Unassigned-port accesses reported one by one; the rest are counted.
const REPORTED_PORTS: u32 = 8;

/// Guest memory for the loader and set-up code.
struct Loader(GuestMemory);

impl vm_platform::GuestRead for Loader {
    fn read(&self, address: vm_platform::guest_paging::GuestPhysical, into: &mut [u8]) -> bool {
        self.0.read(address.0, into).is_ok()
    }
    fn read_u64(&self, address: vm_platform::guest_paging::GuestPhysical) -> Option<u64> {
        self.0.read_u64(address.0).ok()
    }
    fn read_u32(&self, address: vm_platform::guest_paging::GuestPhysical) -> Option<u32> {
        self.0.read_u32(address.0).ok()
    }
}

impl vm_platform::Memory for Loader {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn write(&mut self, address: u64, bytes: &[u8]) -> bool {
        self.0.write(address, bytes).is_ok()
    }
    fn fill(&mut self, address: u64, length: u64, value: u8) -> bool {
        self.0.fill(address, length, value).is_ok()
    }
}

/// Why the VM is not running.
enum Stop {
    /// The guest wrote its status to the test-status port.
    Finished(u32),
    /// The guest powered itself off (ACPI S5).
    PoweredOff,
    /// Stopped for cause (message already reported).
    Stopped,
    /// The time limit passed.
    TimeLimit,
    /// A restart was requested.
    Restart,
    /// The guest reset itself (a warm reboot).
    Reset,
    /// HLT with interrupts off and no NMI that could end it: the vCPU can
    /// never run again (how a guest without a power-off path stops).
    Halted,
}

struct Switcher {
    vm: Vm,
    uart: Uart,
    cpuid: Policy,
    /// The policy's answers to the leaves that do not vary.
    cpuid_answers: Answers,
    msrs: Msrs,
    /// The interrupt controllers, timers and other platform devices.
    devices: Devices,
    /// TSC ticks to microseconds and to nanoseconds.
    microseconds: Clock,
    nanoseconds: Clock,
    /// When the platform's timers next need [`Platform::tick`] (TSC), kept
    /// up to date after everything that can change it.
    due: Option<u64>,
    /// TSC ticks per second.
    tsc_hz: u64,
    /// The level each ISA interrupt line was last set to (bit n: IRQ n),
    /// so that an unchanged device line costs no controller update.
    lines: u16,
    /// Unix seconds at which the guest's clock starts.
    epoch: u64,
    /// Guest memory is still as the core created it (zeroed): true only in
    /// the switcher's first life, until the first boot.
    fresh_memory: bool,
    /// Boots before the current one: requested restarts and the guest's
    /// own resets (what IDENTIFY answers).
    restarts: u32,
    /// An access to the LAPIC's page while it was not decoded was reported
    /// this boot.
    undecoded_reported: bool,
    /// Restart requests honoured, against the `restarts=` limit.
    requested: u32,
    unassigned_ports: u32,
    /// Notification bits that are restart requests.
    requests: u64,
    /// The notification bit that says console input arrived (0: this VM
    /// does not read the system console).
    console: u64,
    /// Console input on its way to the guest's UART.
    host_input: HostInput,
    /// Decodes the instructions that touch device pages (remembering
    /// walks and instructions between exits).
    decoder: AccessDecoder,
    /// Absolute end of the run (ns since boot), if limited.
    deadline_ns: Option<u64>,
    /// The VM's disks (virtio-blk functions served by the block store).
    disks: [Option<Disk>; MAX_DISKS],
    /// The VM's NICs (virtio-net functions on the network bridge).
    nics: [Option<Nic>; MAX_NICS],
    /// VM exits by kind, virtual interrupts injected and time halted since
    /// the switcher started (the STATISTICS hypercall answers them; a QoS
    /// controller is sent them).
    statistics: stats::Statistics,
    /// The RIP at which an interrupt was last injected, until a HLT
    /// exit looks at it (see [`Switcher::halt`]).
    injected_at: Option<u64>,
}

fn main(start: &runtime::Start) -> i32 {
    let vm = match Vm::from_start(start) {
        Ok(vm) => vm,
        Err(MissingVm::NoVm) => {
            println!("no VM is declared for this world switcher");
            return 1;
        }
        Err(MissingVm::Missing(what)) => {
            println!("the VM's {what} is missing from the start page");
            return 1;
        }
        Err(MissingVm::AlreadyTaken) => {
            println!("the VM was taken twice (a world switcher bug)");
            return 1;
        }
    };
    let arguments = start
        .arguments(&["limit_ms", "restarts", "epoch", "on_stop"])
        .or_exit();
    let limit_ms: u64 = arguments.number("limit_ms", 0).or_exit();
    let allowed_restarts: u32 = arguments.number("restarts", 3).or_exit();
    let reboot_on_stop = arguments
        .choice("on_stop", &["wait", "reboot"], "wait")
        .or_exit()
        == "reboot";
    let requests = start.views().fold(0, |bits, (_, view)| match view {
        ResourceView::Incoming { mask } => bits | mask,
        _ => bits,
    });
    let console = start.views().fold(0, |bits, (_, view)| match view {
        ResourceView::Interrupt { line, bit } if line == u64::from(CONSOLE_LINE) => {
            bits | 1 << (bit % 64)
        }
        _ => bits,
    });
    let tsc_hz = start.tsc_hz();
    let cpuid = Policy::new(PLATFORM_FEATURES, host_cpuid);
    let epoch: u64 = arguments.number("epoch", DEFAULT_EPOCH).or_exit();
    let clocks = Clock::new(tsc_hz, 1_000_000).zip(Clock::new(tsc_hz, 1_000_000_000));
    let (Some(devices), Some((microseconds, nanoseconds))) =
        (Devices::new(tsc_hz, vm.memory.size(), epoch), clocks)
    else {
        println!("the start page gives no usable TSC rate ({tsc_hz} Hz); no timer can run");
        return 1;
    };
    let mut switcher = Switcher {
        devices,
        microseconds,
        nanoseconds,
        epoch,
        fresh_memory: start.generation() == 1,
        vm,
        uart: Uart::new(),
        cpuid,
        cpuid_answers: Answers::new(&cpuid, host_cpuid),
        msrs: Msrs::new(&cpuid),
        due: None,
        tsc_hz,
        lines: 0,
        restarts: 0,
        undecoded_reported: false,
        requested: 0,
        unassigned_ports: 0,
        requests,
        console,
        host_input: HostInput::new(),
        decoder: AccessDecoder::new(),
        deadline_ns: (limit_ms > 0).then(|| syscall::time_ns() + limit_ms * 1_000_000),
        disks: [None, None, None, None],
        nics: [None, None, None, None],
        injected_at: None,
        statistics: stats::Statistics::new(start, nanoseconds),
    };
    disk::open_all(start, switcher.vm.name(), &mut switcher.disks);
    net::open_all(start, switcher.vm.name(), &mut switcher.nics);
    loop {
        let (booted, stop) = match switcher.boot() {
            Ok(dirty) => (true, switcher.run(dirty)),
            Err(()) => (false, Stop::Stopped),
        };
        // A switcher that honours no restart request (`restarts=0`) ends
        // with its VM.
        let wait_for_request =
            |switcher: &mut Switcher| allowed_restarts > 0 && switcher.wait_for_request();
        // With `on_stop=reboot`, a VM that stopped (after booting) boots
        // again as after its own reset; what stopped it was reported.
        let reboot = match stop {
            Stop::Reset => true,
            Stop::Restart | Stop::TimeLimit => false,
            Stop::PoweredOff | Stop::Finished(_) | Stop::Halted | Stop::Stopped => {
                reboot_on_stop && booted
            }
        };
        if reboot {
            match stop {
                Stop::PoweredOff => println!("VM '{}' powered off", switcher.vm.name()),
                Stop::Finished(status) => println!(
                    "VM '{}' finished with status {status} ({})",
                    switcher.vm.name(),
                    if status == 0 { "passed" } else { "failed" }
                ),
                Stop::Halted => println!(
                    "VM '{}' halted with interrupts off and no NMI to come",
                    switcher.vm.name()
                ),
                _ => {}
            }
            // The guest's own reboot, or a stop it caused: not a restart
            // request, so no limit (a guest rebooting in a loop only
            // spends its own CPU time).
            switcher.restarts = switcher.restarts.saturating_add(1);
            println!(
                "VM '{}' rebooting (boot {})",
                switcher.vm.name(),
                switcher.restarts + 1
            );
            continue;
        }
        let restart = match stop {
            Stop::Restart => true,
            // Rebooted above.
            Stop::Reset => continue,
            Stop::TimeLimit => {
                println!("VM '{}' stopped: its time limit passed", switcher.vm.name());
                switcher.detach_devices();
                return 0;
            }
            Stop::PoweredOff => {
                println!("VM '{}' powered off", switcher.vm.name());
                wait_for_request(&mut switcher)
            }
            Stop::Finished(status) => {
                let verdict = if status == 0 { "passed" } else { "failed" };
                println!(
                    "VM '{}' finished with status {status} ({verdict})",
                    switcher.vm.name()
                );
                wait_for_request(&mut switcher)
            }
            Stop::Halted => {
                println!(
                    "VM '{}' halted with interrupts off and no NMI to come: it can never run again",
                    switcher.vm.name()
                );
                wait_for_request(&mut switcher)
            }
            Stop::Stopped => wait_for_request(&mut switcher),
        };
        if !restart {
            switcher.detach_devices();
            return 0;
        }
        if switcher.requested == allowed_restarts {
            println!(
                "VM '{}': restart refused, it was restarted {allowed_restarts} times already",
                switcher.vm.name()
            );
            switcher.detach_devices();
            return 0;
        }
        switcher.requested += 1;
        switcher.restarts = switcher.restarts.saturating_add(1);
        println!(
            "VM '{}' restarting on request ({} of {allowed_restarts})",
            switcher.vm.name(),
            switcher.requested
        );
    }
}

/// The devices a VM starts with, in their power-on state: the
/// interrupt controllers and timers (a LAPIC at its default base, an
/// IOAPIC, the 8259 pair, the PIT), the RTC, fw_cfg, the PCI host bridge
/// the ACPI PM timer and the paravirtual clock. `None` when the TSC rate or the VM's memory size
/// cannot describe them.
struct Devices {
    platform: Platform,
    /// The CMOS real-time clock.
    rtc: Rtc,
    /// When the RTC next needs an update (TSC), from [`Devices::plan_rtc`].
    rtc_due: Option<u64>,
    /// QEMU's firmware configuration device.
    fw_cfg: FwCfg<'static>,
    /// The PCI host bridge (no functions yet).
    pci: PciHost,
    /// The ACPI PM timer.
    pm_timer: PmTimer,
    /// The paravirtual clock's MSRs.
    pvclock: Pvclock,
}

impl Devices {
    /// See [`Switcher::next_due`].
    fn next_due(&self) -> Option<u64> {
        match (self.platform.next_deadline(), self.rtc_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Works out when the RTC next needs an update (after anything that can
    /// change it: an access, an update); `nanoseconds` converts its clock
    /// to the TSC.
    fn plan_rtc(&mut self, nanoseconds: &Clock) {
        let now_ns = nanoseconds.ticks_in(runtime::rdtsc());
        self.rtc_due = self
            .rtc
            .next_deadline(now_ns)
            .map(|ns| nanoseconds.tsc_for(ns));
    }

    fn new(tsc_hz: u64, memory_size: u64, epoch: u64) -> Option<Self> {
        let ram = guest_ram(memory_size);
        let bus = Clock::new(tsc_hz, APIC_BUS_HZ)?;
        Some(Self {
            platform: Platform::new(
                Lapic::new(bus, PHYSICAL_ADDRESS_BITS),
                Some(Pic::new()),
                Some(Pit::new(tsc_hz)?),
            ),
            rtc: Rtc::new(epoch, ram),
            rtc_due: None,
            fw_cfg: FwCfg::new(1, ram, &[]).ok()?,
            pci: PciHost::new(),
            pm_timer: PmTimer::new(tsc_hz)?,
            pvclock: Pvclock::new(tsc_hz, epoch)?,
        })
    }
}

/// The VM's RAM as firmware reports it (all below 4 GiB: a VM has at most
/// 1 GiB).
fn guest_ram(size: u64) -> GuestRam {
    GuestRam {
        below_4g: size,
        above_4g: 0,
    }
}

/// The bits of RAX a port access of `size` bytes moves (the low byte,
/// word or doubleword).
#[inline(always)]
fn io_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

/// Gives the guest CPUID's `answer` (EAX, EBX, ECX, EDX) and moves it past
/// the instruction; returns the dirty bits.
#[inline(always)]
fn cpuid_answer(state: &mut VcpuState, &[a, b, c, d]: &[u32; 4]) -> u64 {
    state.gpr[gpr::RAX] = u64::from(a);
    state.gpr[gpr::RBX] = u64::from(b);
    state.gpr[gpr::RCX] = u64::from(c);
    state.gpr[gpr::RDX] = u64::from(d);
    state.rip += 2;
    dirty::RAX | dirty::RBX | dirty::RCX | dirty::RDX | dirty::RIP
}

/// The host's CPUID answer for `leaf` and `subleaf`.
fn host_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

impl Switcher {
    /// Resets the vCPU, clears guest memory, loads the image and sets up
    /// the entry state; returns the dirty mask for the first run.
    fn boot(&mut self) -> Result<u64, ()> {
        self.vm.reset();
        if self.statistics.following != 0 {
            self.apply_intercepts();
        }
        self.uart = Uart::new();
        self.msrs = Msrs::new(&self.cpuid);
        // The same rate and size built them at start: this cannot fail.
        if let Some(mut devices) = Devices::new(self.tsc_hz, self.vm.memory.size(), self.epoch) {
            // The RTC is battery-backed: its time and CMOS memory outlive
            // a reset; the chip's RESET line clears its interrupts.
            core::mem::swap(&mut devices.rtc, &mut self.devices.rtc);
            self.devices = devices;
            self.devices.rtc.reset();
        }
        self.lines = 0;
        self.undecoded_reported = false;
        for disk in self.disks.iter_mut().flatten() {
            if !disk.attach(&mut self.devices.pci) {
                println!(
                    "VM '{}': disk at PCI slot {} not attached: the slot is taken",
                    self.vm.name(),
                    disk.slot()
                );
            }
        }
        for nic in self.nics.iter_mut().flatten() {
            if !nic.attach(&mut self.devices.pci) {
                println!(
                    "VM '{}': NIC at PCI slot {} not attached: the slot is taken",
                    self.vm.name(),
                    nic.slot()
                );
            }
        }
        self.due = self.next_due();
        let mut memory = Loader(self.vm.memory);
        let size = self.vm.memory.size();
        // The core hands over guest memory zeroed at boot; after a VM
        // restart, or in a restarted switcher, it is cleared here (for a
        // 256 MiB guest a quarter of a billion byte stores under
        // emulation, so not when the core already did it).
        if !core::mem::take(&mut self.fresh_memory) {
            let _ = self.vm.memory.fill(0, size, 0);
        }
        let limit = size - vm_platform::setup::SETUP_BYTES.min(size);
        if vm_platform::bundle::is_bundle(self.vm.image) {
            return self.boot_bundle(&mut memory);
        }
        let loaded = match vm_platform::image::load(self.vm.image, &mut memory, limit) {
            Ok(loaded) => loaded,
            Err(error) => {
                println!(
                    "VM '{}' not started: its image is refused: {error}",
                    self.vm.name()
                );
                return Err(());
            }
        };
        let entry = self.vm.entry;
        let result = match entry {
            EntryMode::Long => {
                vm_platform::setup::long_mode(self.vm.state(), &mut memory, loaded.entry)
            }
            EntryMode::Real => vm_platform::setup::real_mode(self.vm.state(), loaded.lowest),
        };
        match result {
            Ok(mask) => {
                println!(
                    "VM '{}' booting: {} segment(s), {} KiB of memory, {} entry at {:#x}",
                    self.vm.name(),
                    loaded.segments,
                    size / 1024,
                    match entry {
                        EntryMode::Long => "64-bit",
                        EntryMode::Real => "16-bit real-mode",
                    },
                    match entry {
                        EntryMode::Long => loaded.entry,
                        EntryMode::Real => loaded.lowest,
                    }
                );
                Ok(mask)
            }
            Err(error) => {
                println!("VM '{}' not started: {error}", self.vm.name());
                Err(())
            }
        }
    }

    /// Boots an unmodified guest from its bundle: a Linux kernel through
    /// PVH (an ELF `vmlinux` with the note) or the 64-bit boot protocol (a
    /// bzImage), a multiboot kernel with its initrd as the one module; in
    /// the PC memory map of the VM's memory.
    fn boot_bundle(&mut self, memory: &mut Loader) -> Result<u64, ()> {
        use vm_platform::bundle::{Bundle, Kind};
        use vm_platform::layout::{BootFiles, GuestLayout, MemoryMap};
        let name = self.vm.name();
        let bundle = match Bundle::parse(self.vm.image) {
            Ok(bundle) => bundle,
            Err(error) => {
                println!("VM '{name}' not started: {error}");
                return Err(());
            }
        };
        let size = self.vm.memory.size();
        let mut layout = match MemoryMap::pc(size) {
            Ok(map) => GuestLayout::new(map),
            Err(error) => {
                println!("VM '{name}' not started: its memory map: {error}");
                return Err(());
            }
        };
        let acpi = vm_platform::acpi::Platform {
            cpus: 1,
            pit: true,
            pic: true,
            fw_cfg: true,
            virtio_mmio: &[],
            pci_root: self.disks.iter().any(Option::is_some)
                || self.nics.iter().any(Option::is_some),
        };
        let tables = match vm_platform::acpi::install(&acpi, memory) {
            Ok(tables) => tables,
            Err(error) => {
                println!("VM '{name}' not started: its ACPI tables: {error:?}");
                return Err(());
            }
        };
        // The firmware's reset vector, which resets the VM (Linux reboots
        // through it on our hardware-reduced ACPI platform).
        if !vm_platform::Memory::write(memory, power::RESET_VECTOR, &power::reset_vector_code()) {
            println!("VM '{name}' not started: its memory has no room for the reset vector");
            return Err(());
        }
        let files = BootFiles {
            kernel: bundle.kernel,
            cmdline: bundle.command_line.as_bytes(),
            initrd: bundle.initrd,
            rsdp: Some(tables.rsdp),
        };
        let state = self.vm.state();
        let mut refusal = LineWriter::new();
        let mut refused = |error: &dyn core::fmt::Display| {
            let _ = write!(refusal, "{error}");
        };
        let (protocol, result) = match bundle.kind {
            Kind::Linux if bundle.kernel.starts_with(b"\x7fELF") => (
                "PVH",
                vm_platform::pvh::load(state, memory, &mut layout, &files)
                    .map_err(|error| refused(&error)),
            ),
            Kind::Linux => (
                "the Linux boot protocol",
                vm_platform::linux::load(state, memory, &mut layout, &files)
                    .map_err(|error| refused(&error)),
            ),
            Kind::Multiboot => {
                let module = [vm_platform::multiboot::Module {
                    bytes: bundle.initrd,
                    string: b"initrd",
                }];
                let modules = if bundle.initrd.is_empty() {
                    &module[..0]
                } else {
                    &module[..]
                };
                let files = vm_platform::multiboot::MultibootFiles {
                    kernel: bundle.kernel,
                    name: name.as_bytes(),
                    cmdline: bundle.command_line.as_bytes(),
                    modules,
                };
                (
                    "multiboot",
                    vm_platform::multiboot::load(state, memory, &mut layout, &files)
                        .map_err(|error| refused(&error)),
                )
            }
        };
        match result {
            Ok(boot) => {
                println!(
                    "VM '{name}' booting a {} kernel through {protocol}: {} KiB kernel, {} KiB initrd, {} KiB of memory, entry at {:#x}",
                    bundle.kind.name(),
                    bundle.kernel.len() / 1024,
                    bundle.initrd.len() / 1024,
                    size / 1024,
                    boot.entry
                );
                Ok(boot.dirty)
            }
            Err(()) => {
                println!(
                    "VM '{name}' not started: its {} kernel is refused: {}",
                    bundle.kind.name(),
                    core::str::from_utf8(refusal.as_bytes()).unwrap_or("?")
                );
                Err(())
            }
        }
    }

    /// Runs the vCPU until the VM stops. Not inlined into `main`: the
    /// loop's code then keeps its values in registers.
    #[inline(never)]
    fn run(&mut self, mut dirty: u64) -> Stop {
        if self.statistics.processes.is_tracking() {
            // A new boot: its first process is the one loaded now.
            let consumed = syscall::consumed_ns(None);
            let cr3 = self.vm.state().cr3;
            self.statistics.processes.stop(consumed);
            self.statistics.processes.start(cr3, consumed);
        }
        // What the last entry found that a quiet exit cannot change, so
        // that the next entry need not look at it again. A quiet exit is
        // one whose handler touches none of the platform's models and
        // timers (the interrupt controllers, `due`): a CPUID, a UART
        // access that leaves its interrupt line as it was. The rest of
        // the loop (`guest_cr8`, `exit_seen`) changes neither, see below.
        //
        // `idle`: the platform was idle ([`Platform::idle`]: nothing
        // requested, no NMI's handler running); then only a timer that fell
        // due can have changed the models, which `deliver_interrupts`
        // checks first.
        //
        // `calm`: idle, and the run had no limit, so no timer was armed
        // (`due` was `None`), the VM has no time limit, and no NMI awaited
        // an IRET (idle: none was being handled). Nothing can then fall
        // due, and the next run has no limit either: the next entry only
        // has to see that the state page asks for nothing
        // ([`Platform::entry_settled`]), which is all `prepare_entry`
        // looks at on an idle platform.
        let (mut idle, mut calm) = (false, false);
        loop {
            // No limit unless the VM has one or a guest timer is armed:
            // requests to a running guest come with a poke (see the module
            // documentation), but a timer must interrupt a guest that
            // never exits by itself.
            let mut limit = None;
            if !(calm && self.devices.platform.entry_settled(self.vm.state())) {
                let (mask, idle_at_entry) = self.deliver_interrupts(idle);
                dirty |= mask;
                limit = self.run_limit_us();
                idle = idle_at_entry;
                calm = idle && limit.is_none();
            }
            let reason = self.vm.run(dirty, limit);
            let vm = &mut self.vm;
            if self
                .statistics
                .exit(reason.map_or(0, |reason| reason as u32), || {
                    vm.state().entries
                })
            {
                self.follow_control();
            }
            let Some(reason) = reason else {
                self.report("stopped: the core answered an unknown exit reason");
                return Stop::Stopped;
            };
            self.devices.platform.guest_cr8(self.vm.state().cr8);
            if self.devices.platform.arbiter.awaiting_iret() {
                let rip = self.vm.state().rip;
                self.devices.platform.arbiter.exit_seen(rip);
            }
            // An exit that is not quiet (see above) forgets what the last
            // entry found.
            let outcome = match reason {
                ExitReason::Cpuid => Ok(self.cpuid()),
                ExitReason::Io => self.io().map(|(mask, quiet)| {
                    if !quiet {
                        (idle, calm) = (false, false);
                    }
                    mask
                }),
                // Device pages (the LAPIC, the IOAPIC, virtio): their own
                // call, without the dispatch of the rest.
                ExitReason::NestedPageFault => {
                    (idle, calm) = (false, false);
                    self.nested_page_fault()
                }
                // The rest, out of line: the loop's own code stays small.
                _ => {
                    (idle, calm) = (false, false);
                    self.other_exit(reason)
                }
            };
            match outcome {
                Ok(mask) => dirty = mask | self.end_shadow(mask),
                Err(stop) => {
                    let vmcs = self.vm.vmcs;
                    self.uart.flush(|line| syscall::guest_log(vmcs, line));
                    return stop;
                }
            }
        }
    }

    /// The exits but CPUID, port I/O and nested page faults (which
    /// [`Switcher::run`] dispatches itself): returns the dirty bits for
    /// the next entry.
    #[inline(never)]
    fn other_exit(&mut self, reason: ExitReason) -> Result<u64, Stop> {
        match reason {
            // Handled in `run`; not reached.
            ExitReason::Cpuid => Ok(self.cpuid()),
            ExitReason::Io => self.io().map(|(mask, _)| mask),
            ExitReason::NestedPageFault => self.nested_page_fault(),
            ExitReason::Msr => Ok(self.msr()),
            ExitReason::Hlt => self.halt(),
            ExitReason::Hypercall => self.hypercall(),
            ExitReason::Xsetbv => self.xsetbv(),
            ExitReason::Cr8Write => self.cr8_write(),
            ExitReason::Cr3Write => self.cr3_write(),
            ExitReason::Wbinvd => Ok(self.wbinvd()),
            ExitReason::Poked | ExitReason::TimeLimit => self.poll().map(|()| 0),
            // The guest can take an interrupt now: the next entry's
            // arbiter injects it (and cancels the window).
            ExitReason::InterruptWindow => Ok(0),
            // The end of an NMI handler: NMIs open again once the
            // guest is past this IRET.
            ExitReason::Iret => {
                let rip = self.vm.state().rip;
                self.devices.platform.arbiter.iret_reached(rip);
                Ok(0)
            }
            ExitReason::Shutdown => Err(self.report("stopped: triple fault (shutdown)")),
            ExitReason::InvalidState => {
                Err(self.report("stopped: the CPU refused its state (invalid guest state)"))
            }
            ExitReason::Exception => {
                let vector = self.vm.state().qualification;
                let mut line = LineWriter::new();
                let _ = write!(line, "stopped: machine-level exception {vector}");
                Err(self.report_line(line))
            }
            ExitReason::Other => {
                let raw = self.vm.state().raw_exit;
                let mut line = LineWriter::new();
                let _ = write!(line, "stopped: unexpected exit {raw:#x}");
                Err(self.report_line(line))
            }
        }
    }

    /// Brings the timers up to date and writes the arbiter's decision for
    /// the next entry; returns its dirty bits, and whether the platform is
    /// idle at this entry (`false` when not known). `idle`: it was at the
    /// last entry and nothing has touched its models since (see
    /// [`Switcher::run`]); a timer's tick ends that knowledge.
    fn deliver_interrupts(&mut self, idle: bool) -> (u64, bool) {
        let mut idle = idle;
        if let Some(due) = self.due {
            let now = runtime::rdtsc();
            if due <= now {
                self.tick_devices(now);
                idle = false;
            }
        }
        let (mask, idle) = self
            .devices
            .platform
            .prepare_entry_tracked(self.vm.state(), idle);
        if mask & dirty::INJECT != 0 {
            self.injected_at = Some(self.vm.state().rip);
            self.statistics.injected();
        }
        (mask, idle)
    }

    /// Every device clock brought up to `now` (TSC): the interrupt
    /// controllers' timers, and the RTC's update, alarm and periodic
    /// flags with its line; then the next deadline.
    fn tick_devices(&mut self, now: u64) {
        self.devices.platform.tick(now);
        if self.devices.rtc_due.is_some_and(|due| due <= now) {
            self.devices.rtc.update(self.tsc_ns(now));
            self.devices.plan_rtc(&self.nanoseconds);
            self.set_line(RTC_IRQ, self.devices.rtc.irq_line());
        }
        self.due = self.next_due();
    }

    /// The earliest TSC at which a device needs [`Switcher::tick_devices`]:
    /// the platform's timers and the RTC's next flag (`None`: nothing is
    /// due, so an idle guest costs nothing until something happens).
    fn next_due(&self) -> Option<u64> {
        self.devices.next_due()
    }

    /// HLT: sleeps until the next device deadline (or not at all when an
    /// interrupt or NMI is already waiting; with nothing due, until a
    /// notification: console input, a restart request), then goes on after
    /// the instruction; the next entry delivers what is due.
    fn halt(&mut self) -> Result<u64, Stop> {
        let now = runtime::rdtsc();
        self.tick_devices(now);
        // What ends HLT on hardware: an interrupt the guest takes, or an
        // NMI (whatever IF says) unless one is still being handled.
        let interruptible = self.vm.state().rflags & INTERRUPT_FLAG != 0;
        // An interrupt injected with the guest at this very HLT was taken
        // just before it, where on hardware the STI shadow of the
        // guest's `sti; hlt` would have made it wake the HLT instead:
        // under emulation the shadow can be lost across a host
        // interrupt's exit, and the guest would sleep past the interrupt
        // it waited for. Such a HLT ends at once (at worst one early
        // wake-up, which idle loops allow for).
        let taken_here = self.injected_at.take() == Some(self.vm.state().rip);
        let platform = &self.devices.platform;
        let wakes = taken_here
            || (interruptible && platform.interrupt_waiting())
            || (platform.lapic.nmi_pending() && !platform.arbiter.nmi_blocked());
        // Only an NMI ends HLT with interrupts off, and unless a device
        // line is routed as one, nothing but the guest raises one.
        if !interruptible && !wakes && !platform.nmi_possible() {
            return Err(Stop::Halted);
        }
        // The end of a period of the guest's work: late when the next
        // interrupt is already here.
        let periods = self.statistics.follows(control::TRACK_PERIODS);
        if periods {
            let programmed = platform.periodic_timer_tsc().map(|tsc| self.tsc_ns(tsc));
            let tracker = &mut self.statistics.periods;
            tracker.programmed(programmed);
            tracker.halted(syscall::consumed_ns(None), wakes);
        }
        let timeout_us = match self.due {
            _ if wakes => Some(0),
            Some(due) => Some(self.microseconds.ticks_in(due.saturating_sub(now))),
            None => None,
        };
        if timeout_us == Some(0) {
            self.vm.state().rip += 1;
        } else {
            self.sleep(timeout_us, 1)?;
        }
        if periods {
            let now = self.tsc_ns(runtime::rdtsc());
            self.statistics
                .periods
                .woke(now, syscall::consumed_ns(None));
        }
        Ok(dirty::RIP)
    }

    /// Follows the QoS controller's latest request, if it changed: the
    /// intercepts it needs, and process tracking from the CR3 loaded now.
    fn follow_control(&mut self) {
        let Some(flags) = self.statistics.requested() else {
            return;
        };
        self.statistics.following = flags;
        self.apply_intercepts();
        let consumed = syscall::consumed_ns(None);
        let processes = &mut self.statistics.processes;
        if flags & control::TRACK_PROCESSES == 0 {
            processes.stop(consumed);
        } else if !processes.is_tracking() {
            // After any exit: CR3 may not be published.
            let cr3 = self.vm.full_state(0).cr3;
            self.statistics.processes.start(cr3, consumed);
        }
        let on = |bit: u64| if flags & bit != 0 { "on" } else { "off" };
        println!(
            "VM '{}': the QoS controller asks for: processes {}, periods {}, yield at cache flushes {}{}",
            self.vm.name(),
            on(control::TRACK_PROCESSES),
            on(control::TRACK_PERIODS),
            on(control::YIELD_ON_FLUSH),
            if flags & control::COUNT_FLUSHES != 0 && flags & control::YIELD_ON_FLUSH == 0 {
                " (counted)"
            } else {
                ""
            }
        );
    }

    /// Sets the optional intercepts what the controller asks for needs
    /// (again after a reset, which clears them).
    fn apply_intercepts(&mut self) {
        let mut mask = 0;
        if self.statistics.follows(control::TRACK_PROCESSES) {
            mask |= intercept::CR3_WRITE;
        }
        if self
            .statistics
            .follows(control::YIELD_ON_FLUSH | control::COUNT_FLUSHES)
        {
            mask |= intercept::WBINVD;
        }
        syscall::vmcs_control(self.vm.vmcs, mask);
    }

    /// After an instruction was emulated (RIP moved past it, `mask` has
    /// [`dirty::RIP`]): the interrupt shadow of STI or MOV SS, which
    /// covers only the next instruction, is over, as when the CPU executes
    /// one (a HLT right after STI, an MMIO access reported in a shadow).
    /// Without this, an interrupt or NMI would wait for the next exit.
    /// Returns the dirty bit, if the shadow was on.
    fn end_shadow(&mut self, mask: u64) -> u64 {
        if mask & dirty::RIP == 0 {
            return 0;
        }
        let state = self.vm.state();
        if state.interrupt_shadow == 0 {
            return 0;
        }
        state.interrupt_shadow = 0;
        dirty::INTERRUPT_SHADOW
    }

    /// Drives ISA interrupt line `irq` to `high`, telling the interrupt
    /// controllers only when the level changes; returns whether it did.
    fn set_line(&mut self, irq: u8, high: bool) -> bool {
        let bit = 1u16 << irq;
        if (self.lines & bit != 0) == high {
            return false;
        }
        self.lines ^= bit;
        self.devices.platform.set_isa_irq(irq, high);
        true
    }

    /// Nanoseconds of TSC value `tsc` (the devices' clock).
    fn tsc_ns(&self, tsc: u64) -> u64 {
        self.nanoseconds.ticks_in(tsc)
    }

    /// How long the next run may last: until the VM's time limit or the
    /// platform's next timer deadline, whichever comes first (`None`: no
    /// limit).
    #[inline(always)]
    fn run_limit_us(&self) -> Option<u64> {
        let platform = &self.devices.platform;
        // The common case first, without reading a clock: no timer, no
        // time limit and no NMI waiting for an IRET give no limit below.
        if self.due.is_none() && self.deadline_ns.is_none() && !platform.arbiter.awaiting_iret() {
            return None;
        }
        let timer = self.due.map(|due| {
            self.microseconds
                .ticks_in(due.saturating_sub(runtime::rdtsc()))
        });
        // An NMI waiting for its predecessor's IRET, which the guest is
        // about to execute: the next exit, soon after it, delivers it.
        let timer = if platform.arbiter.awaiting_iret() && platform.lapic.nmi_pending() {
            Some(timer.map_or(NMI_AFTER_IRET_US, |us| us.min(NMI_AFTER_IRET_US)))
        } else {
            timer
        };
        match (self.time_left_us(), timer) {
            (Some(left), Some(timer)) => Some(left.min(timer)),
            (left, timer) => left.or(timer),
        }
    }

    fn time_left_us(&self) -> Option<u64> {
        self.deadline_ns
            .map(|end| end.saturating_sub(syscall::time_ns()) / 1000)
    }

    /// Looks for requests and the time limit (after a poke or a time-limit
    /// exit).
    fn poll(&mut self) -> Result<(), Stop> {
        if self.time_left_us() == Some(0) {
            return Err(Stop::TimeLimit);
        }
        let bits = syscall::wait(Some(0)).unwrap_or(0);
        self.console_input(bits);
        self.service_devices();
        self.follow_control();
        if bits & self.requests != 0 {
            return Err(Stop::Restart);
        }
        Ok(())
    }

    /// Takes console input when `bits` say it arrived and hands the guest's
    /// UART what it has room for (its receive interrupt follows).
    fn console_input(&mut self, bits: u64) {
        if bits & self.console == 0 {
            return;
        }
        self.host_input.refill(syscall::console_read);
        self.feed_uart();
    }

    /// Moves waiting console input into the UART as its FIFO frees up;
    /// returns whether that drove its interrupt line to a new level.
    fn feed_uart(&mut self) -> bool {
        self.host_input.feed(&mut self.uart, syscall::console_read)
            && self.set_line(UART_IRQ, self.uart.irq_line())
    }

    /// Gives the CPU away for at most `timeout_us` (`None`: until a
    /// notification) or until a request, then skips the `length`-byte
    /// instruction that asked for it.
    fn sleep(&mut self, timeout_us: Option<u64>, length: u64) -> Result<(), Stop> {
        let timeout = match (self.time_left_us(), timeout_us) {
            _ if self.device_work_waits() => Some(0),
            (Some(left), Some(timeout)) => Some(left.min(timeout)),
            (left, timeout) => left.or(timeout),
        };
        let before = runtime::rdtsc();
        let woken = sleep_looking(timeout);
        let vm = &mut self.vm;
        self.statistics
            .halted(runtime::rdtsc() - before, || vm.state().entries);
        self.service_devices();
        self.follow_control();
        if let Some(bits) = woken {
            self.console_input(bits);
            if bits & self.requests != 0 {
                return Err(Stop::Restart);
            }
        }
        if self.time_left_us() == Some(0) {
            return Err(Stop::TimeLimit);
        }
        self.vm.state().rip += length;
        Ok(())
    }

    /// CPUID: the table's answer where it has one (inline: the commonest
    /// exit), else the policy's.
    #[inline(always)]
    fn cpuid(&mut self) -> u64 {
        let state = self.vm.state();
        let leaf = state.gpr[gpr::RAX] as u32;
        match self.cpuid_answers.get(leaf) {
            // Read from the table where it is (not copied out first).
            Some(answer) => cpuid_answer(state, answer),
            None => self.cpuid_emulated(leaf),
        }
    }

    /// CPUID of a `leaf` the table does not hold: the policy's answer for
    /// the subleaf and the guest's CR4.
    #[inline(never)]
    fn cpuid_emulated(&mut self, leaf: u32) -> u64 {
        // A CPUID exit does not publish CR4: asked for here, where an
        // answer depends on it (table misses only).
        let state = self.vm.full_state(0);
        let subleaf = state.gpr[gpr::RCX] as u32;
        let native = if self.cpuid.synthetic(leaf) {
            [0; 4]
        } else {
            host_cpuid(leaf, subleaf)
        };
        let answer = self.cpuid.emulate(leaf, subleaf, native, state.cr4);
        cpuid_answer(state, &answer)
    }

    /// Port I/O. Returns the dirty bits, and whether the platform's
    /// models were left alone (a UART access that leaves its interrupt
    /// line as it was: see [`Switcher::run`]).
    #[inline(always)]
    fn io(&mut self) -> Result<(u64, bool), Stop> {
        let state = self.vm.state();
        let io = IoExit::decode(state.qualification);
        let length = u64::from(state.instruction_length);
        if io.string || length == 0 {
            return Err(self.string_io(io.port));
        }
        let rax = state.gpr[gpr::RAX];
        // The UART first, the commonest port (the guest's console): no
        // other device and no clock play a part in its accesses, and only
        // a change of its interrupt line reaches the platform's models.
        // (One compare: ports below the UART's wrap to large offsets.)
        let offset = io.port.wrapping_sub(UART_BASE);
        if offset < 8 {
            // Its registers are bytes: an OUT writes AL, whatever the size.
            let (input, quiet) = self.uart_access(offset, io.input, rax as u8);
            return Ok((self.io_done(length, io.size, input), quiet));
        }
        self.device_io(io, length, rax & io_mask(io.size))
            .map(|mask| (mask, false))
    }

    /// Stops the VM at a string instruction on `port` (INS/OUTS are not
    /// emulated).
    #[cold]
    #[inline(never)]
    fn string_io(&mut self, port: u16) -> Stop {
        let mut line = LineWriter::new();
        let _ = write!(
            line,
            "stopped: string I/O on port {port:#x} is not emulated"
        );
        self.report_line(line)
    }

    /// Port I/O to a port other than the UART's (`io` with the
    /// instruction's `length` and the `value` an OUT writes); returns the
    /// dirty bits.
    #[inline(never)]
    fn device_io(&mut self, io: IoExit, length: u64, value: u64) -> Result<u64, Stop> {
        let mask = io_mask(io.size);
        let now = runtime::rdtsc();
        // The platform's devices (8259, PIT) take byte accesses; `Some`
        // when one owned the port, with the byte read, if any.
        let platform = match (io.size, io.input) {
            _ if io.port == STATUS_PORT => None,
            (1, true) => self
                .devices
                .platform
                .read_port(io.port, now)
                .map(|byte| Some(u64::from(byte))),
            (1, false) => self
                .devices
                .platform
                .write_port(io.port, value as u8, now)
                .then_some(None),
            _ => None,
        };
        if platform.is_some() {
            self.due = self.next_due();
        }
        let input = match io.port {
            _ if platform.is_some() => platform.flatten(),
            port @ (vm_platform::rtc::INDEX_PORT | vm_platform::rtc::DATA_PORT) => {
                let now_ns = self.tsc_ns(now);
                let answer = if io.input {
                    Some(u64::from(self.devices.rtc.read(port, now_ns)))
                } else {
                    self.devices.rtc.write(port, value as u8, now_ns);
                    None
                };
                self.devices.plan_rtc(&self.nanoseconds);
                self.due = self.next_due();
                self.set_line(RTC_IRQ, self.devices.rtc.irq_line());
                answer
            }
            port if FwCfg::decodes(port) => {
                if io.input {
                    Some(u64::from(self.devices.fw_cfg.read(port, io.size)))
                } else {
                    self.devices.fw_cfg.write(port, io.size, value as u32);
                    None
                }
            }
            port if PmTimer::decodes(port) => io
                .input
                .then(|| u64::from(self.devices.pm_timer.read(port, io.size, now))),
            port if PciHost::decodes(port) => {
                if io.input {
                    Some(u64::from(self.devices.pci.read(port, io.size)))
                } else {
                    if let Some(written) = self.devices.pci.write(port, io.size, value as u32) {
                        for disk in self.disks.iter_mut().flatten() {
                            disk.config_written(&self.devices.pci, written.location);
                        }
                        for nic in self.nics.iter_mut().flatten() {
                            nic.config_written(&self.devices.pci, written.location);
                        }
                    }
                    None
                }
            }
            port if power::decodes(port) => {
                if io.input {
                    Some(u64::from(power::read(port)))
                } else {
                    match power::write(port, value as u8) {
                        Some(power::PowerEvent::Off) => return Err(Stop::PoweredOff),
                        Some(power::PowerEvent::Reset) => {
                            println!("VM '{}' asked for a reset", self.vm.name());
                            return Err(Stop::Reset);
                        }
                        None => None,
                    }
                }
            }
            power::KEYBOARD_COMMAND if !io.input => {
                if power::keyboard_write(value as u8).is_some() {
                    println!(
                        "VM '{}' asked for a reset (keyboard controller)",
                        self.vm.name()
                    );
                    return Err(Stop::Reset);
                }
                None
            }
            STATUS_PORT if !io.input => return Err(Stop::Finished(value as u32)),
            port => {
                self.unassigned_ports += 1;
                if self.unassigned_ports <= REPORTED_PORTS {
                    println!(
                        "VM '{}': unassigned port {port:#x} ({}, {} byte(s)){}",
                        self.vm.name(),
                        if io.input {
                            "read, answered all-ones"
                        } else {
                            "write, ignored"
                        },
                        io.size,
                        if self.unassigned_ports == REPORTED_PORTS {
                            "; further ones are counted only"
                        } else {
                            ""
                        }
                    );
                }
                io.input.then_some(mask)
            }
        };
        Ok(self.io_done(length, io.size, input))
    }

    /// The end of a port access: RIP past the `length`-byte instruction,
    /// and for an IN the access's bits of RAX (`size` bytes) replaced by
    /// `input`'s; returns the dirty bits.
    #[inline(always)]
    fn io_done(&mut self, length: u64, size: u8, input: Option<u64>) -> u64 {
        let state = self.vm.state();
        state.rip += length;
        match input {
            Some(answer) => {
                let mask = io_mask(size);
                state.gpr[gpr::RAX] = (state.gpr[gpr::RAX] & !mask) | (answer & mask);
                dirty::RAX | dirty::RIP
            }
            None => dirty::RIP,
        }
    }

    /// An IN (`input`) from or an OUT of `value` to the UART's register
    /// `offset`; returns the byte read, and whether the platform's models
    /// were left alone (its interrupt line was not driven to a new level).
    #[inline(always)]
    fn uart_access(&mut self, offset: u16, input: bool, value: u8) -> (Option<u64>, bool) {
        // The line follows the UART after every access but those that
        // cannot move it (the scratch register, LCR, the divisor):
        // `lines` already has its level then.
        let mut line_moves = true;
        let answer = if input {
            Some(u64::from(self.uart.read(offset)))
        } else {
            let vmcs = self.vm.vmcs;
            line_moves = self
                .uart
                .write(offset, value, |line| syscall::guest_log(vmcs, line));
            None
        };
        // Waiting console input follows as the FIFO frees up (a read of
        // the data, or a FIFO reset by the driver).
        let mut quiet = true;
        if self.console != 0 && self.feed_uart() {
            quiet = false;
        }
        if line_moves && self.set_line(UART_IRQ, self.uart.irq_line()) {
            quiet = false;
        }
        (answer, quiet)
    }

    /// RDMSR/WRMSR: the MSR table answers, and hands the LAPIC's MSRs
    /// (its base, TSC deadline, the x2APIC range) to the LAPIC model;
    /// `#GP` for anything neither has.
    fn msr(&mut self) -> u64 {
        use vm_platform::msr::Unhandled;
        let tsc = runtime::rdtsc();
        let mut memory = Loader(self.vm.memory);
        let state = self.vm.state();
        let msr = state.gpr[gpr::RCX] as u32;
        let write = state.qualification == 1;
        let result: Result<u64, ()> = if write {
            let value = (state.gpr[gpr::RDX] << 32) | (state.gpr[gpr::RAX] & 0xffff_ffff);
            match self.msrs.write(msr, value, state) {
                Ok(mask) => Ok(mask),
                Err(Unhandled::Lapic) => {
                    let result = self.devices.platform.write_msr(msr, value, tsc);
                    self.due = self.devices.next_due();
                    match result {
                        Some(Ok(())) => Ok(0),
                        _ => Err(()),
                    }
                }
                Err(Unhandled::Clock) => self
                    .devices
                    .pvclock
                    .write_msr(msr, value, tsc, &mut memory)
                    .map(|()| 0)
                    .map_err(|_| ()),
                Err(Unhandled::GeneralProtection) => Err(()),
            }
        } else {
            let value = match self.msrs.read(msr, state, tsc) {
                Ok(value) => Ok(value),
                Err(Unhandled::Lapic) => match self.devices.platform.read_msr(msr, tsc) {
                    Some(Ok(value)) => Ok(value),
                    _ => Err(()),
                },
                Err(Unhandled::Clock) => self.devices.pvclock.read_msr(msr).map_err(|_| ()),
                Err(Unhandled::GeneralProtection) => Err(()),
            };
            value.map(|value| {
                state.gpr[gpr::RAX] = value & 0xffff_ffff;
                state.gpr[gpr::RDX] = value >> 32;
                dirty::RAX | dirty::RDX
            })
        };
        match result {
            Ok(mask) => {
                state.rip += 2;
                mask | dirty::RIP
            }
            Err(()) => {
                state.inject = event::GP0;
                dirty::INJECT
            }
        }
    }

    /// MOV to CR8 while the switcher waits for it or during an interrupt
    /// window: the LAPIC's TPR takes the value (the next entry's arbiter
    /// decides again and hands the guest its CR8).
    fn cr8_write(&mut self) -> Result<u64, Stop> {
        let memory = Loader(self.vm.memory);
        let state = self.vm.full_state(0);
        match vm_platform::cr8::emulate(state, &memory, &mut self.devices.platform.lapic) {
            Ok(mask) => Ok(mask),
            Err(error) => self.emulation_failed(format_args!("write of CR8"), &error),
        }
    }

    /// MOV to CR3 while processes are tracked: emulated, and the time
    /// since the last switch charged to the process that ran.
    fn cr3_write(&mut self) -> Result<u64, Stop> {
        use vm_platform::cr3::Cr3Outcome;
        let memory = Loader(self.vm.memory);
        let state = self.vm.full_state(0);
        match vm_platform::cr3::emulate(state, &memory, u32::from(PHYSICAL_ADDRESS_BITS)) {
            Ok(Cr3Outcome::Loaded { value, dirty }) => {
                if self.statistics.processes.is_tracking() {
                    let consumed = syscall::consumed_ns(None);
                    self.statistics.processes.write(value, consumed);
                }
                Ok(dirty)
            }
            Ok(Cr3Outcome::Faulted { dirty }) => Ok(dirty),
            Err(error) => self.emulation_failed(format_args!("write of CR3"), &error),
        }
    }

    /// WBINVD (asked for by the controller) or INVD: the cache holds
    /// nothing of the guest's that memory does not (guests see coherent
    /// memory; INVD is never let through, it would drop the host's dirty
    /// lines), so both are skipped; after a WBINVD the switcher gives the
    /// CPU away when the controller asks: the guest's cache state is gone
    /// anyway, so this is the cheapest moment to switch.
    fn wbinvd(&mut self) -> u64 {
        let state = self.vm.state();
        let flush = state.qualification == 0;
        state.rip += match state.instruction_length {
            0 => 2, // 0F 09 / 0F 08
            known => u64::from(known),
        };
        if flush && self.statistics.follows(control::YIELD_ON_FLUSH) {
            self.statistics.totals.flush_yields += 1;
            syscall::yield_now();
        }
        dirty::RIP
    }

    /// XSETBV: XCR0 stays x87 alone (see [`vm_platform::cpuid::xsetbv`]).
    /// A write the CPU let through (it ignored the intercept; the core
    /// restored XCR0) stops the VM: its state is not what it believes.
    fn xsetbv(&mut self) -> Result<u64, Stop> {
        /// Bytes of `xsetbv` (0F 01 D1).
        const LENGTH: u64 = 3;
        let state = self.vm.state();
        if state.qualification == XSETBV_IGNORED {
            let found = state.qualification2;
            let mut line = LineWriter::new();
            let _ = write!(
                line,
                "stopped: the guest set XCR0 to {found:#x} (this CPU ignores the XSETBV intercept; the core restored XCR0)"
            );
            return Err(self.report_line(line));
        }
        let value = (state.gpr[gpr::RDX] << 32) | (state.gpr[gpr::RAX] & 0xffff_ffff);
        Ok(
            match vm_platform::cpuid::xsetbv(state.cr4, state.gpr[gpr::RCX] as u32, value) {
                Ok(()) => {
                    state.rip += LENGTH;
                    dirty::RIP
                }
                Err(fault) => {
                    state.inject = fault;
                    dirty::INJECT
                }
            },
        )
    }

    fn hypercall(&mut self) -> Result<u64, Stop> {
        const LENGTH: u64 = 3; // VMMCALL
        // Only the guest's kernel may call: outside ring 0 (user code,
        // virtual-8086 mode) the instruction raises #UD, as on a machine
        // without this hypervisor, so that guest user code cannot log,
        // sleep the VM or read its accounting (SVM intercepts VMMCALL at
        // any CPL).
        if vm_platform::guest_paging::privilege_level(self.vm.full_state(0)) != 0 {
            self.vm.state().inject = event::UD;
            return Ok(dirty::INJECT);
        }
        let (number, a, b) = {
            let state = self.vm.state();
            (
                state.gpr[gpr::RAX],
                state.gpr[gpr::RBX],
                state.gpr[gpr::RCX],
            )
        };
        let mut mask = dirty::RAX | dirty::RIP;
        let result = match number {
            hypercall::IDENTIFY => {
                let size = self.vm.memory.size();
                let state = self.vm.state();
                state.gpr[gpr::RBX] = u64::from(guest_api::INTERFACE_VERSION);
                state.gpr[gpr::RCX] = u64::from(self.restarts);
                state.gpr[gpr::RDX] = size;
                mask |= dirty::RBX | dirty::RCX | dirty::RDX;
                OK
            }
            hypercall::LOG => {
                let mut text = [0u8; LOG_MAX as usize];
                let length = b as usize;
                if length <= text.len() && self.vm.memory.read(a, &mut text[..length]).is_ok() {
                    self.vm.log(&text[..length]);
                    OK
                } else {
                    BAD_ARGUMENT
                }
            }
            hypercall::YIELD => {
                syscall::yield_now();
                OK
            }
            hypercall::NO_WORK => {
                let before = syscall::time_ns();
                self.sleep(Some(a.min(NO_WORK_MAX_US)), 0)?;
                let slept = (syscall::time_ns() - before) / 1000;
                self.vm.state().gpr[gpr::RBX] = slept;
                mask |= dirty::RBX;
                OK
            }
            hypercall::PROCESS => {
                let processes = &mut self.statistics.processes;
                let tracking = processes.is_tracking();
                if tracking {
                    processes.charge(syscall::consumed_ns(None));
                }
                let entry = processes.lookup(a).copied().unwrap_or_default();
                let count = if tracking {
                    processes.entries().len() as u64
                } else {
                    0
                };
                let writes = processes.writes();
                let state = self.vm.state();
                state.gpr[gpr::RBX] = entry.ns;
                state.gpr[gpr::RCX] = entry.switches;
                state.gpr[gpr::RDX] = count;
                state.gpr[gpr::RSI] = writes;
                mask |= dirty::RBX | dirty::RCX | dirty::RDX | dirty::gpr(gpr::RSI);
                OK
            }
            hypercall::STATISTICS => {
                let totals = &self.statistics.totals;
                let (exits, injections) = (totals.exits, totals.injections);
                let state = self.vm.state();
                state.gpr[gpr::RBX] = exits;
                state.gpr[gpr::RCX] = injections;
                mask |= dirty::RBX | dirty::RCX;
                OK
            }
            _ => {
                let state = self.vm.state();
                state.inject = event::UD;
                return Ok(dirty::INJECT);
            }
        };
        let state = self.vm.state();
        state.gpr[gpr::RAX] = result;
        state.rip += LENGTH;
        Ok(mask)
    }

    /// A guest-physical access outside guest memory: an access to a
    /// device page of the platform is decoded and performed; anything else
    /// stops the VM with a report.
    #[inline(never)]
    fn nested_page_fault(&mut self) -> Result<u64, Stop> {
        let (address, access) = {
            let state = self.vm.state();
            (state.guest_physical, state.qualification)
        };
        if access & npf::EXECUTE == 0
            && (self.devices.platform.owns_mmio(address) || self.function_at(address).is_some())
        {
            return self.device_access(address);
        }
        let kind = if access & npf::EXECUTE != 0 {
            "execute"
        } else if access & npf::WRITE != 0 {
            "write"
        } else {
            "read"
        };
        let size = self.vm.memory.size();
        let mut line = LineWriter::new();
        let _ = write!(
            line,
            "stopped: nested page fault: {kind} at guest-physical {address:#x}, outside its {} KiB of memory",
            size / 1024
        );
        Err(self.report_line(line))
    }

    /// Emulates the instruction that touched the device page at
    /// `address`: decoded from guest memory, performed on the platform's
    /// model, its effect written back. A fault the instruction would take
    /// on hardware is injected; an instruction the decoder does not know
    /// stops the VM with its bytes.
    fn device_access(&mut self, address: u64) -> Result<u64, Stop> {
        let mut memory = Loader(self.vm.memory);
        let decoded = self.decoder.decode_access(self.vm.full_state(0), &memory);
        // Borrowed, not moved: the access is 88 bytes, and on this target
        // every byte of a copy is an instruction.
        let access = match &decoded {
            Ok(access) => access,
            Err(error) => {
                return self.emulation_failed(format_args!("device access at {address:#x}"), error);
            }
        };
        let now = runtime::rdtsc();
        let size = access.width.bytes() as u8;
        if let Some((function, offset)) = self.function_at(address) {
            return self.function_access(function, offset, address, access);
        }
        let read = match access.kind {
            vm_platform::mmio::AccessKind::Write { value } => {
                let result = self.devices.platform.write_mmio(address, size, value, now);
                if let Some(Err(MmioIgnored::NotDecoded)) = result {
                    self.undecoded_page(address);
                }
                0
            }
            _ => match self.devices.platform.read_mmio(address, size, now) {
                Some(Ok(value)) => value,
                // A page its device does not decode now reads as the
                // empty bus does.
                Some(Err(MmioIgnored::NotDecoded)) => {
                    self.undecoded_page(address);
                    u64::MAX
                }
                // Ignored accesses (odd sizes, unaligned) read as zero.
                _ => 0,
            },
        };
        let effect = access.effect(self.vm.state(), read);
        if let Some(value) = effect.device_write {
            let _ = self.devices.platform.write_mmio(address, size, value, now);
        }
        // Only a write to a timer register can move a deadline later (a
        // tick inside the model only ever leaves `due` early, which the
        // next entry's check corrects).
        let wrote = matches!(access.kind, vm_platform::mmio::AccessKind::Write { .. })
            || effect.device_write.is_some();
        if wrote && self.devices.platform.mmio_write_moves_deadline(address) {
            self.due = self.next_due();
        }
        match effect.apply(self.vm.state(), &mut memory) {
            Ok(mask) => Ok(mask),
            Err(error) => {
                let mut line = LineWriter::new();
                let _ = write!(line, "stopped: device access at {address:#x}: {error}");
                Err(self.report_line(line))
            }
        }
    }

    /// The disk or NIC whose BAR holds guest-physical `address`, and the
    /// offset.
    fn function_at(&self, address: u64) -> Option<(Function, u64)> {
        let pci = &self.devices.pci;
        let disk = self.disks.iter().enumerate().find_map(|(index, disk)| {
            let offset = disk.as_ref()?.bar_offset(pci, address)?;
            Some((Function::Disk(index), offset))
        });
        disk.or_else(|| {
            self.nics.iter().enumerate().find_map(|(index, nic)| {
                let offset = nic.as_ref()?.bar_offset(pci, address)?;
                Some((Function::Nic(index), offset))
            })
        })
    }

    /// An access to a disk's or NIC's registers (`access` decoded at
    /// `address`).
    fn function_access(
        &mut self,
        function: Function,
        offset: u64,
        address: u64,
        access: &vm_platform::mmio::Access,
    ) -> Result<u64, Stop> {
        let memory = self.vm.memory;
        let size = access.width.bytes() as u8;
        let registers: &mut dyn Registers = match function {
            Function::Disk(index) => match self.disks[index].as_mut() {
                Some(disk) => disk,
                None => return Ok(0),
            },
            Function::Nic(index) => match self.nics[index].as_mut() {
                Some(nic) => nic,
                None => return Ok(0),
            },
        };
        let (read, mut service) = match access.kind {
            vm_platform::mmio::AccessKind::Write { value } => {
                (0, registers.write(offset, size, value, memory))
            }
            _ => registers.read(offset, size),
        };
        let effect = access.effect(self.vm.state(), read);
        if let Some(value) = effect.device_write {
            let more = registers.write(offset, size, value, memory);
            service.msi = service.msi.or(more.msi);
            service.intx = more.intx.or(service.intx);
        }
        self.apply_service(service);
        match effect.apply(self.vm.state(), &mut Loader(memory)) {
            Ok(mask) => Ok(mask),
            Err(error) => {
                let mut line = LineWriter::new();
                let _ = write!(line, "stopped: device access at {address:#x}: {error}");
                Err(self.report_line(line))
            }
        }
    }

    /// Delivers what servicing a disk or NIC asked for: its MSI, its INTx
    /// level.
    fn apply_service(&mut self, service: Service) {
        if let Some((address, data)) = service.msi {
            self.devices.platform.deliver_msi(address, data);
        }
        if let Some((gsi, high)) = service.intx {
            self.devices.platform.set_gsi(gsi, high);
        }
    }

    /// The switcher ends: each disk is flushed by the store and let go,
    /// each NIC leaves its network.
    fn detach_devices(&mut self) {
        let name = self.vm.name();
        for disk in self.disks.iter_mut().flatten() {
            if !disk.detach() {
                println!("VM '{name}': the store could not flush a disk as it was let go");
            }
        }
        for nic in self.nics.iter_mut().flatten() {
            nic.detach();
            println!(
                "VM '{name}': NIC '{}': {} frames sent, {} delivered, {} dropped",
                nic.name(),
                nic.sent,
                nic.delivered,
                nic.dropped
            );
        }
    }

    /// Takes the block store's answers for every disk that has some, and
    /// delivers the frames waiting for every NIC.
    fn service_devices(&mut self) {
        let memory = self.vm.memory;
        for index in 0..MAX_DISKS {
            let Some(disk) = self.disks[index].as_mut() else {
                continue;
            };
            let service = disk.service(memory);
            self.apply_service(service);
        }
        for index in 0..MAX_NICS {
            let Some(nic) = self.nics[index].as_mut() else {
                continue;
            };
            let service = nic.deliver(memory);
            self.apply_service(service);
        }
    }

    /// Whether a disk's answers or a NIC's frames wait (so the vCPU must
    /// not sleep).
    fn device_work_waits(&self) -> bool {
        let memory = self.vm.memory;
        self.disks.iter().flatten().any(Disk::has_answers)
            || self.nics.iter().flatten().any(|nic| nic.has_frames(memory))
    }

    /// Reports, once per boot, an access to the LAPIC's page while the
    /// LAPIC does not decode it (globally disabled or in x2APIC mode):
    /// reads see all-ones, writes are dropped, as on a bus nothing claims.
    fn undecoded_page(&mut self, address: u64) {
        if !core::mem::replace(&mut self.undecoded_reported, true) {
            println!(
                "VM '{}': access at {address:#x}, the local APIC's page, while the APIC is disabled or in x2APIC mode (reads all-ones, writes ignored; further ones are not reported)",
                self.vm.name()
            );
        }
    }

    /// An instruction that could not be emulated (`what` says which): the
    /// fault it takes on hardware is injected (a page fault sets CR2) and
    /// the dirty bits returned, or, when there is none, the VM stops with
    /// `error`.
    fn emulation_failed(
        &mut self,
        what: core::fmt::Arguments<'_>,
        error: &vm_platform::mmio::MmioError,
    ) -> Result<u64, Stop> {
        let Some(exception) = error.guest_exception() else {
            let mut line = LineWriter::new();
            let _ = write!(line, "stopped: {what}: {error}");
            return Err(self.report_line(line));
        };
        let state = self.vm.state();
        state.inject = exception.event;
        let mut mask = dirty::INJECT;
        if let Some(cr2) = exception.cr2 {
            state.cr2 = cr2;
            mask |= dirty::CR2;
        }
        Ok(mask)
    }

    fn report(&mut self, what: &str) -> Stop {
        let mut line = LineWriter::new();
        let _ = line.write_str(what);
        self.report_line(line)
    }

    /// Reports why the VM stopped and its state; the VM stays stopped.
    fn report_line(&mut self, what: LineWriter) -> Stop {
        let name = self.vm.name();
        println!(
            "VM '{name}' {}",
            core::str::from_utf8(what.as_bytes()).unwrap_or("stopped")
        );
        let state: &VcpuState = self.vm.full_state(0);
        println!(
            "VM '{name}' state: rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}/{:#x} exit={:#x} entries={}",
            state.rip,
            state.gpr[gpr::RSP],
            state.rflags,
            state.cr0,
            state.cr3,
            state.cr4,
            state.efer,
            state.cs.selector,
            state.cs.attributes,
            state.raw_exit,
            state.entries
        );
        println!(
            "VM '{name}' registers: rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
            state.gpr[gpr::RAX],
            state.gpr[gpr::RBX],
            state.gpr[gpr::RCX],
            state.gpr[gpr::RDX],
            state.gpr[6],
            state.gpr[7],
            state.gpr[5]
        );
        Stop::Stopped
    }

    /// The VM is stopped: waits for a restart request (`true`) or the time
    /// limit (`false`; without a limit, waits for requests forever).
    fn wait_for_request(&mut self) -> bool {
        loop {
            let timeout = self.time_left_us();
            if timeout == Some(0) {
                return false;
            }
            match syscall::wait(timeout) {
                Some(bits) if bits & self.requests != 0 => return true,
                Some(_) => {}
                None => return false,
            }
        }
    }
}

/// Waits for a notification for at most `timeout_us` (`None`: without
/// limit), looking at the queues every `runtime::queue::RECHECK_US`: a
/// queue end with work whose signal was lost (a stray write to its
/// `*_waiting` flag) ends the wait as a signal would, so the devices are
/// served (`None` then, as for a timeout).
fn sleep_looking(timeout_us: Option<u64>) -> Option<u64> {
    if !runtime::queue::watching() {
        return syscall::wait(timeout_us);
    }
    let mut left = timeout_us;
    loop {
        let step = left.map_or(runtime::queue::RECHECK_US, |us| {
            us.min(runtime::queue::RECHECK_US)
        });
        // Without a deadline the look is lazy (see `runtime::notification`).
        let lazy = left.is_none();
        if let Some(bits) = syscall::signal_wait_lazily(None, Some(step), lazy) {
            return Some(bits);
        }
        if let Some(us) = left.as_mut() {
            *us -= step;
            if *us == 0 {
                return None;
            }
        }
        if runtime::queue::due_bits() != 0 {
            return None;
        }
    }
}

/// A PCI function of the guest's: which disk or NIC.
#[derive(Clone, Copy)]
enum Function {
    Disk(usize),
    Nic(usize),
}
