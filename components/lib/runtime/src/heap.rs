//! A heap for components that link `alloc` (the block store's VMKFS engine
//! keeps its metadata in `Vec`s and `BTreeMap`s): with the runtime's
//! `heap` feature, [`HEAP_BYTES`] of the component's own zeroed memory
//! (a static in `.bss`, so the system file's `memory` must leave room for
//! it) behind `linked_list_allocator`'s first-fit allocator. Running out
//! panics, which the core reports as the component's fault.

use core::cell::UnsafeCell;

use linked_list_allocator::LockedHeap;

/// Bytes of heap.
pub const HEAP_BYTES: usize = 8 << 20;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; HEAP_BYTES]>);

// SAFETY: the arena is touched only through the allocator, which its lock
// serializes (and a component is single-threaded).
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; HEAP_BYTES]));

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Hands the arena to the allocator; called once, before `main`.
pub(crate) fn init() {
    // SAFETY: the arena is a static of HEAP_BYTES used by nothing but the
    // allocator, valid for the program's life; `init` runs once, from the
    // entry point, before anything allocates.
    unsafe {
        ALLOCATOR
            .lock()
            .init(ARENA.0.get().cast::<u8>(), HEAP_BYTES)
    };
}
