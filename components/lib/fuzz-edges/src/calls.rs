//! The system-call fuzzer of the `hostile` component.
//!
//! A [`Fuzzer`] makes [`Plan`]s: a call number, five argument registers
//! and what the core's rules (`docs/CORE.md`, `microvisor_abi::syscall`)
//! predict — the call returns, or it faults the caller ([`Expect`]). Most
//! plans are **mutated** calls: one the component may make ([`Base`]: the
//! null call, `Time`, `Wait` with timeout 0, `SchedulingRead(SELF)`,
//! `Signal` of its own notification capability, `SignalWait` with nothing
//! to signal, `ReplyWait` polling for a request nobody sends, now and
//! then `Yield`, very rarely a `LogWrite` of a short
//! text) with one argument register changed to an edge value of its kind.
//! Once in `wild_one_in` plans (the `hostile` component's `wild=`
//! argument) the plan is one predicted to fault instead: a mutation whose
//! edge the core must refuse, a wild call (any call number, known or not,
//! with edge values of the kinds its arguments take) or noise (random
//! registers). A restart costs far more than a call, so the mix decides
//! how many calls a campaign makes; the prediction lets the component
//! report its progress just before the calls that may end it.
//!
//! The edge values ([`Fuzzer::edge`]):
//!
//! - capability handles: slot 0, the last slot, one and two past it,
//!   0xffff, a random slot, each with the holder's generation, ±1, 0 or
//!   `u32::MAX` in bits 32..64, sometimes with a reserved bit (16..32)
//!   set; the handles it holds; 0 and `u64::MAX`;
//! - user pointers ([`pointer_edges`]): null, `USER_MIN - 1`, `USER_MIN`,
//!   the last user page, `USER_END - 1`, `USER_END`, the first
//!   non-canonical address, the core's direct map and image, `u64::MAX`
//!   and just below it, and the page boundaries of the component's own
//!   text, data and stack (`STACK_TOP - 1`, `STACK_TOP`, ...);
//! - lengths ([`LENGTH_EDGES`]): 0, 1, 4095, 4096, `LOG_WRITE_MAX` and
//!   ±1, `u64::MAX`, and one that makes pointer + length wrap;
//! - budgets and periods ([`BUDGET_EDGES`]) and priority words
//!   ([`PRIORITY_EDGES`]) at and beyond their limits, quanta and the
//!   reserved bits;
//! - timeouts: 0, 1 or 2 µs ([`LONGEST_WAIT_US`]), never longer;
//! - call numbers: every one the ABI knows (found with
//!   `Syscall::from_number`, so calls added later are attacked too) and
//!   unknown ones ([`Fuzzer::number`]).
//!
//! Whatever the draw, [`is_safe`] holds for every plan [`Fuzzer::next_plan`]
//! answers: no `Exit`, no wait longer than [`LONGEST_WAIT_US`], no call
//! through a capability that acts on another component or a VM (a
//! scheduling configuration the core would carry out, a component
//! control, a VMCS or vCPU), no call the model does not know through a
//! capability it holds; and no `LogWrite` that might print, except the
//! rare valid one, so the console is not flooded.

use microvisor_abi::spec::{CapabilityKind, MAX_PRIORITY};
use microvisor_abi::syscall::{
    LOG_WRITE_MAX, MAX_PERIOD_US, MAX_QUANTUM_US, NO_SIGNAL, REPLY, SCHEDULING_QUANTUM_SHIFT,
    SCHEDULING_SLACK, SELF, Syscall,
};
use microvisor_abi::{PAGE_SIZE, STACK_TOP, USER_END, USER_MIN};

use crate::Random;

/// The longest timeout, in microseconds, of any `Wait` or `SignalWait`
/// the fuzzer makes (a longer one would let a hostile component sleep
/// through its test; `u64::MAX` is "forever").
pub const LONGEST_WAIT_US: u64 = 2;

/// The most capabilities the fuzzer keeps track of (the core's
/// per-component table has as many slots).
pub const MAX_HELD: usize = microvisor_abi::spec::MAX_CAPABILITIES_PER_COMPONENT;

/// How rarely (one plan in this many) a plan is the valid `LogWrite`
/// whose line reaches the console.
pub const LOG_ONE_IN: u64 = 1 << 16;

/// The length of the valid `LogWrite` base call.
const LOG_LENGTH: u64 = 13;

const NOTIFICATION: u32 = CapabilityKind::Notification as u32;
const SCHEDULING_CONTROL: u32 = CapabilityKind::SchedulingControl as u32;
const COMPONENT_CONTROL: u32 = CapabilityKind::ComponentControl as u32;
const SCHEDULING_CONTEXT: u32 = CapabilityKind::SchedulingContext as u32;
const VMCS: u32 = CapabilityKind::Vmcs as u32;
const VCPU: u32 = CapabilityKind::Vcpu as u32;
const ENDPOINT: u32 = CapabilityKind::Endpoint as u32;

/// Lengths at the edges of the core's limits (the wrapping length depends
/// on the pointer: see [`Fuzzer::edge`]).
pub const LENGTH_EDGES: [u64; 9] = [
    0,
    1,
    PAGE_SIZE - 1,
    PAGE_SIZE,
    LOG_WRITE_MAX - 1,
    LOG_WRITE_MAX,
    LOG_WRITE_MAX + 1,
    u64::MAX,
    u64::MAX / 2 + 1,
];

/// Budgets and periods (µs) at and beyond `SchedulingConfigure`'s limits.
pub const BUDGET_EDGES: [u64; 7] = [
    0,
    1,
    MAX_PERIOD_US - 1,
    MAX_PERIOD_US,
    MAX_PERIOD_US + 1,
    u32::MAX as u64,
    u64::MAX,
];

/// `SchedulingConfigure`'s priority word at and beyond its limits: the
/// priority, the slack flag, the reserved bits 33..40 and the quantum.
pub const PRIORITY_EDGES: [u64; 10] = [
    0,
    MAX_PRIORITY as u64,
    MAX_PRIORITY as u64 + 1,
    u32::MAX as u64,
    SCHEDULING_SLACK | MAX_PRIORITY as u64,
    1 << 33,
    1 << (SCHEDULING_QUANTUM_SHIFT - 1),
    MAX_QUANTUM_US << SCHEDULING_QUANTUM_SHIFT | 1,
    (MAX_QUANTUM_US + 1) << SCHEDULING_QUANTUM_SHIFT,
    u64::MAX,
];

/// Interrupt lines: the console's, the last IOAPIC input, the MSI range
/// and past it.
const LINE_EDGES: [u64; 9] = [0, 4, 23, 24, 31, 32, 63, 64, u64::MAX];
/// PCI configuration offsets and widths.
const PCI_OFFSET_EDGES: [u64; 8] = [0, 0x10, 0x30, 0x3c, 0xfc, 0xff, 0x100, u64::MAX];
const PCI_WIDTH_EDGES: [u64; 7] = [0, 1, 2, 3, 4, 8, u64::MAX];

/// What the core's rules say a call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// It returns to the caller.
    Returns,
    /// It ends the caller with a fault.
    Faults,
    /// Either: the model cannot tell (memory whose mapping it does not
    /// know, a call it does not know).
    Unknown,
}

/// One call to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub number: u64,
    /// `rdi rsi rdx r10 r8`.
    pub args: [u64; 5],
    pub expect: Expect,
}

impl Plan {
    /// Whether the call may end the caller (so progress must be reported
    /// before it).
    pub fn may_fault(&self) -> bool {
        self.expect != Expect::Returns
    }

    fn null() -> Self {
        Self {
            number: Syscall::Null as u64,
            args: [0; 5],
            expect: Expect::Returns,
        }
    }
}

/// What the fuzzing component knows about itself: its generation, the
/// capabilities it holds, and memory it can name.
#[derive(Clone, Copy, Debug)]
pub struct Component {
    generation: u32,
    held: [(u64, u32); MAX_HELD],
    count: usize,
    /// Whether it holds device grants (ports, device memory, interrupt
    /// lines, a PCI function, a VM's memory): the calls that use those
    /// are then never predicted, only avoided.
    pub devices: bool,
    /// Printable bytes it may log: address and length.
    text: (u64, u64),
    /// An address in its writable data and one in its stack.
    data: u64,
    stack: u64,
}

impl Component {
    /// A component in `generation` that holds nothing yet, with `text`
    /// (address, length) readable printable bytes, `data` an address in
    /// its data and `stack` one in its stack.
    pub const fn new(generation: u32, text: (u64, u64), data: u64, stack: u64) -> Self {
        Self {
            generation,
            held: [(0, 0); MAX_HELD],
            count: 0,
            devices: false,
            text,
            data,
            stack,
        }
    }

    /// Records a capability it holds (`kind` a `CapabilityKind` number);
    /// `u64::MAX` (none) and handles already known are ignored.
    pub fn hold(&mut self, handle: u64, kind: u32) {
        if handle == u64::MAX || self.held().iter().any(|&(known, _)| known == handle) {
            return;
        }
        if let Some(slot) = self.held.get_mut(self.count) {
            *slot = (handle, kind);
            self.count += 1;
        }
    }

    fn held(&self) -> &[(u64, u32)] {
        &self.held[..self.count]
    }

    /// Whether `handle` names a capability of `kind` it holds.
    pub fn holds(&self, handle: u64, kind: u32) -> bool {
        self.held().contains(&(handle, kind))
    }

    /// Whether `handle` names any capability it holds.
    fn holds_any(&self, handle: u64) -> bool {
        self.held().iter().any(|&(known, _)| known == handle)
    }

    /// A held handle of `kind`, the `n`th modulo their number.
    fn of_kind(&self, kind: u32, n: u64) -> Option<u64> {
        let count = self.held().iter().filter(|held| held.1 == kind).count() as u64;
        if count == 0 {
            return None;
        }
        self.held()
            .iter()
            .filter(|held| held.1 == kind)
            .nth((n % count) as usize)
            .map(|held| held.0)
    }

    /// Slots in its capability table, as far as it knows: one past the
    /// highest slot of a handle it holds.
    pub fn slots(&self) -> u64 {
        self.held()
            .iter()
            .map(|&(handle, _)| (handle & 0xffff) + 1)
            .max()
            .unwrap_or(0)
    }
}

/// Pointers at the edges of the user range and of the component's own
/// memory (its text, data and stack pages).
pub fn pointer_edges(component: &Component) -> [u64; 27] {
    let (text, text_length) = component.text;
    let page = |address: u64| address & !(PAGE_SIZE - 1);
    let (data, stack) = (component.data, component.stack);
    [
        0,
        USER_MIN - 1,
        USER_MIN,
        USER_END - PAGE_SIZE,
        USER_END - 1,
        USER_END,
        // The first non-canonical address and the kernel half.
        1 << 47,
        0xffff_8000_0000_0000,
        0xffff_ffff_8000_0000,
        u64::MAX - 7,
        u64::MAX,
        text,
        text.wrapping_add(text_length).wrapping_sub(1),
        text.wrapping_add(text_length),
        page(text),
        page(text).wrapping_add(PAGE_SIZE).wrapping_sub(1),
        page(data),
        page(data).wrapping_sub(1),
        page(data).wrapping_add(PAGE_SIZE),
        page(data).wrapping_add(PAGE_SIZE).wrapping_sub(1),
        STACK_TOP - 1,
        STACK_TOP,
        STACK_TOP - PAGE_SIZE,
        page(stack),
        page(stack).wrapping_sub(1),
        page(stack).wrapping_add(PAGE_SIZE),
        stack,
    ]
}

/// What kind of value an argument register holds, for its edge values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    /// Not read by the call: any value.
    Any,
    Handle,
    /// A handle or `u64::MAX` (`SELF`, `NO_SIGNAL`).
    OptionalHandle,
    Pointer,
    /// A length, after the pointer it goes with.
    Length,
    Timeout,
    Budget,
    Priority,
    Line,
    PciOffset,
    PciWidth,
}

/// The kinds of a call's five argument registers.
fn signature(number: u64) -> [Arg; 5] {
    use Arg::*;
    let Some(call) = Syscall::from_number(number) else {
        return [Any; 5];
    };
    match call {
        Syscall::LogWrite | Syscall::Panic | Syscall::ConsoleRead => {
            [Pointer, Length, Any, Any, Any]
        }
        Syscall::Signal
        | Syscall::ComponentRestart
        | Syscall::ComponentStop
        | Syscall::VcpuPoke
        | Syscall::VmcsReset
        | Syscall::VmcsControl => [Handle, Any, Any, Any, Any],
        Syscall::Wait => [Timeout, Any, Any, Any, Any],
        Syscall::SchedulingRead => [OptionalHandle, Any, Any, Any, Any],
        Syscall::SchedulingConfigure => [Handle, Handle, Budget, Budget, Priority],
        Syscall::ComponentFault => [Handle, Pointer, Any, Any, Any],
        Syscall::SignalWait => [OptionalHandle, Timeout, Any, Any, Any],
        Syscall::VcpuRun => [Handle, Any, Timeout, Any, Any],
        Syscall::GuestLog => [Handle, Pointer, Length, Any, Any],
        Syscall::InterruptUnmask => [Line, Any, Any, Any, Any],
        Syscall::PciConfig => [PciOffset, PciWidth, Any, Any, Any],
        Syscall::Call => [Handle, Timeout, Any, Any, Any],
        Syscall::ReplyWait => [Any, Timeout, Any, Any, Any],
        _ => [Any; 5],
    }
}

/// What a buffer argument does: the core's `UserBuffer` check, then
/// whether every page is known to be mapped (only the text is).
fn buffer(address: u64, length: u64, limit: u64, component: &Component) -> Expect {
    let end = address.checked_add(length);
    if length > limit || address < USER_MIN || end.is_none_or(|end| end > USER_END) {
        return Expect::Faults;
    }
    let (text, text_length) = component.text;
    match end {
        _ if length == 0 => Expect::Returns,
        Some(end) if address >= text && end <= text.saturating_add(text_length) => Expect::Returns,
        _ => Expect::Unknown,
    }
}

/// Whether `SchedulingConfigure`'s budget, period and priority word pass
/// the core's checks.
fn valid_scheduling(budget: u64, period: u64, word: u64) -> bool {
    let reserved = (word >> 33) & ((1 << (SCHEDULING_QUANTUM_SHIFT - 33)) - 1);
    period != 0
        && budget != 0
        && budget <= period
        && period <= MAX_PERIOD_US
        && reserved == 0
        && word >> SCHEDULING_QUANTUM_SHIFT <= MAX_QUANTUM_US
        && word & 0xffff_ffff <= u64::from(MAX_PRIORITY)
}

/// What the core does with call `number` and `args` from `component`, by
/// its documented rules: unknown numbers, handles it does not hold (stale,
/// forged, past its table, of another kind), buffers outside the user
/// range or longer than allowed, values out of range and calls reserved
/// to holders of a grant it lacks all fault it.
pub fn expect(number: u64, args: [u64; 5], component: &Component) -> Expect {
    use Expect::*;
    let Some(call) = Syscall::from_number(number) else {
        return Faults;
    };
    let [a0, a1, a2, a3, a4] = args;
    let holds = |handle, kind| component.holds(handle, kind);
    let only_with = |held: bool| if held { Unknown } else { Faults };
    match call {
        Syscall::Null | Syscall::Yield | Syscall::Time | Syscall::Wait => Returns,
        Syscall::Exit => Unknown,
        Syscall::Panic => Faults,
        Syscall::LogWrite => buffer(a0, a1, LOG_WRITE_MAX, component),
        Syscall::Signal if holds(a0, NOTIFICATION) => Returns,
        Syscall::SchedulingRead if a0 == SELF || holds(a0, SCHEDULING_CONTEXT) => Returns,
        Syscall::SignalWait if a0 == NO_SIGNAL || holds(a0, NOTIFICATION) => Returns,
        Syscall::Signal | Syscall::SchedulingRead | Syscall::SignalWait => Faults,
        Syscall::SchedulingConfigure => only_with(
            holds(a0, SCHEDULING_CONTROL)
                && holds(a1, SCHEDULING_CONTEXT)
                && valid_scheduling(a2, a3, a4),
        ),
        Syscall::ComponentFault | Syscall::ComponentRestart | Syscall::ComponentStop => {
            only_with(holds(a0, COMPONENT_CONTROL))
        }
        Syscall::VcpuRun | Syscall::VcpuPoke => only_with(holds(a0, VCPU)),
        Syscall::VmcsControl | Syscall::VmcsReset | Syscall::GuestLog => only_with(holds(a0, VMCS)),
        Syscall::ConsoleRead
        | Syscall::InterruptUnmask
        | Syscall::InterruptPending
        | Syscall::PciConfig => only_with(component.devices),
        // With nobody calling it, a `ReplyWait` returns at its timeout
        // (or at once with bits pending); a `Call` through an endpoint
        // it holds would wait for a server.
        Syscall::ReplyWait => Returns,
        Syscall::Call => only_with(holds(a0, ENDPOINT)),
        #[allow(unreachable_patterns)]
        _ => Unknown,
    }
}

/// Whether the call may be made: it cannot end the component on purpose
/// (`Exit`), sleep longer than [`LONGEST_WAIT_US`], or act on another
/// component or a VM through a capability it holds (a scheduling
/// configuration the core would carry out, component control, a VMCS or
/// vCPU, a device grant, a call the model does not know).
pub fn is_safe(number: u64, args: [u64; 5], component: &Component) -> bool {
    let Some(call) = Syscall::from_number(number) else {
        return true;
    };
    let [a0, a1, ..] = args;
    match call {
        Syscall::Exit => false,
        Syscall::Wait => a0 <= LONGEST_WAIT_US,
        Syscall::SignalWait | Syscall::ReplyWait => a1 <= LONGEST_WAIT_US,
        Syscall::Null
        | Syscall::Yield
        | Syscall::Time
        | Syscall::Panic
        | Syscall::LogWrite
        | Syscall::Signal
        | Syscall::SchedulingRead => true,
        // These fault unless the component holds what they need; with
        // it, they would act on another component, a VM or a device.
        Syscall::SchedulingConfigure
        | Syscall::ComponentFault
        | Syscall::ComponentRestart
        | Syscall::ComponentStop
        | Syscall::VcpuRun
        | Syscall::VcpuPoke
        | Syscall::VmcsControl
        | Syscall::VmcsReset
        | Syscall::GuestLog
        | Syscall::ConsoleRead
        | Syscall::InterruptUnmask
        | Syscall::InterruptPending
        | Syscall::PciConfig
        | Syscall::Call => expect(number, args, component) == Expect::Faults,
        // A call this model does not know: never through a capability or
        // a grant the component holds.
        #[allow(unreachable_patterns)]
        _ => !component.devices && !args.iter().any(|&arg| component.holds_any(arg)),
    }
}

/// The base calls mutations start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    Null,
    Time,
    Yield,
    Wait,
    ReadSelf,
    ReadContext,
    Signal,
    SignalWaitNothing,
    SignalWait,
    ReplyWait,
}

/// How often each base is drawn.
const BASES: [Base; 16] = [
    Base::Null,
    Base::Null,
    Base::ReplyWait,
    Base::Time,
    Base::Time,
    Base::Wait,
    Base::Wait,
    Base::ReadSelf,
    Base::ReadSelf,
    Base::ReadContext,
    Base::Signal,
    Base::Signal,
    Base::SignalWaitNothing,
    Base::SignalWaitNothing,
    Base::SignalWait,
    Base::Yield,
];

/// Makes plans: see the module documentation.
#[derive(Clone, Debug)]
pub struct Fuzzer {
    random: Random,
    component: Component,
    wild_one_in: u64,
    /// The lowest call number the ABI does not know.
    first_unknown: u64,
}

impl Fuzzer {
    /// A fuzzer for `component` with the stream named by `seed`; one plan
    /// in `wild_one_in` is predicted to fault (1: all of them).
    pub fn new(seed: u64, component: Component, wild_one_in: u64) -> Self {
        Self {
            random: Random::new(seed),
            component,
            wild_one_in: wild_one_in.max(1),
            first_unknown: (0..256)
                .find(|&number| Syscall::from_number(number).is_none())
                .unwrap_or(256),
        }
    }

    /// The component it fuzzes as.
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// The next call: predicted to return, or (once in `wild_one_in`)
    /// predicted to fault or unknown; always [`is_safe`].
    pub fn next_plan(&mut self) -> Plan {
        if self.random.one_in(LOG_ONE_IN)
            && let Some(plan) = self.log_line()
        {
            return plan;
        }
        let fatal = self.random.one_in(self.wild_one_in);
        for _ in 0..16 {
            let plan = if !fatal {
                self.mutated(false)
            } else {
                match self.random.below(4) {
                    0 => self.noise(),
                    1 => self.wild(),
                    _ => self.mutated(true),
                }
            };
            if !is_safe(plan.number, plan.args, &self.component) {
                continue;
            }
            // A LogWrite prints unless it faults: only `log_line` may.
            let prints = plan.number == Syscall::LogWrite as u64 && plan.expect != Expect::Faults;
            if (fatal && plan.may_fault() && !prints) || (!fatal && !plan.may_fault()) {
                return plan;
            }
        }
        if fatal {
            Plan {
                number: self.first_unknown,
                args: [0; 5],
                expect: Expect::Faults,
            }
        } else {
            Plan::null()
        }
    }

    /// The valid `LogWrite` of a short text, its length mutated to an edge
    /// now and then (only lengths it survives are kept).
    fn log_line(&mut self) -> Option<Plan> {
        let (text, _) = self.component.text;
        let length = if self.random.one_in(2) {
            LOG_LENGTH
        } else {
            self.random.pick(&LENGTH_EDGES)
        };
        let args = [text, length, 0, 0, 0];
        let number = Syscall::LogWrite as u64;
        let expect = expect(number, args, &self.component);
        (expect == Expect::Returns).then_some(Plan {
            number,
            args,
            expect,
        })
    }

    /// A base call, drawn by [`BASES`]' weights.
    fn base(&mut self, notification: Option<u64>, context: Option<u64>) -> (Syscall, [u64; 5]) {
        match self.random.pick(&BASES) {
            Base::Null => (Syscall::Null, [0; 5]),
            Base::Time => (Syscall::Time, [0; 5]),
            Base::Yield => (Syscall::Yield, [0; 5]),
            Base::Wait => (Syscall::Wait, [0; 5]),
            Base::ReadSelf => (Syscall::SchedulingRead, [SELF, 0, 0, 0, 0]),
            Base::ReadContext => (
                Syscall::SchedulingRead,
                [context.unwrap_or(SELF), 0, 0, 0, 0],
            ),
            Base::Signal => match notification {
                Some(handle) => (Syscall::Signal, [handle, 0, 0, 0, 0]),
                None => (Syscall::Null, [0; 5]),
            },
            Base::SignalWaitNothing => (Syscall::SignalWait, [NO_SIGNAL, 0, 0, 0, 0]),
            // Nobody calls the fuzzing component: a poll for a request.
            Base::ReplyWait => (Syscall::ReplyWait, [REPLY, 0, 0, 0, 0]),
            Base::SignalWait => (
                Syscall::SignalWait,
                [notification.unwrap_or(NO_SIGNAL), 0, 0, 0, 0],
            ),
        }
    }

    /// A base call, then (seven times in eight) one argument register
    /// changed to an edge value of its kind.
    fn mutated(&mut self, fatal: bool) -> Plan {
        let component = &self.component;
        let n = self.random.next_u64();
        let notification = component.of_kind(NOTIFICATION, n);
        let control = component.of_kind(SCHEDULING_CONTROL, n);
        let context = component.of_kind(SCHEDULING_CONTEXT, n);
        // Two fatal turns in three start from a call with a buffer or
        // with scheduling parameters, so the core's checks of those are
        // reached, not only its capability look-up.
        let base = if fatal && !self.random.one_in(3) {
            match (self.random.one_in(2), control, context) {
                (false, Some(control), Some(context)) => Some((
                    Syscall::SchedulingConfigure,
                    [
                        control,
                        context,
                        MAX_PERIOD_US,
                        MAX_PERIOD_US,
                        u64::from(MAX_PRIORITY),
                    ],
                )),
                _ => Some((Syscall::LogWrite, [component.text.0, LOG_LENGTH, 0, 0, 0])),
            }
        } else {
            None
        };
        let (number, mut args) = match base {
            Some(base) => base,
            None => self.base(notification, context),
        };
        let number = number as u64;
        // A fatal turn changes a register the call reads (a mutation of
        // an unused one cannot fault), when it has one.
        let kinds = signature(number);
        let read = kinds.iter().filter(|&&kind| kind != Arg::Any).count() as u64;
        if fatal && read > 0 {
            let position = self.random.below(read) as usize;
            args[position] = self.edge(kinds[position], args[position.saturating_sub(1)]);
        } else if !self.random.one_in(8) {
            let position = self.random.below(5) as usize;
            args[position] = self.edge(kinds[position], args[position.saturating_sub(1)]);
        }
        self.plan(number, args)
    }

    /// Any call number, with an edge value of its kind in every register.
    fn wild(&mut self) -> Plan {
        let number = self.number();
        let kinds = signature(number);
        let mut args = [0u64; 5];
        for position in 0..5usize {
            let previous = args[position.saturating_sub(1)];
            args[position] = self.edge(kinds[position], previous);
        }
        self.plan(number, args)
    }

    /// Any call number with random registers.
    fn noise(&mut self) -> Plan {
        let number = self.number();
        let args = core::array::from_fn(|_| self.random.next_u64());
        self.plan(number, args)
    }

    fn plan(&self, number: u64, args: [u64; 5]) -> Plan {
        Plan {
            number,
            args,
            expect: expect(number, args, &self.component),
        }
    }

    /// A call number: one the ABI knows (three times in four), or one it
    /// does not: just past the last, a byte, a 32-bit or a random one.
    pub fn number(&mut self) -> u64 {
        if !self.random.one_in(4) {
            return self.random.below(self.first_unknown);
        }
        let random = self.random.next_u64();
        self.random.pick(&[
            self.first_unknown,
            self.first_unknown + 1,
            0xff,
            0xffff,
            1 << 32,
            u64::MAX,
            random,
        ])
    }

    /// An edge value for an argument of `kind` (`previous`: the register
    /// before it, the pointer a length goes with).
    fn edge(&mut self, kind: Arg, previous: u64) -> u64 {
        let random = self.random.next_u64();
        match kind {
            Arg::Handle => self.handle(),
            Arg::OptionalHandle if self.random.one_in(3) => u64::MAX,
            Arg::OptionalHandle => self.handle(),
            Arg::Pointer => {
                if self.random.one_in(16) {
                    random
                } else {
                    self.random.pick(&pointer_edges(&self.component))
                }
            }
            Arg::Length => match self.random.below(8) {
                // pointer + length wraps past zero.
                0 => u64::MAX - previous.wrapping_sub(2),
                1 => random,
                _ => self.random.pick(&LENGTH_EDGES),
            },
            Arg::Timeout => self.random.below(LONGEST_WAIT_US + 1),
            Arg::Budget => self.random.pick(&BUDGET_EDGES),
            Arg::Priority => self.random.pick(&PRIORITY_EDGES),
            Arg::Line => self.random.pick(&LINE_EDGES),
            Arg::PciOffset => self.random.pick(&PCI_OFFSET_EDGES),
            Arg::PciWidth => self.random.pick(&PCI_WIDTH_EDGES),
            Arg::Any => match self.random.below(6) {
                0 => self.handle(),
                1 => self.random.pick(&pointer_edges(&self.component)),
                2 => self.random.pick(&LENGTH_EDGES),
                3 => self.random.pick(&PRIORITY_EDGES),
                4 => self.random.pick(&BUDGET_EDGES),
                _ => random,
            },
        }
    }

    /// A capability handle: one it holds, a whole-word edge, or a slot
    /// edge with a generation edge (and sometimes a reserved bit).
    pub fn handle(&mut self) -> u64 {
        let component = &self.component;
        let random = self.random.next_u64();
        match self.random.below(8) {
            0 if component.count > 0 => {
                return component.held()[(random % component.count as u64) as usize].0;
            }
            1 => return self.random.pick(&[0, u64::MAX, 1 << 32, u64::MAX >> 32]),
            _ => {}
        }
        let slots = component.slots();
        let slot = self.random.pick(&[
            0,
            slots.saturating_sub(1),
            slots,
            slots + 1,
            0xffff,
            random & 0xffff,
        ]);
        let generation = component.generation;
        let generation = self.random.pick(&[
            generation,
            generation,
            generation,
            generation.wrapping_add(1),
            generation.wrapping_sub(1),
            0,
            u32::MAX,
        ]);
        let reserved = if self.random.one_in(8) {
            1 << (16 + self.random.below(16))
        } else {
            0
        };
        slot | reserved | u64::from(generation) << 32
    }
}

/// The progress messages the fuzzing component sends its monitor: one
/// `u64` each, the calls made since its previous message (bits 0..48),
/// the call number of a survivor (bits 48..56) and two flags.
pub mod report {
    /// The next call may end the component (it is predicted to fault, or
    /// the model cannot tell): a fault before the next message is one the
    /// rules predicted; a fault without it is not.
    pub const MAY_FAULT: u64 = 1 << 63;
    /// The previous call, predicted to fault, returned: the core did not
    /// do what its rules say. Its number is in bits 48..56 (255: larger).
    pub const SURVIVED: u64 = 1 << 62;
    const CALLS: u64 = (1 << 48) - 1;

    /// What one message says.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Report {
        pub calls: u64,
        pub may_fault: bool,
        /// The number of a call that should have faulted and returned.
        pub survived: Option<u8>,
    }

    impl Report {
        pub fn encode(&self) -> u64 {
            let survived = match self.survived {
                Some(number) => SURVIVED | u64::from(number) << 48,
                None => 0,
            };
            self.calls.min(CALLS) | survived | if self.may_fault { MAY_FAULT } else { 0 }
        }

        pub fn decode(word: u64) -> Self {
            Self {
                calls: word & CALLS,
                may_fault: word & MAY_FAULT != 0,
                survived: (word & SURVIVED != 0).then_some((word >> 48) as u8),
            }
        }
    }

    /// A call number as a survivor report carries it.
    pub fn number_byte(number: u64) -> u8 {
        number.min(255) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reports_round_trip() {
        for report in [
            report::Report::default(),
            report::Report {
                calls: 4096,
                may_fault: true,
                survived: None,
            },
            report::Report {
                calls: 0,
                may_fault: false,
                survived: Some(report::number_byte(u64::MAX)),
            },
            report::Report {
                calls: (1 << 48) - 1,
                may_fault: true,
                survived: Some(5),
            },
        ] {
            assert_eq!(report::Report::decode(report.encode()), report);
        }
        assert_eq!(report::number_byte(13), 13);
    }

    const TEXT: u64 = 0x20_3000;
    const TEXT_LENGTH: u64 = 1024;
    const DATA: u64 = 0x21_0010;
    const STACK: u64 = STACK_TOP - 0x800;

    /// A component in generation 3 holding a notification (slot 0) and,
    /// when `controller`, the scheduling control and two contexts.
    fn component(generation: u32, controller: bool) -> Component {
        let mut component = Component::new(generation, (TEXT, TEXT_LENGTH), DATA, STACK);
        let handle = |slot: u64| slot | u64::from(generation) << 32;
        component.hold(handle(0), NOTIFICATION);
        if controller {
            component.hold(handle(1), SCHEDULING_CONTROL);
            component.hold(handle(2), SCHEDULING_CONTEXT);
            component.hold(handle(3), SCHEDULING_CONTEXT);
        }
        component
    }

    #[test]
    fn the_rules_of_the_core() {
        let c = component(3, false);
        let own = 3 << 32;
        let e = |number: Syscall, args| expect(number as u64, args, &c);
        assert_eq!(e(Syscall::Signal, [own, 0, 0, 0, 0]), Expect::Returns);
        // The same slot in another life, one past the table, a reserved bit.
        for handle in [4 << 32, 2 << 32, own | 1, own | 1 << 20, 0, u64::MAX] {
            assert_eq!(e(Syscall::Signal, [handle, 0, 0, 0, 0]), Expect::Faults);
        }
        assert_eq!(
            e(Syscall::SchedulingRead, [SELF, 9, 9, 9, 9]),
            Expect::Returns
        );
        assert_eq!(
            e(Syscall::SchedulingRead, [own, 0, 0, 0, 0]),
            Expect::Faults
        );
        assert_eq!(
            e(Syscall::SignalWait, [NO_SIGNAL, 0, 0, 0, 0]),
            Expect::Returns
        );
        assert_eq!(e(Syscall::LogWrite, [TEXT, 13, 0, 0, 0]), Expect::Returns);
        assert_eq!(
            e(Syscall::LogWrite, [TEXT, LOG_WRITE_MAX + 1, 0, 0, 0]),
            Expect::Faults
        );
        assert_eq!(
            e(Syscall::LogWrite, [USER_MIN - 1, 1, 0, 0, 0]),
            Expect::Faults
        );
        assert_eq!(
            e(Syscall::LogWrite, [USER_MIN, 0, 0, 0, 0]),
            Expect::Returns
        );
        assert_eq!(
            e(Syscall::LogWrite, [USER_END - 1, 2, 0, 0, 0]),
            Expect::Faults
        );
        assert_eq!(
            e(Syscall::LogWrite, [u64::MAX - 7, 16, 0, 0, 0]),
            Expect::Faults
        );
        assert_eq!(e(Syscall::LogWrite, [STACK, 8, 0, 0, 0]), Expect::Unknown);
        assert_eq!(e(Syscall::Panic, [TEXT, 13, 0, 0, 0]), Expect::Faults);
        assert_eq!(
            e(Syscall::ComponentRestart, [own, 0, 0, 0, 0]),
            Expect::Faults
        );
        assert_eq!(e(Syscall::PciConfig, [0, 4, 0, 0, 0]), Expect::Faults);
        assert_eq!(expect(u64::MAX, [0; 5], &c), Expect::Faults);
        assert_eq!(expect(0xdead, [0; 5], &c), Expect::Faults);
    }

    #[test]
    fn scheduling_limits() {
        let max = MAX_PRIORITY as u64;
        assert!(valid_scheduling(MAX_PERIOD_US, MAX_PERIOD_US, max));
        assert!(valid_scheduling(
            1,
            1,
            MAX_QUANTUM_US << SCHEDULING_QUANTUM_SHIFT
        ));
        assert!(valid_scheduling(1, 1, SCHEDULING_SLACK));
        assert!(!valid_scheduling(0, 1, 0));
        assert!(!valid_scheduling(2, 1, 0));
        assert!(!valid_scheduling(1, MAX_PERIOD_US + 1, 0));
        assert!(!valid_scheduling(1, 1, max + 1));
        assert!(!valid_scheduling(1, 1, 1 << 33));
        assert!(!valid_scheduling(
            1,
            1,
            (MAX_QUANTUM_US + 1) << SCHEDULING_QUANTUM_SHIFT
        ));
        let c = component(1, true);
        let configure = |args| expect(Syscall::SchedulingConfigure as u64, args, &c);
        let (control, context) = (1 | 1 << 32, 2 | 1 << 32);
        // Valid: it would act, so it is unknown and unsafe.
        let valid = [control, context, 10, 10, 1];
        assert_eq!(configure(valid), Expect::Unknown);
        assert!(!is_safe(Syscall::SchedulingConfigure as u64, valid, &c));
        let beyond = [control, context, 10, 10, max + 1];
        assert_eq!(configure(beyond), Expect::Faults);
        assert!(is_safe(Syscall::SchedulingConfigure as u64, beyond, &c));
    }

    #[test]
    fn edge_tables_hold_the_edges() {
        let c = component(1, false);
        let pointers = pointer_edges(&c);
        for edge in [
            0,
            USER_MIN - 1,
            USER_MIN,
            USER_END - 1,
            USER_END - PAGE_SIZE,
            1 << 47,
            STACK_TOP - 1,
            TEXT,
            TEXT + TEXT_LENGTH,
        ] {
            assert!(pointers.contains(&edge), "{edge:#x}");
        }
        for edge in [0, 1, 4095, 4096, 511, 512, 513, u64::MAX] {
            assert!(LENGTH_EDGES.contains(&edge));
        }
        assert!(
            BUDGET_EDGES.contains(&MAX_PERIOD_US) && BUDGET_EDGES.contains(&(MAX_PERIOD_US + 1))
        );
        assert!(PRIORITY_EDGES.contains(&255) && PRIORITY_EDGES.contains(&256));
    }

    #[test]
    fn handles_cover_slots_and_generations() {
        let c = component(5, true);
        let mut fuzzer = Fuzzer::new(1, c, 64);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            seen.insert(fuzzer.handle());
        }
        for slot in [0u64, 3, 4, 5, 0xffff] {
            for generation in [5u64, 4, 6, 0, u32::MAX as u64] {
                assert!(
                    seen.contains(&(slot | generation << 32)),
                    "{slot} {generation}"
                );
            }
        }
        assert!(seen.contains(&u64::MAX) && seen.contains(&0));
    }

    #[test]
    fn every_known_number_and_unknown_ones_are_called() {
        let mut fuzzer = Fuzzer::new(2, component(1, false), 4);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200_000 {
            seen.insert(fuzzer.next_plan().number);
        }
        let first_unknown = fuzzer.first_unknown;
        for number in 0..first_unknown {
            if number != Syscall::Exit as u64 {
                assert!(seen.contains(&number), "call {number} never made");
            }
        }
        assert!(!seen.contains(&(Syscall::Exit as u64)));
        assert!(seen.contains(&first_unknown) && seen.contains(&u64::MAX));
    }

    #[test]
    fn the_mix_is_mostly_survivable_and_logs_rarely() {
        let mut fuzzer = Fuzzer::new(3, component(2, false), 64);
        let (mut fatal, mut logs) = (0, 0);
        let total = 256_000;
        for _ in 0..total {
            let plan = fuzzer.next_plan();
            fatal += usize::from(plan.may_fault());
            if plan.number == Syscall::LogWrite as u64 && !plan.may_fault() {
                logs += 1;
            }
        }
        assert!(
            (3000..5000).contains(&fatal),
            "{fatal} of {total} may fault"
        );
        assert!(logs <= 12, "{logs} log lines in {total}");
    }

    proptest! {
        /// Whatever the seed, the generation and what it holds, no plan is
        /// unsafe, and one predicted to return is one the rules say
        /// returns.
        #[test]
        fn plans_are_safe(seed in any::<u64>(), generation in any::<u32>(), controller in any::<bool>(), wild in 1u64..100) {
            let c = component(generation, controller);
            let mut fuzzer = Fuzzer::new(seed, c, wild);
            for _ in 0..2000 {
                let plan = fuzzer.next_plan();
                prop_assert!(is_safe(plan.number, plan.args, &c), "{plan:?}");
                prop_assert_ne!(plan.number, Syscall::Exit as u64);
                prop_assert_eq!(plan.expect, expect(plan.number, plan.args, &c));
                if plan.number == Syscall::Wait as u64 {
                    prop_assert!(plan.args[0] <= LONGEST_WAIT_US);
                }
                if plan.number == Syscall::SignalWait as u64 {
                    prop_assert!(plan.args[1] <= LONGEST_WAIT_US);
                }
            }
        }
    }
}
