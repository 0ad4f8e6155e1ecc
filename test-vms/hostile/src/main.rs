//! A hostile guest. Seeded from the TSC (the seed is printed, with the
//! boot's number), each boot runs a random number of rounds (1 to
//! [`MOST_ROUNDS`]), each of:
//!
//! - random instruction bytes: [`RUNS`] runs of up to 64 instructions in
//!   ring 3 from a page of random bytes, single-stepped, with the guest's
//!   own exception handlers to take it back whatever the bytes do
//!   ([`sandbox`]); now and then a few in ring 0, which may end the boot
//!   (a `cli; hlt`, string I/O, a triple fault);
//! - wild port accesses ([`PORTS`]: random ports and the platform's, in
//!   and out, 1, 2 and 4 bytes; never the writes that end a boot), wild
//!   PCI configuration writes ([`PCI`]: BARs moved anywhere), wild MMIO
//!   ([`MMIO`]: the local APIC's and the IOAPIC's pages, the guest-hints
//!   page, the PCI BARs the guest finds, every width and several
//!   instruction forms, unaligned), random MSR reads and writes
//!   ([`MSRS`]), CPUID leaves and hypercalls with edge arguments; in its
//!   first round, a hypercall from ring 3, which must raise #UD (if the
//!   hypervisor honours it, `hostile: ring 3 reached the hypervisor ...`
//!   appears);
//!
//! and prints one line per round (`hostile: boot B round R/N: runs ...`).
//! Then it ends the boot on purpose (`hostile: boot B ends after N
//! rounds: <how>`): a
//! triple fault most often, else an ACPI or keyboard-controller reset, an
//! ACPI power-off, a status on the test port, a read beyond its memory, a
//! `cli; hlt`, an MMIO instruction the world switcher does not emulate, an
//! access straddling a device page's end, string I/O, an EFER write, or
//! random ring-0 bytes let run until they wreck it. Under a world switcher
//! with `on_stop=reboot` every one of these reboots it, so the VM is
//! stopped or reset again and again; the switcher prints `VM 'NAME'
//! rebooting (boot N)` each time, and this guest `hostile: boot N, seed
//! ...` as each boot begins.
//!
//! Needs 4 MiB of memory (the scratch region of the random runs is 2 to
//! 4 MiB); with less it skips the random runs.
#![no_std]
#![no_main]

mod sandbox;
mod wild;

use fuzz_edges::Random;
use fuzz_edges::guest::{self, HINTS, IOAPIC, LAPIC, PAGE};
use guest_runtime::api::{LOG_MAX, hypercall};
use guest_runtime::{println, rdtsc};
use sandbox::{Outcome, SCRATCH, SCRATCH_SIZE, Tables, WATCHDOG_VECTOR};
use wild::{FORMS, Form};

guest_runtime::entry!("hostile", main);

/// A boot runs 1 to this many rounds.
const MOST_ROUNDS: u64 = 8;
/// Random runs, port, MMIO and MSR accesses, CPUID leaves and hypercalls
/// per round.
const RUNS: u32 = 200;
const PORTS: u32 = 64;
const MMIO: u32 = 64;
const PCI: u32 = 16;
const MSRS: u32 = 32;
const LEAVES: u32 = 16;
const HYPERCALLS: u32 = 8;
/// The watchdog's period in LAPIC timer ticks (100 MHz: 10 ms).
const WATCHDOG_TICKS: u32 = 1_000_000;
/// The stack area at the top of the scratch region, filled with RFLAGS
/// images that keep TF and IF set (so a random POPF keeps stepping).
const STACK_AREA: u64 = 0x1_0000;
const STACK_PATTERN: u64 = 0x302;

/// What a round did.
#[derive(Default)]
struct Tally {
    runs: u32,
    ring0: u32,
    steps: u64,
    limits: u32,
    page_faults: u32,
    protection: u32,
    undefined: u32,
    debug: u32,
    alignment: u32,
    other: u32,
    interrupts: u32,
    ports: u32,
    pci: u32,
    mmio: u32,
    mmio_faults: u32,
    msrs: u32,
    msr_faults: u32,
    leaves: u32,
    calls: u32,
    call_faults: u32,
}

/// A PCI memory BAR: address and size.
type Bar = (u64, u64);

fn main() -> u32 {
    let seed = rdtsc();
    let mut random = Random::new(seed);
    let under_us = guest_runtime::detect().has_hypercalls();
    let (boot, memory) = if under_us {
        let identity = guest_runtime::hypervisor::identify();
        (identity.restarts + 1, identity.memory)
    } else {
        (1, SCRATCH + SCRATCH_SIZE)
    };
    let rounds = 1 + random.below(MOST_ROUNDS);
    println!(
        "hostile: boot {boot}, seed {seed:#x}, {} KiB of memory, {rounds} rounds",
        memory / 1024
    );
    let sandbox = sandbox::init(memory);
    if sandbox.is_none() {
        println!("hostile: less than 4 MiB of memory: no random instruction bytes");
    } else {
        fill_scratch(&mut random);
    }
    for round in 1..=rounds {
        let mut tally = Tally::default();
        let bars = find_bars(memory);
        if let Some(tables) = sandbox {
            if round == 1 && under_us {
                user_hypercall(tables);
            }
            random_runs(&mut random, &mut tally, tables, &bars);
        }
        wild_ports(&mut random, &mut tally);
        wild_pci(&mut random, &mut tally);
        let bars = find_bars(memory);
        wild_mmio(&mut random, &mut tally, &bars);
        // The LAPIC timer as the watchdog again (not at some rate the
        // writes chose).
        arm_watchdog();
        wild_msrs(&mut random, &mut tally, memory);
        leaves_and_calls(&mut random, &mut tally, under_us, memory);
        let t = &tally;
        // One line, under the UART model's line length.
        println!(
            "hostile: boot {boot} round {round}/{rounds}: runs {} (ring 0: {}) steps {} end limit {} #PF {} #GP {} #UD {} #AC {} other {} irq {}; port {} pci {} mmio {}/{} msr {}/{} cpuid {} calls {}/{} nmi {}",
            t.runs,
            t.ring0,
            t.steps,
            t.limits,
            t.page_faults,
            t.protection,
            t.undefined,
            t.alignment,
            t.other + t.debug,
            t.interrupts,
            t.ports,
            t.pci,
            t.mmio,
            t.mmio_faults,
            t.msrs,
            t.msr_faults,
            t.leaves,
            t.calls,
            t.call_faults,
            sandbox::nmis()
        );
    }
    end_boot(&mut random, boot, rounds, memory, sandbox)
}

/// Fills the scratch region: random bytes, and RFLAGS images at its top
/// where the random runs' stacks are.
fn fill_scratch(random: &mut Random) {
    let words = SCRATCH_SIZE / 8;
    for index in 0..words {
        let address = SCRATCH + index * 8;
        let value = if address >= SCRATCH + SCRATCH_SIZE - STACK_AREA {
            STACK_PATTERN
        } else {
            random.next_u64()
        };
        // SAFETY: the scratch region is guest RAM this image does not
        // occupy (it ends below 2 MiB); only random runs use it.
        unsafe { (address as *mut u64).write_volatile(value) };
    }
}

/// Quiets the platform and arms the watchdog: the 8259s and every IOAPIC
/// pin masked, the local APIC at its base, enabled, TPR 0, its timer
/// periodic at [`WATCHDOG_VECTOR`] (what wild accesses changed is set
/// again).
fn arm_watchdog() {
    let _ = wild::wrmsr(0x1b, LAPIC | 1 << 11 | 1 << 8);
    guest_runtime::interrupts::mask_legacy_pic();
    for pin in 0..24 {
        guest_runtime::interrupts::ioapic_mask(pin);
    }
    use guest_runtime::interrupts::lapic_write;
    lapic_write(0xf0, 0x1ff);
    lapic_write(0x80, 0);
    guest_runtime::interrupts::set_cr8(0);
    lapic_write(0x350, 1 << 16);
    lapic_write(0x360, 1 << 16);
    lapic_write(0x370, 1 << 16);
    lapic_write(0x3e0, 0xb);
    lapic_write(0x320, u32::from(WATCHDOG_VECTOR) | 1 << 17);
    lapic_write(0x380, WATCHDOG_TICKS);
    for _ in 0..4 {
        lapic_write(0xb0, 0);
    }
}

/// The PCI functions on bus 0 (but the host bridge) with a type-0
/// header: their device numbers.
fn functions() -> impl Iterator<Item = u8> {
    use guest_runtime::devices::pci_read32;
    (1..32u8).filter(|&device| {
        pci_read32(device, 0, 0) & 0xffff != 0xffff
            && (pci_read32(device, 0, 0x0c) >> 16) & 0x7f == 0
    })
}

/// The memory BARs of the PCI functions on bus 0 that lie between the
/// end of memory and 4 GiB, memory decoding turned on (as firmware
/// would).
fn find_bars(memory: u64) -> [Option<Bar>; 4] {
    use guest_runtime::devices::{pci_read32, pci_write32};
    let mut bars = [None; 4];
    let mut found = 0;
    for device in functions() {
        let command = pci_read32(device, 0, 0x04);
        pci_write32(device, 0, 0x04, (command & 0xffff) | 0b110);
        for bar in 0..6u8 {
            let offset = 0x10 + 4 * bar;
            let low = pci_read32(device, 0, offset);
            if low & 1 != 0 || low & !0xf == 0 || found == bars.len() {
                continue;
            }
            let high = if (low >> 1) & 3 == 2 {
                pci_read32(device, 0, offset + 4)
            } else {
                0
            };
            pci_write32(device, 0, offset, u32::MAX);
            let size = u64::from(!(pci_read32(device, 0, offset) & !0xf)) + 1;
            pci_write32(device, 0, offset, low);
            let address = u64::from(low & !0xf);
            if high == 0 && size >= PAGE && address >= memory && address + size <= 1 << 32 {
                bars[found] = Some((address, size));
                found += 1;
            }
        }
    }
    sandbox::unmap_bars();
    for (address, size) in bars.iter().flatten() {
        let mut page = *address;
        while page < address + size {
            sandbox::map_device(page);
            page += PAGE;
        }
    }
    bars
}

/// A value for a random run's register: a pointer into the scratch
/// region (often), a small number, zero, random, or (in a device run) a
/// device register.
fn register(random: &mut Random, device: Option<u64>) -> u64 {
    match random.below(8) {
        0 => random.below(PAGE),
        1 => 0,
        2 => random.next_u64(),
        3 => match device {
            Some(page) => page + random.below(PAGE / 4) * 4,
            None => SCRATCH + (random.below(SCRATCH_SIZE) & !7),
        },
        _ => SCRATCH + (random.below(SCRATCH_SIZE) & !7),
    }
}

/// What a hypercall from ring 3 would print, were it honoured.
const USER_LOG: &[u8] =
    b"hostile: ring 3 reached the hypervisor (a LOG hypercall from user mode was honoured)";

/// A directed probe: the LOG hypercall from ring 3 (`vmmcall`, then
/// `ud2`). The hypervisor must refuse it (#UD, as without one): guest
/// user code must not reach it. If it is honoured, the line above appears.
fn user_hypercall(tables: Tables) {
    let code = SCRATCH;
    let text = SCRATCH + 0x800;
    let vmmcall: &[u8] = if guest_runtime::arch::cpuid(0).ebx == u32::from_le_bytes(*b"Genu") {
        &[0x0f, 0x01, 0xc1, 0x0f, 0x0b]
    } else {
        &[0x0f, 0x01, 0xd9, 0x0f, 0x0b]
    };
    for (index, byte) in vmmcall.iter().chain(USER_LOG).enumerate() {
        let address = if index < vmmcall.len() {
            code + index as u64
        } else {
            text + (index - vmmcall.len()) as u64
        };
        // SAFETY: the scratch region, as in `fill_scratch`.
        unsafe { (address as *mut u8).write_volatile(*byte) };
    }
    arm_watchdog();
    let launch = sandbox::launch();
    launch.rip = code;
    launch.rsp = SCRATCH + SCRATCH_SIZE - PAGE;
    launch.cr3 = tables.user;
    launch.registers = [0; 16];
    launch.registers[0] = hypercall::LOG;
    launch.registers[3] = text;
    launch.registers[1] = USER_LOG.len() as u64;
    sandbox::run(true, false, 4);
}

/// [`RUNS`] random runs in ring 3 and, one round in four, a few in ring 0.
fn random_runs(random: &mut Random, tally: &mut Tally, tables: Tables, bars: &[Option<Bar>; 4]) {
    arm_watchdog();
    // Fresh stack images (the runs write over them).
    for index in 0..STACK_AREA / 8 {
        let address = SCRATCH + SCRATCH_SIZE - STACK_AREA + index * 8;
        // SAFETY: the scratch region, as in `fill_scratch`.
        unsafe { (address as *mut u64).write_volatile(STACK_PATTERN) };
    }
    let ring0 = if random.one_in(4) {
        1 + random.below(4) as u32
    } else {
        0
    };
    for run in 0..RUNS + ring0 {
        let user = run < RUNS;
        let offset = random.below(PAGE - 16);
        for byte in 0..16 {
            // SAFETY: the first page of the scratch region, where the
            // runs' code is.
            unsafe {
                ((SCRATCH + offset + byte) as *mut u8).write_volatile(random.next_u64() as u8)
            };
        }
        // One run in 32 points registers at a device page.
        let device = random.one_in(32).then(|| {
            let bar = bars.iter().flatten().next().map_or(HINTS, |bar| bar.0);
            random.pick(&[IOAPIC, HINTS, bar])
        });
        let launch = sandbox::launch();
        launch.rip = SCRATCH + offset;
        launch.rsp = SCRATCH + SCRATCH_SIZE - PAGE - random.below(0x100) * 16;
        launch.cr3 = if user { tables.user } else { tables.kernel };
        for value in launch.registers.iter_mut() {
            *value = register(random, device);
        }
        let limit = 1 + random.below(64) as u32;
        let (outcome, steps) = sandbox::run(user, random.one_in(4), limit);
        tally.runs += 1;
        tally.ring0 += u32::from(!user);
        tally.steps += u64::from(steps);
        match outcome {
            Outcome::Limit => tally.limits += 1,
            Outcome::Exception(14) => tally.page_faults += 1,
            Outcome::Exception(13) => tally.protection += 1,
            Outcome::Exception(6) => tally.undefined += 1,
            Outcome::Exception(1) => tally.debug += 1,
            Outcome::Exception(17) => tally.alignment += 1,
            Outcome::Exception(_) => tally.other += 1,
            Outcome::Interrupt(_) => tally.interrupts += 1,
        }
        if !user {
            // The run may have left the LAPIC in any state.
            arm_watchdog();
        }
    }
}

/// Random port reads and writes (never a write that ends the boot), then
/// the console's UART and the interrupt controllers set up again.
fn wild_ports(random: &mut Random, tally: &mut Tally) {
    for _ in 0..PORTS {
        let (port, width) = (guest::port(random), guest::port_width(random));
        if random.one_in(2) || guest::port_write_ends_boot(port, width) {
            wild::port_read(port, width);
        } else {
            wild::port_write(port, width, random.next_u64() as u32);
        }
        tally.ports += 1;
    }
    // The console: no divisor latch, 8N1, no loopback, FIFOs on.
    wild::port_write(0x3fb, 1, 0x03);
    wild::port_write(0x3f9, 1, 0);
    wild::port_write(0x3fc, 1, 0x03);
    wild::port_write(0x3fa, 1, 0x07);
    guest_runtime::interrupts::mask_legacy_pic();
    // Timers the writes may have started at a high rate (the PIT's channel
    // 0, the RTC's interrupts): the world switcher ends every run at their
    // next edge, masked or not, so a PIT counting from 1 would leave this
    // guest a microsecond per exit.
    guest_runtime::clock::pit_stop();
    guest_runtime::interrupts::cmos_write(0x0b, 0x02);
}

/// Wild PCI configuration accesses to the functions on bus 0: the
/// command register, the BARs (moved anywhere: over RAM, the APICs'
/// pages, the top of the 32-bit space), the expansion ROM, the
/// capabilities (MSI-X), any offset, every width.
fn wild_pci(random: &mut Random, tally: &mut Tally) {
    let mut devices = [0u8; 4];
    let mut count = 0;
    for device in functions().take(devices.len()) {
        devices[count] = device;
        count += 1;
    }
    if count == 0 {
        return;
    }
    for _ in 0..PCI {
        let device = devices[random.below(count as u64) as usize];
        let offset = match random.below(4) {
            0 => random.pick(&[0x04, 0x06, 0x10, 0x14, 0x18, 0x30, 0x34, 0x3c, 0x3d]),
            1 => 0x40 + random.below(0xc0),
            _ => random.below(0x100),
        } as u8;
        let width = guest::port_width(random);
        let offset = offset & !(width - 1);
        let near_bars = 0xfe00_0000 + random.below(0x20_0000);
        let value = match (offset & 0xf8, random.below(2)) {
            (0x10 | 0x18 | 0x20, 0) => random.pick(&[
                0,
                u64::from(u32::MAX),
                0x10_0000,
                LAPIC,
                IOAPIC,
                HINTS,
                0xffff_f000,
                near_bars,
            ]) as u32,
            _ => guest::value(random, 0) as u32,
        };
        let address = 1 << 31 | u32::from(device) << 11 | u32::from(offset & 0xfc);
        wild::port_write(0xcf8, 4, address);
        let port = 0xcfc + u16::from(offset & 3);
        if random.one_in(2) {
            wild::port_read(port, width);
        } else {
            wild::port_write(port, width, value);
        }
        tally.pci += 1;
    }
}

/// A device region to attack: a register page or a BAR.
fn region(random: &mut Random, bars: &[Option<Bar>; 4]) -> (u64, u64) {
    let bar = bars[random.below(4) as usize];
    match (random.below(4), bar) {
        (0, _) => (LAPIC, PAGE),
        (1, _) => (IOAPIC, PAGE),
        (2, Some(bar)) => bar,
        _ => (HINTS, PAGE),
    }
}

/// Wild MMIO: every width and form at register offsets, unaligned ones
/// and (rarely, as it stops the VM) across a page's end; IOAPIC index
/// and window pairs.
fn wild_mmio(random: &mut Random, tally: &mut Tally, bars: &[Option<Bar>; 4]) {
    for _ in 0..MMIO {
        let (base, size) = region(random, bars);
        let width = guest::mmio_width(random);
        let mut offset = guest::mmio_offset(random, size, width);
        // An access across the end of a device page is refused by the
        // world switcher with a stop: one in 256.
        let page_end = (offset & !(PAGE - 1)) + PAGE;
        if offset + u64::from(width) > page_end && !random.one_in(4096) {
            offset &= !(u64::from(width) - 1);
        }
        if base == LAPIC && random.one_in(2) {
            // A register, at its own width (ICR writes send IPIs: fixed,
            // NMI, INIT, start-up, to itself or others).
            offset = random.pick(&guest::LAPIC_REGISTERS);
        }
        if base == IOAPIC && random.one_in(2) {
            let index = guest::ioapic_index(random);
            wild::mmio(IOAPIC, 4, Form::Store, u64::from(index), 0);
            offset = 0x10;
        }
        let form = random.pick(&FORMS);
        let value = guest::value(random, 0);
        let (_, fault) = wild::mmio(base + offset, width, form, value, random.next_u64());
        tally.mmio += 1;
        tally.mmio_faults += u32::from(fault.is_some());
    }
}

/// Random MSR reads, and writes of all but the MSRs this guest stands on;
/// the KVM clock's MSRs are given addresses in the scratch region or
/// outside memory (the switcher writes the clock where they say).
fn wild_msrs(random: &mut Random, tally: &mut Tally, memory: u64) {
    for _ in 0..MSRS {
        let msr = guest::msr(random);
        let read = wild::rdmsr(msr);
        tally.msrs += 1;
        tally.msr_faults += u32::from(read.is_err());
        if guest::msr_write_breaks_guest(msr) || random.one_in(2) {
            continue;
        }
        let value = match msr {
            0x4b56_4d00..=0x4b56_4d04 => {
                let scratch = (SCRATCH + random.below(SCRATCH_SIZE - PAGE)) | 1;
                random.pick(&[scratch, memory | 1, (memory - 8) | 1, u64::MAX, 0])
            }
            _ => guest::value(random, read.unwrap_or(0)),
        };
        tally.msrs += 1;
        tally.msr_faults += u32::from(wild::wrmsr(msr, value).is_err());
    }
}

/// CPUID of random and edge leaves, and hypercalls of every number (and
/// unknown ones) with edge arguments, none that prints or sleeps long.
fn leaves_and_calls(random: &mut Random, tally: &mut Tally, under_us: bool, memory: u64) {
    for _ in 0..LEAVES {
        let leaf = match random.below(4) {
            0 => random.next_u64() as u32,
            1 => 0x4000_0000 + random.below(0x200) as u32,
            2 => 0x8000_0000 + random.below(0x30) as u32,
            _ => random.below(0x20) as u32,
        };
        guest_runtime::arch::cpuid_count(leaf, random.below(4) as u32);
        tally.leaves += 1;
    }
    if !under_us {
        return;
    }
    for _ in 0..HYPERCALLS {
        let any = random.next_u64();
        let number = random.pick(&[
            hypercall::IDENTIFY,
            hypercall::LOG,
            hypercall::YIELD,
            hypercall::NO_WORK,
            hypercall::STATISTICS,
            hypercall::PROCESS,
            6,
            0xffff,
            u64::MAX,
            any,
        ]);
        let (rbx, rcx) = match number {
            // Refused: too long, or not in memory.
            hypercall::LOG => match random.below(3) {
                0 => (SCRATCH, LOG_MAX + 1 + random.below(4)),
                1 => (memory - 8, 16),
                _ => (random.next_u64() | (1 << 63), 8),
            },
            hypercall::NO_WORK => (random.below(500), random.next_u64()),
            _ => (random.next_u64(), random.next_u64()),
        };
        let answer = wild::hypercall(number, rbx, rcx, random.next_u64());
        tally.calls += 1;
        tally.call_faults += u32::from(answer.is_err());
    }
}

/// How a boot ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    TripleFault,
    RandomRing0,
    AcpiReset,
    KeyboardReset,
    PowerOff,
    Status,
    BeyondMemory,
    Halt,
    Refused,
    Straddle,
    StringIo,
    Efer,
    X2apic,
}

impl Ending {
    /// Drawn by weight: a triple fault most often.
    const ALL: [Self; 17] = [
        Self::TripleFault,
        Self::TripleFault,
        Self::TripleFault,
        Self::TripleFault,
        Self::RandomRing0,
        Self::RandomRing0,
        Self::AcpiReset,
        Self::KeyboardReset,
        Self::PowerOff,
        Self::Status,
        Self::BeyondMemory,
        Self::Halt,
        Self::Refused,
        Self::Straddle,
        Self::StringIo,
        Self::Efer,
        Self::X2apic,
    ];

    fn describe(self) -> &'static str {
        match self {
            Self::TripleFault => "a triple fault",
            Self::RandomRing0 => "random ring-0 bytes until they wreck it",
            Self::AcpiReset => "an ACPI reset",
            Self::KeyboardReset => "a keyboard-controller reset",
            Self::PowerOff => "an ACPI power-off",
            Self::Status => "a status on the test port",
            Self::BeyondMemory => "a read beyond its memory",
            Self::Halt => "cli; hlt",
            Self::Refused => "an MMIO instruction the switcher does not emulate",
            Self::Straddle => "an MMIO read across the end of the LAPIC's page",
            Self::StringIo => "string I/O",
            Self::Efer => "a random EFER write",
            Self::X2apic => "x2APIC mode and random x2APIC register writes",
        }
    }
}

/// Ends the boot on purpose (see [`Ending`]); a triple fault when the
/// chosen way returns.
fn end_boot(
    random: &mut Random,
    boot: u64,
    rounds: u64,
    memory: u64,
    sandbox: Option<Tables>,
) -> ! {
    let ending = random.pick(&Ending::ALL);
    println!(
        "hostile: boot {boot} ends after {rounds} rounds: {}",
        ending.describe()
    );
    // SAFETY (every block below): each access ends the boot on purpose;
    // none touches memory of the program.
    match ending {
        Ending::TripleFault => guest_runtime::arch::triple_fault(),
        Ending::RandomRing0 if let Some(tables) = sandbox => {
            arm_watchdog();
            for _ in 0..64 {
                let offset = random.below(PAGE - 16);
                for byte in 0..16 {
                    // SAFETY: the scratch region's code page.
                    unsafe {
                        ((SCRATCH + offset + byte) as *mut u8)
                            .write_volatile(random.next_u64() as u8)
                    };
                }
                let launch = sandbox::launch();
                launch.rip = SCRATCH + offset;
                launch.rsp = SCRATCH + SCRATCH_SIZE - PAGE;
                launch.cr3 = tables.kernel;
                for value in launch.registers.iter_mut() {
                    *value = register(random, None);
                }
                sandbox::run(false, false, 4096);
            }
            println!("hostile: boot {boot}: the ring-0 bytes left it running");
        }
        Ending::RandomRing0 => {}
        Ending::AcpiReset => guest_runtime::hypervisor::acpi_reset(),
        Ending::KeyboardReset => wild::port_write(0x64, 1, 0xfe),
        Ending::PowerOff => wild::port_write(0x600, 1, 5 << 2 | 1 << 5),
        Ending::Status => guest_runtime::exit(1 + random.below(255) as u32),
        Ending::BeyondMemory => {
            let address = (memory + random.below(0x4000_0000)) & !7;
            let _ = wild::mmio(address, 8, Form::Load, 0, 0);
        }
        Ending::Halt => {
            arm_watchdog();
            guest_runtime::arch::halt_forever();
        }
        Ending::Refused => {
            // SAFETY: see above.
            unsafe {
                core::arch::asm!("inc dword ptr [{}]", in(reg) LAPIC + 0x80, options(nostack))
            };
        }
        Ending::Straddle => {
            let _ = wild::mmio(LAPIC + PAGE - 2, 4, Form::Load, 0, 0);
        }
        Ending::StringIo => {
            let scratch = SCRATCH + SCRATCH_SIZE / 2;
            // SAFETY: see above; the byte would land in the scratch region.
            unsafe {
                core::arch::asm!("rep insb", inout("rdi") scratch => _, inout("rcx") 1u64 => _, in("dx") 0x80u16, options(nostack))
            };
        }
        Ending::Efer => {
            let _ = wild::wrmsr(0xc000_0080, guest::value(random, 0xd00));
        }
        Ending::X2apic => {
            let _ = wild::wrmsr(0x1b, LAPIC | 1 << 11 | 1 << 10 | 1 << 8);
            for _ in 0..64 {
                let msr = 0x800 + random.below(0x40) as u32;
                let _ = wild::wrmsr(msr, guest::value(random, 0));
            }
        }
    }
    println!(
        "hostile: boot {boot}: still running after {}; triple fault",
        ending.describe()
    );
    guest_runtime::arch::triple_fault()
}
