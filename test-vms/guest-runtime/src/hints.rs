//! The guest-hints page ([`guest_api::hints`]): one page at guest-physical
//! [`ADDRESS`], outside the VM's RAM, that an enlightened guest writes
//! and the QoS controller reads, without an exit either way. The guest
//! says whether it has work ([`Hints::set_no_work`]) and the priority of
//! the most urgent thread it would run ([`Hints::set_priority`]); each
//! update also increments [`SEQUENCE`], after the field it changed.
//!
//! Only our hypervisor offering [`guest_api::features::HINTS`] has the
//! page: [`Hints::find`] answers `None` anywhere else (natively the
//! address is unassigned), so a guest never writes there by mistake. The
//! boot page tables identity-map the first 4 GiB ([`crate::boot`]), the
//! page included, so nothing needs mapping. Every access is a volatile,
//! aligned 32-bit read or a plain 32-bit store (`mov`, never a
//! read-modify-write such as `inc` on the page): the sequence number is
//! counted in the runtime's memory (`UPDATES`) and stored. x86 keeps
//! stores in order, so a reader that sees the new sequence number also
//! sees the field written before it.

use core::sync::atomic::{AtomicU32, Ordering};

use guest_api::hints::{ADDRESS, NO_WORK, PRIORITY, SEQUENCE};

use crate::hypervisor::detect;

/// Updates made through [`Hints`] since boot (the image's `.bss` and the
/// page are both cleared when the VM is reset): the next [`SEQUENCE`]
/// value is one more.
static UPDATES: AtomicU32 = AtomicU32::new(0);

/// The guest-hints page, found ([`Hints::find`]).
#[derive(Debug)]
pub struct Hints {
    /// Not constructible outside [`Hints::find`].
    _found: (),
}

impl Hints {
    /// The page, if the hypervisor is ours and offers
    /// [`guest_api::features::HINTS`] ([`crate::Hypervisor::has_hints`]).
    pub fn find() -> Option<Self> {
        detect().has_hints().then_some(Self { _found: () })
    }

    /// The page's guest-physical (and, identity-mapped, virtual) address.
    pub fn address(&self) -> u64 {
        ADDRESS
    }

    /// Writes [`NO_WORK`]: 1 while `no_work` (the controller gives the VM
    /// almost no CPU until it reads 0), then bumps [`SEQUENCE`].
    pub fn set_no_work(&self, no_work: bool) {
        self.write(NO_WORK, u32::from(no_work));
        self.bump();
    }

    /// Writes [`PRIORITY`] (0-255, 0 the least; from
    /// [`guest_api::hints::URGENT`] the controller runs the VM above its
    /// peers), then bumps [`SEQUENCE`].
    pub fn set_priority(&self, priority: u32) {
        self.write(PRIORITY, priority);
        self.bump();
    }

    /// [`NO_WORK`] as last written (the core clears it at a reset).
    pub fn no_work(&self) -> bool {
        self.read(NO_WORK) != 0
    }

    /// [`PRIORITY`] as last written.
    pub fn priority(&self) -> u32 {
        self.read(PRIORITY)
    }

    /// [`SEQUENCE`] as last written: the updates made through [`Hints`]
    /// since boot (wrapping).
    pub fn sequence(&self) -> u32 {
        self.read(SEQUENCE)
    }

    /// Stores the next sequence number.
    fn bump(&self) {
        let next = UPDATES.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.write(SEQUENCE, next);
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: a `Hints` exists only where our hypervisor offers the
        // page, so the address is that page: guest-physical memory outside
        // RAM, identity-mapped by the boot tables, holding no Rust object
        // (the image and its stack lie below 2 MiB). The offsets are the
        // interface's aligned u32 fields inside the page.
        unsafe { ((ADDRESS as usize + offset) as *const u32).read_volatile() }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as `read`; a write only changes what the hypervisor's
        // controller reads, never the program's memory.
        unsafe { ((ADDRESS as usize + offset) as *mut u32).write_volatile(value) }
    }
}
