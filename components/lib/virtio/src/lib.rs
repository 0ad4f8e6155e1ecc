//! The driver side of virtio 1.x (OASIS VIRTIO 1.2) for ring-3 drivers:
//! everything a driver decides, as pure logic over memory and
//! configuration space it is handed, so the host tests run it against a
//! simulated device.
//!
//! - [`queue`]: the split virtqueue (spec 2.7): descriptor chains, the
//!   available ring the driver publishes to and the used ring it consumes,
//!   with every value the device writes checked before it is believed.
//! - [`blk`]: virtio-blk requests (spec 5.2): the request header, the
//!   three-part descriptor chain, the status byte and range checks.
//! - [`net`]: virtio-net (spec 5.1): ids, features, configuration and
//!   the header before each frame.
//! - [`pci`]: the virtio PCI transport (spec 4.1): finding the
//!   configuration structures and MSI-X in configuration space, and the
//!   common configuration's register map.
//! - [`setup`]: a driver's set-up of a device over its common
//!   configuration: reset, features, queues, ready.
//!
//! This module holds what is common to every device and transport: the
//! [`DmaMemory`] the device shares with the driver, the device status bits
//! ([`status`]) and feature negotiation ([`negotiate`]).
//!
//! The device is not trusted. Nothing it writes (ring indices, used
//! entries, configuration space) can make this crate panic, index out of
//! bounds or lose track of a descriptor; it is reported as an error, after
//! which the driver resets the device.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod blk;
pub mod net;
pub mod pci;
pub mod queue;
pub mod setup;

#[cfg(test)]
mod sim;

/// Memory shared with the device (a DMA buffer), reached by byte offsets
/// into it.
///
/// Values are little-endian in memory, as virtio 1.x defines them (the
/// native order on x86). Accessors take `&self`: the memory is shared with
/// a device that changes it behind the driver's back, so an implementation
/// uses volatile accesses, one per call, of exactly the given width. This
/// crate calls them with offsets in range and naturally aligned; an
/// implementation may ignore (and read as zero) anything else.
pub trait DmaMemory {
    /// Reads the byte at `offset`.
    fn read8(&self, offset: u64) -> u8;
    /// Reads the 16-bit value at `offset`.
    fn read16(&self, offset: u64) -> u16;
    /// Reads the 32-bit value at `offset`.
    fn read32(&self, offset: u64) -> u32;
    /// Reads the 64-bit value at `offset`.
    fn read64(&self, offset: u64) -> u64;
    /// Writes the byte at `offset`.
    fn write8(&self, offset: u64, value: u8);
    /// Writes the 16-bit value at `offset`.
    fn write16(&self, offset: u64, value: u16);
    /// Writes the 32-bit value at `offset`.
    fn write32(&self, offset: u64, value: u32);
    /// Writes the 64-bit value at `offset`.
    fn write64(&self, offset: u64, value: u64);
    /// The physical (device) address of `offset`.
    fn physical(&self, offset: u64) -> u64;
}

pub mod status {
    //! The device status field's bits (spec 2.1), which the driver sets in
    //! order during initialisation (spec 3.1.1): reset (write 0),
    //! [`ACKNOWLEDGE`], [`DRIVER`], feature negotiation, [`FEATURES_OK`]
    //! (and read it back: a device that clears it refused the features),
    //! queue setup, [`DRIVER_OK`].

    /// The driver has found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The driver knows how to drive the device.
    pub const DRIVER: u8 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u8 = 4;
    /// The driver has acknowledged the features it understands; feature
    /// negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device has hit an error it cannot recover from and needs a
    /// reset.
    pub const NEEDS_RESET: u8 = 64;
    /// The driver has given up on the device.
    pub const FAILED: u8 = 128;
}

/// Feature bit 32: the device conforms to virtio 1.x. A driver of the
/// modern interface requires it.
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Required features the device does not offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingFeatures {
    /// The missing feature bits, as a mask.
    pub missing: u64,
}

/// The features to accept (spec 2.2): those the device offers out of the
/// ones the driver wants or requires, or the required ones it lacks.
///
/// All three arguments are masks (`1 << bit`). The driver writes the
/// result back as its features, sets [`status::FEATURES_OK`] and reads the
/// status back to confirm the device accepted them.
pub fn negotiate(device_features: u64, wanted: u64, required: u64) -> Result<u64, MissingFeatures> {
    let missing = required & !device_features;
    if missing != 0 {
        return Err(MissingFeatures { missing });
    }
    Ok(device_features & (wanted | required))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_accepts_offered_wanted_and_required_features() {
        let version_1 = 1 << VIRTIO_F_VERSION_1;
        let device = version_1 | 1 << 9 | 1 << 5 | 1 << 40;
        assert_eq!(
            negotiate(device, 1 << 9 | 1 << 6, version_1),
            Ok(version_1 | 1 << 9)
        );
        assert_eq!(negotiate(device, 0, version_1), Ok(version_1));
    }

    #[test]
    fn negotiate_refuses_missing_required_features() {
        let version_1 = 1 << VIRTIO_F_VERSION_1;
        assert_eq!(
            negotiate(1 << 9, 1 << 9, version_1 | 1 << 9 | 1 << 6),
            Err(MissingFeatures {
                missing: version_1 | 1 << 6
            })
        );
    }
}
