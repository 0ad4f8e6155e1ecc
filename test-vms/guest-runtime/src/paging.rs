//! Page-table roots a test VM may switch between: the boot root (the PML4
//! the boot code built, [`crate::boot`]) and copies of it, so that one
//! memory image can run as several guest "processes" (several CR3 values)
//! for a hypervisor that tells processes apart by CR3.
//!
//! A [`PageTableRoot`] is a page-aligned page a test VM declares as a
//! `static`; [`PageTableRoot::copy_current`] fills it with the entries of
//! the PML4 CR3 names now, so it points at the same page-directory-pointer
//! table and maps exactly what the boot tables map. Loading it
//! ([`PageTableRoot::load`]) or the boot root ([`load_boot_root`]) changes
//! only CR3 (and flushes the TLB), never what an address means.
//!
//! Why that is safe: CR3 only ever names the boot root or a filled copy
//! (the boot code loads the boot root before any Rust code runs, and the
//! functions here are the only ones that write CR3 without `unsafe`), and
//! every one of them holds the boot PML4's entries, which nothing changes
//! after boot. A copy is filled when its first entry is present (the boot
//! PML4's first entry maps the first 512 GiB, so it always is); loading
//! one that is not panics.

use core::sync::atomic::{AtomicU64, Ordering};

/// Entries in a PML4.
const ENTRIES: usize = 512;
/// An entry's present bit.
const PRESENT: u64 = 1;
/// The physical-address bits of CR3 (bits 12..52): the rest are the
/// PCD/PWT flags or a PCID.
const ROOT_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

unsafe extern "C" {
    /// The boot PML4 (`.boot.bss`, page-aligned; see [`crate::boot`]).
    static guest_pml4: u8;
}

/// The boot root's CR3 value: the address of the PML4 the boot code built
/// (identity-mapped, so also its physical address), without flags.
pub fn boot_root() -> u64 {
    (&raw const guest_pml4) as u64
}

/// CR3 now.
pub fn current() -> u64 {
    crate::arch::read_cr3()
}

/// Loads the boot root into CR3.
pub fn load_boot_root() {
    // SAFETY: the boot root maps the program (the boot code runs on it).
    unsafe { crate::arch::write_cr3(boot_root()) }
}

/// A PML4 page that holds a copy of the boot root's entries once filled
/// (see the module documentation). Declare it as a `static`.
#[repr(C, align(4096))]
pub struct PageTableRoot {
    entries: [AtomicU64; ENTRIES],
}

impl Default for PageTableRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PageTableRoot {
    /// An empty root (nothing mapped): fill it with
    /// [`PageTableRoot::copy_current`] before loading it.
    pub const fn new() -> Self {
        Self {
            entries: [const { AtomicU64::new(0) }; ENTRIES],
        }
    }

    /// Copies the entries of the PML4 that CR3 names now into this page.
    pub fn copy_current(&self) {
        let address = current() & ROOT_ADDRESS;
        // SAFETY: CR3 names the boot PML4 or a filled `PageTableRoot` (see
        // the module documentation): a page-aligned 4 KiB table inside the
        // image, identity-mapped, only ever read and written as whole
        // 64-bit entries (atomically here; the boot code wrote the boot
        // PML4 before any Rust code ran). The reference lives only for
        // this copy.
        let source = unsafe { &*(address as *const [AtomicU64; ENTRIES]) };
        for (to, from) in self.entries.iter().zip(source) {
            to.store(from.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    /// Whether [`PageTableRoot::copy_current`] filled this page.
    pub fn is_filled(&self) -> bool {
        self.entries[0].load(Ordering::SeqCst) & PRESENT != 0
    }

    /// This root's CR3 value: its address (identity-mapped, so also its
    /// physical address), without flags.
    pub fn cr3(&self) -> u64 {
        self.entries.as_ptr() as u64
    }

    /// Loads this root into CR3. `'static`, so the page outlives its use
    /// as the root. Panics if it was not filled.
    pub fn load(&'static self) {
        assert!(
            self.is_filled(),
            "a page-table root must be filled before it is loaded"
        );
        // SAFETY: a filled root holds the boot PML4's entries (see the
        // module documentation), so it maps the program exactly as the
        // current root does; the page is static.
        unsafe { crate::arch::write_cr3(self.cr3()) }
    }
}
