//! Components: loading a ring-3 program from the boot image into its own
//! address space, and stopping it.
//!
//! A component's address space holds exactly its ELF segments (with the
//! rights the program headers give, never writable and executable), a
//! stack below [`STACK_TOP`] with an unmapped guard page beneath it, and
//! its read-only start-information page; the core's upper half is shared
//! but supervisor-only. Every frame is fresh and zeroed before use. Loading
//! either completes or leaves nothing behind: on any error the frames are
//! returned and the component is refused with the reason, and the rest of
//! the system boots without it.

use microvisor::address::{PAGE_SIZE, PhysicalAddress, VirtualAddress};
use microvisor::elf::{self, ElfError};
use microvisor::paging::{self, AddressSpace, MapError, Permissions, WxViolation};
use microvisor_abi::start::{START_MAGIC, StartInfo};
use microvisor_abi::{STACK_TOP, START_INFO_ADDRESS, USER_END, USER_MIN};
use zerocopy::IntoBytes;

use crate::arch::entry::Frame;
use crate::arch::memory::{Tables, direct};
use crate::state::Kernel;

/// The most components a system may have.
pub const MAX_COMPONENTS: usize = 32;
/// Pages of stack each component gets.
pub const STACK_PAGES: u64 = 16;
/// The most segment memory one component may ask for.
pub const SEGMENT_LIMIT: u64 = 64 << 20;

/// Where a component is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentState {
    /// Has a thread that can run.
    Runnable,
    /// Ended itself with this exit code.
    Exited(i32),
    /// Stopped by the core after a fault.
    Faulted,
}

/// One component and its single thread.
pub struct Component {
    name: [u8; 32],
    name_len: usize,
    pub state: ComponentState,
    pub space: AddressSpace,
    pub frame: Frame,
}

impl Component {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        name: [0; 32],
        name_len: 0,
        state: ComponentState::Exited(0),
        space: AddressSpace {
            root: PhysicalAddress(0),
        },
        frame: Frame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            rcx: 0,
            rbx: 0,
            rax: 0,
            vector: 0,
            error: 0,
            rip: 0,
            cs: 0,
            rflags: 0,
            rsp: 0,
            ss: 0,
        },
    };

    /// The component's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }
}

/// Why a component was not loaded.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The ELF file is unusable.
    Elf(ElfError),
    /// Mapping failed (usually: out of memory).
    Map(MapError),
    /// Out of physical memory.
    OutOfMemory,
    /// The finished address space broke W^X (a core bug if ever seen).
    Wx(WxViolation),
    /// The system already has [`MAX_COMPONENTS`].
    TooMany,
    /// The name is reserved for the core.
    ReservedName,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(error) => write!(f, "{error}"),
            Self::Map(error) => write!(f, "cannot map its memory: {error:?}"),
            Self::OutOfMemory => write!(f, "out of physical memory"),
            Self::Wx(violation) => write!(f, "its address space breaks W^X: {violation:?}"),
            Self::TooMany => write!(f, "more than {MAX_COMPONENTS} components"),
            Self::ReservedName => write!(f, "the name 'core' is reserved"),
        }
    }
}

impl From<MapError> for LoadError {
    fn from(error: MapError) -> Self {
        match error {
            MapError::OutOfMemory => Self::OutOfMemory,
            other => Self::Map(other),
        }
    }
}

/// What a successful load produced, for the boot log.
pub struct Loaded {
    pub segments: usize,
    pub pages: u64,
    pub entry: u64,
}

/// Loads `elf_bytes` as component `name` and makes it runnable.
pub fn load(
    kernel: &mut Kernel,
    name: &str,
    args: &str,
    elf_bytes: &[u8],
) -> Result<Loaded, LoadError> {
    if name == "core" {
        return Err(LoadError::ReservedName);
    }
    let index = kernel.component_count;
    if index == MAX_COMPONENTS {
        return Err(LoadError::TooMany);
    }
    let plan = elf::plan(elf_bytes, USER_MIN, USER_END, SEGMENT_LIMIT).map_err(LoadError::Elf)?;
    let mut tables = Tables {
        frames: &mut kernel.frames,
    };
    let space = AddressSpace::new(&mut tables)?;
    space.share_kernel_half(&mut tables, &kernel.kernel_space);
    let mut pages = 0;
    let result = (|| -> Result<(), LoadError> {
        for segment in plan.segments() {
            let rights = Permissions {
                write: segment.write,
                execute: segment.execute,
                ..Permissions::READ
            }
            .for_user();
            let (start, end) = segment.pages();
            let mut page = start;
            while page < end {
                let frame = fresh_frame(&mut tables)?;
                if let Some((into, from)) = segment.file_bytes_for_page(page) {
                    // SAFETY: `frame` is a fresh frame in the direct map and
                    // `into + from.len()` <= PAGE_SIZE (the plan's contract);
                    // `from` lies inside `elf_bytes` (checked by the plan).
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            elf_bytes[from.clone()].as_ptr(),
                            direct(frame).add(into),
                            from.len(),
                        );
                    }
                }
                map_or_release(&space, &mut tables, page, frame, rights)?;
                pages += 1;
                page += PAGE_SIZE;
            }
        }
        for page in 1..=STACK_PAGES {
            let frame = fresh_frame(&mut tables)?;
            map_or_release(
                &space,
                &mut tables,
                STACK_TOP - page * PAGE_SIZE,
                frame,
                Permissions::READ_WRITE.for_user(),
            )?;
            pages += 1;
        }
        let frame = fresh_frame(&mut tables)?;
        let mut info = StartInfo {
            magic: START_MAGIC,
            component_index: index as u32,
            name_len: name.len() as u32,
            name: [0; 32],
            args_len: args.len() as u32,
            _reserved: 0,
            args: [0; 64],
        };
        info.name[..name.len()].copy_from_slice(name.as_bytes());
        info.args[..args.len()].copy_from_slice(args.as_bytes());
        let bytes = info.as_bytes();
        // SAFETY: a fresh frame in the direct map; StartInfo is smaller than a page.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), direct(frame), bytes.len()) };
        map_or_release(
            &space,
            &mut tables,
            START_INFO_ADDRESS,
            frame,
            Permissions::READ.for_user(),
        )?;
        pages += 1;
        let summary = paging::check_wx(&tables, &space).map_err(LoadError::Wx)?;
        debug_assert_eq!(summary.user, pages);
        Ok(())
    })();
    if let Err(error) = result {
        destroy(&mut tables, &space);
        return Err(error);
    }
    let component = &mut kernel.components[index];
    component.name = [0; 32];
    component.name[..name.len()].copy_from_slice(name.as_bytes());
    component.name_len = name.len();
    component.state = ComponentState::Runnable;
    component.space = space;
    component.frame = Frame::new_thread(plan.entry, STACK_TOP, START_INFO_ADDRESS);
    kernel.component_count += 1;
    Ok(Loaded {
        segments: plan.segments().len(),
        pages,
        entry: plan.entry,
    })
}

fn fresh_frame(tables: &mut Tables<'_, '_>) -> Result<PhysicalAddress, LoadError> {
    let frame = tables.frames.allocate().ok_or(LoadError::OutOfMemory)?;
    // SAFETY: a frame just taken from the allocator, in the direct map.
    unsafe { core::ptr::write_bytes(direct(frame), 0, PAGE_SIZE as usize) };
    Ok(frame)
}

fn map_or_release(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    page: u64,
    frame: PhysicalAddress,
    rights: Permissions,
) -> Result<(), LoadError> {
    space
        .map_page(tables, VirtualAddress(page), frame, rights)
        .map_err(|error| {
            let _ = tables.frames.free(frame);
            LoadError::from(error)
        })
}

/// Returns every frame of a component's address space, root included.
fn destroy(tables: &mut Tables<'_, '_>, space: &AddressSpace) {
    release_user_memory(tables, space);
    let _ = tables.frames.free(space.root);
}

fn release_user_memory(tables: &mut Tables<'_, '_>, space: &AddressSpace) {
    space.clear_user_half(tables);
}

/// Stops component `index` and returns its user memory.
pub fn stop(kernel: &mut Kernel, index: usize, state: ComponentState) {
    let mut tables = Tables {
        frames: &mut kernel.frames,
    };
    let component = &mut kernel.components[index];
    component.state = state;
    release_user_memory(&mut tables, &component.space);
}
