//! A component's capability table: the objects it may name, by slot.
//!
//! Filled once from the boot spec (capdl decides what each component
//! holds) and never changed at run time. A component names a slot by a
//! handle that carries its generation (`microvisor::capability`), so a
//! handle from an earlier life, a forged one, one past the table or one of
//! the wrong kind finds nothing, and the caller is faulted.

use microvisor_abi::spec::{CapabilityKind, CapabilitySpec, MAX_CAPABILITIES_PER_COMPONENT};

/// What one slot lets its holder do.
#[derive(Clone, Copy, Debug)]
pub struct Capability {
    pub kind: CapabilityKind,
    /// A component index (unused for scheduling control), or a VM index
    /// for VMCS and vCPU capabilities.
    pub target: usize,
    /// Notification bits, for notification capabilities.
    pub badge: u64,
}

/// The slots of one component.
#[derive(Clone, Copy, Debug)]
pub struct CapabilityTable {
    slots: [Option<Capability>; MAX_CAPABILITIES_PER_COMPONENT],
    count: usize,
}

impl CapabilityTable {
    /// A table with no slot.
    pub const EMPTY: Self = Self {
        slots: [None; MAX_CAPABILITIES_PER_COMPONENT],
        count: 0,
    };

    /// A table holding the spec's capabilities of one component, in
    /// order (`Spec::parse` checked their kinds and targets and bounded
    /// their number).
    pub fn from_spec(declared: &[CapabilitySpec]) -> Self {
        let mut table = Self::EMPTY;
        for (slot, capability) in table.slots.iter_mut().zip(declared) {
            *slot = CapabilityKind::from_u32(capability.kind).map(|kind| Capability {
                kind,
                target: capability.target as usize,
                badge: capability.badge,
            });
        }
        table.count = declared.len().min(MAX_CAPABILITIES_PER_COMPONENT);
        table
    }

    /// The capability `handle` names for a holder in `generation`, if it
    /// is of `kind`.
    pub fn lookup(&self, handle: u64, generation: u32, kind: CapabilityKind) -> Option<Capability> {
        microvisor::capability::decode(handle, generation, self.count)
            .and_then(|slot| self.slots[slot])
            .filter(|capability| capability.kind == kind)
    }
}
