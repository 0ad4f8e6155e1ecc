//! A driver's set-up of a virtio PCI device in virtio 1.x order (spec
//! 3.1.1), over the device's common configuration structure however the
//! driver reaches it ([`CommonRegisters`]): [`reset`],
//! [`negotiate_features`], [`set_up_queue`] for each queue, [`driver_ok`].
//!
//! Everything the device answers is checked before it is used: a device
//! that does not reset, refuses the features or a queue's vector, offers
//! no such queue or puts its notification address outside its area gives
//! a [`SetUpError`] naming which, and the driver reports it and stops.

use crate::pci::{VirtioCaps, common};
use crate::queue::{self, SplitQueue};
use crate::{DmaMemory, MissingFeatures, status};

/// The common configuration structure's registers (offsets in
/// [`common`]), each accessed with exactly its width.
pub trait CommonRegisters {
    fn read8(&self, offset: u32) -> u8;
    fn read16(&self, offset: u32) -> u16;
    fn read32(&self, offset: u32) -> u32;
    fn write8(&self, offset: u32, value: u8);
    fn write16(&self, offset: u32, value: u16);
    fn write32(&self, offset: u32, value: u32);
    /// A 64-bit register, as two 32-bit halves, low first.
    fn write64(&self, offset: u32, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// What went wrong setting a device up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetUpError {
    /// Its status did not read 0 after the reset.
    DidNotReset,
    /// It lacks required features.
    Lacks(MissingFeatures),
    /// It cleared FEATURES_OK: it refused the features accepted.
    RefusedFeatures,
    /// It has no queue with this index (size 0).
    NoQueue(u16),
    /// The queue cannot be placed where the driver put it (misaligned).
    QueueDoesNotFit(u16),
    /// It did not take the queue's MSI-X vector.
    VectorRefused(u16),
    /// The queue's notification address lies outside its area.
    NotifyOutside(u16),
}

impl core::fmt::Display for SetUpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::DidNotReset => write!(f, "the device did not reset"),
            Self::Lacks(missing) => {
                write!(
                    f,
                    "the device lacks required features {:#x}",
                    missing.missing
                )
            }
            Self::RefusedFeatures => write!(f, "the device refused the features"),
            Self::NoQueue(index) => write!(f, "the device has no queue {index}"),
            Self::QueueDoesNotFit(index) => {
                write!(f, "queue {index} cannot be placed in its memory")
            }
            Self::VectorRefused(index) => {
                write!(f, "the device refused queue {index}'s MSI-X vector")
            }
            Self::NotifyOutside(index) => write!(
                f,
                "queue {index}'s notification address lies outside its area"
            ),
        }
    }
}

/// Resets the device (a driver's last life may have left it running) and
/// says a driver has found it.
pub fn reset<C: CommonRegisters + ?Sized>(registers: &C) -> Result<(), SetUpError> {
    registers.write8(common::DEVICE_STATUS, 0);
    if registers.read8(common::DEVICE_STATUS) != 0 {
        return Err(SetUpError::DidNotReset);
    }
    registers.write8(common::DEVICE_STATUS, status::ACKNOWLEDGE | status::DRIVER);
    Ok(())
}

/// Reads the features offered, accepts those offered of `wanted` and
/// `required` ([`crate::negotiate`]), writes them and confirms the device
/// took them; the features accepted.
pub fn negotiate_features<C: CommonRegisters + ?Sized>(
    registers: &C,
    wanted: u64,
    required: u64,
) -> Result<u64, SetUpError> {
    let mut offered = 0u64;
    for half in 0..2u32 {
        registers.write32(common::DEVICE_FEATURE_SELECT, half);
        offered |= u64::from(registers.read32(common::DEVICE_FEATURE)) << (32 * half);
    }
    let accepted = crate::negotiate(offered, wanted, required).map_err(SetUpError::Lacks)?;
    for half in 0..2u32 {
        registers.write32(common::DRIVER_FEATURE_SELECT, half);
        registers.write32(common::DRIVER_FEATURE, (accepted >> (32 * half)) as u32);
    }
    registers.write8(common::DEVICE_STATUS, FEATURES_OK);
    if registers.read8(common::DEVICE_STATUS) & status::FEATURES_OK == 0 {
        return Err(SetUpError::RefusedFeatures);
    }
    Ok(accepted)
}

/// A queue set up: its rings, and where in the notification area's BAR
/// the driver writes to notify it.
#[derive(Debug)]
pub struct Queue {
    pub queue: SplitQueue,
    pub notify_at: u64,
}

/// Sets up queue `index` in `memory` at `at` with at most `max`
/// descriptors, interrupting on MSI-X `vector` (or
/// [`crate::pci::NO_VECTOR`]), and enables it.
pub fn set_up_queue<C: CommonRegisters + ?Sized, M: DmaMemory + ?Sized>(
    registers: &C,
    caps: &VirtioCaps,
    memory: &M,
    index: u16,
    at: u64,
    max: u16,
    vector: u16,
) -> Result<Queue, SetUpError> {
    registers.write16(common::QUEUE_SELECT, index);
    let size = queue::choose_size(registers.read16(common::QUEUE_SIZE).min(max))
        .ok_or(SetUpError::NoQueue(index))?;
    let queue =
        SplitQueue::new(memory, at, size).map_err(|_| SetUpError::QueueDoesNotFit(index))?;
    registers.write16(common::QUEUE_SIZE, size);
    registers.write64(common::QUEUE_DESC, queue.desc_physical());
    registers.write64(common::QUEUE_DRIVER, queue.avail_physical());
    registers.write64(common::QUEUE_DEVICE, queue.used_physical());
    registers.write16(common::QUEUE_MSIX_VECTOR, vector);
    if registers.read16(common::QUEUE_MSIX_VECTOR) != vector {
        return Err(SetUpError::VectorRefused(index));
    }
    let notify_at = caps
        .notify_offset(registers.read16(common::QUEUE_NOTIFY_OFF))
        .ok_or(SetUpError::NotifyOutside(index))?;
    registers.write16(common::QUEUE_ENABLE, 1);
    Ok(Queue { queue, notify_at })
}

/// Says the driver is ready: the device may use its queues.
pub fn driver_ok<C: CommonRegisters + ?Sized>(registers: &C) {
    registers.write8(common::DEVICE_STATUS, FEATURES_OK | status::DRIVER_OK);
}

const FEATURES_OK: u8 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::pci::{CapRegion, NO_VECTOR};
    use crate::sim::TestMemory;

    /// A device's common configuration: features, status, queues of
    /// given maximum sizes; `refuse_*` make it a difficult device.
    struct Fake {
        offered: u64,
        status: RefCell<u8>,
        select: RefCell<[u32; 2]>,
        driver_features: RefCell<u64>,
        queue_select: RefCell<u16>,
        sizes: [u16; 2],
        chosen: RefCell<[u16; 2]>,
        vectors: RefCell<[u16; 2]>,
        enabled: RefCell<[bool; 2]>,
        stuck_status: bool,
        refuse_features: bool,
        refuse_vectors: bool,
        notify_off: u16,
    }

    impl Fake {
        fn new(offered: u64) -> Self {
            Self {
                offered,
                status: RefCell::new(0x0f),
                select: RefCell::new([0; 2]),
                driver_features: RefCell::new(0),
                queue_select: RefCell::new(0),
                sizes: [256, 256],
                chosen: RefCell::new([0; 2]),
                vectors: RefCell::new([NO_VECTOR; 2]),
                enabled: RefCell::new([false; 2]),
                stuck_status: false,
                refuse_features: false,
                refuse_vectors: false,
                notify_off: 1,
            }
        }
        fn queue(&self) -> Option<usize> {
            let index = usize::from(*self.queue_select.borrow());
            (index < 2).then_some(index)
        }
    }

    impl CommonRegisters for Fake {
        fn read8(&self, offset: u32) -> u8 {
            assert_eq!(offset, common::DEVICE_STATUS);
            *self.status.borrow()
        }
        fn read16(&self, offset: u32) -> u16 {
            let Some(queue) = self.queue() else { return 0 };
            match offset {
                common::QUEUE_SIZE => self.sizes[queue],
                common::QUEUE_MSIX_VECTOR => self.vectors.borrow()[queue],
                common::QUEUE_NOTIFY_OFF => self.notify_off,
                _ => panic!("read16 at {offset:#x}"),
            }
        }
        fn read32(&self, offset: u32) -> u32 {
            assert_eq!(offset, common::DEVICE_FEATURE);
            (self.offered >> (32 * self.select.borrow()[0])) as u32
        }
        fn write8(&self, offset: u32, value: u8) {
            assert_eq!(offset, common::DEVICE_STATUS);
            let mut status = self.status.borrow_mut();
            *status = match value {
                0 if self.stuck_status => *status,
                value if value & status::FEATURES_OK != 0 && self.refuse_features => {
                    value & !status::FEATURES_OK
                }
                value => value,
            };
        }
        fn write16(&self, offset: u32, value: u16) {
            match offset {
                common::QUEUE_SELECT => *self.queue_select.borrow_mut() = value,
                common::QUEUE_SIZE => self.chosen.borrow_mut()[self.queue().unwrap()] = value,
                common::QUEUE_MSIX_VECTOR if !self.refuse_vectors => {
                    self.vectors.borrow_mut()[self.queue().unwrap()] = value;
                }
                common::QUEUE_MSIX_VECTOR => {}
                common::QUEUE_ENABLE => self.enabled.borrow_mut()[self.queue().unwrap()] = true,
                _ => panic!("write16 at {offset:#x}"),
            }
        }
        fn write32(&self, offset: u32, value: u32) {
            match offset {
                common::DEVICE_FEATURE_SELECT => self.select.borrow_mut()[0] = value,
                common::DRIVER_FEATURE_SELECT => self.select.borrow_mut()[1] = value,
                common::DRIVER_FEATURE => {
                    let shift = 32 * self.select.borrow()[1];
                    let mut features = self.driver_features.borrow_mut();
                    *features = *features & !(0xffff_ffff << shift) | u64::from(value) << shift;
                }
                common::QUEUE_DESC..common::SIZE => {}
                _ => panic!("write32 at {offset:#x}"),
            }
        }
    }

    fn caps() -> VirtioCaps {
        let region = |offset, length| CapRegion {
            bar: 4,
            offset,
            length,
        };
        VirtioCaps {
            common: region(0, 0x38),
            notify: region(0x3000, 0x1000),
            isr: region(0x1000, 1),
            device: Some(region(0x2000, 0x100)),
            notify_multiplier: 4,
        }
    }

    const VERSION_1: u64 = 1 << crate::VIRTIO_F_VERSION_1;

    #[test]
    fn a_device_is_set_up_in_order() {
        let fake = Fake::new(VERSION_1 | 1 << 5 | 1 << 7);
        let memory = TestMemory::new(0x10000);
        reset(&fake).unwrap();
        assert_eq!(*fake.status.borrow(), status::ACKNOWLEDGE | status::DRIVER);
        let accepted = negotiate_features(&fake, 1 << 5 | 1 << 6, VERSION_1).unwrap();
        assert_eq!(accepted, VERSION_1 | 1 << 5);
        assert_eq!(*fake.driver_features.borrow(), accepted);
        let queue = set_up_queue(&fake, &caps(), &memory, 1, 0x4000, 64, 0).unwrap();
        assert_eq!(queue.queue.size(), 64);
        assert_eq!(queue.notify_at, 0x3000 + 4);
        assert_eq!(fake.chosen.borrow()[1], 64);
        assert_eq!(fake.vectors.borrow()[1], 0);
        assert!(fake.enabled.borrow()[1]);
        driver_ok(&fake);
        assert_eq!(*fake.status.borrow(), FEATURES_OK | status::DRIVER_OK);
    }

    #[test]
    fn a_difficult_device_is_named_not_believed() {
        let memory = TestMemory::new(0x10000);
        let mut fake = Fake::new(VERSION_1);
        fake.stuck_status = true;
        assert_eq!(reset(&fake), Err(SetUpError::DidNotReset));

        let fake = Fake::new(1 << 5);
        assert_eq!(
            negotiate_features(&fake, 0, VERSION_1),
            Err(SetUpError::Lacks(MissingFeatures { missing: VERSION_1 }))
        );
        let mut fake = Fake::new(VERSION_1);
        fake.refuse_features = true;
        assert_eq!(
            negotiate_features(&fake, 0, VERSION_1),
            Err(SetUpError::RefusedFeatures)
        );

        let fake = Fake::new(VERSION_1);
        assert_eq!(
            set_up_queue(&fake, &caps(), &memory, 2, 0, 64, 0).unwrap_err(),
            SetUpError::NoQueue(2)
        );
        assert_eq!(
            set_up_queue(&fake, &caps(), &memory, 0, 0x4008, 64, 0).unwrap_err(),
            SetUpError::QueueDoesNotFit(0)
        );
        let mut fake = Fake::new(VERSION_1);
        fake.refuse_vectors = true;
        assert_eq!(
            set_up_queue(&fake, &caps(), &memory, 0, 0, 64, 3).unwrap_err(),
            SetUpError::VectorRefused(0)
        );
        let mut fake = Fake::new(VERSION_1);
        fake.notify_off = 0x400;
        assert_eq!(
            set_up_queue(&fake, &caps(), &memory, 0, 0, 64, 0).unwrap_err(),
            SetUpError::NotifyOutside(0)
        );
        assert!(!fake.enabled.borrow()[0]);
    }
}
