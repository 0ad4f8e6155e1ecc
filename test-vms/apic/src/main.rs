//! The platform's interrupt path, end to end: fw_cfg's signature and CPU
//! count; the local APIC's identity; three self-IPIs (delivered once the
//! guest enables interrupts, through an interrupt-window exit, since they
//! are raised with interrupts off; three vectors, as requests of one
//! vector coalesce); the task priority through CR8 and the TPR (each seen
//! in the other, a self-IPI held back by CR8 and let in by lowering it,
//! which does not exit by itself); three NMIs sent to itself, each raised inside the
//! handler of the one before, which must arrive one after the other (an
//! NMI waits for the previous handler's IRET, never nests, and is not
//! lost); a one-shot and a periodic LAPIC timer
//! whose interrupts wake HLT; the RTC's periodic interrupt through IOAPIC
//! pin 8 waking HLT; and, as `BENCH` lines, the cost of one timer
//! tick in a busy loop (the guest never exits by itself: the world
//! switcher's run limit must end it at the timer's deadline), the time from
//! a TSC deadline to the handler of a halted guest, an MMIO write exit
//! (the TPR, decoded and emulated by the world switcher), and a virtual
//! interrupt's injection (a self-IPI from the ICR write to its handler).
//! Every LAPIC access is an MMIO exit under the hypervisor; on bare QEMU
//! the same program talks to QEMU's LAPIC. Prints `TEST apic PASS`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::interrupts::{self as irq, lapic_read, lapic_write};
use guest_runtime::{fail, println};

guest_runtime::entry!("apic", main);

const ID: u32 = 0x20;
const VERSION: u32 = 0x30;
const TASK_PRIORITY: u32 = 0x80;
const SPURIOUS: u32 = 0xf0;
const COMMAND_LOW: u32 = 0x300;
const LVT_TIMER: u32 = 0x320;
const INITIAL_COUNT: u32 = 0x380;
const DIVIDE: u32 = 0x3e0;

/// The timer's vector.
const TIMER: u8 = 0x40;
/// The RTC's vector (through the IOAPIC).
const RTC: u8 = 0x50;
/// The UART's vector (through the IOAPIC).
const UART: u8 = 0x52;
/// The self-IPIs' vectors (one each: requests of one vector coalesce in
/// the IRR, as on hardware).
const IPIS: [u8; 3] = [0x41, 0x42, 0x43];
/// A self-IPI of class 4 that CR8 holds back.
const HELD: u8 = 0x44;
/// A self-IPI raised with interrupts off, CR8 written while it waits.
const WAITING: u8 = 0x45;
/// The self-IPI whose delivery is measured.
const MEASURED: u8 = 0x46;
/// LVT: masked; periodic and TSC-deadline modes.
const MASKED: u32 = 1 << 16;
const PERIODIC: u32 = 1 << 17;
const TSC_DEADLINE: u32 = 1 << 18;
/// Iterations of the busy loop the timer-tick cost is measured on.
const LOOP: u32 = 2_000_000;
/// ICR: destination shorthand "self", fixed delivery.
const TO_SELF: u32 = 1 << 18;
/// Timer counts per period (divide by 1).
const COUNT: u32 = 200_000;
/// Samples of the MMIO write exit.
const ROUNDS: usize = 1000;

fn main() -> u32 {
    // The multiboot header is this image's; booted through it, the
    // loader's information must say what the VM is.
    if guest_multiboot::linked()
        && let Some(info) = guest_runtime::multiboot::info()
    {
        multiboot(&info);
    }
    let mut signature = [0u8; 4];
    irq::fw_cfg_read(0, &mut signature);
    if &signature != b"QEMU" {
        fail(format_args!(
            "fw_cfg signature {signature:?}, expected QEMU"
        ));
    }
    let mut cpus = [0u8; 2];
    irq::fw_cfg_read(5, &mut cpus);
    let cpus = u16::from_le_bytes(cpus);
    let mut ram = [0u8; 8];
    irq::fw_cfg_read(3, &mut ram);
    let ram = u64::from_le_bytes(ram);
    println!(
        "apic: fw_cfg signature QEMU, {cpus} CPU(s), {} KiB of RAM",
        ram / 1024
    );
    if cpus != 1 {
        fail(format_args!("fw_cfg says {cpus} CPUs, expected 1"));
    }

    irq::mask_legacy_pic();
    irq::use_lapic();
    println!(
        "apic: LAPIC id {} version {:#x}",
        lapic_read(ID) >> 24,
        lapic_read(VERSION) & 0xff
    );
    lapic_write(SPURIOUS, 0x1ff);

    // Raised with interrupts off: delivered at the next window.
    let arrived = || IPIS.iter().map(|&v| irq::count(v)).sum::<u32>();
    irq::disable();
    for vector in IPIS {
        lapic_write(COMMAND_LOW, TO_SELF | u32::from(vector));
    }
    if arrived() != 0 {
        fail(format_args!("a self-IPI arrived with interrupts off"));
    }
    irq::enable();
    let mut spins = 0u32;
    while arrived() < 3 && spins < 1_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    irq::disable();
    if arrived() != 3 {
        fail(format_args!("{} of 3 self-IPIs arrived", arrived()));
    }
    println!("apic: 3 self-IPIs delivered");
    task_priority();

    // NMIs ignore IF; each handler raises the next before it returns.
    irq::raise_nmi_chain(2);
    let mut spins = 0u32;
    while irq::nmi_counts().0 < 3 && spins < 10_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    match irq::nmi_counts() {
        (3, 0) => println!("apic: 3 NMIs delivered one after the other, none nested"),
        (taken, nested) => fail(format_args!(
            "{taken} of 3 NMIs arrived, {nested} inside another's handler"
        )),
    }

    lapic_write(DIVIDE, 0xb);
    lapic_write(LVT_TIMER, u32::from(TIMER));
    lapic_write(INITIAL_COUNT, COUNT);
    while irq::count(TIMER) == 0 {
        irq::wait();
    }
    irq::disable();
    println!("apic: one-shot timer woke HLT");

    lapic_write(LVT_TIMER, u32::from(TIMER) | PERIODIC);
    lapic_write(INITIAL_COUNT, COUNT);
    let first = irq::count(TIMER);
    while irq::count(TIMER) < first + 10 {
        irq::wait();
    }
    irq::disable();
    lapic_write(LVT_TIMER, MASKED);
    lapic_write(INITIAL_COUNT, 0);
    println!("apic: periodic timer: 10 ticks");
    rtc_periodic();
    timer_after_quiet_exit();
    uart_interrupt_without_exits();

    // One guest timer tick: the same busy loop without and with a periodic
    // timer; the difference per tick (injection, handler, EOI exit).
    let busy = || {
        let start = guest_runtime::arch::rdtsc_ordered();
        let mut i = 0u32;
        while i < LOOP {
            i = core::hint::black_box(i + 1);
        }
        guest_runtime::arch::rdtsc_ordered() - start
    };
    let quiet = busy();
    lapic_write(LVT_TIMER, u32::from(TIMER) | PERIODIC);
    lapic_write(INITIAL_COUNT, COUNT);
    let before = irq::count(TIMER);
    irq::enable();
    let ticking = busy();
    irq::disable();
    let ticks = irq::count(TIMER) - before;
    lapic_write(LVT_TIMER, MASKED);
    lapic_write(INITIAL_COUNT, 0);
    if ticks == 0 {
        fail(format_args!("no timer tick during the busy loop"));
    }
    println!(
        "BENCH timer-tick {} ticks/tick ({ticks} ticks in a busy loop of {LOOP} rounds, against the loop alone)",
        ticking.saturating_sub(quiet) / u64::from(ticks)
    );

    // HLT woken by the timer: a TSC deadline, then HLT; from the deadline
    // to the guest's handler. Only where CPUID shows the TSC-deadline mode
    // (our platform does; QEMU's TCG does not).
    if guest_runtime::cpuid(1).ecx & (1 << 24) == 0 {
        println!("apic: no TSC-deadline timer here; HLT wake-up not measured");
    } else {
        hlt_wakeup();
    }

    let mut samples = [0u64; ROUNDS];

    for sample in samples.iter_mut() {
        let start = guest_runtime::arch::rdtsc_ordered();
        lapic_write(TASK_PRIORITY, 0);
        *sample = guest_runtime::arch::rdtsc_ordered() - start;
    }
    samples.sort_unstable();
    println!(
        "BENCH mmio-write-exit {} ticks/round-trip (median of {ROUNDS} writes of the LAPIC's TPR)",
        samples[ROUNDS / 2]
    );
    let exit = samples[ROUNDS / 2];
    for sample in samples.iter_mut() {
        *sample = self_ipi_to_handler();
    }
    samples.sort_unstable();
    let injection = samples[ROUNDS / 2];
    println!(
        "BENCH virtual-interrupt {injection} ticks (median of {ROUNDS}: a self-IPI from the ICR write to the guest's handler; {} beyond an MMIO write exit)",
        injection.saturating_sub(exit)
    );
    apic_disabled();
    println!("TEST apic PASS");
    0
}

/// One self-IPI with interrupts on, from the ICR write to the handler's
/// first instruction (its TSC): the MMIO exit of the write, the LAPIC
/// model's delivery and the injection at the next entry.
fn self_ipi_to_handler() -> u64 {
    let before = irq::count(MEASURED);
    irq::enable();
    let start = guest_runtime::arch::rdtsc_ordered();
    lapic_write(COMMAND_LOW, TO_SELF | u32::from(MEASURED));
    let mut spins = 0u32;
    while irq::count(MEASURED) == before {
        spins += 1;
        if spins > 1_000_000 {
            fail(format_args!("the measured self-IPI never arrived"));
        }
        core::hint::spin_loop();
    }
    irq::disable();
    irq::last_tsc().saturating_sub(start)
}

/// The LAPIC globally disabled (`IA32_APIC_BASE` bit 11 clear): its page is
/// no longer its registers, and reading it must not end the VM; then
/// enabled again.
fn apic_disabled() {
    const GLOBAL_ENABLE: u64 = 1 << 11;
    let base = irq::apic_base();
    irq::set_apic_base(base & !GLOBAL_ENABLE);
    let seen = lapic_read(ID);
    irq::set_apic_base(base);
    lapic_write(SPURIOUS, 0x1ff);
    println!("apic: with the APIC globally disabled its ID register reads {seen:#x}");
}

/// Checks the multiboot information ([`guest_runtime::multiboot::Info::verify`])
/// and prints it; a module's first line and checksum are printed too, for
/// the scenario to compare with the file the system gave.
fn multiboot(info: &guest_runtime::multiboot::Info) {
    info.verify();
    println!(
        "apic: multiboot: loader '{}', flags {:#x}, mem_lower {} KiB, mem_upper {} KiB, {} map entries with {} KiB available",
        info.loader_name.as_str(),
        info.flags,
        info.memory_lower,
        info.memory_upper,
        info.region_count,
        info.available_kib()
    );
    // The first word is the kernel's name (GRUB passes its path).
    let line = info.command_line.as_str();
    let (name, arguments) = line.split_once(' ').unwrap_or((line, ""));
    if name.is_empty() {
        fail(format_args!(
            "the multiboot command line '{line}' has no kernel name"
        ));
    }
    println!("apic: multiboot: kernel '{name}', arguments '{arguments}'");
    for module in info.modules() {
        let mut first = [0u8; 64];
        let read = module.read(&mut first);
        let end = first[..read]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(read);
        println!(
            "apic: multiboot: module '{}', {} bytes, FNV-1a {:#010x}, first line '{}'",
            module.string.as_str(),
            module.end - module.start,
            module.checksum(),
            core::str::from_utf8(&first[..end]).unwrap_or("(not UTF-8)")
        );
    }
    if info.module_count == 0 {
        println!("apic: multiboot: no modules");
    }
}

/// The RTC's periodic interrupt (1024 Hz) through IOAPIC pin 8 wakes HLT
/// three times: under our platform the RTC's flags must rise on time,
/// while the guest is halted and not touching the chip. Each wake-up reads
/// register C, which lowers the line so the next flag is a new edge.
fn rtc_periodic() {
    const RTC_PIN: u8 = 8;
    const REGISTER_A: u8 = 0x0a;
    const REGISTER_B: u8 = 0x0b;
    const REGISTER_C: u8 = 0x0c;
    const PERIODIC_ENABLE: u8 = 1 << 6;
    irq::ioapic_route(RTC_PIN, RTC);
    irq::cmos_write(REGISTER_A, 0x26); // 32.768 kHz base, 1024 Hz
    let _ = irq::cmos_read(REGISTER_C);
    let b = irq::cmos_read(REGISTER_B);
    irq::cmos_write(REGISTER_B, b | PERIODIC_ENABLE);
    let mut woken = 0;
    let mut halts = 0u32;
    while irq::count(RTC) < 3 && halts < 1_000 {
        let before = irq::count(RTC);
        irq::wait();
        irq::disable();
        halts += 1;
        if irq::count(RTC) > before {
            woken += 1;
            let _ = irq::cmos_read(REGISTER_C);
        }
    }
    irq::cmos_write(REGISTER_B, b & !PERIODIC_ENABLE);
    let _ = irq::cmos_read(REGISTER_C);
    irq::ioapic_mask(RTC_PIN);
    if irq::count(RTC) < 3 {
        fail(format_args!(
            "{} RTC periodic interrupts in {halts} halts",
            irq::count(RTC)
        ));
    }
    println!("apic: RTC periodic interrupt through the IOAPIC woke HLT {woken} times");
}

/// CR8 and the TPR are one register; a self-IPI at or below the task
/// priority waits, and lowering CR8 (no exit of its own) lets it in.
fn task_priority() {
    irq::set_cr8(6);
    let tpr = lapic_read(TASK_PRIORITY);
    lapic_write(TASK_PRIORITY, 0x35);
    let cr8 = irq::cr8();
    if tpr != 0x60 || cr8 != 3 {
        fail(format_args!(
            "CR8 6 read back as TPR {tpr:#x}; TPR 0x35 as CR8 {cr8}, expected 0x60 and 3"
        ));
    }
    irq::set_cr8(5);
    irq::enable();
    lapic_write(COMMAND_LOW, TO_SELF | u32::from(HELD));
    let mut spins = 0u32;
    while spins < 100_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    if irq::count(HELD) != 0 {
        fail(format_args!("vector {HELD:#x} arrived through CR8 5"));
    }
    irq::set_cr8(2);
    let mut spins = 0u32;
    while irq::count(HELD) == 0 && spins < 1_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    irq::disable();
    irq::set_cr8(0);
    if irq::count(HELD) != 1 {
        fail(format_args!(
            "vector {HELD:#x} did not arrive once CR8 dropped to 2"
        ));
    }
    println!("apic: CR8 is the TPR's class; a self-IPI waited behind CR8 5 and came in at CR8 2");

    // CR8 written while an interrupt waits for the guest to enable
    // interrupts (QEMU 7.2 aborts if the hypervisor lets that through).
    lapic_write(COMMAND_LOW, TO_SELF | u32::from(WAITING));
    irq::set_cr8(1);
    irq::set_cr8(0);
    irq::enable();
    let mut spins = 0u32;
    while irq::count(WAITING) == 0 && spins < 1_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    irq::disable();
    if irq::count(WAITING) != 1 {
        fail(format_args!(
            "vector {WAITING:#x} did not arrive after CR8 writes with interrupts off"
        ));
    }
    println!("apic: CR8 written while an interrupt waited for IF; it arrived once IF was set");
}

/// A TSC-deadline timer wakes the halted guest, 9 times; prints the median
/// time from the deadline to the handler.
/// A one-shot timer armed, then an exit the world switcher handles
/// without touching its timers (CPUID), then a loop that makes no exit:
/// the tick must still end the loop. The switcher's shortcut after such
/// exits may skip the timers only when no run limit was needed, so this
/// fails if it ever runs the guest without the timer's limit.
fn timer_after_quiet_exit() {
    lapic_write(LVT_TIMER, u32::from(TIMER));
    let before = irq::count(TIMER);
    irq::enable();
    lapic_write(INITIAL_COUNT, COUNT);
    let _ = guest_runtime::cpuid(0);
    let arrived = arrives_without_exits(TIMER, before);
    irq::disable();
    if !arrived {
        fail(format_args!(
            "a one-shot timer armed before a CPUID exit never ended a loop without exits"
        ));
    }
    println!("apic: a timer armed before a quiet exit ends a loop without exits");
}

/// The UART's transmitter-empty interrupt, enabled by an IER write (an
/// exit that raises the UART's line at once), then a loop that makes no
/// exit: the interrupt must end the loop. The world switcher takes a UART
/// access for one that leaves the interrupt controllers alone only when
/// its line stayed where it was; this fails if a write that raises it
/// were taken for one (the next entry would not look for the request).
fn uart_interrupt_without_exits() {
    const PIN: u8 = 4;
    const IER: u16 = 1;
    const IIR: u16 = 2;
    const MCR: u16 = 4;
    const TRANSMIT_EMPTY: u8 = 1 << 1;
    const OUT2: u8 = 1 << 3;
    irq::ioapic_route(PIN, UART);
    let mcr = irq::uart_read(MCR);
    irq::uart_write(MCR, mcr | OUT2);
    let before = irq::count(UART);
    irq::enable();
    irq::uart_write(IER, TRANSMIT_EMPTY);
    let arrived = arrives_without_exits(UART, before);
    irq::disable();
    // Reading IIR ends the transmitter-empty interrupt.
    irq::uart_write(IER, 0);
    let _ = irq::uart_read(IIR);
    irq::uart_write(MCR, mcr);
    irq::ioapic_mask(PIN);
    if !arrived {
        fail(format_args!(
            "the UART's interrupt, raised by an IER write, never ended a loop without exits"
        ));
    }
    println!("apic: a UART interrupt raised by an IER write ends a loop without exits");
}

/// Spins until an interrupt of `vector` arrives (its count passes
/// `before`) or 100 million rounds pass, making no exit (no PAUSE, no
/// I/O); whether it arrived.
fn arrives_without_exits(vector: u8, before: u32) -> bool {
    let mut spins = 0u32;
    while irq::count(vector) == before && spins < 100_000_000 {
        spins = core::hint::black_box(spins + 1);
    }
    irq::count(vector) != before
}

fn hlt_wakeup() {
    lapic_write(LVT_TIMER, u32::from(TIMER) | TSC_DEADLINE);
    let mut latencies = [0u64; 9];
    for latency in latencies.iter_mut() {
        let before = irq::count(TIMER);
        let deadline = guest_runtime::arch::rdtsc() + 200_000;
        irq::set_tsc_deadline(deadline);
        while irq::count(TIMER) == before {
            irq::wait();
        }
        irq::disable();
        *latency = irq::last_tsc().saturating_sub(deadline);
    }
    lapic_write(LVT_TIMER, MASKED);
    latencies.sort_unstable();
    println!(
        "BENCH hlt-timer-wakeup {} ticks (median of 9: from a TSC deadline to the guest's handler, the guest halted)",
        latencies[4]
    );
}
