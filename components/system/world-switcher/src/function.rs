//! What the guest's PCI functions (its disks and NICs) share: where one
//! sits ([`Placement`]: its device number, its IOAPIC pin for INTx, where
//! its BAR starts), the level of its INTx line ([`Intx`]), what servicing
//! one asks of the platform ([`Service`]), and the registers the guest
//! reaches through its BAR ([`Registers`]).

use microvisor_abi::start::ResourceView;
use runtime::queue::{Receiver, Sender};
use runtime::vm::GuestMemory;
use vm_platform::pci::{ConfigSpace, Location, PciHost};
use vm_platform::virtio_pci::{self, BAR_SIZE, Interrupt};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Opens each queue pair `<name><out>` (this switcher sends) and
/// `<name><back>` (it receives) the start page gives, and hands each to
/// `attach(index, name, sender, receiver)`, which says whether it became
/// the `index`th function of its kind; at most `max` do. A pair without
/// its other half, or one past `max`, is reported (as `kind` of VM `vm`)
/// and skipped.
pub fn open_pairs<S, R>(
    start: &runtime::Start,
    vm: &str,
    kind: &str,
    (out, back): (&str, &str),
    max: usize,
    mut attach: impl FnMut(usize, &str, Sender<S>, Receiver<R>) -> bool,
) where
    S: FromBytes + IntoBytes + KnownLayout + Immutable,
    R: FromBytes + IntoBytes + KnownLayout + Immutable,
{
    let mut count = 0;
    for (queue, view) in start.views() {
        let (ResourceView::QueueSend(_), Some(name)) = (view, queue.strip_suffix(out)) else {
            continue;
        };
        if count == max {
            runtime::println!("VM '{vm}': {kind} '{name}' not attached: at most {max}");
            continue;
        }
        let mut answers = runtime::LineWriter::new();
        let _ = core::fmt::Write::write_fmt(&mut answers, format_args!("{name}{back}"));
        let answers = core::str::from_utf8(answers.as_bytes()).unwrap_or("");
        let (Ok(sender), Ok(receiver)) = (
            Sender::<S>::open(start, queue),
            Receiver::<R>::open(start, answers),
        ) else {
            runtime::println!(
                "VM '{vm}': {kind} '{name}' not attached: the queue '{queue}' comes without '{answers}'"
            );
            continue;
        };
        if attach(count, name, sender, receiver) {
            count += 1;
        }
    }
}

/// What servicing a function asks of the platform.
#[derive(Default)]
pub struct Service {
    /// An MSI to deliver.
    pub msi: Option<(u64, u32)>,
    /// INTx's new level, if it changed (with the pin).
    pub intx: Option<(u8, bool)>,
}

/// Where a function sits: bus 0, device `slot`, function 0; INTx on
/// IOAPIC pin `gsi`; its BAR at `bar` until the guest moves it.
#[derive(Clone, Copy)]
pub struct Placement {
    pub slot: u8,
    pub gsi: u8,
    pub bar: u64,
}

impl Placement {
    /// The `index`th function of a kind whose first sits at `slot`, `gsi`
    /// and `bar` (each next one a device, a pin and a BAR further).
    pub fn nth(index: u8, slot: u8, gsi: u8, bar: u64) -> Self {
        Self {
            slot: slot + index,
            gsi: gsi + index,
            bar: bar + u64::from(index) * BAR_SIZE,
        }
    }

    pub fn location(&self) -> Location {
        Location {
            device: self.slot,
            function: 0,
        }
    }

    /// Puts `config` (its interrupt line register set to the pin) on
    /// `pci`; `false` if the slot is taken.
    pub fn add(&self, pci: &mut PciHost, mut config: ConfigSpace) -> bool {
        config.set(0x3c, &[self.gsi]);
        pci.add(self.location(), config).is_ok()
    }

    /// The function's configuration space if the guest just wrote it (at
    /// `location`).
    pub fn written<'a>(&self, pci: &'a PciHost, location: Location) -> Option<&'a ConfigSpace> {
        (location == self.location())
            .then(|| pci.function(location))
            .flatten()
    }

    /// The offset in its BAR of guest-physical `address`, if the BAR is
    /// decoded there.
    pub fn bar_offset(&self, pci: &PciHost, address: u64) -> Option<u64> {
        let bar = virtio_pci::bar_address(pci.function(self.location())?)?;
        (bar..bar + BAR_SIZE)
            .contains(&address)
            .then(|| address - bar)
    }
}

/// A function's INTx line: its level as last told to the IOAPIC.
#[derive(Clone, Copy)]
pub struct Intx {
    gsi: u8,
    asserted: bool,
}

impl Intx {
    pub fn new(gsi: u8) -> Self {
        Self {
            gsi,
            asserted: false,
        }
    }

    /// The line's level is `asserted`: a service telling the platform if
    /// it changed.
    pub fn level(&mut self, asserted: bool) -> Service {
        let mut service = Service::default();
        if asserted != self.asserted {
            self.asserted = asserted;
            service.intx = Some((self.gsi, asserted));
        }
        service
    }

    /// The service for a device's batch interrupt: its MSI, or INTx at
    /// the device's level `asserted`.
    pub fn interrupt(&mut self, interrupt: Option<Interrupt>, asserted: bool) -> Service {
        match interrupt {
            Some(Interrupt::Msi { address, data }) => Service {
                msi: Some((address, data)),
                intx: None,
            },
            Some(Interrupt::Intx) | None => self.level(asserted),
        }
    }
}

/// The registers of a disk or NIC, as the guest reaches them through its
/// BAR.
pub trait Registers {
    /// A guest read of `size` bytes at `offset`.
    fn read(&mut self, offset: u64, size: u8) -> (u64, Service);
    /// A guest write of `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64, memory: GuestMemory) -> Service;
    /// Where the function sits.
    fn placement(&self) -> Placement;
    /// The guest wrote the function's configuration space, now `config`.
    fn follow_config(&mut self, config: &ConfigSpace);

    /// The guest wrote configuration space at `location`: the function
    /// follows it if it is its own.
    fn config_written(&mut self, pci: &PciHost, location: Location) {
        if let Some(config) = self.placement().written(pci, location) {
            self.follow_config(config);
        }
    }

    /// The offset in its BAR of guest-physical `address`, if the BAR is
    /// decoded there.
    fn bar_offset(&self, pci: &PciHost, address: u64) -> Option<u64> {
        self.placement().bar_offset(pci, address)
    }
}
